"""A range where the model takes a different path in each part: the error that says where to split.

Raised by tracing when a guard on one size holds on an interval of the requested range and fails
outside it; `compiler/split.py` catches it and compiles each part separately (a `SplitModule`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.utils._pytree as pytree

from flexrt.errors import CompilationError
from flexrt.spec import Input

logger = logging.getLogger(__name__)


class RangeSplitNeeded(CompilationError):
    """The model takes a different path in part of one size's range (the message says where)."""

    def __init__(self, message: str, axes: list[tuple[str, int]], holds: tuple[int, int], full: tuple[int, int]) -> None:
        super().__init__(message)
        self.axes = axes  # every (input name, axis) that is this one size
        self.holds = holds
        self.full = full

    def parts(self) -> list[tuple[int, int]]:
        (a, b), (lo, hi) = self.holds, self.full
        return [(x, y) for x, y in ((lo, a - 1), (a, b), (b + 1, hi)) if x <= y]


def _narrow(spec: Input, axis: int, lo: int, hi: int) -> Input:
    r = spec.range
    mins, opts, maxs = list(r.min), list(r.opt), list(r.max)
    mins[axis], maxs[axis] = lo, hi
    opts[axis] = min(max(opts[axis], lo), hi)
    return Input(min_shape=mins, opt_shape=opts, max_shape=maxs, dtype=spec.dtype, format=spec.format, name=spec.name,
                 tensor_domain=spec.tensor_domain)


def narrowed_inputs(args: Any, kwargs: Any, specs: list[Input], axes: list[tuple[str, int]], lo: int,
                    hi: int) -> tuple[Any, Any]:
    """The user's (arg_inputs, kwarg_inputs) structure with the split size narrowed to [lo, hi]."""
    it = iter(specs)
    by_name = dict(axes)

    def narrow(_leaf: Any) -> Input:
        spec = next(it)
        return _narrow(spec, by_name[spec.name], lo, hi) if spec.name in by_name else spec

    return pytree.tree_map(narrow, (args, kwargs), is_leaf=lambda x: isinstance(x, (Input, torch.Tensor)))
