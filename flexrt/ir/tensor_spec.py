"""`TensorSpec`: one engine input or output as data (name, dtype, layout, each dim's expression)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

Dims = tuple[int | str, ...]  # per dim: a static size, or the program's expression for it ("s0", "2*s0")


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One engine input or output: name, dtype, layout and the program's expression of each dim."""

    name: str
    dtype: torch.dtype
    dims: Dims
    format: torch.memory_format = torch.contiguous_format

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": str(self.dtype).replace("torch.", ""),
            "dims": list(self.dims),
            "format": str(self.format).replace("torch.", ""),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(d["name"], getattr(torch, d["dtype"]), tuple(d["dims"]), getattr(torch, d["format"]))
