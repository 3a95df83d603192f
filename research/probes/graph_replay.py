"""Where a CUDA-graph call's GPU time goes: kernels inside the replay against the gaps between them.

    python -m research.probes.graph_replay --model bert --sizes 8,512 [--out DIR]

For flexrt (its own graphs, as a user calls it) and torch.compile reduce-overhead specialised to
the shape: the benchmark's median latency, then torch.profiler over 20 back-to-back calls (CUDA
graphs on, so kernels are those the replay runs): kernels per call by name, their summed time, and
the GPU span per call (first kernel start to last kernel end, over the 20 calls, divided by 20).
Span minus kernel time is the time the GPU spent between kernels.
"""

from __future__ import annotations

import argparse
import collections
from typing import Any

import torch

import flexrt
from benchmarks import measure, timing
from benchmarks.models import get_case
from benchmarks.report import save_json

ITERS = 20


def profile(fn: Any, inputs: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    with torch.no_grad():
        for _ in range(5):
            fn(*inputs)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(ITERS):
                fn(*inputs)
            torch.cuda.synchronize()
    kernels: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    starts, ends = [], []
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        kernels[e.name][0] += 1
        kernels[e.name][1] += e.time_range.end - e.time_range.start
        starts.append(e.time_range.start)
        ends.append(e.time_range.end)
    per_call = {k: (v[0] / ITERS, v[1] / ITERS) for k, v in kernels.items()}
    busy = sum(us for _, us in per_call.values())
    span = (max(ends) - min(starts)) / ITERS if starts else 0.0
    return {"kernel_us": busy, "span_us": span, "gap_us": span - busy,
            "launches": sum(n for n, _ in per_call.values()), "kernels": per_call}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="bert")
    parser.add_argument("--sizes", default="8")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    dev = torch.device("cuda")
    case = get_case(args.model, False)
    torch.manual_seed(0)
    model = case.build().eval().to(device=dev, dtype=case.dtype)
    sizes = [int(s) for s in args.sizes.split(",")]
    rotations, _ = measure.make_plan_data(case, model, sizes, dev, 3)
    peers: dict[str, Any] = {
        "flexrt": flexrt.compile(model, ir="dynamo", inputs=case.flexrt_inputs(), enabled_precisions={case.dtype}),
        "torch_compile_ro": torch.compile(model, mode="reduce-overhead", dynamic=False),
    }
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(dev), "torch": torch.__version__, "sizes": {}}
    for size in sizes:
        rows = {}
        for name, fn in peers.items():
            with torch.no_grad():
                stats = timing.time_calls(lambda inputs, fn=fn: fn(*inputs), rotations[size], dev, 10, 50)
            rows[name] = {"median_ms": stats["median_ms"], **profile(fn, rotations[size][0])}
            r = rows[name]
            print(f"size {size} {name}: median {r['median_ms'] * 1e3:.1f} us; GPU span {r['span_us']:.1f} us/call = "
                  f"kernels {r['kernel_us']:.1f} + gaps {r['gap_us']:.1f} ({r['launches']:.0f} launches)", flush=True)
            for k, (n, us) in sorted(r["kernels"].items(), key=lambda kv: -kv[1][1])[:16]:
                print(f"    {us:8.1f} us x{n:<5.1f} {k[:100]}")
        report["sizes"][str(size)] = rows
    if args.out:
        save_json(report, args.out, f"graph_replay_{args.model}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
