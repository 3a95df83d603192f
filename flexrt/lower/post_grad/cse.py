"""Merge identical pure computations in Inductor's graph before it generates kernels (every engine).

Why: `scaled_dot_product_attention` converts a boolean mask to an additive one inside each call.
BERT's 12 layers share one mask, so after decomposition Inductor's graph holds 12 identical
`where(mask, 0, -65504)` nodes, and Inductor wrote 12 copies of the [batch, 1, seq, seq] mask on
every call: 107 us of 1907 us of kernels at sequence 512 with dynamic shapes (H100, fp16;
`research/results/kernel_diff_bert_gelu_epilogue.json`). Inductor runs no
common-subexpression elimination on its post-grad graph; this pass does (`post_grad.py`). One
node is not yet one buffer: `attention_masks.py` does the rest.

Two nodes merge when they call the same op with the same inputs and the same constant arguments
(compared by type and value, so 0.0 and -0.0, or 1 and True, stay apart), and the op is pure:
not mutable, not random. The graph is functional at that point (Inductor's own note), so a merged
node computes what each of the originals did.
"""

from __future__ import annotations

from typing import Any

import torch

# Allocations whose contents are undefined until written: two are never the same buffer.
_UNINITIALISED = ("empty", "new_empty")


def merge_common_subexpressions(graph: torch.fx.Graph) -> int:
    """Replace each pure call_function node that repeats an earlier one; returns how many went."""
    seen: dict[Any, torch.fx.Node] = {}
    merged = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or not _pure(node.target):
            continue
        try:
            key = (node.target, _freeze(node.args), _freeze(node.kwargs))
            earlier = seen.get(key)
        except TypeError:  # an argument that cannot be hashed: leave the node alone
            continue
        if earlier is None:
            seen[key] = node
            continue
        node.replace_all_uses_with(earlier)
        graph.erase_node(node)
        merged += 1
    return merged


def _pure(target: Any) -> bool:
    if not isinstance(target, torch._ops.OpOverload) or target._opname.startswith(_UNINITIALISED):
        return False
    return not target._schema.is_mutable and torch.Tag.nondeterministic_seeded not in target.tags


def _freeze(value: Any) -> Any:
    """A hashable key for an argument: nodes by identity, containers by content, constants by
    type and value."""
    if isinstance(value, torch.fx.Node):
        return value
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_freeze(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, _freeze(v)) for k, v in value.items())))
    if isinstance(value, float):
        return ("float", repr(value))  # repr tells 0.0 from -0.0 and keeps nan equal to nan
    return (type(value).__name__, value)
