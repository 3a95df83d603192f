"""Compile each part of a range where the model takes a different path (trace/split.py says where).

When tracing finds a guard on one size that holds on an interval of the requested range and fails
outside it (`seq < 40`, `Min(64*s, 3000) < 2000`: a chunked path for long inputs, a cached table that
stops at some length), the model really is two programs. `flexrt.compile` then compiles the interval
and the parts beside it separately, each traced at its own sizes, and returns a `SplitModule` that
sends each call to the part whose range holds its size. The split is logged and shown in the
module's `report`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.utils._pytree as pytree

from flexrt.spec import Input
from flexrt.trace.split import RangeSplitNeeded, narrowed_inputs

logger = logging.getLogger(__name__)

MAX_PARTS = 6  # a model that needs more parts than this is refused with the guard's error


@dataclasses.dataclass
class Part:
    lo: int
    hi: int
    module: Any


class SplitModule(torch.nn.Module):
    """Several compiled modules over consecutive parts of one size's range; each call goes to its part."""

    def __init__(self, parts: list[Part], axes: list[tuple[str, int]], reason: str) -> None:
        super().__init__()
        self.parts = parts
        self.axes = axes
        self.reason = reason
        self._modules_list = torch.nn.ModuleList(p.module for p in parts)
        first = parts[0].module
        while isinstance(first, SplitModule):
            first = first.parts[0].module
        self._first = first
        self._index = first.engine.input_names.index(axes[0][0])

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        flat = self._first._flatten(args, kwargs)
        size = flat[self._index].shape[self.axes[0][1]]
        for p in self.parts:
            if p.lo <= size <= p.hi:
                return p.module(*args, **kwargs)
        return self.parts[0].module(*args, **kwargs)  # out of every part: that module's own error or fallback

    @property
    def report(self) -> str:
        where = " = ".join(f"input {n!r} dim {a}" for n, a in self.axes)
        lines = [f"Range split: {where} in {len(self.parts)} parts "
                 f"{', '.join(f'[{p.lo}, {p.hi}]' for p in self.parts)}, because the model takes a different path in "
                 f"each: {self.reason}"]
        for p in self.parts:
            inner = p.module.report if isinstance(p.module, SplitModule) else segments_text(p.module)
            lines.append(f"part [{p.lo}, {p.hi}]:\n" + "\n".join("  " + line for line in str(inner).splitlines()))
        return "\n".join(lines)


def segments_text(module: Any) -> str:
    """A compiled module's segments (profile 0): where each runs and how many ops, as the partition report."""
    lines = []
    for i, seg in enumerate(module.engine.state.programs[0].segments):
        lines.append(f"segment {i} [{seg.kind}] {sum(seg.ops.values())} ops")
        lines += [f"    {op}: {why}" for op, why in sorted(seg.reasons.items())]
    return "\n".join(lines)


def compile_split(split: RangeSplitNeeded, args: Any, kwargs: Any, specs: list[Input],
                  compile_part: Callable[[Any, Any], Any], depth: int = 0) -> SplitModule:
    """Compile each part of the split (recursively, when a part splits again) and dispatch between them."""
    parts = split.parts()
    if len(parts) + depth > MAX_PARTS:
        raise split
    reason = str(split).splitlines()[1].lstrip("- ") if len(str(split).splitlines()) > 1 else str(split)
    logger.warning("flexrt: %s in %d parts (%s)", " = ".join(f"input {n!r} dim {a}" for n, a in split.axes),
                   len(parts), reason)
    built = []
    for lo, hi in parts:
        part_args, part_kwargs = narrowed_inputs(args, kwargs, specs, split.axes, lo, hi)
        try:
            module = compile_part(part_args, part_kwargs)
        except RangeSplitNeeded as inner:
            part_specs = [s for s in pytree.tree_leaves((part_args, part_kwargs), is_leaf=lambda x: isinstance(x, Input))]
            module = compile_split(inner, part_args, part_kwargs, part_specs, compile_part, depth + len(parts))
        built.append(Part(lo, hi, module))
    return SplitModule(built, split.axes, reason)
