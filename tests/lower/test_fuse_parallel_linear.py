"""Linear layers that read one tensor merged into one wider product (CUDA engines); the rewrite
is checked on CPU against eager, the engine on the GPU."""

from __future__ import annotations

import logging

import pytest
import torch
from helpers import CUDA_SETTINGS, sweep
from models import SelfAttention

import flexrt
from flexrt.lower.fuse_parallel_linear import fuse_parallel_linear
from flexrt.settings import build_settings

aten = torch.ops.aten


def _graph(model: torch.nn.Module, dim: int = 64) -> torch.fx.GraphModule:
    x = torch.randn(2, 8, dim)
    dims = {0: torch.export.Dim("b", min=1, max=8), 1: torch.export.Dim("s", min=2, max=64)}
    return torch.export.export(model, (x,), dynamic_shapes=(dims,)).module()


def _count(gm: torch.fx.GraphModule, target: object) -> int:
    return sum(1 for n in gm.graph.nodes if n.target is target)


def test_query_key_value_become_one_product_with_the_same_results():
    torch.manual_seed(0)
    model = SelfAttention().eval()
    gm = fuse_parallel_linear(_graph(model), CUDA_SETTINGS)  # the rewrite needs no GPU; the pass is for CUDA engines
    assert _count(gm, aten.linear.default) == 2  # query+key+value, and out
    assert _count(gm, aten.slice.Tensor) == 3
    merged = next(n for n in gm.graph.nodes if n.target is aten.linear.default)
    assert tuple(merged.meta["val"].shape[-1:]) == (192,)
    for shape in ((1, 2, 64), (3, 17, 64), (8, 64, 64)):
        x = torch.randn(shape)
        torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-5)


class _Siblings(torch.nn.Module):
    """Four linear layers on one tensor: `a` and `c` merge (widths may differ), `b` has no bias and
    stays apart, `d` reads the tensor after an in-place write to it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(64, 32), torch.nn.Linear(64, 32, bias=False)
        self.c, self.d = torch.nn.Linear(64, 16), torch.nn.Linear(64, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(x)
        first = self.a(h) + self.b(h)
        c = self.c(h)
        h.mul_(2.0)
        d = self.d(h)
        return torch.cat([first, c, d], dim=-1)


def test_only_siblings_with_the_same_input_and_bias_form_merge():
    torch.manual_seed(0)
    model = _Siblings().eval()
    gm = fuse_parallel_linear(_graph(model), CUDA_SETTINGS)
    assert _count(gm, aten.linear.default) == 3  # a+c, b, d (export gives d the output of mul_)
    assert _count(gm, aten.slice.Tensor) == 2
    x = torch.randn(3, 5, 64)
    torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-5)


def test_no_merge_across_an_in_place_write_to_the_shared_input():
    """A graph where `d` reads the mutated tensor through the original node (as a hand-built or
    other frontend's graph may): merging would move its read before the write."""
    torch.manual_seed(0)
    model = _Siblings().eval()
    gm = _graph(model)
    mul = next(n for n in gm.graph.nodes if n.target is aten.mul_.Tensor)
    d = next(iter(mul.users))
    d.replace_input_with(mul, mul.args[0])
    gm.recompile()
    gm = fuse_parallel_linear(gm, CUDA_SETTINGS)
    assert _count(gm, aten.linear.default) == 3  # a+c merged; d stays after the write
    x = torch.randn(3, 5, 64)
    torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-5)


class _GatedMlp(torch.nn.Module):
    """LLaMA's MLP: gate and up projections without biases on one tensor, then down."""

    def __init__(self, dim: int = 64, hidden: int = 96) -> None:
        super().__init__()
        self.gate = torch.nn.Linear(dim, hidden, bias=False)
        self.up = torch.nn.Linear(dim, hidden, bias=False)
        self.down = torch.nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.silu(self.gate(x)) * self.up(x))


def test_bias_free_siblings_merge_over_dynamic_batch_and_sequence():
    """The merged bias-free `linear` is a composite that calls `matmul`: its value over symbolic
    sizes must be computed as export does (torch 2.11 raised "Cannot call numel() on tensor with
    symbolic sizes/strides" here for the zoo's LLaMA, Qwen2, Mistral and T5)."""
    torch.manual_seed(0)
    model = _GatedMlp().eval()
    gm = fuse_parallel_linear(_graph(model), CUDA_SETTINGS)
    assert _count(gm, aten.linear.default) == 2  # gate+up, and down
    merged = next(n for n in gm.graph.nodes if n.target is aten.linear.default)
    assert tuple(merged.meta["val"].shape[-1:]) == (192,)
    assert all(isinstance(s, torch.SymInt) for s in merged.meta["val"].shape[:2])
    for shape in ((1, 2, 64), (3, 17, 64), (8, 64, 64)):
        x = torch.randn(shape)
        torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-5)


def test_nothing_changes_for_cpu_engines():
    gm = _graph(SelfAttention().eval())
    before = [n.target for n in gm.graph.nodes]
    fuse_parallel_linear(gm, build_settings({}, torch.device("cpu")))
    assert [n.target for n in gm.graph.nodes] == before


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_merged_engine_matches_eager_on_the_gpu(dtype, caplog):
    torch.manual_seed(0)
    model = SelfAttention().eval().to("cuda", dtype)
    spec = flexrt.Input(min_shape=(1, 2, 64), opt_shape=(4, 32, 64), max_shape=(8, 64, 64), dtype=dtype, name="x")
    with caplog.at_level(logging.INFO, logger="flexrt.lower.fuse_parallel_linear"):
        compiled = flexrt.compile(model, inputs=[spec], enabled_precisions={dtype})
    assert "3 linear layers merged" in caplog.text
    for _ in range(3):  # plain runs, captures, CUDA-graph replays
        sweep(compiled, model, [spec], device="cuda", precision=dtype)
