"""`python -m flexrt.build.worker DEVICE`: build one engine job (see `flexrt.build.workers`).

The process starts before its job exists: it imports Inductor, starts Inductor's compile pool and
the device's context, then reads the job's path from stdin (nothing: it exits). JOB holds
`(EngineJob, CompileSettings)` (torch.save); JOB.out gets the engine's bytes and JOB.out.json its
cache key, whether it was built or found in the cache, and the export and build seconds.
"""

from __future__ import annotations

import json
import sys
import time

import torch
import torch._inductor.compile_fx  # imported now, while the caller traces
from torch._dynamo.utils import compilation_time_metrics  # Inductor's own phase timers, this process
from torch._inductor.async_compile import AsyncCompile

from flexrt.build.inductor import compile_engine_keyed, export_with_dims
from flexrt.lower.fuse_conv_epilogue import register_shape_functions


def warm_up(device: str) -> None:
    """What a first build in a new process pays before its own work: the compile pool and the device."""
    AsyncCompile.warm_pool()
    if hasattr(AsyncCompile, "wakeup"):  # the pool's own processes too, not only its sidecar (where torch has it)
        AsyncCompile.wakeup()
    if device.startswith("cuda"):
        torch.empty(1, device=device)


def build(job_path: str) -> None:
    job, settings = torch.load(job_path, weights_only=False)
    start = time.perf_counter()
    register_shape_functions(job.module.graph)
    ep = export_with_dims(job.module, job.examples, job.dims, job.oblivious)
    export_s = time.perf_counter() - start
    key, engine, built = compile_engine_keyed(ep, settings, job.label, segment=job.segment)
    timers = sorted(((k, sum(v)) for k, v in compilation_time_metrics.items()), key=lambda kv: -kv[1])
    out_path = job_path + ".out"
    with open(out_path, "wb") as f:
        f.write(engine.to_bytes())
    with open(out_path + ".json", "w") as f:
        json.dump({"key": key, "built": built, "export_s": export_s, "engine_s": time.perf_counter() - start - export_s,
                   "inductor_s": {k: round(v, 2) for k, v in timers[:8] if v >= 0.5}}, f)


def main(argv: list[str]) -> int:
    (device,) = argv
    warm_up(device)
    job_path = sys.stdin.readline().strip()
    if job_path:
        build(job_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
