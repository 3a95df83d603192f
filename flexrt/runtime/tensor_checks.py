"""What makes a tensor safe to hand to an engine, beyond its dtype and shape.

An engine reads a strided tensor's memory directly: a meta tensor (no memory), a sparse or nested
tensor (another layout), or a tensor subclass that only pretends to hold data (FakeTensor, DTensor,
functorch wrappers) would crash the process or compute garbage in native code, so each is refused
with an `InputSpecError` before any engine runs.
"""

from __future__ import annotations

from typing import Any

import torch

from flexrt.errors import InputSpecError

ALLOWED = "a dense (strided) torch.Tensor holding its own memory"


def _is_functorch_wrapped(t: torch.Tensor) -> bool:
    check = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)
    return bool(check(t)) if check is not None else False


def _has_dispatch_override(t: torch.Tensor) -> bool:
    """A subclass with its own __torch_dispatch__ decides what its memory is: not readable by an engine."""
    return getattr(type(t), "__torch_dispatch__", None) is not getattr(torch.Tensor, "__torch_dispatch__", None)


def tensor_problem(t: Any, device: torch.device) -> str | None:
    """Why `t` cannot be passed to an engine compiled for `device`, or None when it can."""
    if not isinstance(t, torch.Tensor):
        return f"expected a torch.Tensor ({ALLOWED}), got {type(t).__name__}"
    if type(t) not in (torch.Tensor, torch.nn.Parameter) and _has_dispatch_override(t):
        return f"tensor subclass {type(t).__name__} is not supported; pass {ALLOWED} (e.g. a real tensor, not a fake one)"
    if t.is_nested:
        return f"nested tensors are not supported; pass {ALLOWED} (pad the batch to one shape)"
    if t.layout is not torch.strided:
        return f"layout {t.layout} is not supported; pass {ALLOWED} (call .to_dense())"
    if t.device.type == "meta":
        return f"meta tensors hold no data; pass {ALLOWED} on {device}"
    if _is_functorch_wrapped(t):
        return "tensors inside torch.func transforms (vmap, grad) are not supported; call the model outside them"
    if t.device != device:
        return f"is on {t.device} but the model was compiled for {device}; move it with .to({str(device)!r})"
    return None


def check_tensor(name: str, t: Any, device: torch.device) -> None:
    problem = tensor_problem(t, device)
    if problem is not None:
        sep = " " if problem.startswith("is on ") else ": "
        raise InputSpecError(f"input {name!r}{sep}{problem}")
