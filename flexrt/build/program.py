"""Build every segment of a partition plan at one profile: export it at the profile's ranges and
compile its engines. The result is data (`ProgramState`); the compiler wraps it into a runtime Engine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import sympy
import torch
import torch.utils._pytree as pytree

from flexrt.build.inductor import (
    SymbolRange,
    cached_engine,
    compile_engine,
    export_segment,
    export_with_dims,
    segment_dims,
    segment_key,
    widen_data_dependent,
)
from flexrt.build.workers import EngineJob, WorkerPool, worker_count
from flexrt.errors import CompilationError, InputSpecError
from flexrt.ir import ProgramState, SegmentState, TensorSpec
from flexrt.ir.names import output_names
from flexrt.partition import PartitionPlan
from flexrt.settings import CompileSettings
from flexrt.spec import Profile, random_tensor
from flexrt.stage_log import stage_done, stage_started
from flexrt.trace import TracedProgram, trace_hint

logger = logging.getLogger(__name__)


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


def dims_text(dims: Sequence[Any]) -> tuple[int | str, ...]:
    return tuple(d if isinstance(d, int) else str(d) for d in dims)


def output_specs(gm: torch.fx.GraphModule, plan: PartitionPlan, out_spec: pytree.TreeSpec) -> list[TensorSpec]:
    output = next(n for n in gm.graph.nodes if n.op == "output")
    flat = output.args[0] if isinstance(output.args[0], (tuple, list)) else [output.args[0]]
    names = output_names(out_spec, len(flat))
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
    return build_programs(plan, traced, [profile], settings, first_index=index)[0]


def build_programs(
    plan: PartitionPlan, traced: TracedProgram, profiles: Sequence[Profile], settings: CompileSettings, first_index: int = 0,
    pool: WorkerPool | None = None,
) -> list[ProgramState]:
    """Every segment of the plan at each profile. Engines not in the cache are built after every
    profile's segments are known, side by side in worker processes where `worker_count` allows
    (`pool`'s, started before the trace, or new ones)."""
    pending: list[tuple[SegmentState, EngineJob]] = []
    programs = []
    side_by_side = len(profiles) > 1 and worker_count(settings, len(profiles)) > 1
    start = time.perf_counter()
    for k, profile in enumerate(profiles, start=first_index):
        programs.append(_program(plan, traced, profile, k, settings, pending))
        if not side_by_side:
            _build_pending(pending, settings)
            stage_done(logger, f"build profile {k}", time.perf_counter() - start)
            start = time.perf_counter()
    if side_by_side:
        jobs = len(pending)
        _build_pending(pending, settings, pool)
        stage_done(logger, f"build profiles {first_index}-{first_index + len(profiles) - 1}", time.perf_counter() - start,
                   f"{jobs} engine(s), {worker_count(settings, jobs)} process(es)")
    return programs


def _program(plan: PartitionPlan, traced: TracedProgram, profile: Profile, index: int, settings: CompileSettings,
             pending: list[tuple[SegmentState, EngineJob]]) -> ProgramState:
    """A profile's segments: torch segments exported, engines found in the cache or added to `pending`."""
    symbols = profile_symbols(traced, profile, index)
    env: dict[str, Any] = dict(zip(plan.inputs, _example_flat(traced, symbols, profile, settings.device)))
    env.update(plan.constants)
    segments = []
    for seg in plan.segments:
        ins = [env[n] for n in seg.inputs]
        if seg.kind == "engine":
            ins = [t.contiguous() if isinstance(t, torch.Tensor) else t for t in ins]
        with torch.no_grad():
            outs = seg.module(*ins)
        env.update(zip(seg.outputs, outs))
        state = SegmentState(seg.kind, seg.inputs, seg.outputs, seg.ops, dict(seg.reasons))
        segments.append(state)
        stage = f"segment {seg.index} profile {index}"
        if seg.kind != "engine":
            start = time.perf_counter()
            stage_started(logger, f"export {stage}")
            state.program = export_segment(seg.module, ins, symbols, traced.size_oblivious)
            stage_done(logger, f"export {stage}", time.perf_counter() - start)
            continue
        key = segment_key(seg.module, ins, symbols, traced.size_oblivious, settings)
        label = f"{stage} ({profile})"
        if (engine := cached_engine(key, settings, label)) is not None:
            state.engine = engine  # built before for this very segment and profile: no export, no build
            continue
        examples = widen_data_dependent(seg.module, ins)
        dims = segment_dims(seg.module, examples, symbols)
        pending.append((state, EngineJob(seg.module, examples, dims, traced.size_oblivious, key, label, stage)))
    return ProgramState(plan.inputs, plan.outputs, segments, dict(plan.constants))


def _build_pending(pending: list[tuple[SegmentState, EngineJob]], settings: CompileSettings,
                   pool: WorkerPool | None = None) -> None:
    """Build the pending engines (the first here, the rest in workers when there are several: `pool`'s
    if given) and empty the list."""
    if not pending:
        return
    jobs = [job for _, job in pending]
    workers = worker_count(settings, len(jobs))
    if workers <= 1:
        pool = None
    elif pool is None:
        pool = WorkerPool(settings, workers)
    if pool is not None:
        pool.submit(jobs[1:])
    try:
        _build_here(*pending[0], settings)
    except BaseException:
        if pool is not None:
            pool.close()  # the compile fails: stop the workers' builds too
        raise
    from_workers = pool.results() if pool is not None else [None] * (len(jobs) - 1)
    for (state, job), engine in zip(pending[1:], from_workers):
        if engine is not None:
            state.engine = engine
        else:
            _build_here(state, job, settings)
    pending.clear()


def _build_here(state: SegmentState, job: EngineJob, settings: CompileSettings) -> None:
    """Export and compile one engine in this process; with on_build_failure='eager' a failed build
    leaves the segment to run in PyTorch."""
    start = time.perf_counter()
    stage_started(logger, f"export {job.stage}")
    ep = export_with_dims(job.module, job.examples, job.dims, job.oblivious)
    stage_done(logger, f"export {job.stage}", time.perf_counter() - start)
    start = time.perf_counter()
    stage_started(logger, f"engine {job.label}")
    try:
        done = compile_engine(ep, settings, job.label, segment=job.segment)
        state.engine = done.binary
        stage_done(logger, f"engine {job.stage}", time.perf_counter() - start, done.times.describe() if done.times else "cached")
    except CompilationError as e:
        if settings.on_build_failure != "eager":
            raise
        logger.warning("build: %s; running %s in PyTorch (on_build_failure='eager')", e, job.label)
        state.kind = "torch"
        state.reasons = {"(segment)": f"engine build failed: {e}"[:500]}
        state.program = ep
