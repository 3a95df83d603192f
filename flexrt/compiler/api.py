"""The entry points: `compile`, `dynamo.compile`, `dynamo.trace` and `build_engine`, as Torch-TensorRT
names them. Each normalises its arguments and hands them to the pipeline (`pipeline.py`).

The pipeline's stages are imported by the functions that run them, not here: a compile that finds
its module in the module cache never traces, and importing the tracer and the builder (sympy among
them) would cost it seconds.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.export import ExportedProgram

from flexrt.compiler import module_cache
from flexrt.compiler.fallback import CompilerFallback
from flexrt.compiler.fingerprint import module_key
from flexrt.compiler.options import module_device, resolve_options, tensors_device
from flexrt.errors import DataDependentBranchError, FlexrtError, InputSpecError
from flexrt.runtime import CompiledModule, Engine
from flexrt.settings import CompileSettings, RuntimeOptions
from flexrt.spec import Input, Profile
from flexrt.spec.flat import FlatInputs, normalize_inputs

if TYPE_CHECKING:
    from flexrt.trace import TracedProgram

logger = logging.getLogger(__name__)


def compile_module(
    module: Any,
    ir: str = "default",
    inputs: Any = None,
    arg_inputs: Any = None,
    kwarg_inputs: Mapping[str, Any] | None = None,
    profiles: Sequence[Profile] | None = None,
    **options: Any,
) -> Any:
    """`flexrt.compile`: the Torch-TensorRT entry point (ir="default" | "dynamo" | "torch_compile")."""
    if ir == "ts" or ir == "torchscript":
        raise InputSpecError(f"ir={ir!r} (TorchScript) is not supported: TorchScript is deprecated in PyTorch 2; use ir='dynamo'")
    if ir == "torch_compile":
        from flexrt.backend import compile_with_torch_compile

        return compile_with_torch_compile(module, inputs=inputs, arg_inputs=arg_inputs, kwarg_inputs=kwarg_inputs, **options)
    if ir not in ("default", "dynamo", "exported_program"):
        raise InputSpecError(f"unknown ir={ir!r}; use 'dynamo' (default) or 'torch_compile'")
    if isinstance(module, ExportedProgram):
        return dynamo_compile(module, inputs=inputs, arg_inputs=arg_inputs, kwarg_inputs=kwarg_inputs, profiles=profiles, **options)
    if not isinstance(module, torch.nn.Module):
        raise InputSpecError(f"flexrt.compile expects a torch.nn.Module or an ExportedProgram, got {type(module).__name__}")
    flat = normalize_inputs(module.forward, inputs, arg_inputs, kwarg_inputs)
    settings, runtime = resolve_options(options, module_device(module), tensors_device((flat.args, flat.kwargs)))
    key = module_key(module, flat, profiles, settings) if settings.cache_dir and not settings.dryrun else None
    if key is not None and (state := module_cache.lookup(key, settings)) is not None:
        def trace_when_needed() -> TracedProgram:
            from flexrt.compiler.pipeline import trace_module

            return trace_module(module, flat, profiles, settings)[0]

        try:
            return CompiledModule(Engine(state, runtime), CompilerFallback.deferred(trace_when_needed, settings))
        except FlexrtError as e:  # an engine the cache holds but this process cannot load: build it again
            logger.warning("module cache: the cached engines of %s cannot be loaded (%s); compiling as usual", key[:19], e)
    return _compile_traced(module, ir, flat, profiles, settings, runtime, key, options)


def _compile_traced(
    module: torch.nn.Module, ir: str, flat: FlatInputs, profiles: Sequence[Profile] | None, settings: CompileSettings,
    runtime: RuntimeOptions, key: str | None, options: Mapping[str, Any],
) -> Any:
    """Trace, lower, partition and build; the module cache gets an entry under `key`, if given."""
    from flexrt.compiler.graph_breaks import compile_with_graph_breaks
    from flexrt.compiler.pipeline import finish, trace_module
    from flexrt.compiler.split import compile_split
    from flexrt.trace.split import RangeSplitNeeded

    try:
        with _workers(settings, profiles) as pool:
            traced, resolved = trace_module(module, flat, profiles, settings)
            files = module_cache.source_files(module) if key is not None else []
            compiled = finish(traced, resolved, settings, runtime, pool)
            if key is not None:
                module_cache.store(key, compiled.engine.state, files, settings)
            return compiled
    except RangeSplitNeeded as split:
        if profiles or settings.dryrun:  # the user's own profiles are kept as given; a dry run reports the guard
            raise
        return compile_split(split, flat.args, flat.kwargs, flat.specs, lambda a, k: compile_module(
            module, ir=ir, arg_inputs=a, kwarg_inputs=k or None, **options))
    except DataDependentBranchError as branch:
        if profiles or settings.dryrun or settings.require_full_compilation:  # pieces: one range, PyTorch between
            raise
        return compile_with_graph_breaks(module, flat, settings, branch, options)


def dynamo_compile(
    exported_program: ExportedProgram,
    inputs: Any = None,
    arg_inputs: Any = None,
    kwarg_inputs: Mapping[str, Any] | None = None,
    profiles: Sequence[Profile] | None = None,
    **options: Any,
) -> Any:
    """`flexrt.dynamo.compile`: compile a user's ExportedProgram over its own or the given ranges."""
    from flexrt.compiler.pipeline import bind_program, finish

    if not isinstance(exported_program, ExportedProgram):
        raise InputSpecError(
            f"flexrt.dynamo.compile expects a torch.export.ExportedProgram, got {type(exported_program).__name__}; "
            "use flexrt.compile for an nn.Module"
        )
    state = list(exported_program.state_dict.values()) + [
        v for v in exported_program.constants.values() if isinstance(v, torch.Tensor)
    ]
    ep_device = state[0].device if state else None
    traced, resolved = bind_program(exported_program, inputs, arg_inputs, kwarg_inputs, profiles)
    settings, runtime = resolve_options(options, ep_device, tensors_device((inputs, arg_inputs, kwarg_inputs)))
    return finish(traced, resolved, settings, runtime)


