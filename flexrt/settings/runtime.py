"""`RuntimeOptions`: what a compiled module does when it runs, apart from the engine it runs.

Kept apart from `CompileSettings` (as Torch-TensorRT keeps its runtime settings apart from
`CompilationSettings`): changing one never rebuilds an engine, and `flexrt.load(path, ...)` can
override what an artifact stored.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch

from flexrt.errors import InputSpecError
from flexrt.settings.fields import describe_fields, fields_from_description

OutOfRange = Literal["error", "eager", "build"]


@dataclasses.dataclass(frozen=True)
class RuntimeOptions:
    """cuda_graphs: capture each input shape once and replay it (CUDA only).
    cuda_graph_cache_size: captured shapes kept per profile (least recently used dropped first).
    cuda_graph_memory_mb: memory cap per profile for its captured graphs (0: none); past it, the
    profile's graphs are dropped and the current shape is captured alone.
    on_out_of_range: a shape outside every profile raises ('error'), runs in PyTorch ('eager') or
    gets a profile of its own built on the spot ('build')."""

    cuda_graphs: bool = True
    cuda_graph_cache_size: int = 32
    cuda_graph_memory_mb: int = 0
    on_out_of_range: OutOfRange = "error"

    def __post_init__(self) -> None:
        if not isinstance(self.cuda_graphs, bool):
            raise InputSpecError(f"cuda_graphs must be True or False, got {self.cuda_graphs!r}")
        size = self.cuda_graph_cache_size
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise InputSpecError(f"cuda_graph_cache_size must be an integer >= 1, got {size!r}")
        cap = self.cuda_graph_memory_mb
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
            raise InputSpecError(f"cuda_graph_memory_mb must be an integer >= 0 (0: no cap), got {cap!r}")
        if self.on_out_of_range not in ("error", "eager", "build"):
            raise InputSpecError(f"on_out_of_range must be 'error', 'eager' or 'build', got {self.on_out_of_range!r}")

    def use_cuda_graphs(self, device: torch.device) -> bool:
        return self.cuda_graphs and device.type == "cuda"

    def replace(self, **changes: Any) -> RuntimeOptions:
        return dataclasses.replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        return describe_fields(self)

    @classmethod
    def from_description(cls, d: dict[str, Any]) -> RuntimeOptions:
        return fields_from_description(cls, d)
