"""Would cuBLASLt's GELU epilogue beat Inductor's GEMM + separate GELU kernel, and by how much?

    python -m research.probes.gelu_epilogue [--shapes 4096x768x3072,...]

For each (M, K, N) in float16: Inductor's static compile of `gelu(linear(x, w, b))` (cuBLAS GEMM with
the bias in its epilogue, then a Triton GELU kernel), `torch._addmm_activation(b, x, w.t(),
use_gelu=True)` (one cuBLASLt GEMM with the bias and GELU's tanh form in its epilogue), and the
linear alone (the floor for both). Each is replayed in a CUDA graph of 20 calls (GPU time only).
Error: max |difference| from GELU(linear) computed in float32 from the same float16 inputs, beside
the error of eager float16 itself.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.report import save_json

# BERT-base batch 8 at seq 8/128/512; ViT-B/16 at batch 1/16/64 (197 tokens each).
DEFAULT_SHAPES = "64x768x3072,1024x768x3072,4096x768x3072,197x768x3072,3152x768x3072,12608x768x3072"


def graph_us(fn: Callable[[], torch.Tensor], reps: int = 20, rounds: int = 15) -> float:
    """Median GPU microseconds per call, from replays of a CUDA graph holding `reps` calls."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    for _ in range(3):
        graph.replay()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / reps)
    return sorted(times)[len(times) // 2]


def measure(m: int, k: int, n: int) -> dict[str, Any]:
    """Time and error of each variant at one GEMM shape."""
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    w = torch.randn(n, k, device="cuda", dtype=torch.float16) / k**0.5
    b = torch.randn(n, device="cuda", dtype=torch.float16) * 0.1
    torch._dynamo.reset()
    variants: dict[str, Callable[[], torch.Tensor]] = {
        "inductor_linear_then_gelu": torch.compile(lambda: F.gelu(F.linear(x, w, b)), dynamic=False),
        "lt_gelu_epilogue": lambda: torch._addmm_activation(b, x, w.t(), use_gelu=True),
        "linear_only": lambda: F.linear(x, w, b),
    }
    ref = F.gelu(F.linear(x.float(), w.float(), b.float()))
    row: dict[str, Any] = {}
    with torch.no_grad():
        for name, fn in variants.items():
            out = fn()
            row[name] = {"us": graph_us(fn)}
            if name != "linear_only":
                row[name].update(errors(out, ref))
        row["eager_fp16"] = errors(F.gelu(F.linear(x, w, b)), ref)
    return row


def errors(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Max absolute and relative-norm error of `out` against the float32 reference."""
    diff = out.float() - ref
    return {"max_abs_err": diff.abs().max().item(), "rel_err": (diff.norm() / ref.norm()).item()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", default=DEFAULT_SHAPES)
    parser.add_argument("--out", default="/tmp/gelu_epilogue")
    args = parser.parse_args()
    torch.manual_seed(0)
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "shapes": {}}
    for spec in args.shapes.split(","):
        m, k, n = (int(v) for v in spec.split("x"))
        report["shapes"][spec] = row = measure(m, k, n)
        print(spec, {k: {kk: round(vv, 6) for kk, vv in v.items()} for k, v in row.items()}, flush=True)
    save_json(report, args.out, "gelu_epilogue.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
