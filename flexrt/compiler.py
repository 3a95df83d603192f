"""The pipeline end to end: spec -> trace -> lower -> partition -> build -> runtime module.

`compile`, `dynamo.compile`, `dynamo.trace` and `build_engine` are thin entry points over
`build_engine_from_program`; every stage logs at DEBUG with its time, every engine at INFO.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import sympy
import torch
import torch.utils._pytree as pytree
from torch.export import ExportedProgram

from flexrt.engine.build import SymbolRange, compile_engine, export_segment
from flexrt.engine.engine import Engine, EngineState
from flexrt.engine.program import ProgramState, SegmentState
from flexrt.engine.shapes import TensorSpec
from flexrt.errors import InputSpecError
from flexrt.lower import lower
from flexrt.partition import PartitionPlan, partition
from flexrt.range_split import RangeSplitNeeded, compile_split
from flexrt.runtime import CompiledModule, Source
from flexrt.settings import CompileSettings, build_settings
from flexrt.spec import Input, Profile, ShapeRange, random_tensor
from flexrt.trace import (
    FlatInputs,
    TracedProgram,
    bind,
    normalize_inputs,
    specs_from_exported,
    trace,
    trace_hint,
    user_input_nodes,
)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Devices and profiles


def module_device(model: torch.nn.Module) -> torch.device | None:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return None


def _tensors_device(values: Any) -> torch.device | None:
    for leaf in pytree.tree_leaves(values):
        if isinstance(leaf, torch.Tensor):
            return leaf.device
    return None


def resolve_settings(options: Mapping[str, Any], *devices: torch.device | None) -> CompileSettings:
    """Settings, with the device defaulting to where the model (or its example tensors) lives."""
    found = next((d for d in devices if d is not None), None)
    settings = build_settings(options, device=found)
    if found is not None and devices[0] is not None and found.type != settings.device.type:
        raise InputSpecError(
            f"the model is on {found} but device={str(settings.device)!r} was requested; move the model with "
            f".to({str(settings.device)!r}) first, or leave device= unset"
        )
    return settings


def resolve_profiles(names: Sequence[str], specs: Sequence[Input], profiles: Sequence[Profile] | None) -> list[Profile]:
    """Profiles keyed by input name; without any, one profile from the Input ranges."""
    if not profiles:
        p = Profile()
        for name, spec in zip(names, specs):
            p[name] = spec.range
        return [p]
    out = []
    for k, prof in enumerate(profiles):
        if not isinstance(prof, Mapping):
            raise InputSpecError(f"profile {k}: expected a flexrt.Profile, got {type(prof).__name__}")
        unknown = [n for n in prof if n not in names]
        if unknown:
            raise InputSpecError(f"profile {k} names input(s) {unknown} that the model does not have; inputs are {list(names)}")
        filled = Profile()
        for name, spec in zip(names, specs):
            if name not in prof:
                if not spec.range.is_static:
                    raise InputSpecError(
                        f"profile {k} leaves dynamic input {name!r} unset; add "
                        f".add({name!r}, min=..., opt=..., max=...) or call fill_defaults"
                    )
                filled[name] = spec.range
                continue
            r = prof[name]
            if not isinstance(r, ShapeRange):
                r = ShapeRange.create(r[0], r[1], r[2], f"profile {k} input {name!r}")
            if r.rank != spec.range.rank:
                raise InputSpecError(
                    f"profile {k} input {name!r}: rank {r.rank} ({r}) differs from the input's rank {spec.range.rank}"
                )
            filled[name] = r
        out.append(filled)
    return out


def union_specs(names: Sequence[str], specs: Sequence[Input], profiles: Sequence[Profile]) -> list[Input]:
    """One spec per input covering every profile: what the model is traced over."""
    out = []
    for name, spec in zip(names, specs):
        ranges = [p[name] for p in profiles]
        lo = tuple(min(r.min[d] for r in ranges) for d in range(spec.range.rank))
        hi = tuple(max(r.max[d] for r in ranges) for d in range(spec.range.rank))
        opt = tuple(min(max(o, a), b) for o, a, b in zip(ranges[0].opt, lo, hi))
        out.append(
            Input(min_shape=lo, opt_shape=opt, max_shape=hi, dtype=spec.dtype, format=spec.format, name=name,
                  tensor_domain=spec.tensor_domain)
        )
    return out


def profile_symbols(traced: TracedProgram, profile: Profile, index: int) -> dict[sympy.Symbol, SymbolRange]:
    """Each root symbol's range and trace hint in one profile; tied dims must agree."""
    symbols: dict[sympy.Symbol, SymbolRange] = {}
    owner: dict[sympy.Symbol, str] = {}
    for b in traced.inputs:
        r = profile[b.name]
        for axis, expr in enumerate(b.dims):
            if not isinstance(expr, sympy.Symbol):
                continue
            hint = trace_hint(r, axis) if r.min[axis] != r.max[axis] else r.opt[axis]
            sr = SymbolRange(r.min[axis], hint, r.max[axis])
            if expr in symbols and (symbols[expr].lo, symbols[expr].hi) != (sr.lo, sr.hi):
                raise InputSpecError(
                    f"profile {index}: input {b.name!r} dim {axis} must equal {owner[expr]} in this model, but the "
                    f"profile gives [{sr.lo}, {sr.hi}] vs [{symbols[expr].lo}, {symbols[expr].hi}]"
                )
            symbols.setdefault(expr, sr)
            owner.setdefault(expr, f"input {b.name!r} dim {axis}")
    return symbols


