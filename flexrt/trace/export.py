"""Trace: `Input` ranges -> `torch.export.Dim`s -> `ExportedProgram`, and the reverse binding.

`trace` exports a module with one `Dim` per dynamic axis, merging the axes that the model requires
to be equal (torch.export says so in its suggested fixes), and turns every other export complaint
into an error that names the input and the dim. `bind_exported` reads the ranges of a user's own
`ExportedProgram` (shared dims such as the seed's `seq_len` included) and checks requested ranges
against them. Either way the result is a `TracedProgram`: the program plus, for every flat input,
its name, spec and the symbol of each dim.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import re
import time
from collections.abc import Sequence
from typing import Any

import sympy
import torch
import torch.utils._pytree as pytree
from torch.export import Dim, ExportedProgram

import flexrt.trace.guards as trace_guards
from flexrt.errors import CompilationError, FlexrtError, InputSpecError
from flexrt.spec import UNBOUNDED, Input, ShapeRange, finite_or, random_tensor
from flexrt.spec.flat import FlatInputs, is_leaf, param_names
from flexrt.trace.split import RangeSplitNeeded
from flexrt.trace.train_mode import eval_semantics
from flexrt.trace.verify import SizeOneMismatch, needs_check, verify_small_end

logger = logging.getLogger(__name__)

DimExpr = Any  # an int (static) or a sympy expression of the program's symbols


@dataclasses.dataclass(frozen=True)
class InputBinding:
    """One flat tensor input: its name, its spec, and the program's expression for each dim."""

    name: str
    spec: Input
    dims: tuple[DimExpr, ...]


@dataclasses.dataclass
class TracedProgram:
    """An exported program and how its flat inputs relate to the user's specs."""

    exported: ExportedProgram
    inputs: list[InputBinding]
    symbol_ranges: dict[sympy.Symbol, tuple[int, int]]
    size_oblivious: bool = False  # traced with backed_size_oblivious: segments are re-exported the same way

    @property
    def in_spec(self) -> pytree.TreeSpec:
        return self.exported.call_spec.in_spec

    @property
    def out_spec(self) -> pytree.TreeSpec:
        return self.exported.call_spec.out_spec


# ---------------------------------------------------------------------------------------------
# The user's flat inputs (`flexrt.spec.flat`) -> example tensors and Dims


def _var_positional(fn: Any) -> str | None:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    return next((p.name for p in params if p.kind == p.VAR_POSITIONAL), None)


# ---------------------------------------------------------------------------------------------
# Export with Dims built from the specs


def trace_hint(spec_range: ShapeRange, dim: int) -> int:
    """The size to trace a dynamic dim at: opt, but at least 2 so export does not specialise it."""
    opt, hi = spec_range.opt[dim], spec_range.max[dim]
    return min(max(opt, 2), hi) if hi >= 2 else opt


def example_inputs(flat: FlatInputs, device: torch.device, at_min: bool = False) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Random tensors at each spec's trace hint (opt, >= 2 on dynamic dims), or at its min shape, in the
    user's structure."""
    it = iter(flat.specs)

    def make(_leaf: Any) -> torch.Tensor:
        spec = next(it)
        if at_min:
            return random_tensor(list(spec.range.min), spec.dtype, device, spec.format, spec.tensor_domain)
        shape = [trace_hint(spec.range, d) if d in spec.range.dynamic_dims else spec.range.opt[d] for d in range(spec.range.rank)]
        return random_tensor(shape, spec.dtype, device, spec.format, spec.tensor_domain)

    args, kwargs = pytree.tree_map(make, (flat.args, flat.kwargs), is_leaf=is_leaf)
    return args, kwargs


def _dim_name(input_name: str, axis: int) -> str:
    base = re.sub(r"\W", "_", input_name)
    if not base or base[0].isdigit():
        base = "in_" + base
    return f"{base}_{axis}"


