"""The engine cache key covers what changes an engine: the graph, every range, the weights, the
settings and the versions (Torch-TensorRT once shipped a cache that ignored ranges, its #3148)."""

from __future__ import annotations

import torch

from flexrt.build.inductor import SymbolRange, engine_key, export_segment
from flexrt.settings import build_settings


class _Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


def _key(model: torch.nn.Module, lo: int, hi: int, **options: object) -> str:
    gm = torch.export.export(model, (torch.randn(4, 8),), dynamic_shapes=({0: torch.export.Dim("b", min=1, max=64)},)).module()
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    symbol = placeholder.meta["val"].shape[0].node.expr
    ep = export_segment(gm, [torch.randn(4, 8)], {symbol: SymbolRange(lo, 4, hi)})
    return engine_key(ep, build_settings({"device": "cpu", **options}))


def test_same_model_range_and_settings_give_the_same_key():
    torch.manual_seed(0)
    model = _Mlp()
    assert _key(model, 1, 16) == _key(model, 1, 16)


def test_ranges_weights_and_settings_each_change_the_key():
    torch.manual_seed(0)
    model = _Mlp()
    base = _key(model, 1, 16)
    assert _key(model, 1, 32) != base  # another max
    assert _key(model, 2, 16) != base  # another min
    assert _key(model, 1, 16, optimization_level=4) != base
    assert _key(model, 1, 16, _disabled_passes={"merge_common_subexpressions"}) != base
    other = _Mlp()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        other.fc.weight[0, 0] += 1.0
    assert _key(other, 1, 16) != base  # one weight changed
