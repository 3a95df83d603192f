"""Input checks and profile choice: dtype, rank, device, layout, tied dims and ranges — before any
compiled code runs (AOTInductor itself does not check: a batch of 33 ran on a 1..32 engine)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from flexrt.errors import InputSpecError, ShapeOutOfRangeError
from flexrt.ir.tensor_spec import TensorSpec
from flexrt.runtime.size_expr import SizeExpr
from flexrt.runtime.tensor_checks import check_tensor
from flexrt.spec import UNBOUNDED, Profile

logger = logging.getLogger(__name__)

FITTED_SHAPES = 4096  # shapes remembered per profile by the fast check (then forgotten at once)

def _fmt(v: int) -> str:
    return "inf" if v >= UNBOUNDED else str(v)


class ShapeChecker:
    """Validates flat inputs against an engine's specs and picks the profile that fits."""

    def __init__(self, inputs: Sequence[TensorSpec], profiles: Sequence[Profile], device: torch.device) -> None:
        self.inputs = list(inputs)
        self.device = device
        self.profiles = list(profiles)
        self.names = [s.name for s in inputs]
        # per profile, per input: (mins, maxs)
        self.bounds = [[(p[s.name].min, p[s.name].max) for s in inputs] for p in profiles]
        self.widths = [sum(sum(hi - lo for lo, hi in zip(*b)) for b in pb) for pb in self.bounds]
        first: dict[str, tuple[int, int]] = {}
        self.ties: list[tuple[int, int, int, int]] = []
        self.derived: list[tuple[int, int, SizeExpr]] = []
        for i, spec in enumerate(inputs):
            for d, expr in enumerate(spec.dims):
                if isinstance(expr, int):
                    continue
                parsed = SizeExpr(expr)
                if parsed.is_symbol:
                    if expr in first:
                        self.ties.append((i, d) + first[expr])
                    else:
                        first[expr] = (i, d)
                else:
                    self.derived.append((i, d, parsed))
        self.symbol_at = first
        # the per-call fast path: what each input must be, flattened for cheap comparisons
        self._dtypes = [s.dtype for s in inputs]
        self._ranks = [len(s.dims) for s in inputs]
        self._on_cpu = device.type == "cpu"
        self._device_index = device.index if device.type == "cuda" else -1
        self._fitted: list[set[tuple[torch.Size, ...]]] = [set() for _ in profiles]

    def fast_fits(self, flat: Sequence[Any], profile: int) -> bool:
        """True when every input is right and fits `profile`: one pass, no messages. On False, call
        `check` (which raises the precise error) and `choose`. Shapes that fitted before are
        remembered per profile, so a steady stream costs a dtype/device check and one lookup."""
        if len(flat) != len(self._dtypes) or self.derived:
            return False
        strided, on_cpu, index = torch.strided, self._on_cpu, self._device_index
        for t, dtype in zip(flat, self._dtypes):
            # exact type only: subclasses (fake, wrapper) and any other layout or device take `check`
            if type(t) is not torch.Tensor or t.dtype is not dtype or t.layout is not strided or t.is_nested:
                return False
            if not t.is_cpu if on_cpu else (not t.is_cuda or t.get_device() != index):
                return False
        key = tuple([t.shape for t in flat])
        fitted = self._fitted[profile]
        if key in fitted:
            return True
        for shape, rank, (mins, maxs) in zip(key, self._ranks, self.bounds[profile]):
            if len(shape) != rank:
                return False
            for lo, n, hi in zip(mins, shape, maxs):
                if n < lo or n > hi:
                    return False
        for i, d, j, e in self.ties:
            if key[i][d] != key[j][e]:
                return False
        if len(fitted) >= FITTED_SHAPES:
            fitted.clear()
        fitted.add(key)
        return True

    # -- checks that do not depend on the profile ------------------------------------------------

    def check(self, flat: Sequence[Any]) -> None:
        if len(flat) != len(self.inputs):
            raise InputSpecError(
                f"expected {len(self.inputs)} inputs ({', '.join(self.names)}), got {len(flat)}"
            )
        for spec, t in zip(self.inputs, flat):
            check_tensor(spec.name, t, self.device)
            if t.dtype != spec.dtype:
                raise InputSpecError(f"input {spec.name!r}: expected dtype {spec.dtype}, got {t.dtype}; convert it with .to({spec.dtype})")
            if t.dim() != len(spec.dims):
                raise InputSpecError(
                    f"input {spec.name!r}: expected {len(spec.dims)} dims, got shape {tuple(t.shape)} "
                    f"({t.dim()} dims)"
                )
        self.check_shapes([t.shape for t in flat])

    def check_shapes(self, shapes: Sequence[Sequence[int]]) -> None:
        """The dims the model ties together, and those it derives from others (ranks already checked)."""
        for i, d, j, e in self.ties:
            a, b = shapes[i][d], shapes[j][e]
            if a != b:
                raise InputSpecError(
                    f"input {self.names[i]!r} dim {d} = {a} must equal input {self.names[j]!r} dim {e} = {b} "
                    "(the model ties these dims together)"
                )
        if self.derived:
            env = self.bind(shapes)
            for i, d, expr in self.derived:
                want = expr.value(env)
                if want is not None and want != shapes[i][d]:
                    raise InputSpecError(
                        f"input {self.names[i]!r} dim {d} = {shapes[i][d]} must be {expr} = {want} for this model"
                    )

    def bind(self, shapes: Sequence[Sequence[int]]) -> dict[str, int]:
        """Each size symbol's value, read from the input dim that carries it first."""
        return {s: int(shapes[i][d]) for s, (i, d) in self.symbol_at.items()}

    # -- profiles ----------------------------------------------------------------------------------

    def fits(self, profile: int, shapes: Sequence[Sequence[int]]) -> bool:
        for (mins, maxs), shape in zip(self.bounds[profile], shapes):
            for lo, n, hi in zip(mins, shape, maxs):
                if n < lo or n > hi:
                    return False
        return True

    def choose(self, shapes: Sequence[Sequence[int]], current: int) -> int | None:
        """Keep the current profile while it fits; else the narrowest fitting one; None if none fits."""
        if self.fits(current, shapes):
            return current
        return self.narrowest(shapes)

    def fitting(self, shapes: Sequence[Sequence[int]]) -> list[int]:
        return [p for p in range(len(self.profiles)) if self.fits(p, shapes)]

    def narrowest(self, shapes: Sequence[Sequence[int]]) -> int | None:
        """The narrowest profile that fits (ties by index), None when none fits."""
        fitting = self.fitting(shapes)
        return min(fitting, key=lambda p: (self.widths[p], p)) if fitting else None

    def range_text(self, profile: int, i: int, d: int) -> str:
        r = self.profiles[profile][self.names[i]]
        return f"[{r.min[d]}, {_fmt(r.max[d])}] (opt {r.opt[d]})"

    def out_of_range(
        self, shapes: Sequence[Sequence[int]], profiles: Sequence[int] | None = None, hint: str | None = None
    ) -> ShapeOutOfRangeError:
        """The error for inputs that fit none of `profiles`: names the input, dim, value and ranges."""
        profiles = list(range(len(self.profiles))) if profiles is None else list(profiles)
        reasons = []
        for p in profiles:  # per profile, the first dim that rules it out: never another profile's range
            culprit = self.first_misfit(p, shapes)
            if culprit is not None:
                i, d, n = culprit
                reasons.append(f"input {self.names[i]!r} dim {d} = {n} (profile {p} allows {self.range_text(p, i, d)})")
        if not reasons:
            return ShapeOutOfRangeError("inputs are outside the compiled profiles")
        fits = self.fitting(shapes)
        where = f" Profiles that fit these inputs: {fits}." if fits else ""
        advice = hint or (
            "Compile with a wider min_shape/max_shape or add a profile, or pass on_out_of_range='eager' "
            "(run in PyTorch) or 'build' (build a profile for this shape)."
        )
        return ShapeOutOfRangeError(f"no compiled profile fits these inputs: {'; '.join(reasons)}.{where} {advice}")

    def first_misfit(self, profile: int, shapes: Sequence[Sequence[int]]) -> tuple[int, int, int] | None:
        """(input, dim, size) of the first dim outside `profile`, or None when every dim fits."""
        for i, ((mins, maxs), shape) in enumerate(zip(self.bounds[profile], shapes)):
            for d, (lo, n, hi) in enumerate(zip(mins, shape, maxs)):
                if n < lo or n > hi:
                    return i, d, int(n)
        return None

    def output_shapes(self, outputs: Sequence[TensorSpec], shapes: dict[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
        """Output shapes for given input shapes, from the program's size expressions; -1 where data decides."""
        env = self.bind([shapes[n] for n in self.names])
        result = {}
        for spec in outputs:
            dims = []
            for expr in spec.dims:
                if isinstance(expr, int):
                    dims.append(expr)
                    continue
                try:
                    value = SizeExpr(expr).value(env)
                except ValueError:  # a size function outside the grammar: not predicted, as data-decided sizes
                    value = None
                dims.append(-1 if value is None else value)
            result[spec.name] = tuple(dims)
        return result
