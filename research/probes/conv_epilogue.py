"""Would cuDNN's fused convolution epilogues beat Inductor's conv + fused pointwise kernel?

    python -m research.probes.conv_epilogue

ResNet-50 at large batches moves each activation several times: the convolution writes it, a
pointwise kernel (bias/BN, residual add, ReLU) reads and writes it again. TensorRT fuses that
epilogue into the convolution. PyTorch exposes cuDNN's fused forms as
`torch.cudnn_convolution_relu` and `torch.cudnn_convolution_add_relu`. Per ResNet-50 layer shape
at batch 128, fp16, channels-last: Inductor's conv + epilogue (torch.compile, static) against the
cuDNN fused op, median of CUDA-event timings of CUDA-graph replays, and the max difference of their
outputs from eager.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchmarks.timing import median_ms

# (name, in_ch, out_ch, kernel, stride, spatial) — the ResNet-50 bottleneck convolutions
LAYERS = [
    ("s1_1x1_reduce", 256, 64, 1, 1, 56),
    ("s1_3x3", 64, 64, 3, 1, 56),
    ("s1_1x1_expand", 64, 256, 1, 1, 56),
    ("s2_3x3", 128, 128, 3, 1, 28),
    ("s3_3x3", 256, 256, 3, 1, 14),
    ("s3_1x1_expand", 256, 1024, 1, 1, 14),
    ("s4_3x3", 512, 512, 3, 1, 7),
]


def graph_ms(fn: Callable[[], object], reps: int = 50) -> float:
    """Median latency of replaying `fn` captured in a CUDA graph: GPU time only, no per-call host
    overhead (tens of microseconds on the lent host for a torch.compile'd function, which would
    swamp the small layers)."""
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return median_ms(graph.replay, torch.device("cuda"), reps, warmup=5)


def variants(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, z: torch.Tensor, stride: int, pad: int) -> list:
    """(label, function, eager reference) for conv+bias+relu and conv+bias+add+relu, both ways."""

    def relu_ref() -> torch.Tensor:
        return F.relu(F.conv2d(x, w, bias, stride, pad))

    def add_relu_ref() -> torch.Tensor:
        return F.relu(F.conv2d(x, w, bias, stride, pad) + z)

    def cudnn_relu() -> torch.Tensor:
        return torch.cudnn_convolution_relu(x, w, bias, (stride, stride), (pad, pad), (1, 1), 1)

    def cudnn_add_relu() -> torch.Tensor:
        return torch.cudnn_convolution_add_relu(x, w, z, 1.0, bias, (stride, stride), (pad, pad), (1, 1), 1)

    return [
        ("relu_inductor", torch.compile(relu_ref, dynamic=False), relu_ref),
        ("relu_cudnn_fused", cudnn_relu, relu_ref),
        ("add_relu_inductor", torch.compile(add_relu_ref, dynamic=False), add_relu_ref),
        ("add_relu_cudnn_fused", cudnn_add_relu, add_relu_ref),
    ]


def main() -> int:
    torch.manual_seed(0)
    dev, dt, batch = torch.device("cuda"), torch.float16, int(os.environ.get("BATCH", "128"))
    torch.backends.cudnn.benchmark = True
    rows = []
    for name, cin, cout, k, stride, hw in LAYERS:
        x = torch.randn(batch, cin, hw, hw, device=dev, dtype=dt).to(memory_format=torch.channels_last)
        w = (torch.randn(cout, cin, k, k, device=dev, dtype=dt) * (2 / (cin * k * k)) ** 0.5).to(memory_format=torch.channels_last)
        bias = torch.randn(cout, device=dev, dtype=dt) * 0.1
        pad = k // 2
        z = torch.randn(batch, cout, hw // stride, hw // stride, device=dev, dtype=dt).to(memory_format=torch.channels_last)

        fns = variants(x, w, bias, z, stride, pad)
        with torch.no_grad():
            row = {"layer": name, "batch": batch}
            for label, fn, ref in fns:
                try:
                    out, expect = fn(), ref()
                    row[label] = graph_ms(fn)
                    row[label + "_maxdiff"] = float((out.float() - expect.float()).abs().max())
                except Exception as e:  # noqa: BLE001 - a probe reports what fails
                    row[label] = f"error: {type(e).__name__}: {str(e)[:200]}"
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "conv_epilogue.json"), "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
