"""`CompileSettings`: the one frozen object of everything that changes the engine built.

Option names and defaults follow Torch-TensorRT so that its users' code runs unchanged. Built once
by `flexrt.settings.parse_options` and passed explicitly to every stage.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch

from flexrt.settings.fields import describe_fields, fields_from_description

BuildFailure = Literal["error", "eager"]


@dataclasses.dataclass(frozen=True)
class CompileSettings:
    """Everything that steers a compilation and so changes the engine built. Never mutated; derive
    a new one with `replace`. What happens when the engine runs lives in `RuntimeOptions`."""

    enabled_precisions: frozenset[torch.dtype] = frozenset({torch.float32})
    truncate_long_and_double: bool = False
    torch_executed_ops: frozenset[str] = frozenset()
    min_block_size: int = 5
    require_full_compilation: bool = False
    device: torch.device = torch.device("cpu")
    dryrun: bool = False
    optimization_level: int = 3
    cache_dir: str | None = None
    disable_tf32: bool = False  # as TensorRT: float32 matmuls and convolutions may use TF32 on CUDA
    on_build_failure: BuildFailure = "error"
    # Processes that build engines side by side (0: one per 4 CPU cores on CUDA, 1 on CPU). It does
    # not change any engine, so no cache key includes it.
    build_workers: int = 0
    # Private: graph passes (ATen or post-grad, by function name) left out of this build, for A/B
    # probes and tests. Part of every engine's cache key, like every other field.
    _disabled_passes: frozenset[str] = frozenset()

    @property
    def engine_dtype(self) -> torch.dtype:
        """The precision engines are built in: the narrowest enabled floating type."""
        if torch.float16 in self.enabled_precisions:
            return torch.float16
        if torch.bfloat16 in self.enabled_precisions:
            return torch.bfloat16
        return torch.float32

    def pass_enabled(self, name: str) -> bool:
        return name not in self._disabled_passes

    def replace(self, **changes: Any) -> CompileSettings:
        return dataclasses.replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly view, for logs, the artifact manifest and `flexrt inspect`."""
        return describe_fields(self)

    @classmethod
    def from_description(cls, d: dict[str, Any], device: torch.device) -> CompileSettings:
        """Inverse of `describe`, onto the device an artifact is loaded on."""
        return fields_from_description(cls, d, device=device)