def dynamo_trace(
    module: torch.nn.Module,
    inputs: Any = None,
    arg_inputs: Any = None,
    kwarg_inputs: Mapping[str, Any] | None = None,
    **options: Any,
) -> ExportedProgram:
    """`flexrt.dynamo.trace`: Input ranges -> torch.export.Dims -> ExportedProgram."""
    from flexrt.trace import trace

    flat = normalize_inputs(module.forward, inputs, arg_inputs, kwarg_inputs)
    settings, runtime = resolve_options(options, module_device(module), tensors_device((flat.args, flat.kwargs)))
    return trace(module, flat, settings.device).exported


def build_engine(
    model: Any,
    profiles: Sequence[Profile] | None = None,
    inputs: Any = None,
    arg_inputs: Any = None,
    kwarg_inputs: Mapping[str, Any] | None = None,
    **options: Any,
) -> Engine:
    """`flexrt.build_engine`: an Engine with one program per profile (the engine-level API)."""
    from flexrt.compiler.pipeline import bind_program, build_from_traced, trace_module

    if isinstance(model, ExportedProgram):
        traced, resolved = bind_program(model, inputs, arg_inputs, kwarg_inputs, profiles)
        state = list(model.state_dict.values())
        settings, runtime = resolve_options(options, state[0].device if state else None)
    else:
        if inputs is None and arg_inputs is None and kwarg_inputs is None:
            if not profiles:
                raise InputSpecError("build_engine needs profiles=[flexrt.Profile(...)] or inputs=[flexrt.Input(...)]")
            inputs = _inputs_from_profile(model, profiles[0])
        flat = normalize_inputs(model.forward, inputs, arg_inputs, kwarg_inputs)
        settings, runtime = resolve_options(options, module_device(model))
    if settings.dryrun:
        raise InputSpecError("dryrun=True builds nothing; use flexrt.compile(..., dryrun=True) to see the partition")
    with _workers(settings, profiles) as pool:
        if not isinstance(model, ExportedProgram):
            traced, resolved = trace_module(model, flat, profiles, settings)
        return build_from_traced(traced, resolved, settings, runtime, pool)[0]


def _workers(settings: CompileSettings, profiles: Sequence[Profile] | None) -> Any:
    """Build workers for several profiles, started before the trace so that their start overlaps it
    (a null context when one process builds everything; a dry run builds nothing)."""
    if settings.dryrun:
        return contextlib.nullcontext()
    from flexrt.build.workers import prestarted

    return prestarted(settings, len(profiles or ()))


def _inputs_from_profile(model: torch.nn.Module, profile: Profile) -> list[Input]:
    """Inputs named by the profile, in the order of the model's forward signature, as float32."""
    import inspect

    params = [p.name for p in inspect.signature(model.forward).parameters.values()]
    missing = [n for n in profile if n not in params]
    if missing:
        raise InputSpecError(f"profile 0 names input(s) {missing} that the model's forward does not take; it takes {params}")
    ordered = [n for n in params if n in profile]
    if ordered != params[: len(ordered)]:
        raise InputSpecError(
            "the profile leaves out a positional input of forward; pass inputs=[flexrt.Input(...)] to give every input"
        )
    return [Input(min_shape=profile[n].min, opt_shape=profile[n].opt, max_shape=profile[n].max, name=n) for n in ordered]

