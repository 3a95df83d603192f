"""A model that branches on tensor data, compiled in pieces: dynamo splits it at each such branch
(a graph break), the branch runs in PyTorch and every piece between becomes an engine.

torch.export must trace one graph and cannot pass a Python `if` on a tensor's value (BART's float16
overflow clamp, a detection model's box filtering). torch.compile's front end can: this is the
`ir="torch_compile"` path, taken automatically so that one such line does not fail the whole model.
Its module is built here, at the opt shapes, not at the user's first call.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from flexrt.errors import DataDependentBranchError, FlexrtError
from flexrt.settings import CompileSettings
from flexrt.trace import FlatInputs
from flexrt.trace.export import example_inputs

logger = logging.getLogger(__name__)


def compile_with_graph_breaks(
    module: torch.nn.Module, flat: FlatInputs, settings: CompileSettings, error: DataDependentBranchError,
    options: dict[str, Any],
) -> torch.nn.Module:
    """torch.compile(backend="flexrt") over the same ranges, built now; `error` if that fails too."""
    from flexrt.backend import compile_with_torch_compile

    logger.warning(
        "flexrt: %s\nflexrt: compiling the model in pieces instead (as ir='torch_compile'): that branch runs in "
        "PyTorch between engines. The result is a torch.compile module: flexrt.save cannot write it.",
        str(error).split(". Workarounds")[0],
    )
    # dynamic=True: a tensor one piece hands the next keeps symbolic dims there; left static, a dim it
    # shares with a marked input is specialised and fails as a constraint violation (a stack of layers
    # each split at a branch; BART's encoder output against the decoder's batch). Sizes 1 specialise
    # as dynamo does (a mask's broadcast dim must stay 1), so a range reaching 1 gets its own graphs,
    # built here at the min shapes rather than at the user's first such call.
    compiled = compile_with_torch_compile(module, arg_inputs=list(flat.args), kwarg_inputs=flat.kwargs or None,
                                          dynamic=True, **options)
    reaches_one = any(spec.range.min[d] <= 1 for spec in flat.specs for d in spec.range.dynamic_dims)
    try:
        with torch.no_grad():
            for at_min in (False, True) if reaches_one else (False,):
                args, kwargs = example_inputs(flat, settings.device, at_min=at_min)
                compiled(*args, **kwargs)
    except (FlexrtError, RuntimeError, AssertionError, TypeError, ValueError) as e:
        cause = getattr(e, "inner_exception", None) or e  # dynamo's BackendCompilerFailed wraps flexrt's error
        head = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:400]
        raise DataDependentBranchError(
            f"{error}\nCompiling it in pieces at the branch (ir='torch_compile') failed too: {type(cause).__name__}: {head}"
        ) from e
    return compiled
