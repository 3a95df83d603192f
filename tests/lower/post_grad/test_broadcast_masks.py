"""A row-constant attention mask handed to cuDNN attention as one padded row expanded over the
queries (`flexrt/lower/post_grad/broadcast_masks.py`): which masks the graph proves row-constant, that the
rewritten graph gives attention the same mask at every sequence length, and an engine whose
layers read such a mask, against eager."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pytest
import torch
from helpers import assert_matches, compile_masked_attention, sweep
from models import MaskedAttentionLayers
from torch._inductor import inductor_prims
from torch._inductor.decomposition import select_decomp_table
from torch._inductor.utils import run_and_get_code
from torch.fx.experimental.proxy_tensor import make_fx

from flexrt.lower.post_grad import attention_calls, mask_values
from flexrt.lower.post_grad.attention_masks import realize_shared_attention_masks
from flexrt.lower.post_grad.broadcast_masks import broadcast_row_masks
from flexrt.lower.post_grad.pipeline import PostGradPasses
from flexrt.settings import build_settings

aten = torch.ops.aten
B, H, D = 2, 2, 8


def _hf_padding(mask: torch.Tensor) -> torch.Tensor:
    """HF's encoder mask as its `sdpa_mask` builds it: and(and(True, q_idx >= 0), padding[b, k_idx])."""
    b, s = mask.shape
    q_idx = torch.arange(s).unsqueeze(0).unsqueeze(1).unsqueeze(3)
    b_idx = torch.arange(b).unsqueeze(1).unsqueeze(2).unsqueeze(3)
    k_idx = torch.arange(s).unsqueeze(0).unsqueeze(1).unsqueeze(2)
    return (torch.full((), True) & (q_idx >= 0)) & aten.index.Tensor(mask.bool(), [b_idx, k_idx])


def _causal(mask: torch.Tensor) -> torch.Tensor:
    s = mask.shape[1]
    return torch.arange(s)[None, None, :, None] >= torch.arange(s)[None, None, None, :]


def _first_row_masked(mask: torch.Tensor) -> torch.Tensor:
    """`q_idx >= 1`: looks like HF's query term, but row 0 differs."""
    s = mask.shape[1]
    return (torch.arange(s)[None, None, :, None] >= 1) & mask.bool()[:, None, None, :]


