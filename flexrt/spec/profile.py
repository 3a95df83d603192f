"""Optimization profiles (Polygraphy's `Profile`) and how a model's profiles are resolved.

Profile resolution sits next to `Profile`: `resolve_profiles` fills each profile from the inputs'
own ranges and `union_specs` gives the one range per input that the model is traced over.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flexrt.errors import InputSpecError
from flexrt.spec.input import Input, ShapeRange, union_range


class Profile(OrderedDict):
    """An optimization profile: a (min, opt, max) shape for every input, as in Polygraphy.

    `Profile().add("x", min=(1, 3), opt=(4, 3), max=(8, 3))` — chainable; its repr is that code.
    """

    def add(self, name: str, min: Any, opt: Any, max: Any) -> Profile:
        if not isinstance(name, str) or not name:
            raise InputSpecError(f"Profile.add: input name must be a non-empty string, got {name!r}")
        self[name] = ShapeRange.create(min, opt, max, f"Profile input {name!r}")
        return self

    def fill_defaults(self, network: Any, default_shape_value: int | None = None) -> Profile:
        """Fill the inputs this profile leaves out (Polygraphy's `fill_defaults(network)`).

        `network` is what flexrt has in place of a TensorRT network: an `Engine`, a `CompiledModule`
        or an `Artifact` (each input gets the range the engine accepts, over all its profiles), or
        `Input` specs (their own ranges). With `default_shape_value`, as in Polygraphy, a filled
        input's dynamic dims are fixed to that value instead.
        """
        for name, r in _input_ranges(network):
            if name in self:
                continue
            if default_shape_value is not None and not r.is_static:
                shape = tuple(lo if lo == hi else default_shape_value for lo, hi in zip(r.min, r.max))
                r = ShapeRange.static(shape, f"fill_defaults input {name!r}")
            self[name] = r
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


def _input_ranges(network: Any) -> list[tuple[str, ShapeRange]]:
    """(name, accepted range) per input of an Engine, anything holding one (`.engine`), or Input specs."""
    engine = getattr(network, "engine", network)
    if hasattr(engine, "profiles") and hasattr(engine, "input_names"):
        return [(n, union_range([p[n] for p in engine.profiles])) for n in engine.input_names]
    if isinstance(network, Iterable) and not isinstance(network, (str, Mapping)):
        specs = list(network)
        if all(isinstance(s, Input) for s in specs):
            return [(s.name, s.range) for s in specs if s.name]
    raise InputSpecError(
        f"fill_defaults expects a flexrt Engine, CompiledModule, Artifact or a list of Inputs, got {type(network).__name__}"
    )


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
        r = union_range([p[name] for p in profiles])
        out.append(
            Input(min_shape=r.min, opt_shape=r.opt, max_shape=r.max, dtype=spec.dtype, format=spec.format, name=name,
                  tensor_domain=spec.tensor_domain)
        )
    return out
