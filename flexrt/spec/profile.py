"""Optimization profiles (Polygraphy's `Profile`) and how a model's profiles are resolved.

Profile resolution sits next to `Profile`: `resolve_profiles` fills each profile from the inputs'
own ranges and `union_specs` gives the one range per input that the model is traced over.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flexrt.errors import InputSpecError
from flexrt.spec.input import Input, ShapeRange


class Profile(OrderedDict):
    """An optimization profile: a (min, opt, max) shape for every input, as in Polygraphy.

    `Profile().add("x", min=(1, 3), opt=(4, 3), max=(8, 3))` — chainable; its repr is that code.
    """

    def add(self, name: str, min: Any, opt: Any, max: Any) -> Profile:
        if not isinstance(name, str) or not name:
            raise InputSpecError(f"Profile.add: input name must be a non-empty string, got {name!r}")
        self[name] = ShapeRange.create(min, opt, max, f"Profile input {name!r}")
        return self

    def fill_defaults(self, inputs: Iterable[Input]) -> Profile:
        """Fill inputs this profile leaves out with their spec's own range (static inputs: their shape)."""
        for spec in inputs:
            if spec.name and spec.name not in self:
                self[spec.name] = spec.range
        return self

    def __repr__(self) -> str:
        parts = "".join(f".add({k!r}, min={v.min}, opt={v.opt}, max={v.max})" for k, v in self.items())
        return f"Profile(){parts}"

    def __str__(self) -> str:
        return "{" + ", ".join(f"{k}: {v}" for k, v in self.items()) + "}"

    def to_json(self) -> dict[str, dict[str, list[int]]]:
        return {k: {"min": list(v.min), "opt": list(v.opt), "max": list(v.max)} for k, v in self.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Mapping[str, Sequence[int]]]) -> Profile:
        p = cls()
        for k, v in data.items():
            p.add(k, v["min"], v["opt"], v["max"])
        return p


def input_profiles(names: Sequence[str], specs: Sequence[Input]) -> list[Profile] | None:
    """Torch-TensorRT's per-Input `profiles=` zipped by index into flexrt Profiles; None if no Input has them.

    Inputs with profiles must all give the same number; an input without takes its one range in every profile.
    """
    counts = {name: len(spec.profiles) for name, spec in zip(names, specs) if spec.profiles}
    if not counts:
        return None
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{n!r}: {c}" for n, c in counts.items())
        raise InputSpecError(
            f"Inputs give different numbers of profiles ({listed}); profile k of every Input forms optimization "
            "profile k, so each Input with profiles= must give the same number"
        )
    count = next(iter(counts.values()))
    return [
        Profile({name: spec.profiles[k] if spec.profiles else spec.range for name, spec in zip(names, specs)})
        for k in range(count)
    ]


def resolve_profiles(names: Sequence[str], specs: Sequence[Input], profiles: Sequence[Profile] | None) -> list[Profile]:
    """Profiles keyed by input name: given, from the Inputs' `profiles=`, or one from the Input ranges."""
    per_input = input_profiles(names, specs)
    if per_input is not None and profiles:
        raise InputSpecError("give profiles either on the Inputs (Input(profiles=[...])) or as profiles=[flexrt.Profile(...)], not both")
    profiles = profiles or per_input
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
