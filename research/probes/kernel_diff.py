"""Which GPU kernels differ between flexrt's dynamic engine and torch.compile specialised to one shape.

    python -m research.probes.kernel_diff --model bert --sizes 8,512 [--smoke]

For each size: the kernels of one call (torch.profiler, CUDA graphs off so every kernel shows),
summed by name, for flexrt (one engine over the case's whole range) and for torch.compile with
static shapes (what reduce-overhead replays). Prints both lists and the per-call totals, so a
latency gap can be pinned on the kernels that cause it.
"""

from __future__ import annotations

import argparse
import collections
import time
from typing import Any

import torch

import flexrt
from benchmarks.models import get_case
from benchmarks.report import save_json

CUDA = torch.cuda.is_available()
ACTIVITY = torch.profiler.ProfilerActivity.CUDA if CUDA else torch.profiler.ProfilerActivity.CPU
DEVICE_TYPE = torch.autograd.DeviceType.CUDA if CUDA else torch.autograd.DeviceType.CPU


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def kernels(fn: Any, inputs: tuple[torch.Tensor, ...], iters: int = 10) -> tuple[dict[str, tuple[int, float]], float]:
    """Kernel name -> (launches per call, microseconds per call), and the median wall latency (synchronised) in ms."""
    with torch.no_grad():
        for _ in range(5):
            fn(*inputs)
        sync()
        times = []
        for _ in range(20):
            start = time.perf_counter()
            fn(*inputs)
            sync()
            times.append((time.perf_counter() - start) * 1e3)
        with torch.profiler.profile(activities=[ACTIVITY]) as prof:
            for _ in range(iters):
                fn(*inputs)
            sync()
    acc: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for e in prof.events():
        if e.device_type == DEVICE_TYPE:
            acc[e.name][0] += 1
            acc[e.name][1] += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
    return {k: (v[0] // iters, v[1] / iters) for k, v in acc.items()}, sorted(times)[len(times) // 2]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="bert")
    parser.add_argument("--sizes", default="")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default="/tmp/kernel_diff")
    args = parser.parse_args()
    case = get_case(args.model, args.smoke)
    dev = torch.device("cuda" if CUDA else "cpu")
    model = case.build().to(case.dtype).eval().to(dev)
    t = time.perf_counter()
    ours = flexrt.compile(model, ir="dynamo", inputs=case.flexrt_inputs(), enabled_precisions={case.dtype}, cuda_graphs=False)
    print(f"flexrt compile {time.perf_counter() - t:.1f} s", flush=True)
    report: dict[str, Any] = {}
    for size in [int(s) for s in args.sizes.split(",")] if args.sizes else [case.lo, case.hi]:
        inputs = case.make_inputs(size, dev, seed=3)
        torch._dynamo.reset()
        static = torch.compile(model, dynamic=False)
        rows = {}
        for name, fn in (("flexrt", ours), ("torch_compile_static", static)):
            ks, ms = kernels(fn, inputs)
            rows[name] = {"latency_ms": ms, "kernels": ks}
            print(f"\n== size {size} {name}: {ms:.3f} ms, {sum(n for n, _ in ks.values())} launches, "
                  f"{sum(us for _, us in ks.values()):.1f} us kernel time per call")
            for k, (n, us) in sorted(ks.items(), key=lambda kv: -kv[1][1])[:25]:
                print(f"  {us:8.1f} us  x{n:<3d} {k[:110]}")
        report[str(size)] = rows
    save_json(report, args.out, f"kernel_diff_{args.model}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
