"""Helpers for passes that rewrite weights: read a constant behind a node, add a new one, and
check that nothing writes in place across a span that a rewrite would reorder."""

from __future__ import annotations

import operator
from typing import Any

import torch


def constant(gm: torch.fx.GraphModule, node: Any) -> torch.Tensor | None:
    """The tensor a `get_attr` node names; None for None; LookupError for anything computed."""
    if node is None:
        return None
    if not (isinstance(node, torch.fx.Node) and node.op == "get_attr"):
        raise LookupError("not a constant")
    return operator.attrgetter(node.target)(gm)


def register_constant(gm: torch.fx.GraphModule, t: torch.Tensor) -> str:
    """Add `t` to the module as a new buffer; returns its (unique) attribute name."""
    i = 0
    while hasattr(gm, f"_flexrt_fused_{i}"):
        i += 1
    name = f"_flexrt_fused_{i}"
    gm.register_buffer(name, t)
    return name


def mutation_between(first: torch.fx.Node, last: torch.fx.Node, chain: set[torch.fx.Node]) -> bool:
    """Whether an in-place op outside `chain` runs after `first` and before `last`: a rewrite that
    moves reads of `first`'s inputs to where `last` is (or the other way) must not cross one."""
    node = first.next
    while node is not last and node.op != "root":
        target = node.target
        if node not in chain and isinstance(target, torch._ops.OpOverload) and target._schema.is_mutable:
            return True
        node = node.next
    return False
