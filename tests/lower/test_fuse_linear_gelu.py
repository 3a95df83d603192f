"""Linear + GELU run as one cuBLASLt GEMM with the GELU in its epilogue (float16/bfloat16 CUDA
engines); the rewrite is checked on CPU against eager, the engine and its accuracy on the GPU."""

from __future__ import annotations

import logging

import pytest
import torch
from helpers import CUDA_SETTINGS, TOLERANCE, rel_err, sweep
from models import PatchMlp

import flexrt
from flexrt.lower.fuse_linear_gelu import fuse_linear_gelu
from flexrt.settings import build_settings
from flexrt.spec import random_tensor

aten = torch.ops.aten


class _Mlp(torch.nn.Module):
    """fc1 -> GELU fuses; fc2's output is read twice (GELU and the residual), so it stays apart."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(64, 256), torch.nn.Linear(256, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc2(torch.nn.functional.gelu(self.fc1(x)))
        return torch.nn.functional.gelu(h) + h


def _graph(model: torch.nn.Module, dtype: torch.dtype) -> torch.fx.GraphModule:
    x = torch.randn(2, 8, 64, dtype=dtype)
    dims = {0: torch.export.Dim("b", min=1, max=8), 1: torch.export.Dim("s", min=2, max=64)}
    return torch.export.export(model.to(dtype), (x,), dynamic_shapes=(dims,)).module()


def _count(gm: torch.fx.GraphModule, target: object) -> int:
    return sum(1 for n in gm.graph.nodes if n.target is target)


@torch.no_grad()
def test_linear_and_gelu_become_one_product_with_the_same_results():
    torch.manual_seed(0)
    model = _Mlp().eval().to(torch.bfloat16)
    gm = fuse_linear_gelu(_graph(model, torch.bfloat16), CUDA_SETTINGS)  # the rewrite needs no GPU
    assert _count(gm, aten._addmm_activation.default) == 1
    assert _count(gm, aten.gelu.default) == 1  # the one after fc2, whose output is also read by the add
    assert _count(gm, aten.linear.default) == 1
    for shape in ((1, 2, 64), (3, 17, 64), (8, 64, 64)):  # both leading dims dynamic
        x = torch.randn(shape, dtype=torch.bfloat16)
        out, ref = gm(x), model(x)
        assert out.shape == ref.shape
        assert rel_err(out, ref) <= TOLERANCE[torch.bfloat16]


@torch.no_grad()
def test_bias_free_layer_and_tanh_gelu_fuse():
    torch.manual_seed(0)
    model = PatchMlp().eval().to(torch.bfloat16)
    x = torch.randn(2, 3, 32, 32, dtype=torch.bfloat16)
    gm = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("b", min=1, max=8)},)).module()
    gm = fuse_linear_gelu(gm, CUDA_SETTINGS)
    assert _count(gm, aten._addmm_activation.default) == 2 and _count(gm, aten.gelu.default) == 0
    for batch in (1, 5):
        x = torch.randn(batch, 3, 32, 32, dtype=torch.bfloat16)
        assert rel_err(gm(x), model(x)) <= TOLERANCE[torch.bfloat16]


def test_float32_and_cpu_engines_keep_the_exact_gelu():
    for dtype, settings in ((torch.float32, CUDA_SETTINGS), (torch.bfloat16, build_settings({}, torch.device("cpu")))):
        gm = _graph(_Mlp().eval(), dtype)
        before = [n.target for n in gm.graph.nodes]
        fuse_linear_gelu(gm, settings)
        assert [n.target for n in gm.graph.nodes] == before


@pytest.mark.cuda
def test_fused_engine_matches_eager_and_is_as_accurate_on_the_gpu(caplog):
    """The epilogue's tanh-form GELU, rounded once, is no further from GELU computed in float32
    than eager float16 is (the reason the rewrite is on for float16 engines)."""
    torch.manual_seed(0)
    model = PatchMlp(dim=64).eval().to("cuda", torch.float16)
    spec = flexrt.Input(min_shape=(1, 3, 32, 32), opt_shape=(4, 3, 32, 32), max_shape=(16, 3, 36, 36), dtype=torch.float16, name="x")
    with caplog.at_level(logging.INFO, logger="flexrt.lower.fuse_linear_gelu"):
        compiled = flexrt.compile(model, inputs=[spec], enabled_precisions={torch.float16})
    assert "2 linear layers run with their GELU in the GEMM epilogue" in caplog.text
    for _ in range(3):  # plain runs, captures, CUDA-graph replays
        sweep(compiled, model, [spec], device="cuda", precision=torch.float16)
    reference = PatchMlp(dim=64).eval().to("cuda")
    reference.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    x = random_tensor((16, 3, 36, 36), torch.float16, "cuda")
    with torch.no_grad():
        exact = reference(x.float())
        ours, eager = rel_err(compiled(x), exact), rel_err(model(x), exact)
    assert ours <= 1.25 * eager, f"flexrt {ours:.2e} vs eager float16 {eager:.2e} from float32"
