"""Engine: one compiled model with one or more optimization profiles (TensorRT's ICudaEngine)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from flexrt.errors import InputSpecError
from flexrt.format import open_artifact, runtime_options, state_from, state_from_bytes, state_to_bytes, write_artifact
from flexrt.ir import EngineState, ProgramState, TensorSpec
from flexrt.runtime.context import ExecutionContext
from flexrt.runtime.program import Program
from flexrt.runtime.shapes import ShapeChecker
from flexrt.settings import RuntimeOptions
from flexrt.spec import Profile

logger = logging.getLogger(__name__)


class Engine:
    """Input/output specs, profiles, and one loaded program per profile."""

    def __init__(self, state: EngineState, options: RuntimeOptions | None = None) -> None:
        self.state = state
        self.settings = state.settings
        self.options = options or RuntimeOptions()
        self.device = state.settings.device
        self.programs = [Program(p, self.device, not state.settings.disable_tf32) for p in state.programs]
        for k, (program, profile) in enumerate(zip(self.programs, state.profiles)):
            program.verify(profile, state.inputs, f"profile {k}")
        self.checker = ShapeChecker(state.inputs, state.profiles, self.device)

    @property
    def inputs(self) -> list[TensorSpec]:
        return self.state.inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self.state.outputs

    @property
    def profiles(self) -> list[Profile]:
        return self.state.profiles

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.state.profiles)

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.state.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.state.outputs]

    def get_tensor_profile_shape(self, name: str, profile: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) of an input in a profile, as TensorRT returns it."""
        if name not in self.input_names:
            raise InputSpecError(f"no input named {name!r}; inputs are {self.input_names}")
        r = self.profiles[profile][name]
        return r.min, r.opt, r.max

    def add_profile(self, profile: Profile, program: ProgramState, publish: bool = True) -> int:
        """Append a profile built after the fact (on_out_of_range='build'); returns its index. With
        `publish=False`, calls do not choose it until `publish_profiles` (a module shared by threads
        creates its context first)."""
        self.state.profiles.append(profile)
        self.state.programs.append(program)
        self.programs.append(Program(program, self.device, not self.settings.disable_tf32))
        self.programs[-1].verify(profile, self.state.inputs, f"profile {len(self.programs) - 1}")
        if publish:
            self.publish_profiles()
        return len(self.state.profiles) - 1

    def publish_profiles(self) -> None:
        """Let calls choose every profile added (a new checker replaces the old one in one step)."""
        self.checker = ShapeChecker(self.state.inputs, self.state.profiles, self.device)

    def create_execution_context(self, profile: int = 0) -> ExecutionContext:
        return ExecutionContext(self, profile)

    def check(self, flat: Sequence[Any]) -> None:
        self.checker.check(flat)

    # -- persistence: the file format (`flexrt.format`), the same archive `flexrt.save` writes ----------

    def serialize(self) -> bytes:
        return state_to_bytes(self.state, self.options)

    @classmethod
    def deserialize(cls, data: bytes) -> Engine:
        return cls(*state_from_bytes(data))

    def save(self, path: str | os.PathLike[str]) -> None:
        write_artifact(path, self.state, self.options)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Engine:
        manifest, members, device = open_artifact(path)
        return cls(state_from(os.fspath(path), manifest, members, device), runtime_options(manifest))

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}: {str(s.dtype).replace('torch.', '')}" for s in self.inputs)
        return f"Engine(inputs=[{ins}], outputs={self.output_names}, profiles={len(self.profiles)}, device={self.device})"

