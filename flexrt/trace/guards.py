"""Guards that tracing produces, judged over the user's whole range instead of at the example.

torch.export turns every size branch the model takes into a guard. Guards it cannot write as a
`Dim` range (`Min(64*s, 4096) < ...`, `(s - 1)//4 != 0`) were either refused (torch 2.11:
"Constraints violated") or dropped (torch 2.13: the program silently runs the traced branch on
every size). flexrt exports with `prefer_deferred_runtime_asserts_over_guards`, so each such guard
becomes an `_assert_scalar` node in the program, and checks it here over the user's range: a guard
that holds everywhere is dropped at lowering with export's other guards (lower/strip_guards.py); one
that fails somewhere means the model really behaves differently there: the range is split
(range_split.py) or the error says where. Sizes 0/1 at the small end of a range
(feature maps reaching 1x1, a shared batch of 1) are retried with `backed_size_oblivious`, which
traces the general branch and guards the 1-case with such asserts (see `trace.trace`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import itertools
import logging
import os
import re
import sysconfig
import traceback
import unittest.mock
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sympy
import torch
from torch.export import ExportedProgram
from torch.utils._sympy.value_ranges import ValueRanges, bound_sympy

from flexrt.errors import CompilationError, DataDependentBranchError

logger = logging.getLogger(__name__)

_EXHAUSTIVE = 4096  # check every point of a range with at most this many points, else a dense sample


def export_flags() -> dict[str, Any]:
    """Keyword arguments for torch.export.export that turn inexpressible guards into run-time asserts."""
    params = inspect.signature(torch.export.export).parameters
    return {"prefer_deferred_runtime_asserts_over_guards": True} if "prefer_deferred_runtime_asserts_over_guards" in params else {}


@contextlib.contextmanager
def size_oblivious(on: bool) -> Iterator[None]:
    """Trace sizes 0/1 like any other size (torch >= 2.11's backed_size_oblivious); no-op when off."""
    from torch.fx.experimental import _config as fx_config

    if not on or not hasattr(fx_config, "backed_size_oblivious"):
        yield
        return
    with fx_config.patch(backed_size_oblivious=True):
        yield


def _floor_div(x: Any, y: Any) -> Any:
    return x // y


@contextlib.contextmanager
def exact_meta_shapes() -> Iterator[None]:
    """Meta functions that compute a size without guarding on it where torch's own add a needless guard.

    torch 2.11's `div_rtn` (torch/_meta_registrations.py; pooling_output_shape_pad_lr calls it for the
    output size of every max/avg pooling) ports C's round-toward-negative-infinity division by testing
    the remainder: `q = x // y; r = x % y; if r != 0 and (r < 0) != (y < 0): q -= 1`. On a symbolic size
    `r != 0` is a guard on the size's parity: after ResNet's stem (conv 7x7 stride 2 pad 3) the 3x3
    stride-2 max-pool guards `Ne(Mod(((s - 1)//2), 2), 0)`, false for half the heights and widths,
    though both branches give the same size: Python's `//` already floors and its `%` has the
    divisor's sign, so the correction never applies. torch 2.13 made `div_rtn` `x // y`; this does
    the same while tracing and building."""
    meta = getattr(torch, "_meta_registrations", None)
    if meta is None or not hasattr(meta, "div_rtn"):
        yield
        return
    with unittest.mock.patch.object(meta, "div_rtn", _floor_div):
        yield


@dataclasses.dataclass(frozen=True)
class RuntimeGuard:
    """One `_assert_scalar` of the program: its condition and where in the user's model it came from."""

    expr: sympy.Basic
    source: str

    def holds(self, point: Mapping[sympy.Symbol, int]) -> bool:
        """Whether the guard is true at `point`; a guard that cannot be evaluated there (a division by a
        size that is 0 at that point) does not hold: the program is not known to be valid there."""
        try:
            value = self.expr.xreplace({s: sympy.Integer(v) for s, v in point.items()})
            return bool(value) if value in (sympy.true, sympy.false) or isinstance(value, bool) else bool(sympy.simplify(value))
        except ArithmeticError:
            return False


def source_line(node: torch.fx.Node) -> str:
    """The last user frame of a node's stack trace: 'file:line in fn: code'."""
    trace = node.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)', trace)
    if not frames:
        return "(source unknown)"
    file, line, fn, code = frames[-1]
    return f"{file}:{line} in {fn}: {code.strip()}"


