"""A program traced with `backed_size_oblivious` is checked against the model at the small end.

Size-oblivious tracing takes the general path wherever the model asks "is this size 1?" (a 1x1
feature map, a batch of 1 broadcast against another input). Where the model really does something
else at 1 (`squeeze`, broadcasting on purpose), the program would differ from eager there without
any guard saying so. So after such a trace, the program and the model are both run on random inputs
at every input's min shape, and any difference refuses the range with an error that says so.
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


def verify_small_end(model: torch.nn.Module, program: Any, args: Any, kwargs: Any, specs: list[Input],
                     device: torch.device) -> None:
    """Raise CompilationError if the program and the model disagree at the inputs' min shapes."""
    try:
        margs, mkwargs = _at_min(args, kwargs, specs, device)
        with torch.no_grad():
            want = model(*margs, **mkwargs)
            got = program.module()(*margs, **mkwargs)
    except Exception as e:  # noqa: BLE001 - min shapes need not be a valid combination (derived dims)
        logger.debug("trace: could not check the size-oblivious program at the min shapes: %s", e)
        return
    why = _differs(got, want)
    if why:
        shapes = ", ".join(f"{s.name} {tuple(s.range.min)}" for s in specs)
        raise SizeOneMismatch(
            f"trace: the model behaves differently when a size is 1 at the small end of the range ({shapes}): "
            f"traced for the general case, {why}. Raise the range's min so that no size reaches 1 "
            "(or compile the size-1 case separately with a static Input)."
        )
