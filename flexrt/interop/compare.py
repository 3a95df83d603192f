"""Compare an engine with a reference (eager PyTorch, ONNX Runtime) over the shapes its profiles span.

Shared by `flexrt run` and the Polygraphy data loader: every profile's min, opt and max and random
in-range shapes (tied dims drawn once), fresh random data per shape, and per output the largest
absolute and relative error with the shape that produced it. An element fails when both its
absolute error exceeds atol and its relative error exceeds rtol: Polygraphy's element-wise rule
(`SimpleCompareFunc`), so `--atol`/`--rtol` mean what they mean to `polygraphy run`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import sympy
import torch
import torch.utils._pytree as pytree

from flexrt.runtime import Engine, Runner
from flexrt.runtime.arrays import to_numpy
from flexrt.spec import random_tensor

logger = logging.getLogger(__name__)

Shapes = dict[str, tuple[int, ...]]
Reference = Callable[[Mapping[str, torch.Tensor]], Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class Case:
    """One set of input shapes to run: which profile, and where in it (min, opt, max, random k)."""

    profile: int
    label: str
    shapes: Shapes

    def describe(self) -> str:
        shapes = ", ".join(f"{n}={'x'.join(map(str, s)) or 'scalar'}" for n, s in self.shapes.items())
        return f"p{self.profile} {self.label}: {shapes}"


def _random_shapes(engine: Engine, profile: int, rng: random.Random, tries: int = 50) -> Shapes | None:
    """Shapes inside one profile with tied and derived dims consistent: each symbol drawn once."""
    prof = engine.profiles[profile]
    bounds: dict[sympy.Symbol, tuple[int, int]] = {}
    for spec in engine.inputs:
        r = prof[spec.name]
        for axis, dim in enumerate(spec.dims):
            if isinstance(dim, str) and sympy.sympify(dim).is_Symbol:
                sym = sympy.Symbol(dim)
                lo, hi = bounds.get(sym, (r.min[axis], r.max[axis]))
                bounds[sym] = (max(lo, r.min[axis]), min(hi, r.max[axis]))
    for _ in range(tries):
        values = {s: rng.randint(lo, hi) for s, (lo, hi) in bounds.items() if lo <= hi}
        shapes: Shapes = {}
        for spec in engine.inputs:
            r = prof[spec.name]
            dims = []
            for axis, dim in enumerate(spec.dims):
                if isinstance(dim, int):
                    dims.append(dim)
                    continue
                value = sympy.sympify(dim).subs(values)
                dims.append(int(value) if value.is_number else rng.randint(r.min[axis], r.max[axis]))
            shapes[spec.name] = tuple(dims)
        if engine.checker.fits(profile, list(shapes.values())):
            return shapes
    logger.warning("profile %d: found no random shapes that satisfy its tied dims in %d tries", profile, tries)
    return None


def profile_cases(engine: Engine, random_shapes: int = 3, seed: int = 0, profiles: Sequence[int] | None = None) -> list[Case]:
    """min, opt and max of every profile, then `random_shapes` random in-range shapes per profile."""
    rng = random.Random(seed)
    cases = []
    for p in range(len(engine.profiles)) if profiles is None else profiles:
        prof = engine.profiles[p]
        for field in ("min", "opt", "max"):
            cases.append(Case(p, field, {n: getattr(prof[n], field) for n in engine.input_names}))
        for k in range(random_shapes):
            shapes = _random_shapes(engine, p, rng)
            if shapes is not None:
                cases.append(Case(p, f"random {k + 1}", shapes))
    return cases


def random_feed(engine: Engine, shapes: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
    """Fresh random inputs of the engine's dtypes and layouts at the given shapes."""
    return {s.name: random_tensor(shapes[s.name], s.dtype, engine.device, s.format) for s in engine.inputs}


