"""Runner: Polygraphy's TrtRunner for flexrt engines — one profile, a context manager, `infer`.

Activating a runner creates its execution context (cheap: the engine is already loaded), so
runners for several profiles of one engine can be switched on demand. Output tensors come from the
engine's allocator or, on CUDA, are a per-shape graph's static buffers, not replayed while anything
of them is still referenced; a later call never overwrites a tensor already returned unless the runner
was made with zero_copy_outputs=True. As Polygraphy's runners, `infer` returns NumPy arrays for a
feed_dict of NumPy arrays and tensors when any input is a tensor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import torch

from flexrt.errors import FlexrtError, InputSpecError
from flexrt.runtime.arrays import is_numpy, to_numpy, to_tensor
from flexrt.runtime.context import ExecutionContext
from flexrt.runtime.engine import Engine

logger = logging.getLogger(__name__)


class Runner:
    """Runs one profile of an engine: `with Runner(engine, profile=1) as r: r.infer({"x": x})`.

    `optimization_profile=` is Polygraphy's name for `profile=` (TrtRunner's keyword), so its
    scripts port unchanged.
    """

    def __init__(
        self,
        engine: Engine,
        profile: int | None = None,
        zero_copy_outputs: bool = False,
        name: str | None = None,
        optimization_profile: int | None = None,
    ) -> None:
        if not isinstance(engine, Engine):
            raise InputSpecError(f"Runner expects a flexrt.Engine, got {type(engine).__name__}")
        if profile is not None and optimization_profile is not None and profile != optimization_profile:
            raise InputSpecError(
                f"Runner: profile={profile} and optimization_profile={optimization_profile} disagree; give one of them"
            )
        profile = next((p for p in (profile, optimization_profile) if p is not None), 0)
        self._check_profile(engine, profile)
        self.engine = engine
        self.profile = profile
        self.zero_copy_outputs = zero_copy_outputs
        self.name = name or f"flexrt-runner-p{profile}"
        self.context: ExecutionContext | None = None
        self.shape_updates = 0
        self._last_shapes: list[tuple[int, ...]] | None = None
        self._last_time = 0.0

    @staticmethod
    def _check_profile(engine: Engine, profile: int) -> None:
        if isinstance(profile, bool) or not isinstance(profile, int) or not 0 <= profile < len(engine.profiles):
            raise InputSpecError(f"profile {profile!r} does not exist; this engine has {len(engine.profiles)} profile(s)")

    @property
    def is_active(self) -> bool:
        return self.context is not None

    @property
    def optimization_profile(self) -> int:
        """Polygraphy's name for `profile`."""
        return self.profile

    def set_profile(self, index: int) -> None:
        """Switch to another profile (TrtRunner.set_profile); an active runner gets that profile's context."""
        self._check_profile(self.engine, index)
        self.profile = index
        if self.context is not None:
            self.context = self.engine.create_execution_context(index)
            self._last_shapes = None

    def activate(self) -> Runner:
        if self.context is None:
            self.context = self.engine.create_execution_context(self.profile)
        return self

    def deactivate(self) -> None:
        self.context = None
        self._last_shapes = None

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.deactivate()

    def get_input_metadata(self) -> dict[str, tuple[torch.dtype, tuple[int, ...], tuple[int, ...]]]:
        """name -> (dtype, min shape, max shape) in this runner's profile."""
        prof = self.engine.profiles[self.profile]
        return {s.name: (s.dtype, prof[s.name].min, prof[s.name].max) for s in self.engine.inputs}

    def infer(self, feed_dict: Mapping[str, Any], check_inputs: bool = True) -> dict[str, Any]:
        """Run the profile on named inputs; returns {output name: tensor}, or NumPy arrays when every
        input is a NumPy array (Polygraphy's convention). `check_inputs` is kept for Polygraphy's
        signature: inputs are always checked, since an unchecked tensor can crash native code."""
        if self.context is None:
            raise FlexrtError(f"{self.name} is not active: use `with Runner(...) as runner:` or call activate() first")
        names = self.engine.input_names
        missing = [n for n in names if n not in feed_dict]
        extra = [n for n in feed_dict if n not in names]
        if missing or extra:
            raise InputSpecError(
                f"{self.name}: inputs are {names}"
                f"{'; missing ' + str(missing) if missing else ''}{'; unexpected ' + str(extra) if extra else ''}"
            )
        numpy_out = all(is_numpy(feed_dict[n]) for n in names) and bool(names)
        flat = [to_tensor(feed_dict[n], self.engine.device) for n in names]
        # check_inputs is Polygraphy's flag; inputs are checked either way (the context does it, a
        # steady stream of fitting shapes costs one lookup): unchecked tensors can crash native code
        self.context.check(flat, holder="runner")
        shapes = [tuple(t.shape) for t in flat]
        if shapes != self._last_shapes:
            self._last_shapes = shapes
            self.shape_updates += 1
        start = time.perf_counter()
        outs = self.context.run_checked(flat, zero_copy=self.zero_copy_outputs)
        self._last_time = time.perf_counter() - start
        if numpy_out:
            outs = [to_numpy(t) for t in outs]
        return dict(zip(self.engine.output_names, outs))

    def last_inference_time(self) -> float:
        """Host time of the last `infer` in seconds (launch time on CUDA: work may still be running)."""
        return self._last_time

    def __repr__(self) -> str:
        state = "active" if self.is_active else "inactive"
        return f"Runner({self.engine!r}, profile={self.profile}, {state})"
