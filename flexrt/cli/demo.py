"""`flexrt demo`: the README's main job, and a check that an install works.

Compile the seed's ExpandReshapeModel once for batch 1..N, then run shapes across the range: each
output checked against eager, latency of both."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch
import torch.nn as nn
from rich.table import Table
from torch.utils import benchmark

import flexrt
from flexrt.console import make_console
from flexrt.tf32 import TF32_TOLERANCE

logger = logging.getLogger(__name__)


class ExpandReshapeModel(nn.Module):
    """The model of seed 002 (Torch-TensorRT's compile_with_dynamic_inputs example)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim))
        self.embed_dim = embed_dim
        self.qkv_proj = nn.Linear(self.embed_dim, self.embed_dim * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_size = x.shape[0]
        cls_token = self.cls_token.expand(batch_size, -1, -1)
        x = torch.cat([cls_token, x], dim=1)
        x = self.qkv_proj(x)
        return x.reshape(batch_size, x.size(1), 3, 12, -1)


def median_ms(fn: Callable[[], object]) -> float:
    """Median latency in ms; torch.utils.benchmark warms up and synchronises CUDA around each run."""
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=0.2).median * 1e3


def run(device: str | None = None, max_batch: int = 32, embed_dim: int = 768, tokens: int = 196) -> list[dict[str, float]]:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    console = make_console()
    torch.manual_seed(0)
    model = ExpandReshapeModel(embed_dim).eval().to(dev)
    spec = flexrt.Input(
        min_shape=(1, tokens, embed_dim), opt_shape=(min(8, max_batch), tokens, embed_dim),
        max_shape=(max_batch, tokens, embed_dim), dtype=torch.float32, name="x",
    )
    console.print(f"compiling ExpandReshapeModel(embed_dim={embed_dim}) for {spec} on {dev} ...")
    start = time.perf_counter()
    compiled = flexrt.compile(model, ir="dynamo", inputs=[spec])
    compile_s = time.perf_counter() - start
    batches = sorted({1, 2, 3, max_batch // 4 or 1, max_batch // 2 or 1, max_batch - 3 if max_batch > 4 else max_batch, max_batch})
    # float32 engines on CUDA use TF32 (flexrt's default, as TensorRT's)
    tolerance = TF32_TOLERANCE if dev.type == "cuda" else 1e-4
    table = Table(title=f"flexrt demo on {dev} (compiled once in {compile_s:.1f} s; no recompilation below)")
    for col in ("input shape", "output shape", "rel. error vs eager", "eager ms", "flexrt ms", "speed-up"):
        table.add_column(col, justify="right")
    rows = []
    with torch.no_grad():
        for b in batches:
            x = torch.randn(b, tokens, embed_dim, device=dev)
            out, ref = compiled(x), model(x)
            err = float((out - ref).norm() / ref.norm())
            if out.shape != ref.shape or not err < tolerance:
                raise flexrt.errors.FlexrtError(f"batch {b}: output differs from eager (relative error {err:.2e})")
            eager_ms = median_ms(lambda x=x: model(x))
            flexrt_ms = median_ms(lambda x=x: compiled(x))
            rows.append({"batch": b, "rel_err": err, "eager_ms": eager_ms, "flexrt_ms": flexrt_ms})
            table.add_row(str(tuple(x.shape)), str(tuple(out.shape)), f"{err:.1e}", f"{eager_ms:.3f}", f"{flexrt_ms:.3f}",
                          f"{eager_ms / flexrt_ms:.2f}x")
    console.print(table)
    tf32 = ", TF32 on CUDA" if dev.type == "cuda" else ""
    console.print(f"every output matched eager PyTorch (relative error < {tolerance:g}{tf32})")
    return rows