def eager_reference(model: Callable[..., Any], engine: Engine) -> Reference:
    """The model called as the engine was traced (args and kwargs from its input structure), outputs named as the engine's."""

    def run(feed: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        args, kwargs = pytree.tree_unflatten([feed[n] for n in engine.input_names], engine.state.in_spec)
        with torch.no_grad():
            out = model(*args, **kwargs)
        return dict(zip(engine.output_names, pytree.tree_leaves(out)))

    return run


@dataclasses.dataclass
class OutputError:
    """The worst errors of one output over all cases, and where they happened."""

    name: str
    max_abs: float = 0.0
    abs_case: Case | None = None
    max_rel: float = 0.0
    rel_case: Case | None = None
    failed: list[str] = dataclasses.field(default_factory=list)  # one line per failing case

    @property
    def passed(self) -> bool:
        return not self.failed


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return (value.double() if value.dtype.is_floating_point else value).numpy()
    return np.asarray(value)


def compare_output(err: OutputError, case: Case, out: Any, ref: Any, atol: float, rtol: float) -> None:
    """Fold one case's output into `err`: shape or dtype-kind mismatches and out-of-tolerance elements fail."""
    a, b = _as_array(out), _as_array(ref)
    if a.shape != b.shape:
        err.failed.append(f"{case.describe()}: shape {a.shape} != reference {b.shape}")
        return
    if a.size == 0:
        return
    if a.dtype == np.bool_ or b.dtype == np.bool_:
        a, b = a.astype(np.int64), b.astype(np.int64)
    a, b = a.astype(np.float64), b.astype(np.float64)
    diff = np.abs(a - b)
    diff[np.isnan(a) != np.isnan(b)] = np.inf  # NaN against a number is an infinite error
    diff[np.isnan(a) & np.isnan(b)] = 0.0
    rel = diff / np.maximum(np.abs(np.nan_to_num(b)), np.finfo(np.float64).tiny)
    max_abs, max_rel = float(diff.max()), float(rel.max())
    if max_abs > err.max_abs or err.abs_case is None:
        err.max_abs, err.abs_case = max_abs, case
    if max_rel > err.max_rel or err.rel_case is None:
        err.max_rel, err.rel_case = max_rel, case
    bad = (diff > atol) & (rel > rtol)
    if bad.any():
        err.failed.append(f"{case.describe()}: {int(bad.sum())} of {bad.size} elements beyond atol={atol:g} rtol={rtol:g}")


@dataclasses.dataclass
class Report:
    """flexrt against one reference: per-output errors, and the cases that ran."""

    reference: str
    outputs: dict[str, OutputError]
    cases: int = 0

    @property
    def passed(self) -> bool:
        return all(e.passed for e in self.outputs.values())


def compare(engine: Engine, references: Mapping[str, Reference], cases: Sequence[Case], atol: float = 1e-4,
            rtol: float = 1e-4) -> list[Report]:
    """Run every case on the engine (a runner per profile) and on each reference, on the same random data."""
    reports = {label: Report(label, {n: OutputError(n) for n in engine.output_names}) for label in references}
    runners = {p: Runner(engine, profile=p).activate() for p in sorted({c.profile for c in cases})}
    for case in cases:
        feed = random_feed(engine, case.shapes)
        outs = runners[case.profile].infer(feed)
        for label, reference in references.items():
            ref = reference(feed)
            report = reports[label]
            report.cases += 1
            for name, err in report.outputs.items():
                if name not in ref:
                    err.failed.append(f"{case.describe()}: the reference has no output {name!r} (it has {sorted(ref)})")
                else:
                    compare_output(err, case, outs[name], ref[name], atol, rtol)
    return list(reports.values())


def feeds(engine: Engine, cases: Sequence[Case], as_numpy: bool = True) -> Iterator[dict[str, Any]]:
    """One fresh random feed_dict per case (NumPy by default, as Polygraphy's data loaders give)."""
    for case in cases:
        feed = random_feed(engine, case.shapes)
        yield {n: to_numpy(t) for n, t in feed.items()} if as_numpy else feed
