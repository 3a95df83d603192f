"""A program: one profile's segments, run in order over an environment of named values."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import torch

from flexrt.errors import ArtifactError
from flexrt.ir.program import ProgramState, SegmentState
from flexrt.ir.tensor_spec import TensorSpec
from flexrt.runtime.engine_check import NARROWER, call_arity, cross_check
from flexrt.runtime.loader import CHECKED, UNCHECKED, load_runner
from flexrt.spec import Profile
from flexrt.tf32 import in_effect, tf32_policy

logger = logging.getLogger(__name__)


def _member(state: SegmentState) -> str:
    origin = state.engine.origin if state.engine is not None else None
    return repr(origin.member) if origin is not None else "(in memory)"


def _dense(t: torch.Tensor) -> torch.Tensor:
    """Memory an engine reads as it was compiled to: conjugate and negative views are lazy bits the
    engine ignores, and its stride checks want the canonical strides even on size-1 dims."""
    if t.is_contiguous() and not (t.is_conj() or t.is_neg()) and (1 not in t.shape or t.stride() == _strides(t.shape)):
        return t
    return t.resolve_conj().resolve_neg().clone(memory_format=torch.contiguous_format)


def _strides(shape: torch.Size) -> tuple[int, ...]:
    out, step = [], 1
    for n in reversed(shape):
        out.append(step)
        step *= max(n, 1)
    return tuple(reversed(out))


class _EngineSegment:
    """An engine's runner; on CUDA it runs under the engine's TF32 policy (see `flexrt.tf32`)."""

    def __init__(self, state: SegmentState, device: torch.device, allow_tf32: bool) -> None:
        assert state.engine is not None
        self.state = state
        self.device = device
        self.load(CHECKED)
        self.tf32 = allow_tf32 if device.type == "cuda" else None
        # a CUDA runner runs single-threaded (AOTInductor's run_single_threaded: no lock of its own, and
        # graph capture needs it); threads sharing a module take turns here
        self._lock = threading.Lock()

    def load(self, variant: str) -> None:
        """(Re)load the runner from the CHECKED or UNCHECKED copy of the engine (see loader.Library)."""
        assert self.state.engine is not None
        self.runner, self.library = load_runner(self.state.engine, self.device, variant)
        arity = call_arity(self.runner)
        if arity is not None and arity != (len(self.state.inputs), len(self.state.outputs)):
            raise ArtifactError(
                f"engine {_member(self.state)} takes {arity[0]} inputs and returns {arity[1]} outputs; the manifest says "
                f"{len(self.state.inputs)} and {len(self.state.outputs)}: the manifest was edited or damaged, save the model again"
            )
        if self.state.weights:  # refitted: every constant given, so a missing one is an error, not stale data
            self.runner.update_constant_buffer(self.state.weights, False, True)

    def __call__(self, inputs: list[Any]) -> list[torch.Tensor]:
        inputs = [_dense(t) for t in inputs]
        if self.tf32 is None or in_effect(self.tf32):
            with self._lock:
                return self.runner.run(inputs)
        with tf32_policy(self.tf32), self._lock:  # the process-wide policy first, as a capture takes them
            return self.runner.run(inputs)


class _TorchSegment:
    def __init__(self, state: SegmentState) -> None:
        assert state.program is not None
        self.module = state.program.module()

    def __call__(self, inputs: list[Any]) -> list[Any]:
        out = self.module(*inputs)
        return list(out) if isinstance(out, (tuple, list)) else [out]


class Program:
    """Runs one profile. With one engine segment that takes the inputs and gives the outputs, a
    call is a single `runner.run`; otherwise values flow through a dict, dropped after last use."""

    def __init__(self, state: ProgramState, device: torch.device, allow_tf32: bool = True) -> None:
        self.state = state
        self.allow_tf32 = allow_tf32  # its engines' TF32 policy on CUDA
        self.segments: list[Any] = [
            _EngineSegment(s, device, allow_tf32) if s.kind == "engine" else _TorchSegment(s) for s in state.segments
        ]
        only = state.segments[0] if len(state.segments) == 1 else None
        self._direct = (
            only is not None
            and only.kind == "engine"
            and only.inputs == state.inputs
            and [("value", o) for o in only.outputs] == list(state.outputs)
        )
        self._drop: list[list[str]] = self._last_uses()

    def _last_uses(self) -> list[list[str]]:
        keep = {name for kind, name in self.state.outputs if kind == "value"}
        last: dict[str, int] = {}
        for i, seg in enumerate(self.state.segments):
            for name in seg.inputs:
                last[name] = i
        drops: list[list[str]] = [[] for _ in self.state.segments]
        for name, i in last.items():
            if name not in keep:
                drops[i].append(name)
        return drops

    def verify(self, profile: Profile, specs: Sequence[TensorSpec], where: str) -> None:
        """Cross-check each engine fed straight by the model's inputs against their specs and this profile."""
        by_name = dict(zip(self.state.inputs, specs))  # the graph's name for each model input, in order
        for i, seg in enumerate(self.segments):
            names = self.state.segments[i].inputs
            if not isinstance(seg, _EngineSegment):
                continue
            if not all(n in by_name for n in names):  # fed by other segments: what it takes is not described
                if seg.library.runtime_checks is None:
                    seg.library.record_runtime_checks(False)  # its first run will leave its checks off
                continue
            used = [by_name[n] for n in names]
            outcome = cross_check(seg.runner, seg.library, used, [profile[s.name] for s in used], seg.device,
                                  f"{where}, segment {i} ({_member(seg.state)})")
            if outcome == NARROWER:
                seg.load(UNCHECKED)

    @property
    def capturable(self) -> bool:
        """Only engine segments: no host syncs, so the whole call can live in a CUDA graph."""
        return self.state.all_engine

    def run(self, inputs: Sequence[Any]) -> list[Any]:
        if self._direct:
            return self.segments[0](list(inputs))
        env: dict[str, Any] = dict(zip(self.state.inputs, inputs))
        env.update(self.state.constants)
        for seg, state, drop in zip(self.segments, self.state.segments, self._drop):
            outs = seg([env[n] for n in state.inputs])
            env.update(zip(state.outputs, outs))
            for name in drop:
                env.pop(name, None)
        return [env[v] if kind == "value" else v for kind, v in self.state.outputs]