def _example_flat(traced: TracedProgram, symbols: Mapping[sympy.Symbol, SymbolRange], profile: Profile, device: torch.device) -> list[torch.Tensor]:
    hints = {s: r.hint for s, r in symbols.items()}
    out = []
    for b in traced.inputs:
        r = profile[b.name]
        shape = []
        for axis, expr in enumerate(b.dims):
            if isinstance(expr, int):
                shape.append(expr)
            elif r.min[axis] == r.max[axis]:
                shape.append(r.min[axis])
            else:
                value = sympy.sympify(expr).subs(hints)
                shape.append(int(value) if value.is_number else r.opt[axis])
        out.append(random_tensor(shape, b.spec.dtype, device, b.spec.format, b.spec.tensor_domain))
    return out


# ---------------------------------------------------------------------------------------------
# Build


def _output_names(out_spec: pytree.TreeSpec, n: int) -> list[str]:
    """Readable output names: "output" for one tensor, "output_0".. for tuples, keys for dicts."""
    tree = pytree.tree_unflatten(list(range(n)), out_spec)
    names = []
    for path, _ in pytree.tree_flatten_with_path(tree)[0]:
        parts = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        if not parts:
            names.append("output")
        elif hasattr(path[0], "idx"):
            names.append("_".join(["output", *parts]))
        else:
            names.append("_".join(parts))
    return names


def _dims_text(dims: Sequence[Any]) -> tuple[int | str, ...]:
    return tuple(d if isinstance(d, int) else str(d) for d in dims)


def _output_specs(gm: torch.fx.GraphModule, plan: PartitionPlan, out_spec: pytree.TreeSpec) -> list[TensorSpec]:
    output = next(n for n in gm.graph.nodes if n.op == "output")
    flat = output.args[0] if isinstance(output.args[0], (tuple, list)) else [output.args[0]]
    names = _output_names(out_spec, len(flat))
    specs = []
    for name, node in zip(names, flat):
        val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
        if isinstance(val, torch.Tensor):
            dims = []
            for s in val.shape:
                if isinstance(s, torch.SymInt):
                    e = s.node.expr
                    dims.append(int(e) if e.is_number else str(e))
                else:
                    dims.append(int(s))
            specs.append(TensorSpec(name, val.dtype, tuple(dims)))
        else:
            specs.append(TensorSpec(name, torch.float32, ()))
    return specs


def build_program(
    plan: PartitionPlan, traced: TracedProgram, profile: Profile, index: int, settings: CompileSettings
) -> ProgramState:
    """Every segment of the plan, exported and (for engines) compiled at one profile."""
    symbols = profile_symbols(traced, profile, index)
    env: dict[str, Any] = dict(zip(plan.inputs, _example_flat(traced, symbols, profile, settings.device)))
    env.update(plan.constants)
    segments = []
    for seg in plan.segments:
        ins = [env[n] for n in seg.inputs]
        if seg.kind == "engine":
            ins = [t.contiguous() if isinstance(t, torch.Tensor) else t for t in ins]
        start = time.perf_counter()
        with torch.no_grad():
            outs = seg.module(*ins)
        env.update(zip(seg.outputs, outs))
        ep = export_segment(seg.module, ins, symbols, traced.size_oblivious)
        logger.debug("build: exported segment %d for profile %d in %.2f s", seg.index, index, time.perf_counter() - start)
        state = SegmentState(seg.kind, seg.inputs, seg.outputs, seg.ops, seg.reasons)
        if seg.kind == "engine":
            state.engine = compile_engine(ep, settings, f"segment {seg.index} profile {index} ({profile})")
        else:
            state.program = ep
        segments.append(state)
    return ProgramState(plan.inputs, plan.outputs, segments, dict(plan.constants))


def build_from_traced(
    traced: TracedProgram, profiles: Sequence[Profile], settings: CompileSettings
) -> tuple[Engine, torch.fx.GraphModule, PartitionPlan]:
    start = time.perf_counter()
    gm = lower(traced.exported, settings)
    logger.debug("lower: %.2f s", time.perf_counter() - start)
    start = time.perf_counter()
    plan = partition(gm, settings)
    logger.debug("partition: %.2f s, %d segment(s)", time.perf_counter() - start, len(plan.segments))
    if settings.dryrun:
        return None, gm, plan  # type: ignore[return-value]
    programs = []
    for k, prof in enumerate(profiles):
        start = time.perf_counter()
        programs.append(build_program(plan, traced, prof, k, settings))
        logger.debug("build: profile %d built in %.1f s", k, time.perf_counter() - start)
    inputs = [TensorSpec(b.name, b.spec.dtype, _dims_text(b.dims), b.spec.format) for b in traced.inputs]
    state = EngineState(
        inputs, _output_specs(gm, plan, traced.out_spec), list(profiles), programs, settings, traced.in_spec, traced.out_spec
    )
    return Engine(state), gm, plan