class _DimGroups:
    """Union-find over (input index, axis), so that axes the model ties together share one Dim."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, k: str) -> str:
        while self.parent.get(k, k) != k:
            k = self.parent[k]
        return k

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


_FIX_RE = re.compile(r"^\s*(\w+)\s*=\s*(.+?)\s*$")
_DIM_FIX_RE = re.compile(r"^Dim\(\s*'\w+',\s*min=(\d+),\s*max=(\d+)\s*\)$")


def suggested_fixes(message: str) -> list[tuple[str, str]]:
    if "Suggested fixes:" not in message:
        return []
    block = message.split("Suggested fixes:", 1)[1]
    fixes = []
    for line in block.splitlines():
        if not line.strip():
            if fixes:
                break
            continue
        m = _FIX_RE.match(line)
        if not m:
            break
        fixes.append((m.group(1), m.group(2)))
    return fixes


def _dynamic_shapes(
    flat: FlatInputs, forward: Any, dims: dict[str, Dim], keys: dict[tuple[int, int], str], groups: _DimGroups
) -> Any:
    it = iter(range(len(flat.specs)))

    def spec_for(_leaf: Any) -> Any:
        i = next(it)
        dyn = flat.specs[i].range.dynamic_dims
        return {axis: dims[groups.find(keys[(i, axis)])] for axis in dyn} if dyn else None

    args_ds, kwargs_ds = pytree.tree_map(spec_for, (flat.args, flat.kwargs), is_leaf=is_leaf)
    if _var_positional(forward):  # forward(*tensors): export matches dynamic_shapes[0] to the whole tuple
        return (tuple(args_ds),) if not kwargs_ds else {**{_var_positional(forward): tuple(args_ds)}, **kwargs_ds}
    if not kwargs_ds:
        return tuple(args_ds)
    names = param_names(forward)
    if len(names) < len(args_ds):
        raise InputSpecError("cannot name the positional inputs of this model for export; pass them as kwarg_inputs")
    out = dict(zip(names, args_ds))
    out.update(kwargs_ds)
    return out


def _export(
    model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], dynamic_shapes: Any, oblivious: bool = False
) -> ExportedProgram:
    with torch.no_grad(), trace_guards.size_oblivious(oblivious), trace_guards.exact_meta_shapes():
        return torch.export.export(
            model, args, kwargs or None, dynamic_shapes=dynamic_shapes, strict=False, **trace_guards.export_flags()
        )


def _export_finding_ties(
    model: torch.nn.Module, flat: FlatInputs, args: tuple[Any, ...], kwargs: dict[str, Any],
    keys: dict[tuple[int, int], str], oblivious: bool,
) -> ExportedProgram | None:
    """One export in which torch.export itself finds the axes the model ties together (an attention
    mask's dims and the ids'), each axis a `Dim.DYNAMIC` over its range. Kept only when every dynamic
    axis stays a plain symbol covering the user's range (`bind`'s checks); otherwise None, and the
    Dim-per-axis loop below gives the precise error. It spares that loop's failed first export: half
    the trace time of a model with a padding mask (BERT-base: 10.0 -> 4.9 s on a 2-core CPU)."""
    hints = {key: Dim.DYNAMIC(min=flat.specs[i].range.min[axis], max=flat.specs[i].range.max[axis])
             for (i, axis), key in keys.items()}
    try:
        ep = _export(model, args, kwargs, _dynamic_shapes(flat, model.forward, hints, keys, _DimGroups()), oblivious)
        dims = program_dims(ep)
        if any(not isinstance(dims[i][axis], sympy.Symbol) for i, axis in keys):
            return None
        bind(ep, flat.names, flat.specs)
    except Exception as e:  # noqa: BLE001 - any failure is diagnosed by the Dim-per-axis export
        logger.debug("trace: export with torch.export's own dim ties failed (%s); one Dim per axis", type(e).__name__)
        return None
    return ep


def export_with_dims(
    model: torch.nn.Module, flat: FlatInputs, args: tuple[Any, ...], kwargs: dict[str, Any], oblivious: bool = False
) -> ExportedProgram:
    """Export with one Dim per dynamic axis; merge axes export says must be equal, and retry."""
    keys: dict[tuple[int, int], str] = {}
    where: dict[str, str] = {}
    for i, (name, spec) in enumerate(zip(flat.names, flat.specs)):
        for axis in spec.range.dynamic_dims:
            key = _dim_name(name, axis)
            keys[(i, axis)] = key
            where[key] = f"input {name!r} dim {axis}"
    groups = _DimGroups()
    forward = model.forward
    if keys:
        ep = _export_finding_ties(model, flat, args, kwargs, keys, oblivious)
        if ep is not None:
            return ep
    for _attempt in range(1 + len(keys)):
        dims: dict[str, Dim] = {}
        for (i, axis), key in keys.items():
            root = groups.find(key)
            r = flat.specs[i].range
            lo, hi = r.min[axis], r.max[axis]
            if root in dims:
                have = dims[root]
                if (have.min, have.max) != (lo, hi):  # type: ignore[attr-defined]
                    raise InputSpecError(
                        f"{where[key]} must equal {where[root]} in this model, but their ranges differ: "
                        f"[{lo}, {hi}] vs [{have.min}, {have.max}]; give both the same min/max"  # type: ignore[attr-defined]
                    )
            else:
                dims[root] = Dim(root, min=lo, max=hi)
        ds = _dynamic_shapes(flat, forward, dims, keys, groups) if keys else None
        try:
            return _export(model, args, kwargs, ds, oblivious)
        except Exception as e:
            message = str(e)
            fixes = suggested_fixes(message)
            if not fixes:
                raise trace_guards.export_error(e) from e
            merged = False
            for lhs, rhs in fixes:
                if lhs in where and rhs in where:
                    groups.union(rhs, lhs)
                    merged = True
                elif lhs in where and rhs.lstrip("-").isdigit():
                    raise InputSpecError(
                        f"{where[lhs]} is declared dynamic but the model only works when it is {rhs}; "
                        f"make that dim static (min = opt = max = {rhs})"
                    ) from None
                elif lhs in where and _DIM_FIX_RE.match(rhs):
                    lo_fix, hi_fix = (int(v) for v in _DIM_FIX_RE.match(rhs).groups())  # type: ignore[union-attr]
                    group = [(flat.names[i], axis) for (i, axis), key in keys.items() if groups.find(key) == groups.find(lhs)]
                    i0, axis0 = next((i, axis) for (i, axis), key in keys.items() if key == lhs)
                    full = (flat.specs[i0].range.min[axis0], flat.specs[i0].range.max[axis0])
                    raise RangeSplitNeeded(
                        f"trace: the model takes a different path in part of {where[lhs]}'s range [{full[0]}, {full[1]}]; "
                        f"the traced program holds for [{lo_fix}, {hi_fix}] (torch.export: `{lhs} = {rhs}`). Narrow the "
                        "Input range, or compile each part separately.", group, (lo_fix, hi_fix), full,
                    ) from None
                elif lhs in where:
                    raise InputSpecError(
                        f"{where[lhs]}: the model constrains this dim as `{lhs} = {rhs}` (torch.export's suggestion). "
                        "Adjust the Input ranges to satisfy it, or export the model yourself with matching "
                        "torch.export.Dim objects and call flexrt.dynamo.compile."
                    ) from None
            if not merged:
                raise trace_guards.export_error(e) from e
            logger.debug("trace: merged dims tied by the model: %s", fixes)
    raise CompilationError("trace: could not find a consistent set of dynamic dims for torch.export")


# ---------------------------------------------------------------------------------------------
# ExportedProgram -> bindings


def user_input_nodes(ep: ExportedProgram) -> list[torch.fx.Node]:
    names = list(ep.graph_signature.user_inputs)
    by_name = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    return [by_name[n] for n in names]


def _expr(size: Any) -> DimExpr:
    if isinstance(size, torch.SymInt):
        expr = size.node.expr
        return int(expr) if expr.is_number else expr
    return int(size)


def _range_of(ep: ExportedProgram, sym: sympy.Symbol) -> tuple[int, int]:
    vr = ep.range_constraints.get(sym)
    if vr is None:
        return 0, UNBOUNDED
    return max(finite_or(vr.lower, 0), 0), min(finite_or(vr.upper, UNBOUNDED), UNBOUNDED)


def program_dims(ep: ExportedProgram) -> list[tuple[DimExpr, ...]]:
    """For each flat user input, the program's expression of each dim."""
    out = []
    for node in user_input_nodes(ep):
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise InputSpecError(f"input {node.name!r} is not a tensor; flexrt compiles models whose inputs are tensors")
        out.append(tuple(_expr(s) for s in val.shape))
    return out


