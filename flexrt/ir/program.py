"""A program as data: one profile's segments (engine binaries or exported PyTorch programs) in order.

Built by `flexrt.build`, run by `flexrt.runtime`, written by `flexrt.serialize`: none of them
imports another for it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
from torch.export import ExportedProgram

from flexrt.ir.binary import EngineBinary

OutputRef = tuple[str, Any]  # ("value", env name) or ("const", python value)


@dataclasses.dataclass
class SegmentState:
    """What a segment is, as data: an engine binary or an exported PyTorch program."""

    kind: Literal["engine", "torch"]
    inputs: list[str]
    outputs: list[str]
    ops: dict[str, int]
    reasons: dict[str, str]
    engine: EngineBinary | None = None
    program: ExportedProgram | None = None
    # refitted weights, by the engine's constant name: applied over the ones packaged in its shared
    # object when it is loaded (`flexrt.dynamo.refit_module_weights`), and saved with it
    weights: dict[str, torch.Tensor] | None = None

    @property
    def num_ops(self) -> int:
        return sum(self.ops.values())


@dataclasses.dataclass
class ProgramState:
    inputs: list[str]
    outputs: list[OutputRef]
    segments: list[SegmentState]
    constants: dict[str, torch.Tensor]

    @property
    def all_engine(self) -> bool:
        return all(s.kind == "engine" for s in self.segments)
