"""The pipeline end to end: spec -> trace -> lower -> partition -> build -> runtime module.

Every stage logs at DEBUG with its time, every engine at INFO. The entry points in `api.py` only
normalise their arguments and call `trace_module` / `bind_program`, then `finish`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.export import ExportedProgram

from flexrt.build.program import build_programs, dims_text, output_specs
from flexrt.build.workers import WorkerPool
from flexrt.compiler.fallback import CompilerFallback
from flexrt.errors import InputSpecError
from flexrt.ir import EngineState, TensorSpec
from flexrt.lower import lower
from flexrt.partition import PartitionPlan, partition
from flexrt.runtime import CompiledModule, Engine
from flexrt.settings import CompileSettings, RuntimeOptions
from flexrt.spec import Input, Profile, resolve_profiles, union_specs
from flexrt.stage_log import stage_done, stage_started
from flexrt.trace import FlatInputs, TracedProgram, bind, normalize_inputs, specs_from_exported, trace, user_input_nodes

logger = logging.getLogger(__name__)


def build_from_traced(
    traced: TracedProgram, profiles: Sequence[Profile], settings: CompileSettings, runtime: RuntimeOptions | None = None,
    pool: WorkerPool | None = None,
) -> tuple[Engine, torch.fx.GraphModule, PartitionPlan]:
    start = time.perf_counter()
    stage_started(logger, "lower")
    gm = lower(traced.exported, settings)
    stage_done(logger, "lower", time.perf_counter() - start)
    start = time.perf_counter()
    stage_started(logger, "partition")
    plan = partition(gm, settings)
    stage_done(logger, "partition", time.perf_counter() - start, f"{len(plan.segments)} segment(s)")
    if settings.dryrun:
        return None, gm, plan  # type: ignore[return-value]
    programs = build_programs(plan, traced, profiles, settings, pool=pool)
    inputs = [TensorSpec(b.name, b.spec.dtype, dims_text(b.dims), b.spec.format) for b in traced.inputs]
    state = EngineState(
        inputs, output_specs(gm, plan, traced.out_spec), list(profiles), programs, settings, traced.in_spec, traced.out_spec
    )
    start = time.perf_counter()
    stage_started(logger, "load")
    engine = Engine(state, runtime)  # the engines loaded into this process (onto the device), ready to run
    stage_done(logger, "load", time.perf_counter() - start)
    return engine, gm, plan


def trace_module(
    model: torch.nn.Module, flat: FlatInputs, profiles: Sequence[Profile] | None, settings: CompileSettings
) -> tuple[TracedProgram, list[Profile]]:
    resolved = resolve_profiles(flat.names, flat.specs, profiles)
    union = union_specs(flat.names, flat.specs, resolved)
    traced_flat = FlatInputs(flat.args, flat.kwargs, flat.names, union)
    start = time.perf_counter()
    stage_started(logger, "trace")
    traced = trace(model, traced_flat, settings.device)
    stage_done(logger, "trace", time.perf_counter() - start)
    return traced, resolved


def bind_program(
    ep: ExportedProgram, inputs: Any, arg_inputs: Any, kwarg_inputs: Any, profiles: Sequence[Profile] | None
) -> tuple[TracedProgram, list[Profile]]:
    names = [n.name for n in user_input_nodes(ep)]  # inputs bind by position and take the program's names
    flat = normalize_inputs(lambda *a, **k: None, inputs, arg_inputs, kwarg_inputs)
    leaves = pytree.tree_leaves((flat.args, flat.kwargs), is_leaf=lambda x: isinstance(x, (Input, torch.Tensor)))
    if len(leaves) != len(names):
        raise InputSpecError(f"the program takes {len(names)} inputs ({', '.join(names)}), {len(leaves)} were given")
    if all(isinstance(x, torch.Tensor) for x in leaves):
        specs = specs_from_exported(ep, leaves, names)
    else:
        specs = [s.with_name(n) for s, n in zip(flat.specs, names)]
    resolved = resolve_profiles(names, specs, profiles)
    union = union_specs(names, specs, resolved)
    return bind(ep, names, union), resolved


def finish(traced: TracedProgram, profiles: list[Profile], settings: CompileSettings, runtime: RuntimeOptions,
           pool: WorkerPool | None = None) -> Any:
    """Lower, partition and build (in `pool`'s workers, if started); the module gets the compiler as
    its fallback for out-of-range shapes."""
    engine, gm, plan = build_from_traced(traced, profiles, settings, runtime, pool)
    if settings.dryrun:
        print(plan.report)
        logger.info("dryrun: nothing built; returning the lowered graph, which runs in PyTorch")
        return gm
    return CompiledModule(engine, CompilerFallback(traced, settings, gm, plan))
