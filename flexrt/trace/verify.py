"""A program whose range reaches sizes 0/1 is checked against the model at the min shapes.

Size-oblivious tracing (flexrt's retry with `backed_size_oblivious`, and what torch 2.13 does for a
`Dim` whose min is 1) takes the general path wherever the model asks "is this size 1?". Where the
model really does something else at 1 (`squeeze`, broadcasting on purpose, a Python branch), the
engines would be built for the wrong shapes or path without any guard saying so. So the program and
the model both run on random inputs at every input's min shape; a different value, or an output
shape that the program's symbolic shapes do not predict, refuses the range with an error.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.utils._pytree as pytree

from flexrt.errors import CompilationError
from flexrt.spec import Input, random_tensor

logger = logging.getLogger(__name__)


class SizeOneMismatch(CompilationError):
    """The size-oblivious program differs from the model at the small end: the model needs the 1-case."""


def _at_min(args: Any, kwargs: Any, specs: list[Input], device: torch.device) -> tuple[Any, Any]:
    it = iter(specs)

    def make(_leaf: Any) -> torch.Tensor:
        spec = next(it)
        return random_tensor(spec.range.min, spec.dtype, device, spec.format, spec.tensor_domain)

    return pytree.tree_map(make, (args, kwargs), is_leaf=lambda x: isinstance(x, (Input, torch.Tensor)))


def _differs(a: Any, b: Any) -> str | None:
    la, lb = pytree.tree_leaves(a), pytree.tree_leaves(b)
    if len(la) != len(lb):
        return f"{len(la)} outputs against {len(lb)}"
    for k, (x, y) in enumerate(zip(la, lb)):
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            continue
        if x.shape != y.shape:
            return f"output {k} has shape {tuple(x.shape)} against eager {tuple(y.shape)}"
        x, y = x.detach().double(), y.detach().double()
        err = float((x - y).norm() / y.norm().clamp_min(1e-12))
        if err > 1e-2:
            return f"output {k} differs from eager by {err:.1e} (relative)"
    return None


def _program_shapes(traced: Any, specs: list[Input]) -> list[tuple[int, ...]] | None:
    """The program's own output shapes at the inputs' min sizes (its symbolic shapes, evaluated)."""
    values: dict[Any, int] = {}
    for b, spec in zip(traced.inputs, specs):
        for axis, expr in enumerate(b.dims):
            if not isinstance(expr, int) and getattr(expr, "is_Symbol", False):
                values[expr] = spec.range.min[axis]
    out = next(n for n in traced.exported.graph.nodes if n.op == "output")
    shapes = []
    for node in pytree.tree_leaves(out.args[0]):
        val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
        if not isinstance(val, torch.Tensor):
            return None
        dims = []
        for size in val.shape:
            expr = size.node.expr.xreplace(values) if isinstance(size, torch.SymInt) else size
            if not getattr(expr, "is_number", True) and not isinstance(expr, int):
                return None  # data-dependent or unbound: nothing to compare
            dims.append(int(expr))
        shapes.append(tuple(dims))
    return shapes


def needs_check(specs: list[Input], oblivious: bool) -> bool:
    """After a size-oblivious trace, or when a range reaches sizes 0/1 (torch 2.13 traces those obliviously too)."""
    return oblivious or any(spec.range.min[d] < 2 for spec in specs for d in spec.range.dynamic_dims)


def verify_small_end(model: torch.nn.Module, traced: Any, args: Any, kwargs: Any, specs: list[Input],
                     device: torch.device) -> None:
    """Raise SizeOneMismatch if the program disagrees with the model at the min shapes: its output shapes
    (what the engines will be built for) or its values (the path it traced)."""
    try:
        margs, mkwargs = _at_min(args, kwargs, specs, device)
        with torch.no_grad():
            want = model(*margs, **mkwargs)
            got = traced.exported.module()(*margs, **mkwargs)
    except Exception as e:  # noqa: BLE001 - min shapes need not be a valid combination (derived dims)
        logger.debug("trace: could not check the program at the min shapes: %s", e)
        return
    why = _differs(got, want)
    shapes = _program_shapes(traced, specs)
    eager = [tuple(t.shape) for t in pytree.tree_leaves(want) if isinstance(t, torch.Tensor)]
    if why is None and shapes is not None and len(shapes) == len(eager):
        bad = [(k, a, b) for k, (a, b) in enumerate(zip(shapes, eager)) if a != b]
        if bad:
            k, a, b = bad[0]
            why = f"output {k} would have shape {a} against eager {b}"
    if why:
        mins = ", ".join(f"{s.name} {tuple(s.range.min)}" for s in specs)
        raise SizeOneMismatch(
            f"trace: the model behaves differently when a size is 1 at the small end of the range ({mins}): "
            f"traced for the general case, {why}. Raise the range's min so that no size reaches 1 "
            "(or compile the size-1 case separately with a static Input)."
        )
