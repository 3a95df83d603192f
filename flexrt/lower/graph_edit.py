"""Helpers for passes that rewrite the graph: read a constant behind a node, add a new one, add a
node with the metadata later stages read, and check that nothing writes in place across a span
that a rewrite would reorder."""

from __future__ import annotations

import operator
from typing import Any, NamedTuple

import torch
from torch._dispatch.python import enable_python_dispatcher
from torch.fx.node import map_arg

# Metadata copied from the node a new one replaces, so where it came from in the model stays visible
# (graph dumps, Inductor's kernel provenance).
_SOURCE_META = ("stack_trace", "nn_module_stack", "source_fn_stack")


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


def fake_value(arg: Any) -> torch.Tensor | None:
    """The fake tensor a node's metadata holds for its value (symbolic sizes and all); None for a
    non-node argument or a node without one."""
    val = arg.meta.get("val") if isinstance(arg, torch.fx.Node) else None
    return val if isinstance(val, torch.Tensor) and hasattr(val, "fake_mode") else None


class LinearArgs(NamedTuple):
    x: Any
    weight: Any
    bias: Any


def linear_args(node: torch.fx.Node) -> LinearArgs:
    """An `aten.linear` call's arguments, the bias None where the call has none."""
    return LinearArgs(node.args[0], node.args[1], node.args[2] if len(node.args) > 2 else None)


class Conv2dArgs(NamedTuple):
    x: Any
    weight: Any
    bias: Any
    stride: list[int]
    padding: list[int] | str
    dilation: list[int]
    groups: int


_CONV2D_DEFAULTS = (None, None, None, [1, 1], [0, 0], [1, 1], 1)


def conv2d_args(node: torch.fx.Node) -> Conv2dArgs:
    """An `aten.conv2d` call's arguments with the schema's defaults filled in, int lists as lists."""
    values = [node.args[i] if len(node.args) > i else d for i, d in enumerate(_CONV2D_DEFAULTS)]
    return Conv2dArgs(*(list(v) if isinstance(v, tuple) else v for v in values))


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


def emit(
    graph: torch.fx.Graph,
    target: Any,
    args: tuple[Any, ...],
    source: torch.fx.Node,
    fakes: dict[torch.fx.Node, torch.Tensor] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> torch.fx.Node:
    """A `call_function` node for `target(*args, **kwargs)` at the graph's insertion point, with its
    `meta["val"]` computed from its inputs' (or `fakes`', for nodes that have none, such as new
    constants) and `source`'s stack trace and module path.

    The value is computed under the inputs' fake mode, so symbolic sizes carry through, and with the
    Python dispatcher on, as torch.export and Inductor trace: a composite op (`linear`, `reshape`)
    then decomposes through its Python (SymInt-aware) decomposition. Without it the C++ composite
    kernel runs on the fake tensors and may read a plain size: torch 2.11's `at::native::matmul`
    (what `linear` without a bias calls) calls `numel()`, which raises "Cannot call numel() on tensor
    with symbolic sizes/strides" for a dynamic input."""
    fakes = fakes or {}
    vals = map_arg(args, lambda n: fakes[n] if n in fakes else n.meta["val"])
    mode = next(v.fake_mode for v in torch.utils._pytree.tree_leaves(vals) if hasattr(v, "fake_mode"))
    node = graph.call_function(target, args, kwargs or {})
    with mode, enable_python_dispatcher():
        node.meta["val"] = target(*vals, **(kwargs or {}))
    node.meta.update({k: source.meta[k] for k in _SOURCE_META if k in source.meta})
    return node


def fake_constant(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A fake of constant `t` in `like`'s fake mode, dtype and device. Node metadata may still hold
    the model's dtype after `cast_precision` converted the weights; a fake in that dtype keeps the
    computed metadata consistent with the rest of the graph."""
    with like.fake_mode:  # type: ignore[attr-defined]
        return torch.empty_strided(t.shape, t.stride(), dtype=like.dtype, device=like.device)
