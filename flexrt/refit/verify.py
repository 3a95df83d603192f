"""`verify_output=True`: the refitted module against the new module, on the caller's inputs or on
random ones at every profile's opt shapes (fresh data: a refit that kept an old weight shows up)."""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.utils._pytree as pytree

from flexrt.errors import RefitError
from flexrt.runtime import CompiledModule
from flexrt.spec import random_tensor

logger = logging.getLogger(__name__)

TOLERANCE = {torch.float32: 1e-3, torch.float16: 2e-2, torch.bfloat16: 5e-2}  # relative error, as TF32/fp16 allow


def _examples(module: CompiledModule) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    engine = module.engine
    calls = []
    for profile in engine.profiles:
        flat = [random_tensor(profile[s.name].opt, s.dtype, engine.device, s.format) for s in engine.inputs]
        args, kwargs = pytree.tree_unflatten(flat, engine.state.in_spec)
        calls.append((tuple(args), dict(kwargs)))
    return calls


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    if out.numel() == 0:
        return 0.0
    return float((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-12))


def verify(module: CompiledModule, reference: torch.nn.Module, arg_inputs: Any, kwarg_inputs: Any) -> None:
    given = arg_inputs is not None or kwarg_inputs is not None
    calls = [(tuple(arg_inputs or ()), dict(kwarg_inputs or {}))] if given else _examples(module)
    for args, kwargs in calls:
        with torch.no_grad():
            outs = pytree.tree_leaves(module(*args, **kwargs))
            refs = pytree.tree_leaves(reference(*args, **kwargs))
        for i, (o, r) in enumerate(zip(outs, refs)):
            if not isinstance(r, torch.Tensor) or not r.is_floating_point():
                if not (torch.equal(o, r) if isinstance(r, torch.Tensor) else o == r):
                    raise RefitError(f"refit: output {i} differs from the new module's (verify_output=True)")
                continue
            err = _rel_err(o, r)
            if err > TOLERANCE.get(r.dtype, 1e-3):
                raise RefitError(
                    f"refit: output {i} differs from the new module's by a relative error of {err:.2e} "
                    f"(shapes {[tuple(a.shape) for a in pytree.tree_leaves((args, kwargs))]}; verify_output=True)"
                )
    logger.info("refit: outputs match the new module on %d call(s)", len(calls))