# ---------------------------------------------------------------------------------------------
# Entry points


def _trace_model(model: torch.nn.Module, flat: FlatInputs, profiles: Sequence[Profile] | None, settings: CompileSettings) -> tuple[TracedProgram, list[Profile]]:
    resolved = resolve_profiles(flat.names, flat.specs, profiles)
    union = union_specs(flat.names, flat.specs, resolved)
    traced_flat = FlatInputs(flat.args, flat.kwargs, flat.names, union)
    return trace(model, traced_flat, settings.device), resolved


def _bind_program(
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


def _finish(traced: TracedProgram, profiles: list[Profile], settings: CompileSettings) -> Any:
    engine, gm, plan = build_from_traced(traced, profiles, settings)
    if settings.dryrun:
        print(plan.report)
        logger.info("dryrun: nothing built; returning the lowered graph, which runs in PyTorch")
        return gm
    return CompiledModule(engine, settings.on_out_of_range, Source(traced, settings, gm, plan))


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
        raise InputSpecError("ir='ts' (TorchScript) is not supported: TorchScript is deprecated in PyTorch 2; use ir='dynamo'")
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
    settings = resolve_settings(options, module_device(module), _tensors_device((flat.args, flat.kwargs)))
    start = time.perf_counter()
    try:
        traced, resolved = _trace_model(module, flat, profiles, settings)
    except RangeSplitNeeded as split:
        if profiles or settings.dryrun:  # the user's own profiles are kept as given; a dry run reports the guard
            raise
        return compile_split(split, flat.args, flat.kwargs, flat.specs, lambda a, k: compile_module(
            module, ir=ir, arg_inputs=a, kwarg_inputs=k or None, **options))
    logger.debug("trace: %.2f s", time.perf_counter() - start)
    return _finish(traced, resolved, settings)


def dynamo_compile(
    exported_program: ExportedProgram,
    inputs: Any = None,
    arg_inputs: Any = None,
    kwarg_inputs: Mapping[str, Any] | None = None,
    profiles: Sequence[Profile] | None = None,
    **options: Any,
) -> Any:
    """`flexrt.dynamo.compile`: compile a user's ExportedProgram over its own or the given ranges."""
    if not isinstance(exported_program, ExportedProgram):
        raise InputSpecError(
            f"flexrt.dynamo.compile expects a torch.export.ExportedProgram, got {type(exported_program).__name__}; "
            "use flexrt.compile for an nn.Module"
        )
    state = list(exported_program.state_dict.values()) + [
        v for v in exported_program.constants.values() if isinstance(v, torch.Tensor)
    ]
    ep_device = state[0].device if state else None
    traced, resolved = _bind_program(exported_program, inputs, arg_inputs, kwarg_inputs, profiles)
    settings = resolve_settings(options, ep_device, _tensors_device((inputs, arg_inputs, kwarg_inputs)))
    return _finish(traced, resolved, settings)


def dynamo_trace(
    module: torch.nn.Module,
    inputs: Any = None,
    arg_inputs: Any = None,
    kwarg_inputs: Mapping[str, Any] | None = None,
    **options: Any,
) -> ExportedProgram:
    """`flexrt.dynamo.trace`: Input ranges -> torch.export.Dims -> ExportedProgram."""
    flat = normalize_inputs(module.forward, inputs, arg_inputs, kwarg_inputs)
    settings = resolve_settings(options, module_device(module), _tensors_device((flat.args, flat.kwargs)))
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
    if isinstance(model, ExportedProgram):
        traced, resolved = _bind_program(model, inputs, arg_inputs, kwarg_inputs, profiles)
        state = list(model.state_dict.values())
        settings = resolve_settings(options, state[0].device if state else None)
    else:
        if inputs is None and arg_inputs is None and kwarg_inputs is None:
            if not profiles:
                raise InputSpecError("build_engine needs profiles=[flexrt.Profile(...)] or inputs=[flexrt.Input(...)]")
            inputs = _inputs_from_profile(model, profiles[0])
        flat = normalize_inputs(model.forward, inputs, arg_inputs, kwarg_inputs)
        settings = resolve_settings(options, module_device(model))
        traced, resolved = _trace_model(model, flat, profiles, settings)
    if settings.dryrun:
        raise InputSpecError("dryrun=True builds nothing; use flexrt.compile(..., dryrun=True) to see the partition")
    engine, _, _ = build_from_traced(traced, resolved, settings)
    return engine


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