def runtime_guards(ep: ExportedProgram) -> list[RuntimeGuard]:
    """The program's run-time asserts on input sizes (data-dependent ones are left to run time)."""
    out = []
    for node in ep.graph.nodes:
        if node.op != "call_function" or node.target is not torch.ops.aten._assert_scalar.default:
            continue
        cond = node.args[0]
        val = cond.meta.get("val") if isinstance(cond, torch.fx.Node) else None
        if not isinstance(val, torch.SymBool):
            continue
        expr = val.node.expr
        if any(str(s).startswith("u") for s in expr.free_symbols):
            continue
        out.append(RuntimeGuard(expr, source_line(cond) if source_line(cond) != "(source unknown)" else source_line(node)))
    return out


def _points(lo: int, hi: int, dense: bool) -> list[int]:
    if dense or hi - lo < 64:
        return list(range(lo, hi + 1))
    geo = {round(lo * (hi / max(lo, 1)) ** (k / 32)) for k in range(33)} if lo > 0 else set()
    return sorted({*range(lo, lo + 17), *range(hi - 16, hi + 1), *geo, *range(lo, hi + 1, max(1, (hi - lo) // 64))})


def counterexample(guard: RuntimeGuard, ranges: Mapping[sympy.Symbol, tuple[int, int]]) -> dict[sympy.Symbol, int] | None:
    """A point of the range where the guard fails, or None: proven by interval arithmetic when it can
    be, else checked at every point (small ranges) or a dense sample of each axis."""
    syms = sorted(guard.expr.free_symbols & set(ranges), key=str)
    if not syms:
        return None
    try:
        vr = bound_sympy(guard.expr, {s: ValueRanges(*ranges[s]) for s in syms})
        if vr.is_singleton() and bool(vr.lower):
            return None
    except Exception:  # noqa: BLE001 - bound_sympy does not know every function; fall back to points
        pass
    size = 1
    for s in syms:
        size *= ranges[s][1] - ranges[s][0] + 1
    axes = [_points(*ranges[s], dense=size <= _EXHAUSTIVE) for s in syms]
    for values in itertools.product(*axes):
        point = dict(zip(syms, values))
        if not guard.holds(point):
            return point
    return None


def violations(
    ep: ExportedProgram, ranges: Mapping[sympy.Symbol, tuple[int, int]]
) -> list[tuple[RuntimeGuard, dict[sympy.Symbol, int]]]:
    """Each run-time guard that fails somewhere in the user's ranges, with a point where it fails."""
    bad = []
    for guard in runtime_guards(ep):
        point = counterexample(guard, ranges)
        if point is not None:
            bad.append((guard, point))
    return bad


def holding_interval(guard: RuntimeGuard, sym: sympy.Symbol, lo: int, hi: int) -> tuple[int, int] | None:
    """The interval of [lo, hi] where a one-symbol guard holds, if it holds on exactly one interval (checked
    at every point of small ranges; on large ones at a dense sample, with both ends found by bisection)."""
    pts = _points(lo, hi, dense=hi - lo <= _EXHAUSTIVE)
    ok = [guard.holds({sym: v}) for v in pts]
    good = [i for i, o in enumerate(ok) if o]
    if not good or not all(ok[good[0] : good[-1] + 1]):
        return None

    def bisect(bad: int, fine: int) -> int:  # the good value next to the bad one
        while abs(fine - bad) > 1:
            mid = (bad + fine) // 2
            bad, fine = (bad, mid) if guard.holds({sym: mid}) else (mid, fine)
        return fine

    i0, i1 = good[0], good[-1]
    a = bisect(pts[i0 - 1], pts[i0]) if i0 > 0 else pts[i0]
    b = bisect(pts[i1 + 1], pts[i1]) if i1 + 1 < len(pts) else pts[i1]
    return a, b


def split_point(
    bad: Sequence[tuple[RuntimeGuard, dict[sympy.Symbol, int]]], ranges: Mapping[sympy.Symbol, tuple[int, int]]
) -> tuple[sympy.Symbol, tuple[int, int]] | None:
    """A size and the interval of its range where a failing one-size guard holds: where to split."""
    for guard, _point in bad:
        syms = list(guard.expr.free_symbols & set(ranges))
        if len(syms) == 1:
            interval = holding_interval(guard, syms[0], *ranges[syms[0]])
            if interval is not None:
                return syms[0], interval
    return None


def describe_violations(
    bad: Sequence[tuple[RuntimeGuard, dict[sympy.Symbol, int]]],
    where: Mapping[sympy.Symbol, str],
    ranges: Mapping[sympy.Symbol, tuple[int, int]],
) -> str:
    lines = []
    for guard, point in bad:
        at = ", ".join(f"{where.get(s, str(s))} = {v}" for s, v in point.items())
        text = f"- `{guard.expr}` (from {guard.source}) fails at {at}"
        syms = list(guard.expr.free_symbols & set(ranges))
        if len(syms) == 1:
            ok = holding_interval(guard, syms[0], *ranges[syms[0]])
            if ok:
                text += f"; it holds for {where.get(syms[0], str(syms[0]))} in [{ok[0]}, {ok[1]}]"
        lines.append(text)
    return (
        "trace: the model takes a different path in part of the requested range; the traced program is only "
        "valid where these conditions hold:\n" + "\n".join(lines) + "\n"
        "Narrow the Input range to where they hold, or compile each part separately (one flexrt.compile per "
        "range, or profiles that each stay on one side)."
    )


_USER_FRAME = re.compile(r"The following call raised this error:\s*\n\s*File \"([^\"]+)\", line (\d+), in (\S+)\n\s*(.*)")


def export_error(e: BaseException) -> CompilationError:
    """The typed error for a trace failure: a branch on tensor data is its own class (see api.compile_module)."""
    cls = DataDependentBranchError if _is_data_dependent(e) else CompilationError
    return cls(describe_export_error(e))


def _is_data_dependent(e: BaseException) -> bool:
    return type(e).__name__ in ("GuardOnDataDependentSymNode", "DataDependentOutputException") or (
        "data-dependent" in str(e)
    )


_LIBRARY_DIRS = tuple(
    d + os.sep for d in (
        os.path.dirname(torch.__file__),
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # flexrt
        sysconfig.get_paths()["stdlib"],
    )
)


def _model_frame(e: BaseException) -> str:
    """` at FILE:LINE in FUNC: CODE` for the innermost frame of the failure outside torch and flexrt
    (the model's own code, or a library it calls, such as torchvision's ops); "" when there is none."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if not f.filename.startswith(_LIBRARY_DIRS)]
    if not frames:
        return ""
    f = frames[-1]
    return f" at {f.filename}:{f.lineno} in {f.name}: {(f.line or '').strip()}"


def describe_export_error(e: BaseException) -> str:
    """A trace failure in flexrt's words: what torch.export could not do, where in the model, and what to do."""
    message = str(e)
    m = _USER_FRAME.search(message)
    where = f" at {m.group(1)}:{m.group(2)} in {m.group(3)}: {m.group(4).strip()}" if m else _model_frame(e)
    if _is_data_dependent(e):
        cond = re.search(r"data-dependent expression (.+?) \(", message)
        return (
            f"trace: the model branches on a value computed from tensor data{where}"
            f"{f' (condition `{cond.group(1)}`)' if cond else ''}. torch.export cannot trace past a Python branch on "
            "tensor values. Workarounds: compile with "
            "ir='torch_compile' (that branch then runs in PyTorch between engines; flexrt.compile does this itself "
            "unless require_full_compilation=True); rewrite the branch with "
            "torch.where / torch.cond or torch._check; or compile the submodules before and after it."
        )
    first = message.strip().splitlines()[0][:500] if message.strip() else type(e).__name__
    return (
        f"trace: torch.export could not trace the model{where}: {type(e).__name__}: {first}\n"
        "flexrt traces models with torch.export (non-strict). Make that code exportable, move it out of the "
        "compiled module, or export the model yourself and pass the ExportedProgram to flexrt.dynamo.compile."
    )
