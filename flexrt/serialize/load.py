"""`flexrt.load`: an artifact -> `Artifact` (its `Engine`, and `.module()` to call like the model).

Needs only the run time and the file format; see `load` for the one exception.
"""

from __future__ import annotations

import io
import os
from typing import Any

import torch

from flexrt.errors import InputSpecError
from flexrt.format import open_artifact, runtime_options, state_from
from flexrt.runtime import CompiledModule, Engine, Fallback
from flexrt.settings import RUNTIME_NAMES


class Artifact:
    """What `flexrt.load` returns: `.module()` runs every shape in the saved ranges; `.engine` too."""

    def __init__(self, manifest: dict[str, Any], engine: Engine, fallback: Fallback | None) -> None:
        self.manifest = manifest
        self.engine = engine
        self._fallback = fallback
        self._module: CompiledModule | None = None

    def module(self) -> CompiledModule:
        if self._module is None:
            self._module = CompiledModule(self.engine, self._fallback)
        return self._module

    def __repr__(self) -> str:
        return f"Artifact({self.engine!r})"


def load(path: str | os.PathLike[str], **runtime_overrides: Any) -> Artifact:
    """Read an artifact written by `flexrt.save` or `Engine.save`. Loading runs its native code:
    load only files you trust. Keyword options override the run-time options it stored
    (`cuda_graphs`, `cuda_graph_cache_size`, `on_out_of_range`)."""
    unknown = sorted(set(runtime_overrides) - RUNTIME_NAMES)
    if unknown:
        raise InputSpecError(f"load: unknown run-time option(s) {unknown}; valid: {sorted(RUNTIME_NAMES)}")
    manifest, members, device = open_artifact(path)
    options = runtime_options(manifest).replace(**runtime_overrides)
    engine = Engine(state_from(os.fspath(path), manifest, members, device), options)
    fallback = None
    if "source.pt2" in members:
        # only artifacts saved with on_out_of_range='eager'/'build' keep their source: the compiler
        # is imported for them alone, so loading any other artifact needs no compile-time code
        from flexrt.compiler.fallback import from_artifact

        fallback = from_artifact(torch.export.load(io.BytesIO(members["source.pt2"])), engine)
    return Artifact(manifest, engine, fallback)
