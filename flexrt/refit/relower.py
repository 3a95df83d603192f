"""The new weights as the engines see them: the new module traced, lowered and partitioned with the
compiled module's own inputs, profiles and settings.

Why not map state_dict names: lowering rewrites weights (batch norm folded into convolutions, the
weights of parallel linear layers concatenated), so an engine's constants are not the model's
parameters. Running the same passes on the new module gives the same graph with the new values,
and each segment's module names its constants exactly as the engine's were named.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.export import ExportedProgram

from flexrt.errors import FlexrtError, RefitError
from flexrt.lower import lower
from flexrt.partition import PartitionPlan, partition
from flexrt.runtime import Engine
from flexrt.spec import Input, union_specs
from flexrt.trace import TracedProgram, bind, normalize_inputs, trace

logger = logging.getLogger(__name__)


def engine_specs(engine: Engine) -> list[Input]:
    """One Input per flat input covering every profile: the ranges the module was traced over."""
    specs = [Input(shape=engine.profiles[0][s.name].opt, dtype=s.dtype, format=s.format, name=s.name) for s in engine.inputs]
    return union_specs(engine.input_names, specs, engine.profiles)


def relower(engine: Engine, new: Any) -> tuple[TracedProgram, torch.fx.GraphModule, PartitionPlan]:
    """Trace (or bind) the new module at the engine's ranges, then lower and partition it as the engine was."""
    specs = engine_specs(engine)
    settings = engine.settings
    try:
        if isinstance(new, ExportedProgram):
            traced = bind(new, engine.input_names, specs)
        elif isinstance(new, torch.nn.Module):
            args, kwargs = pytree.tree_unflatten(specs, engine.state.in_spec)
            flat = normalize_inputs(new.forward, tuple(args), kwargs or None)
            traced = trace(new.eval(), flat, settings.device)
        else:
            raise RefitError(
                f"new_weight_module must be an ExportedProgram or an nn.Module, got {type(new).__name__}"
            )
        gm = lower(traced.exported, settings)
        return traced, gm, partition(gm, settings)
    except RefitError:
        raise
    except FlexrtError as e:
        raise RefitError(f"refit: the new module cannot be traced at the compiled module's inputs: {e}") from e
