"""`EngineState`: everything an engine is, as data — what `build` assembles, `save` writes and `load` reads."""

from __future__ import annotations

import dataclasses

import torch.utils._pytree as pytree

from flexrt.ir.program import ProgramState
from flexrt.ir.tensor_spec import TensorSpec
from flexrt.settings import CompileSettings
from flexrt.spec import Profile


@dataclasses.dataclass
class EngineState:
    """Everything an engine is, as data: what `save` writes and `load` reads."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    profiles: list[Profile]
    programs: list[ProgramState]
    settings: CompileSettings
    in_spec: pytree.TreeSpec  # how the model's (args, kwargs) flatten into `inputs`
    out_spec: pytree.TreeSpec  # how `outputs` rebuild the model's return value
