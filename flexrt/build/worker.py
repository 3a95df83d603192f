"""`python -m flexrt.build.worker DEVICE`: build one engine job (see `flexrt.build.workers`).

The process starts before its job exists: it imports Inductor, starts Inductor's compile pool and
the device's context, then reads the job's path from stdin (nothing: it exits). JOB holds
`(EngineJob, CompileSettings, the caller's Inductor config)` (torch.save); JOB.out gets the
engine's bytes and JOB.out.json its cache key, whether it was built or found in the cache, the
export and build seconds, and its timeline (wall-clock times of its start, imports, warm-up, job
and job load), so that the caller can say where a worker's time went.
"""

from __future__ import annotations

import time

STARTED = time.time()  # before the imports: a worker's start-up is part of what it reports

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
import torch._inductor.compile_fx  # noqa: E402  (imported now, while the caller traces)
from torch._inductor.async_compile import AsyncCompile  # noqa: E402

from flexrt.build.inductor import compile_engine, export_with_dims  # noqa: E402
from flexrt.build.workers import EngineJob  # noqa: E402
from flexrt.lower.fuse_conv_epilogue import register_shape_functions  # noqa: E402
from flexrt.settings import CompileSettings  # noqa: E402


def warm_up(device: str) -> None:
    """What a first build in a new process pays before its own work: the compile pool and the device."""
    AsyncCompile.warm_pool()
    if hasattr(AsyncCompile, "wakeup"):  # the pool's own processes too, not only its sidecar (where torch has it)
        AsyncCompile.wakeup()
    if device.startswith("cuda"):
        torch.empty(1, device=device)


def read_job(job_path: str) -> tuple[EngineJob, CompileSettings]:
    """The job and its settings; the caller's Inductor settings become this process's."""
    job, settings, inductor_config = torch.load(job_path, weights_only=False)
    torch._inductor.config.load_config(inductor_config)
    return job, settings


def build(job_path: str, timeline: dict[str, float]) -> None:
    job, settings = read_job(job_path)
    timeline["loaded_at"] = time.time()
    start = time.perf_counter()
    register_shape_functions(job.module.graph)
    ep = export_with_dims(job.module, job.examples, job.dims, job.oblivious)
    export_s = time.perf_counter() - start
    done = compile_engine(ep, settings, job.label, segment=job.segment)
    out_path = job_path + ".out"
    with open(out_path, "wb") as f:
        f.write(done.binary.to_bytes())
    with open(out_path + ".json", "w") as f:
        json.dump({"key": done.key, "built": done.built, "export_s": export_s, "engine_s": time.perf_counter() - start - export_s,
                   "times": done.times.describe() if done.times else "cached", "timeline": timeline,
                   "written_at": time.time()}, f)


def main(argv: list[str]) -> int:
    (device,) = argv
    imported = time.time()
    warm_up(device)
    timeline = {"started_at": STARTED, "imported_at": imported, "ready_at": time.time()}
    job_path = sys.stdin.readline().strip()
    timeline["job_at"] = time.time()
    if job_path:
        build(job_path, timeline)
    sys.stderr.flush()
    # The engine is written: exit now, without the interpreter's teardown (Inductor's compile pool
    # shutting down took about a second on a 2-core CPU); the caller kills what is left of the group.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
