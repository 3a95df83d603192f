"""A float32 model compiled with enabled_precisions={torch.float16} (Torch-TensorRT's usual way):
weights and inputs go to float16, outputs come back in float32, and a cast the model wrote stays."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import flexrt

In = flexrt.Input


class Positions(nn.Module):
    """BART's pattern: positions cast to the embeddings' dtype, traced as `.to(float32)`, then a
    LayerNorm; LLaMA's: an RMSNorm computed in float32 and returned in its input's dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(100, 32)
        self.pos = nn.Embedding(64, 32)
        self.norm = nn.LayerNorm(32)
        self.rms_weight = nn.Parameter(torch.rand(32) + 0.5)
        self.proj = nn.Linear(32, 16, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.tok(ids)
        positions = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        h = self.norm(h + self.pos(positions).to(h.dtype))
        dtype = h.dtype
        h32 = h.to(torch.float32)
        h32 = h32 * torch.rsqrt(h32.pow(2).mean(-1, keepdim=True) + 1e-6)
        return self.proj(self.rms_weight * h32.to(dtype))


@pytest.mark.parametrize("precision", [torch.float16, torch.bfloat16])
def test_model_casts_meet_converted_weights_in_the_engine_dtype(precision: torch.dtype) -> None:
    """Before: `mixed dtype (CPU): expect parameter to have scalar type of Float` at build (BART), as
    the kept `.to(float32)` fed float32 into a LayerNorm whose weights were now in `precision`."""
    torch.manual_seed(0)
    model = Positions().eval()
    spec = In((1, 4), (2, 16), (4, 64), dtype=torch.int64, tensor_domain=(0, 100))
    compiled = flexrt.compile(model, inputs=[spec], enabled_precisions={precision})
    for shape in [(1, 4), (2, 16), (3, 40), (4, 64)]:
        ids = torch.randint(0, 100, shape)
        with torch.no_grad():
            out, ref = compiled(ids), model(ids)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, ref, rtol=5e-2, atol=5e-2, msg=f"shape {shape}")


class MaskFill(nn.Module):
    """DeBERTa-v2's pattern: the fill value of a mask is the traced dtype's minimum."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        scores = self.lin(x)
        scores = scores.masked_fill(keep == 0, torch.finfo(scores.dtype).min)
        return scores.softmax(-1)


def test_fill_values_beyond_the_engine_dtype_become_its_extremes() -> None:
    """Before: `value cannot be converted to type c10::Half without overflow` (-3.4e38 into float16)."""
    torch.manual_seed(0)
    model = MaskFill().eval()
    specs = [In((1, 16), (4, 16), (8, 16)), In((1, 16), (4, 16), (8, 16), dtype=torch.int64)]
    compiled = flexrt.compile(model, inputs=specs, enabled_precisions={torch.float16})
    for batch in (1, 3, 8):
        x, keep = torch.randn(batch, 16), (torch.rand(batch, 16) > 0.3).long()
        keep[:, 0] = 1  # at least one kept column per row
        with torch.no_grad():
            torch.testing.assert_close(compiled(x, keep), model(x, keep), rtol=2e-2, atol=2e-3)
