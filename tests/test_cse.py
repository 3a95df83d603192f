"""Identical pure computations merged in Inductor's graph (every engine): the graph rewrite, the
ops it must leave alone, and an engine whose attention layers share one boolean mask."""

from __future__ import annotations

import logging

import torch
from helpers import sweep

import flexrt
from flexrt.engine.cse import CommonSubexpressions, merge_common_subexpressions

aten = torch.ops.aten


def _graph() -> tuple[torch.fx.Graph, dict[str, torch.fx.Node]]:
    g = torch.fx.Graph()
    x, m = g.placeholder("x"), g.placeholder("m")
    n = {}
    for name, value in (("zero", 0.0), ("zero_again", 0.0), ("neg_zero", -0.0), ("one", 1.0), ("true", True)):
        n[name] = g.call_function(aten.full.default, ([], value), {"dtype": torch.float32})
    n["where"] = g.call_function(aten.where.self, (m, n["zero"], x))
    n["where_again"] = g.call_function(aten.where.self, (m, n["zero_again"], x))
    n["rand"] = g.call_function(aten.rand_like.default, (x,))
    n["rand_again"] = g.call_function(aten.rand_like.default, (x,))
    n["empty"] = g.call_function(aten.empty.memory_format, ([2],), {"dtype": torch.float32})
    n["empty_again"] = g.call_function(aten.empty.memory_format, ([2],), {"dtype": torch.float32})
    n["add_"] = g.call_function(aten.add_.Tensor, (x, n["one"]))
    n["add_again"] = g.call_function(aten.add_.Tensor, (x, n["one"]))
    g.output(tuple(n.values()))
    return g, n


def test_pure_duplicates_merge_and_nothing_else_does():
    g, n = _graph()
    assert merge_common_subexpressions(g) == 2  # zero_again, then where_again (now the same call)
    outputs = next(node for node in g.nodes if node.op == "output").args[0]
    by_name = dict(zip(n, outputs))
    assert by_name["zero_again"] is n["zero"] and by_name["where_again"] is n["where"]
    assert by_name["neg_zero"] is n["neg_zero"]  # -0.0 == 0.0 in Python, not as a tensor's sign
    assert by_name["true"] is n["true"] and by_name["one"] is n["one"]  # True == 1.0, other dtype
    for name in ("rand_again", "empty_again", "add_again"):  # random, uninitialised, in place
        assert by_name[name] is n[name]
    g.lint()


def test_pass_identity_is_stable_for_the_caches():
    assert repr(CommonSubexpressions()) == repr(CommonSubexpressions())
    assert CommonSubexpressions().uuid() == CommonSubexpressions().uuid()


class _TwoAttentions(torch.nn.Module):
    """Two attention layers reading one boolean padding mask, as BERT's layers do (the first key
    always kept, so no row is fully masked whatever the random mask)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(32, 96), torch.nn.Linear(32, 96)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        first = torch.arange(mask.shape[1], device=mask.device) == 0
        keep = (mask.bool() | first)[:, None, None, :]
        out = x
        for proj in (self.a, self.b):
            q, k, v = proj(out).view(x.shape[0], x.shape[1], 3, 2, 16).permute(2, 0, 3, 1, 4)
            out = out + torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(1, 2).reshape(x.shape)
        return out


def test_engine_with_a_shared_mask_merges_and_matches_eager(caplog):
    torch.manual_seed(0)
    model = _TwoAttentions().eval()
    specs = [
        flexrt.Input(min_shape=(1, 2, 32), opt_shape=(2, 8, 32), max_shape=(4, 16, 32), name="x"),
        flexrt.Input(min_shape=(1, 2), opt_shape=(2, 8), max_shape=(4, 16), dtype=torch.int64, name="mask"),
    ]
    with caplog.at_level(logging.DEBUG, logger="flexrt.engine.cse"):
        compiled = flexrt.compile(model, inputs=specs)
    assert "duplicate nodes merged" in caplog.text
    sweep(compiled, model, specs)
