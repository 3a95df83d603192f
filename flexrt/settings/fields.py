"""A settings dataclass <-> a JSON-friendly dict, derived from its fields (no key listed by hand).

Each field's JSON form follows its default's type: dtype sets and string sets become sorted lists,
a device its string; plain values stay as they are.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import torch

from flexrt.errors import InputSpecError

T = TypeVar("T")


def _encode(value: Any) -> Any:
    if isinstance(value, frozenset):
        return sorted(str(v).replace("torch.", "") for v in value)
    if isinstance(value, torch.device):
        return str(value)
    return value


def _decode(default: Any, value: Any, name: str) -> Any:
    if isinstance(default, frozenset):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InputSpecError(f"setting {name!r}: expected a list of names, got {value!r}")
        if any(isinstance(d, torch.dtype) for d in default):
            dtypes = [getattr(torch, v, None) for v in value]
            if not all(isinstance(d, torch.dtype) for d in dtypes):
                raise InputSpecError(f"setting {name!r}: unknown dtype in {value!r}")
            return frozenset(dtypes)
        return frozenset(value)
    if isinstance(default, torch.device):
        return torch.device(value)
    expected = type(default) if default is not None else (str, type(None))
    if not isinstance(value, expected) or (isinstance(value, bool) and not isinstance(default, bool)):
        raise InputSpecError(f"setting {name!r}: expected {getattr(expected, '__name__', expected)}, got {value!r}")
    return value


def describe_fields(obj: Any) -> dict[str, Any]:
    return {f.name: _encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def fields_from_description(cls: type[T], d: dict[str, Any], **overrides: Any) -> T:
    """Inverse of `describe_fields`; keys the description lacks keep their defaults (older files)."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif f.name in d:
            values[f.name] = _decode(f.default, d[f.name], f.name)
    return cls(**values)
