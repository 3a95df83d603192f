"""Hand cuDNN attention a padding mask as one row per key expanded over the queries, not as a
[batch, 1, seq, seq] buffer (Inductor's post-grad graph, every engine).

Why: at sequence 512 cuDNN took 35.8 us per BERT layer with the dense bias and 30.7 us with the
row expanded (H100, fp16, `research/results/attention_mask.json`): about 60 us a call.
Inductor's layout rule for SDPA (`sdpa_constraint`) keeps a broadcast mask only where every stride
is provably a multiple of 8, and a row of a dynamic sequence length S has stride S, so Inductor
writes the mask out dense. Here the row goes into a buffer padded to 8 * ceil(S / 8) keys and is
sliced back to S: its stride is then a multiple of 8 for every S, the rule keeps the view, and
cuDNN reads the padded row. Only masks that `mask_values.query_invariant` proves row-constant are
rewritten; the padding keys are never read.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch._guards import detect_fake_mode
from torch._inductor import inductor_prims
from torch.fx.experimental.symbolic_shapes import statically_known_true
from torch.utils._pytree import tree_map

from flexrt.lower.post_grad.attention_calls import mask_readers, set_mask
from flexrt.lower.post_grad.mask_values import query_invariant

aten = torch.ops.aten

ALIGNMENT = 8  # the stride multiple Inductor's SDPA rule asks of a mask (aten's preprocess_mask)


def broadcast_row_masks(graph: torch.fx.Graph) -> int:
    """Replace each row-constant 4-d attention mask by its first row, padded and expanded over
    the queries; returns how many masks were replaced."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    rewritten = 0
    for node in list(graph.nodes):
        readers = mask_readers(node)
        if not readers or not _rows_to_share(node) or not query_invariant(node):
            continue
        with graph.inserting_before(min(readers, key=order.__getitem__)):
            mask = _padded_row_view(graph, node)
        for reader in readers:
            set_mask(reader, mask)
        rewritten += 1
    return rewritten


def _rows_to_share(node: torch.fx.Node) -> bool:
    """A 4-d mask of more than one query row, whose sizes a fake tensor mode tracks."""
    val = node.meta.get("val")
    return (
        isinstance(val, torch.Tensor)
        and val.dim() == 4
        and statically_known_true(val.shape[-2] > 1)
        and detect_fake_mode([val]) is not None
    )


def _padded_row_view(graph: torch.fx.Graph, mask: torch.fx.Node) -> torch.fx.Node:
    """Nodes for `pad(mask[:, :, :1], to a multiple of 8 keys)[..., :S].expand(mask's shape)`,
    the padded row realised once (Inductor's `force_stride_order`) so that the views stay views."""
    val = mask.meta["val"]
    call = _Emitter(graph, detect_fake_mode([val]))
    sizes = [call(aten.sym_size.int, mask, d) if isinstance(s, torch.SymInt) else s for d, s in enumerate(val.shape)]
    keys = sizes[-1]
    padded_keys = call(operator.mul, call(operator.floordiv, call(operator.add, keys, ALIGNMENT - 1), ALIGNMENT), ALIGNMENT)
    row = call(aten.slice.Tensor, mask, 2, 0, 1)
    padding = [0, call(operator.sub, padded_keys, keys)]
    # aten's kernel wants concrete pads; its reference computes the same shape from symbolic ones
    padded = call(aten.constant_pad_nd.default, row, padding, 0.0, meta=torch._refs.constant_pad_nd)
    # The padded row's contiguous strides as SymInts, not graph values: Inductor's lowering sorts
    # them to get the order, and torch 2.11's sorts without its shape environment, which only a
    # SymInt (through its hint) can answer; `attention_masks.py` passes its strides the same way.
    width = padded_keys.meta["val"] if isinstance(padded_keys, torch.fx.Node) else padded_keys
    buffer = call(inductor_prims.force_stride_order, padded, [val.shape[1] * width, width, width, 1])
    return call(aten.expand.default, call(aten.slice.Tensor, buffer, 3, 0, keys), sizes)


class _Emitter:
    """Adds call_function nodes at the graph's insertion point, each with the fake value that
    Inductor's lowering reads (`meta["val"]`); plain ints are folded, not added."""

    def __init__(self, graph: torch.fx.Graph, fake_mode: Any) -> None:
        self.graph, self.fake_mode = graph, fake_mode

    def __call__(self, target: Callable[..., Any], *args: Any, meta: Callable[..., Any] | None = None) -> Any:
        values = tree_map(lambda a: a.meta["val"] if isinstance(a, torch.fx.Node) else a, args)
        with self.fake_mode:
            value = (meta or target)(*values)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        node = self.graph.call_function(target, args)
        node.meta["val"] = value
        return node