def _trace(keep: Callable[[torch.Tensor], torch.Tensor], s: int = 6) -> torch.fx.GraphModule:
    """Two cuDNN attention calls reading one additive mask, as Inductor's post-grad graph holds
    them (its decompositions, symbolic sizes)."""

    def layers(mask: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        bias = torch.where(keep(mask), torch.full((), 0.0), torch.full((), -math.inf))
        out = aten._scaled_dot_product_cudnn_attention(q, k, v, bias, False)[0]
        return aten._scaled_dot_product_cudnn_attention(out, k, v, bias, False)[0]

    qkv = [torch.randn(B, H, s, D) for _ in range(3)]
    return make_fx(layers, tracing_mode="symbolic", decomposition_table=select_decomp_table())(torch.ones(B, s, dtype=torch.int64), *qkv)


def _masks_attention_reads(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The graph cut down to what it computes for the attention calls' masks (cuDNN cannot run here).
    Inductor's `force_stride_order` goes too: on values it is the identity, and its stride arguments
    are symbolic, for Inductor's lowering, with no code form to run."""
    for node in [n for n in gm.graph.nodes if n.target is inductor_prims.force_stride_order]:
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
    attention = [n for n in gm.graph.nodes if n.target is aten._scaled_dot_product_cudnn_attention.default]
    output = next(n for n in gm.graph.nodes if n.op == "output")
    output.args = (tuple(n.args[3] for n in attention),)
    for node in reversed(attention):  # dead now, but an op with a dropout argument is not pure to FX
        for item in list(node.users):
            gm.graph.erase_node(item)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def test_hf_padding_mask_becomes_a_padded_row_with_the_same_values():
    before, after = _trace(_hf_padding), _trace(_hf_padding)
    assert broadcast_row_masks(after.graph) == 1
    assert realize_shared_attention_masks(after.graph) == 0  # the view stays a view
    after.graph.lint()
    forced = [n for n in after.graph.nodes if n.target is inductor_prims.force_stride_order]
    assert [n.args[0].target for n in forced] == [aten.constant_pad_nd.default]  # the padded row, realised once
    before, after = _masks_attention_reads(before), _masks_attention_reads(after)
    for s in (1, 5, 8, 13):  # padded to 8 and 16 keys, and one that needs no padding
        mask = torch.randint(0, 2, (B, s))
        qkv = [torch.randn(B, H, s, D) for _ in range(3)]
        dense, rows = before(mask, *qkv), after(mask, *qkv)
        padded = 8 * math.ceil(s / 8)
        for d, r in zip(dense, rows):
            assert d.shape == r.shape == (B, 1, s, s)
            assert torch.equal(d, r)
            assert r.stride() == (padded, padded, 0 if s > 1 else padded, 1)  # one row read for every query


@pytest.mark.parametrize("keep", [_causal, _first_row_masked], ids=["causal", "first_row_differs"])
def test_masks_whose_rows_differ_are_left_alone(keep):
    gm = _trace(keep)
    assert broadcast_row_masks(gm.graph) == 0
    assert not any(n.target is aten.constant_pad_nd.default for n in gm.graph.nodes)


def test_a_mask_given_as_an_input_is_left_alone():
    def layer(bias: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return aten._scaled_dot_product_cudnn_attention(q, k, v, bias, False)[0]

    qkv = [torch.randn(B, H, 6, D) for _ in range(3)]
    gm = make_fx(layer, tracing_mode="symbolic")(torch.randn(B, 1, 6, 6), *qkv)
    assert broadcast_row_masks(gm.graph) == 0


def _output_of(fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.fx.Node:
    """The node `fn` returns, traced with a symbolic length (the input's only dim)."""
    gm = make_fx(fn, tracing_mode="symbolic")(torch.ones(6, dtype=torch.int64))
    return next(n for n in gm.graph.nodes if n.op == "output").args[0]


def _iota(x: torch.Tensor, start: int = 0) -> torch.Tensor:
    return torch.ops.prims.iota(x.shape[0], start=start, step=1, dtype=torch.int64, device=x.device, requires_grad=False)


@pytest.mark.parametrize(("fn", "expected"), [
    (lambda x: _iota(x) >= 0, True),
    (lambda x: aten.add.Tensor(_iota(x), 3) > 2, True),
    (lambda x: _iota(x, start=1).unsqueeze(0) > 0, True),
    (lambda x: torch.arange(x.shape[0]) >= 0, True),
    (lambda x: _iota(x) >= 1, False),  # the first index is 0
    (lambda x: aten.add.Tensor(_iota(x), 1, alpha=-2) >= 0, False),  # 1 scaled by -2, not added
    (lambda x: x >= 0, False),  # an input's values are unknown
])
def test_all_true_holds_only_where_the_index_range_proves_it(fn, expected):
    assert mask_values.all_true(_output_of(fn)) is expected


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_engine_with_a_padding_mask_matches_eager(device, caplog, monkeypatch):
    """On CUDA the pass rewrites cuDNN attention's mask. On the CPU, attention is another op, with
    the mask as a keyword; the pass is pointed at it there, so that Inductor and AOTInductor
    lower and run the rewritten graph (its symbolic sizes, pad, views) on this machine too."""
    if device == "cpu":
        cpu_attention = aten._scaled_dot_product_flash_attention_for_cpu.default
        monkeypatch.setitem(attention_calls.MASK_SLOTS, cpu_attention, "attn_mask")
    model, specs, dtype, compiled = compile_masked_attention(True, 21, device, caplog)
    assert "broadcast_row_masks made 1 rewrites" in caplog.text
    sweep(compiled, model, specs, device=device, precision=dtype)
    for s in (3, 8, 13, 21):  # padded and unpadded key counts, whatever the sweep drew
        x, mask = torch.randn(2, s, 128, device=device, dtype=dtype), torch.randint(0, 2, (2, s), device=device)
        with torch.no_grad():
            assert_matches(compiled(x, mask), model(x, mask), dtype)


@pytest.mark.cuda
def test_cudnn_reads_the_padded_row_through_a_broadcast_view():
    """What Inductor makes of the rewrite under a dynamic sequence length: cuDNN attention's mask
    argument is a view with stride 0 over the queries (a dense mask would be a plain buffer)."""
    torch.manual_seed(0)
    model = MaskedAttentionLayers(square=True).eval().to("cuda", torch.float16)
    x, mask = torch.randn(2, 13, 128, device="cuda", dtype=torch.float16), torch.randint(0, 2, (2, 13), device="cuda")
    torch._dynamo.reset()
    with torch._inductor.config.patch(post_grad_custom_pre_pass=PostGradPasses(build_settings({}))), torch.no_grad():
        out, (code, *_) = run_and_get_code(torch.compile(model, dynamic=True), x, mask)
        assert_matches(out, model(x, mask), torch.float16)
    calls = re.findall(r"_scaled_dot_product_cudnn_attention\.default\((.*)\)", code)
    assert len(calls) == 2, code
    for call in calls:  # the mask: reinterpret_tensor(buf, sizes, (row, row, 0, 1), 0)
        assert ", 0, 1), 0)" in call, call
