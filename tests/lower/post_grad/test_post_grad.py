"""flexrt's passes on Inductor's post-grad graph (every engine): identical pure computations
merged, and one buffer for an attention mask that several cuDNN attention calls read; the graph
rewrites, what they must leave alone, and an engine whose attention layers share one mask."""

from __future__ import annotations

import pytest
import torch
from helpers import compile_masked_attention, sweep
from torch._inductor import inductor_prims

from flexrt.lower.post_grad.attention_masks import realize_shared_attention_masks
from flexrt.lower.post_grad.cse import merge_common_subexpressions
from flexrt.lower.post_grad.pipeline import POST_GRAD_PASSES, PostGradPasses
from flexrt.settings import build_settings

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


def test_shared_attention_mask_is_realized_once_for_its_readers():
    g = torch.fx.Graph()
    q, k, v, shared, own = (g.placeholder(name) for name in ("q", "k", "v", "shared", "own"))
    shared.meta["val"] = torch.empty(2, 1, 5, 5)
    own.meta["val"] = torch.empty(2, 1, 5, 5)
    cudnn = aten._scaled_dot_product_cudnn_attention.default
    calls = [g.call_function(cudnn, (q, k, v, mask, False)) for mask in (shared, shared, own)]
    g.output(tuple(calls))
    assert realize_shared_attention_masks(g) == 1
    forced = [n for n in g.nodes if n.target is inductor_prims.force_stride_order]
    assert len(forced) == 1 and forced[0].args == (shared, [25, 25, 5, 1])
    assert [c.args[3] for c in calls] == [forced[0], forced[0], own]  # a mask read once stays as it is
    g.lint()


def test_pass_identity_is_stable_for_the_caches():
    assert repr(PostGradPasses(build_settings({}))) == repr(PostGradPasses(build_settings({})))
    assert PostGradPasses(build_settings({})).uuid() == PostGradPasses(build_settings({})).uuid()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_engine_with_a_shared_mask_merges_and_matches_eager(device, caplog):
    model, specs, dtype, compiled = compile_masked_attention(False, 16, device, caplog)
    assert "merge_common_subexpressions made" in caplog.text
    if device == "cuda":  # SDPA runs as cuDNN attention there, both layers on the one mask
        assert "realize_shared_attention_masks made 1 rewrites" in caplog.text
    sweep(compiled, model, specs, device=device, precision=dtype)


def test_a_disabled_pass_is_left_out_and_changes_the_identity():
    full = PostGradPasses(build_settings({}))
    without = PostGradPasses(build_settings({"_disabled_passes": {"broadcast_row_masks"}}))
    assert [p.__name__ for p in full.passes] == [p.__name__ for p in POST_GRAD_PASSES]
    assert "broadcast_row_masks" not in [p.__name__ for p in without.passes]
    assert len(without.passes) == len(full.passes) - 1
    assert full.uuid() != without.uuid()
