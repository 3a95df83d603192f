"""The user's inputs as given (one `Input`, a list, tensors, `arg_inputs` + `kwarg_inputs`) -> flat,
named inputs in the order the model takes them.

Apart from the tracer so that a compile that never traces (a module-cache hit) imports none of it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

import torch
import torch.utils._pytree as pytree

from flexrt.errors import InputSpecError
from flexrt.spec.input import Input


@dataclasses.dataclass(frozen=True)
class FlatInputs:
    """The user's inputs flattened in the order the program takes them."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    names: list[str]
    specs: list[Input]


def is_leaf(x: Any) -> bool:
    return isinstance(x, (Input, torch.Tensor))


def param_names(fn: Any) -> list[str]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _path_name(path: tuple[Any, ...], arg_names: list[str]) -> str:
    head, rest = path[0], path[1:]
    if getattr(head, "idx", None) == 0:  # positional args
        i = rest[0].idx
        name = arg_names[i] if i < len(arg_names) else f"arg{i}"
        rest = rest[1:]
    else:
        name = str(rest[0].key)
        rest = rest[1:]
    for key in rest:
        name += f"_{getattr(key, 'idx', getattr(key, 'key', getattr(key, 'name', '')))}"
    return name


def normalize_inputs(
    forward: Any,
    inputs: Any = None,
    arg_inputs: Any = None,
    kwarg_inputs: Mapping[str, Any] | None = None,
) -> FlatInputs:
    """Accept Torch-TensorRT's forms (one Input, a list, tensors, arg_inputs + kwarg_inputs) and name every leaf."""
    if inputs is not None and arg_inputs is not None:
        raise InputSpecError("give inputs= or arg_inputs=, not both (they mean the same)")
    args = arg_inputs if arg_inputs is not None else inputs
    if args is None and not kwarg_inputs:
        raise InputSpecError("no inputs given: pass inputs=[flexrt.Input(...)] (or tensors), or arg_inputs=/kwarg_inputs=")
    if args is None:
        args = ()
    if is_leaf(args):
        args = (args,)
    args = tuple(args)
    kwargs = dict(kwarg_inputs or {})
    leaves_with_path, _ = pytree.tree_flatten_with_path((args, kwargs), is_leaf=is_leaf)
    names: list[str] = []
    specs: list[Input] = []
    arg_names = param_names(forward)
    for path, leaf in leaves_with_path:
        where = _path_name(path, arg_names)
        if isinstance(leaf, torch.Tensor):
            spec = Input.from_tensor(leaf, name=where)
        elif isinstance(leaf, Input):
            spec = leaf if leaf.name else leaf.with_name(where)
        else:
            raise InputSpecError(
                f"input {where!r}: expected a flexrt.Input or a torch.Tensor, got {type(leaf).__name__}"
            )
        names.append(spec.name or where)
        specs.append(spec)
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise InputSpecError(f"input names must be unique; {sorted(dupes)} appear more than once")
    return FlatInputs(args, kwargs, names, specs)