def bind(ep: ExportedProgram, names: Sequence[str], specs: Sequence[Input]) -> TracedProgram:
    """Check each spec against the program's ranges and equalities; record the symbol of every dim."""
    dims_per_input = program_dims(ep)
    if len(dims_per_input) != len(specs):
        raise InputSpecError(
            f"the program takes {len(dims_per_input)} tensor inputs but {len(specs)} were given "
            f"({', '.join(names)}); give one Input or tensor per model input"
        )
    owner: dict[Any, tuple[str, int, ShapeRange]] = {}
    symbols: dict[sympy.Symbol, tuple[int, int]] = {}
    bindings = []
    for name, spec, dims in zip(names, specs, dims_per_input):
        r = spec.range
        if len(dims) != r.rank:
            raise InputSpecError(f"input {name!r}: the program expects rank {len(dims)}, the spec has rank {r.rank} ({r})")
        for axis, expr in enumerate(dims):
            lo, hi = r.min[axis], r.max[axis]
            if isinstance(expr, int):
                if not lo == hi == expr:
                    raise InputSpecError(
                        f"input {name!r} dim {axis}: the program is static there (size {expr}) but the spec asks for "
                        f"[{lo}, {hi}]; re-export with a torch.export.Dim on that axis, or make the spec static"
                    )
                continue
            if not isinstance(expr, sympy.Symbol):
                continue  # derived dims (e.g. 2*s0) are checked through their symbols at run time
            plo, phi = _range_of(ep, expr)
            # torch.export reports a backed dim's lower bound as 2 even when 1 was asked for and works
            if hi > phi or (lo < plo and not (lo >= 1 and plo == 2)):
                sym_name = expr.name
                raise InputSpecError(
                    f"input {name!r} dim {axis}: the spec's range [{lo}, {hi}] is wider than the exported program's "
                    f"[{plo}, {'inf' if phi >= UNBOUNDED else phi}]; re-export with "
                    f"torch.export.Dim({sym_name!r}, min={lo}, max={hi}) on that axis, or narrow the Input"
                )
            if expr in owner:
                other_name, other_axis, other_range = owner[expr]
                if (other_range.min[other_axis], other_range.max[other_axis]) != (lo, hi):
                    raise InputSpecError(
                        f"input {name!r} dim {axis} must equal input {other_name!r} dim {other_axis} in this program, "
                        f"but their ranges differ: [{lo}, {hi}] vs "
                        f"[{other_range.min[other_axis]}, {other_range.max[other_axis]}]; give both the same range"
                    )
            else:
                owner[expr] = (name, axis, r)
                symbols[expr] = (lo, hi)
        bindings.append(InputBinding(name, spec if spec.name == name else spec.with_name(name), dims))
    return TracedProgram(ep, bindings, symbols)


