"""The compiler as a compiled module's fallback for shapes no profile covers (`on_out_of_range`).

Handed to the run time through the narrow `runtime.fallback.Fallback` interface, so the run time
imports none of this. `from_artifact` rebuilds it for an artifact saved with its source program.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flexrt.settings import CompileSettings
from flexrt.spec import Input, Profile, union_specs

if TYPE_CHECKING:  # the stages are imported when a fallback is first used (a warm compile may never)
    import torch
    from torch.export import ExportedProgram

    from flexrt.ir import ProgramState
    from flexrt.partition import PartitionPlan
    from flexrt.trace import TracedProgram


class CompilerFallback:
    """The traced program; lowered and partitioned on first use (a loaded module may never need it)."""

    def __init__(
        self,
        traced: TracedProgram | None,
        settings: CompileSettings,
        gm: torch.fx.GraphModule | None = None,
        plan: PartitionPlan | None = None,
        trace: Callable[[], TracedProgram] | None = None,
    ) -> None:
        self._traced = traced
        self._trace = trace
        self.settings = settings
        self._gm = gm
        self._plan = plan

    @classmethod
    def deferred(cls, trace: Callable[[], TracedProgram], settings: CompileSettings) -> CompilerFallback:
        """For a module whose engine came from the module cache: the model is traced only when a
        fallback needs it (an out-of-range shape, a save that keeps the source program)."""
        return cls(None, settings, trace=trace)

    @property
    def traced(self) -> TracedProgram:
        if self._traced is None:
            assert self._trace is not None
            self._traced = self._trace()
        return self._traced

    @property
    def exported(self) -> ExportedProgram:
        return self.traced.exported

    @property
    def graph_module(self) -> torch.fx.GraphModule:
        if self._gm is None:
            from flexrt.lower import lower

            self._gm = lower(self.traced.exported, self.settings)
        return self._gm

    @property
    def plan(self) -> PartitionPlan:
        if self._plan is None:
            from flexrt.partition import partition

            self._plan = partition(self.graph_module, self.settings)
        return self._plan

    def eager(self, *args: Any, **kwargs: Any) -> Any:
        return self.graph_module(*args, **kwargs)

    def build_profile(self, profile: Profile, index: int) -> ProgramState:
        from flexrt.build.program import build_program

        return build_program(self.plan, self.traced, profile, index, self.settings)


def from_artifact(ep: ExportedProgram, engine: Any) -> CompilerFallback:
    """Bind a saved source program to a loaded engine's inputs and profiles."""
    from flexrt.trace import bind

    specs = [Input(shape=engine.profiles[0][s.name].opt, dtype=s.dtype, format=s.format, name=s.name) for s in engine.inputs]
    union = union_specs(engine.input_names, specs, engine.profiles)
    return CompilerFallback(bind(ep, engine.input_names, union), engine.settings)
