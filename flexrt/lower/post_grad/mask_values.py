"""What an attention mask's graph proves about its values: whether every query row of it is the
same (`query_invariant`), read off the post-grad graph that computes it.

Why: a padding mask is one row per key, broadcast over the queries, but by the time it reaches
the attention call it is a [batch, 1, seq, seq] tensor. HF's encoders build it as
`and(and(True, q_idx >= 0), padding[b, k_idx])`, where the query term has a query-sized shape
and is true everywhere. `broadcast_masks.py` may hand attention one row expanded over the queries
only where this module proves that no row differs; anything it does not recognise counts as
varying, so an unknown graph is left as it is.
"""

from __future__ import annotations

import operator

import torch
from torch.fx.experimental.symbolic_shapes import statically_known_true

aten, prims = torch.ops.aten, torch.ops.prims

# Elementwise ops (broadcasting, right-aligned): if no operand varies along a dim, neither does
# the result.
_ELEMENTWISE = {
    aten.where.self, aten.bitwise_and.Tensor, aten.bitwise_or.Tensor, aten.bitwise_not.default,
    aten.logical_and.default, aten.logical_or.default, aten.logical_not.default,
    aten.mul.Tensor, aten.mul.Scalar, aten.add.Tensor, aten.add.Scalar, aten.sub.Tensor, aten.sub.Scalar,
    aten.rsub.Scalar, aten.div.Tensor, aten.neg.default, aten.masked_fill.Scalar,
    aten.eq.Scalar, aten.ne.Scalar, aten.lt.Scalar, aten.le.Scalar, aten.gt.Scalar, aten.ge.Scalar,
    aten.eq.Tensor, aten.ne.Tensor, aten.lt.Tensor, aten.le.Tensor, aten.gt.Tensor, aten.ge.Tensor,
    prims.convert_element_type.default, aten._to_copy.default, aten.clone.default,
    aten.expand.default,  # new dims on the left, size-1 dims stretched: a constant dim stays one
    aten.slice.Tensor,  # some of the rows, or of each row: equal rows stay equal
}
# Ops whose result holds only values of their input: a bound or an all-true holds through them.
_SUBSET_OF_VALUES = {
    aten.unsqueeze.default, aten.expand.default, aten.clone.default, aten.view.default,
    aten.reshape.default, aten.permute.default, aten.alias.default, aten.slice.Tensor, aten.select.int,
}
_CONSTANTS = {aten.full.default, aten.scalar_tensor.default}
_AND = {aten.bitwise_and.Tensor, aten.logical_and.default}
_COMPARE_SCALAR = {aten.ge.Scalar: operator.ge, aten.gt.Scalar: operator.gt}


def query_invariant(node: torch.fx.Node) -> bool:
    """True where the graph proves that `node` (rank 2 or more) holds the same values at every
    index of its second-to-last dim, the query dim of an attention mask."""
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return False
    return _invariant(node, {})


def _invariant(node: torch.fx.Node, seen: dict[torch.fx.Node, bool]) -> bool:
    if node not in seen:
        seen[node] = False  # a cycle cannot occur in a graph; this only stops repeated work
        seen[node] = _decide(node, seen)
    return seen[node]


def _decide(node: torch.fx.Node, seen: dict[torch.fx.Node, bool]) -> bool:
    val = node.meta.get("val")
    if isinstance(val, int | float | bool | torch.SymInt | torch.SymFloat | torch.SymBool):
        return True  # a scalar operand broadcasts to every row alike
    if not isinstance(val, torch.Tensor):
        return False
    if val.dim() < 2 or statically_known_true(val.shape[-2] == 1):
        return True  # the query dim is absent or 1: broadcasting repeats one row
    if node.op != "call_function":
        return False
    if node.target in _CONSTANTS or all_true(node):
        return True
    if node.target not in _ELEMENTWISE:
        return False
    operands = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, torch.fx.Node)]
    return all(_invariant(a, seen) for a in operands)


def all_true(node: torch.fx.Node) -> bool:
    """True where the graph proves that the boolean tensor `node` is true everywhere, as HF's
    `q_idx >= 0` term is: a comparison of an index range with a bound it cannot cross."""
    if node.op != "call_function":
        return False
    if node.target is aten.full.default:
        return node.kwargs.get("dtype") is torch.bool and node.args[1] is True
    if node.target in _AND:
        return all(isinstance(a, torch.fx.Node) and all_true(a) for a in node.args[:2])
    if node.target in _SUBSET_OF_VALUES:
        return isinstance(node.args[0], torch.fx.Node) and all_true(node.args[0])
    compare = _COMPARE_SCALAR.get(node.target)
    if compare is None or not isinstance(node.args[0], torch.fx.Node) or not isinstance(node.args[1], int | float):
        return False
    low = lower_bound(node.args[0])
    return low is not None and compare(low, node.args[1])


def lower_bound(node: torch.fx.Node) -> int | None:
    """The least value an integer tensor can hold, where the graph shows one: an ascending index
    range, moved or shifted by a constant. None where it does not."""
    if node.op != "call_function":
        return None
    target, args, kwargs = node.target, node.args, node.kwargs
    if target is prims.iota.default:
        start, step = kwargs.get("start"), kwargs.get("step")
        return start if isinstance(start, int) and isinstance(step, int) and step > 0 else None
    if target in (aten.arange.default, aten.arange.start, aten.arange.start_step):
        start = args[0] if target is not aten.arange.default else 0
        step = args[2] if target is aten.arange.start_step and len(args) > 2 else kwargs.get("step", 1)
        return start if isinstance(start, int) and isinstance(step, int) and step > 0 else None
    source = args[0] if args and isinstance(args[0], torch.fx.Node) else None
    if source is None:
        return None
    if target in _SUBSET_OF_VALUES:
        return lower_bound(source)
    shift = args[1] if len(args) > 1 else None
    if target in (aten.add.Tensor, aten.add.Scalar) and type(shift) is int and kwargs.get("alpha", 1) == 1:
        low = lower_bound(source)
        return None if low is None else low + shift
    return None
