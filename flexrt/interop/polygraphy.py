"""`FlexrtRunner`: a Polygraphy runner for flexrt engines, for `Comparator.run` and `compare_accuracy`.

Polygraphy is imported here only, when this module is (flexrt does not require it). The runner
wraps flexrt's own `Runner` for one profile, so checks, profile choice and NumPy handling are the
same as without Polygraphy. `profile_data_loader` gives Polygraphy feeds at a profile's min, opt,
max and random shapes: Polygraphy's default loader would use each input's min shape only.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from flexrt.errors import FlexrtError, InputSpecError

try:
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata
except ImportError as e:  # pragma: no cover - depends on the environment
    raise FlexrtError(
        "flexrt.interop.polygraphy needs Polygraphy: pip install polygraphy (and onnxruntime for its ONNX-Runtime runner)"
    ) from e

from flexrt.interop.compare import feeds, profile_cases
from flexrt.runtime import Engine, Runner

logger = logging.getLogger(__name__)

EngineSource = Any  # an Engine, anything with `.engine` (CompiledModule, Artifact), a path, or a callable returning one


def _resolve(source: EngineSource) -> Engine:
    if isinstance(source, (str, os.PathLike)):
        from flexrt.serialize.load import load

        return load(source).engine
    if callable(source) and not isinstance(source, Engine) and not hasattr(source, "engine"):
        source = source()  # a Polygraphy-style lazy loader
    engine = getattr(source, "engine", source)
    if not isinstance(engine, Engine):
        raise InputSpecError(
            f"FlexrtRunner expects a flexrt Engine, CompiledModule, Artifact, artifact path or a callable returning one; "
            f"got {type(source).__name__}"
        )
    return engine


class FlexrtRunner(BaseRunner):
    """Polygraphy's runner interface over one profile of a flexrt engine (as `TrtRunner` over a TensorRT engine).

    `output_names` renames the engine's outputs, in order, e.g. to the names of an ONNX model it is
    compared with; Polygraphy matches outputs by name first.
    """

    def __init__(
        self,
        engine: EngineSource,
        name: str | None = None,
        optimization_profile: int | None = None,
        output_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(name=name, prefix="flexrt-runner")
        self._source = engine
        self.optimization_profile = optimization_profile
        self.output_names = list(output_names) if output_names is not None else None
        self.engine: Engine | None = None
        self.runner: Runner | None = None

    def activate_impl(self) -> None:
        engine = _resolve(self._source)
        if self.output_names is not None and len(self.output_names) != len(engine.outputs):
            raise InputSpecError(
                f"{self.name}: output_names has {len(self.output_names)} names for {len(engine.outputs)} outputs "
                f"{engine.output_names}"
            )
        self.engine = engine
        self.runner = Runner(engine, optimization_profile=self.optimization_profile, name=self.name).activate()

    def set_profile(self, index: int) -> None:
        """Switch the active runner to another profile (TrtRunner.set_profile)."""
        if self.runner is None:
            raise FlexrtError(f"{self.name}: activate the runner before set_profile()")
        self.runner.set_profile(index)

    def get_input_metadata_impl(self) -> TensorMetadata:
        """Each input's dtype, its shape with None on the dims dynamic in this profile, and the profile's min/max."""
        assert self.engine is not None and self.runner is not None
        meta = TensorMetadata()
        profile = self.engine.profiles[self.runner.profile]
        for spec in self.engine.inputs:
            r = profile[spec.name]
            shape = [lo if lo == hi else None for lo, hi in zip(r.min, r.max)]
            meta.add(spec.name, spec.dtype, shape, min_shape=list(r.min), max_shape=list(r.max))
        return meta

    def infer_impl(self, feed_dict: Mapping[str, Any]) -> dict[str, Any]:
        assert self.runner is not None
        start = time.perf_counter()
        outs = self.runner.infer(feed_dict)
        self.inference_time = time.perf_counter() - start
        if self.output_names is None:
            return outs
        return dict(zip(self.output_names, outs.values()))

    def deactivate_impl(self) -> None:
        if self.runner is not None:
            self.runner.deactivate()
        self.runner = None
        self.engine = None


def profile_data_loader(engine: EngineSource, profile: int = 0, random_shapes: int = 3, seed: int = 0) -> Callable[[], Iterator[dict[str, Any]]]:
    """A data loader for `Comparator.run(data_loader=...)`: NumPy feeds at the profile's min, opt, max
    and `random_shapes` random in-range shapes (fresh random data for each)."""
    resolved = _resolve(engine)
    cases = profile_cases(resolved, random_shapes, seed, profiles=[profile])
    return list(feeds(resolved, cases))
