"""Which kernels the seed model runs, flexrt (TF32 engine, CUDA graphs off so the profiler sees each
kernel) against eager with TF32, per batch: where flexrt's GPU time differs from the TF32 peers'.

    python -m research.probes.seed_kernels [--batches 8,16,32] [--out DIR]
"""

from __future__ import annotations

import argparse
import collections
from typing import Any

import torch

import flexrt
from benchmarks.models import get_case
from benchmarks.report import save_json


def _kernels(fn: Any, x: torch.Tensor, iters: int = 50) -> dict[str, float]:
    """Mean device microseconds per call, by kernel name."""
    for _ in range(10):
        fn(x)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn(x)
        torch.cuda.synchronize()
    totals: dict[str, float] = collections.defaultdict(float)
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            totals[e.name[:120]] += e.device_time / iters
    return {k: round(v, 2) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="8,16,32")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    case = get_case("expand_reshape", False)
    torch.manual_seed(0)
    model = case.build().eval().cuda()
    with torch.no_grad():
        compiled = flexrt.compile(model, ir="dynamo", arg_inputs=case.flexrt_inputs(), enabled_precisions={torch.float32},
                                  cuda_graphs=False)
        result: dict[str, Any] = {}
        for b in [int(v) for v in args.batches.split(",")]:
            x = case.make_inputs(b, torch.device("cuda"), seed=b)[0]
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            eager = _kernels(model, x)
            ours = _kernels(compiled, x)
            result[str(b)] = {"flexrt": ours, "eager_tf32": eager,
                              "flexrt_total_us": round(sum(ours.values()), 2), "eager_total_us": round(sum(eager.values()), 2)}
            print(f"batch {b}: flexrt {result[str(b)]['flexrt_total_us']} us {ours}\n         eager tf32 "
                  f"{result[str(b)]['eager_total_us']} us {eager}", flush=True)
    if args.out:
        save_json(result, args.out, "seed_kernels.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
