"""enabled_precisions: engines compute in fp16/bf16 and return the model's own dtypes."""

from __future__ import annotations

import pytest
import torch
from helpers import rel_err, sweep

import flexrt


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 16)).eval()


@pytest.mark.parametrize("precision", [torch.float16, torch.bfloat16])
def test_reduced_precision_engine_returns_model_dtype(precision):
    model = _mlp()
    spec = flexrt.Input(min_shape=(1, 32), opt_shape=(8, 32), max_shape=(16, 32), dtype=torch.float32, name="x")
    m = flexrt.compile(model, inputs=[spec], enabled_precisions={precision})
    sweep(m, model, [spec], precision=precision)
    out = m(torch.randn(3, 32))
    assert out.dtype == torch.float32
    # the engine really computes in reduced precision: its weights are, and it is not fp32-exact
    assert {p.dtype for p in m.fallback.graph_module.parameters()} | {b.dtype for b in m.fallback.graph_module.buffers()} == {precision}
    x = torch.randn(16, 32)
    with torch.no_grad():
        assert rel_err(m(x), model(x)) > 1e-5