def specs_from_exported(ep: ExportedProgram, tensors: Sequence[torch.Tensor], names: Sequence[str]) -> list[Input]:
    """Ranges from the program's own constraints, opt from the tensors (dynamo.compile with tensors)."""
    specs = []
    for name, t, dims in zip(names, tensors, program_dims(ep)):
        if not isinstance(t, torch.Tensor):
            raise InputSpecError(f"input {name!r}: expected a tensor, got {type(t).__name__}")
        if t.dim() != len(dims):
            raise InputSpecError(f"input {name!r}: the program expects rank {len(dims)}, the tensor has rank {t.dim()}")
        lo, hi = [], []
        for axis, expr in enumerate(dims):
            if isinstance(expr, int):
                lo.append(expr)
                hi.append(expr)
            elif isinstance(expr, sympy.Symbol):
                a, b = _range_of(ep, expr)
                lo.append(1 if a == 2 else a)  # see bind(): export reports 2 for a backed dim that admits 1
                hi.append(b)
            else:
                lo.append(t.shape[axis])
                hi.append(t.shape[axis])
        opt = [min(max(o, a), b) for o, a, b in zip(t.shape, lo, hi)]
        specs.append(Input(min_shape=lo, opt_shape=opt, max_shape=hi, dtype=t.dtype, name=name))
    return specs


