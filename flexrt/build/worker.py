"""`python -m flexrt.build.worker JOB OUT`: build one engine job (see `flexrt.build.workers`).

JOB holds `(EngineJob, CompileSettings)` (torch.save); OUT gets the engine's bytes and OUT.json its
cache key, whether it was built or found in the cache, and the export and build seconds.
"""

from __future__ import annotations

import json
import sys
import time

import torch
from torch._dynamo.utils import compilation_time_metrics  # Inductor's own phase timers, this process

from flexrt.build.inductor import compile_engine_keyed, export_with_dims
from flexrt.lower.fuse_conv_epilogue import register_shape_functions


def main(argv: list[str]) -> int:
    job_path, out_path = argv
    job, settings = torch.load(job_path, weights_only=False)
    start = time.perf_counter()
    register_shape_functions(job.module.graph)
    ep = export_with_dims(job.module, job.examples, job.dims, job.oblivious)
    export_s = time.perf_counter() - start
    key, engine, built = compile_engine_keyed(ep, settings, job.label, segment=job.segment)
    timers = sorted(((k, sum(v)) for k, v in compilation_time_metrics.items()), key=lambda kv: -kv[1])
    with open(out_path, "wb") as f:
        f.write(engine.to_bytes())
    with open(out_path + ".json", "w") as f:
        json.dump({"key": key, "built": built, "export_s": export_s, "engine_s": time.perf_counter() - start - export_s,
                   "inductor_s": {k: round(v, 2) for k, v in timers[:8] if v >= 0.5}}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
