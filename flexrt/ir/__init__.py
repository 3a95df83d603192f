"""The engine as data, shared by the stages that make, run and store it (build, runtime, serialize).

Nothing here imports a stage; every stage may import this.
"""

from flexrt.ir.binary import ArchiveRef, EngineBinary
from flexrt.ir.engine_state import EngineState
from flexrt.ir.program import OutputRef, ProgramState, SegmentState
from flexrt.ir.tensor_spec import TensorSpec

__all__ = ["ArchiveRef", "EngineBinary", "EngineState", "OutputRef", "ProgramState", "SegmentState", "TensorSpec"]