def trace(model: torch.nn.Module, flat: FlatInputs, device: torch.device) -> TracedProgram:
    """Export `model` over the ranges of `flat.specs` and bind the result."""
    if not isinstance(model, torch.nn.Module):
        raise InputSpecError(f"flexrt compiles torch.nn.Module objects, got {type(model).__name__}")
    start = time.perf_counter()
    args, kwargs = example_inputs(flat, device)
    first: FlexrtError | None = None
    for oblivious in (False, True):  # sizes 0/1 specialised or guarded at the small end: trace them generally
        try:
            with eval_semantics(model):
                traced = _export_checked(model, flat, args, kwargs, oblivious)
            if oblivious:
                logger.info("trace: traced with backed_size_oblivious (a size of 0/1 in the range changed the path)")
            logger.debug("trace: torch.export took %.2f s", time.perf_counter() - start)
            return traced
        except SizeOneMismatch as e:  # the general trace ran and differs at size 1: the most precise answer
            raise e from first
        except FlexrtError as e:
            first = first or e
            logger.debug("trace: attempt with backed_size_oblivious=%s failed: %s", oblivious, e)
    assert first is not None
    raise first


def _device_of(args: Any, kwargs: Any) -> torch.device:
    leaves = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    return leaves[0].device if leaves else torch.device("cpu")


def _export_checked(
    model: torch.nn.Module, flat: FlatInputs, args: tuple[Any, ...], kwargs: dict[str, Any], oblivious: bool
) -> TracedProgram:
    """Export, bind, and check the program's run-time guards over the whole requested range."""
    traced = bind(export_with_dims(model, flat, args, kwargs, oblivious), flat.names, flat.specs)
    traced.size_oblivious = oblivious
    if needs_check(flat.specs, oblivious):
        verify_small_end(model, traced, flat.args, flat.kwargs, flat.specs, _device_of(args, kwargs))
    bad = trace_guards.violations(traced.exported, traced.symbol_ranges)
    if bad:
        axes: dict[sympy.Symbol, list[tuple[str, int]]] = {}
        for b in traced.inputs:
            for axis, expr in enumerate(b.dims):
                if isinstance(expr, sympy.Symbol):
                    axes.setdefault(expr, []).append((b.name, axis))
        where = {sym: f"input {pairs[0][0]!r} dim {pairs[0][1]}" for sym, pairs in axes.items()}
        message = trace_guards.describe_violations(bad, where, traced.symbol_ranges)
        split = trace_guards.split_point(bad, traced.symbol_ranges)
        if split is not None:
            sym, holds = split
            raise RangeSplitNeeded(message, axes[sym], holds, traced.symbol_ranges[sym])
        raise CompilationError(message)
    return traced
