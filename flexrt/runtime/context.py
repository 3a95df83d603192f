"""Execution context: one profile's program, its shapes, and (on CUDA) its captured graphs.

Each profile has its own context, so switching between profiles costs nothing but the choice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from flexrt.errors import InputSpecError
from flexrt.runtime.cuda_graphs import CudaGraphCache
from flexrt.tf32 import tf32_policy

if TYPE_CHECKING:
    from flexrt.runtime.engine import Engine

logger = logging.getLogger(__name__)


class ExecutionContext:
    """Runs one profile of an engine (TensorRT's IExecutionContext)."""

    def __init__(self, engine: Engine, profile: int = 0) -> None:
        if not 0 <= profile < len(engine.profiles):
            raise InputSpecError(f"profile {profile} does not exist; this engine has {len(engine.profiles)} profile(s)")
        self.engine = engine
        self.profile = profile
        self.program = engine.programs[profile]
        self._shapes: dict[str, tuple[int, ...]] = {}
        options = engine.options
        self.graphs: CudaGraphCache | None = None
        if options.use_cuda_graphs(engine.device) and self.program.capturable:
            cap = options.cuda_graph_memory_mb * 2**20 or None
            program = self.program
            self.graphs = CudaGraphCache(program.run, engine.device, options.cuda_graph_cache_size, cap,
                                         policy=lambda: tf32_policy(program.allow_tf32))

    @property
    def active_optimization_profile(self) -> int:
        return self.profile

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        """Record an input's shape for `infer_output_shapes`; it must lie in this context's profile."""
        if name not in self.engine.input_names:
            raise InputSpecError(f"no input named {name!r}; inputs are {self.engine.input_names}")
        r = self.engine.profiles[self.profile][name]
        shape = tuple(int(d) for d in shape)
        if len(shape) != r.rank:
            raise InputSpecError(f"input {name!r}: expected {r.rank} dims, got shape {shape}")
        shapes = [shape if n == name else self.get_input_shape(n) for n in self.engine.input_names]
        if not self.engine.checker.fits(self.profile, shapes):
            raise self.engine.checker.out_of_range(shapes, [self.profile], hint="Pick a profile that fits, or another shape.")
        self._shapes[name] = shape
        return True

    def get_input_shape(self, name: str) -> tuple[int, ...]:
        return self._shapes.get(name, self.engine.profiles[self.profile][name].opt)

    def infer_output_shapes(self) -> dict[str, tuple[int, ...]]:
        """Output shapes for the shapes set (opt where unset); -1 marks a size decided by the data."""
        shapes = {n: self.get_input_shape(n) for n in self.engine.input_names}
        return self.engine.checker.output_shapes(self.engine.outputs, shapes)

    def execute(self, flat: Sequence[Any], zero_copy: bool = False) -> list[Any]:
        """Check the inputs against this profile (dtype, device, layout, shapes), then run them."""
        self.check(flat)
        return self.run_checked(flat, zero_copy)

    def check(self, flat: Sequence[Any], holder: str = "context") -> None:
        """Raise an `InputSpecError` unless `flat` is safe to run on this profile."""
        checker = self.engine.checker
        if checker.fast_fits(flat, self.profile):
            return
        checker.check(flat)
        shapes = [t.shape for t in flat]
        if not checker.fits(self.profile, shapes):
            fits = checker.fitting(shapes)
            hint = f"Use a {holder} of a profile that fits ({fits})." if fits else "No profile of this engine fits these shapes."
            raise checker.out_of_range(shapes, [self.profile], hint=hint)

    def run_checked(self, flat: Sequence[Any], zero_copy: bool = False) -> list[Any]:
        """Run inputs the caller has already checked against this profile (`CompiledModule` does)."""
        if self.graphs is not None:
            return self.graphs.run(flat, zero_copy)
        return self.program.run(flat)
