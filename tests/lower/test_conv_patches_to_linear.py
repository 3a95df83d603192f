"""Patch-embedding convolutions (kernel == stride, few input channels) run as one matrix product
(CUDA engines); the rewrite is checked on CPU against eager, the engine on the GPU."""

from __future__ import annotations

import logging

import pytest
import torch
from helpers import CUDA_SETTINGS, sweep
from models import PatchMlp

import flexrt
from flexrt.lower.conv_patches_to_linear import conv_patches_to_linear
from flexrt.settings import build_settings

aten = torch.ops.aten


class _Convs(torch.nn.Module):
    """One patch convolution whose output is viewed flat (so the rewrite must give it the
    convolution's contiguous layout), and convolutions that stay: 16 input channels, overlapping
    windows, padding, a 1x1 kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = torch.nn.Conv2d(3, 16, 4, stride=4)
        self.wide = torch.nn.Conv2d(16, 16, 2, stride=2)
        self.overlap = torch.nn.Conv2d(3, 8, 4, stride=2)
        self.padded = torch.nn.Conv2d(3, 8, 4, stride=4, padding=1)
        self.point = torch.nn.Conv2d(3, 8, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p = self.patch(x)
        return p.view(p.shape[0], -1), self.wide(p), self.overlap(x), self.padded(x), self.point(x)


def _graph(model: torch.nn.Module, size: int = 18) -> torch.fx.GraphModule:
    x = torch.randn(2, 3, size, size)
    return torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("b", min=1, max=8)},)).module()


def test_patch_convolution_becomes_a_product_with_the_same_results():
    torch.manual_seed(0)
    model = _Convs().eval()
    gm = conv_patches_to_linear(_graph(model), CUDA_SETTINGS)  # the rewrite needs no GPU
    assert sum(1 for n in gm.graph.nodes if n.target is aten.conv2d.default) == 4
    assert sum(1 for n in gm.graph.nodes if n.target is aten.linear.default) == 1
    for batch in (1, 3, 8):  # 18x18 is cropped to 16x16, as the convolution does
        x = torch.randn(batch, 3, 18, 18)
        for out, ref in zip(gm(x), model(x)):
            assert out.shape == ref.shape and out.is_contiguous()
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_nothing_changes_for_cpu_engines():
    gm = _graph(_Convs().eval())
    before = [n.target for n in gm.graph.nodes]
    conv_patches_to_linear(gm, build_settings({}, torch.device("cpu")))
    assert [n.target for n in gm.graph.nodes] == before


def test_dynamic_spatial_sizes_keep_the_convolution():
    x = torch.randn(2, 3, 16, 16)
    dims = {0: torch.export.Dim("b", min=1, max=8), 2: torch.export.Dim("h", min=8, max=64)}
    gm = torch.export.export(torch.nn.Conv2d(3, 16, 4, stride=4).eval(), (x,), dynamic_shapes=(dims,)).module()
    conv_patches_to_linear(gm, CUDA_SETTINGS)
    assert any(n.target is aten.conv2d.default for n in gm.graph.nodes)


@pytest.mark.cuda
def test_patch_engine_matches_eager_on_the_gpu(caplog):
    torch.manual_seed(0)
    model = PatchMlp().eval().to("cuda", torch.float16)
    spec = flexrt.Input(min_shape=(1, 3, 36, 36), opt_shape=(4, 3, 36, 36), max_shape=(16, 3, 36, 36), dtype=torch.float16, name="x")
    with caplog.at_level(logging.INFO, logger="flexrt.lower.conv_patches_to_linear"):
        compiled = flexrt.compile(model, inputs=[spec], enabled_precisions={torch.float16})
    assert "1 patch convolutions run as matrix products" in caplog.text
    for _ in range(3):  # plain runs, captures, CUDA-graph replays
        sweep(compiled, model, [spec], device="cuda", precision=torch.float16)
