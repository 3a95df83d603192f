"""Where the seed model's small batches spend a call: flexrt (CUDA graphs on) against eager captured
in a CUDA graph with TF32 (the benchmark's best peer there), per batch, three ways:
the benchmark's way (events around each call, the host issuing as it goes), the GPU alone (the
stream held back by a sleep kernel so the host has queued every call before the GPU starts: what
the graphs cost on the device), and the host alone (wall time per call, the GPU never waited for).

    python -m research.probes.seed_floor [--batches 1,3,8] [--optimization-levels 3] [--out DIR]

`--optimization-levels 3,5`: flexrt built at each level (4: Inductor's max-autotune, which times
Triton GEMM templates against cuBLAS at the profile's opt shape; 5: plus coordinate descent).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

import flexrt
from benchmarks.models import get_case
from benchmarks.peers import EagerCudaGraphTf32
from benchmarks.report import save_json


def _per_call_events(fn: Any, x: tuple[torch.Tensor, ...], n: int, held_back: bool) -> float:
    """Median microseconds between events around each call; with `held_back`, the GPU starts only
    after the host queued all n calls (a sleep kernel first)."""
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    torch.cuda.synchronize()
    if held_back:
        torch.cuda._sleep(int(2e7))  # ~10 ms at H200 clocks: longer than queueing n calls
    for i in range(n):
        starts[i].record()
        fn(x)
        ends[i].record()
    torch.cuda.synchronize()
    return round(statistics.median(s.elapsed_time(e) * 1000 for s, e in zip(starts, ends)), 2)


def _host_us(fn: Any, x: tuple[torch.Tensor, ...], n: int) -> float:
    """Host microseconds per call with the GPU held back (the host never waits for it)."""
    torch.cuda.synchronize()
    torch.cuda._sleep(int(2e7))
    t = time.perf_counter()
    for _ in range(n):
        fn(x)
    host = (time.perf_counter() - t) * 1e6 / n
    torch.cuda.synchronize()
    return round(host, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,3,8")
    parser.add_argument("--optimization-levels", default="3")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    case = get_case("expand_reshape", False)
    torch.manual_seed(0)
    model = case.build().eval().cuda()
    device = torch.device("cuda")
    result: dict[str, Any] = {}
    with torch.no_grad():
        calls: dict[str, Any] = {}
        for level in [int(v) for v in args.optimization_levels.split(",")]:
            started = time.perf_counter()
            calls[f"flexrt_o{level}"] = flexrt.compile(model, ir="dynamo", arg_inputs=case.flexrt_inputs(),
                                                       enabled_precisions={torch.float32}, optimization_level=level)
            result[f"build_s_o{level}"] = round(time.perf_counter() - started, 1)
        peer = EagerCudaGraphTf32(case, model, device, "/tmp")
        peer.setup()
        calls["eager_cudagraph_tf32"] = peer
        for b in [int(v) for v in args.batches.split(",")]:
            x = case.make_inputs(b, device, seed=b)
            row: dict[str, Any] = {}
            for name, call in calls.items():
                fn = call if isinstance(call, EagerCudaGraphTf32) else (lambda x, m=call: m(*x))
                for _ in range(20):
                    out = fn(x)
                torch.testing.assert_close(out, model(*x), rtol=2e-3, atol=2e-3)
                del out
                row[name] = {"bench_us": _per_call_events(fn, x, 200, False),
                             "gpu_us": _per_call_events(fn, x, 200, True),
                             "host_us": _host_us(fn, x, 200)}
            result[str(b)] = row
            print(b, row, flush=True)
        peer.close()
    if args.out:
        save_json(result, args.out, "seed_floor.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
