"""flexrt: compile a PyTorch model once for ranges of input shapes, run any shape in them.

Drop-in for Torch-TensorRT's dynamic-shape workflow: `import flexrt as torch_tensorrt`.
"""

__version__ = "0.1.0"

from flexrt import backend as _backend
from flexrt import dynamo, errors
from flexrt.compiler import build_engine
from flexrt.compiler import compile_module as compile
from flexrt.engine.context import ExecutionContext
from flexrt.engine.engine import Engine
from flexrt.engine.runner import Runner
from flexrt.runtime import CompiledModule
from flexrt.serialize import Artifact, load, save
from flexrt.settings import CompileSettings
from flexrt.spec import Input, Profile

_backend.register()  # torch.compile(model, backend="flexrt")

__all__ = [
    "Artifact",
    "CompileSettings",
    "CompiledModule",
    "Engine",
    "ExecutionContext",
    "Input",
    "Profile",
    "Runner",
    "build_engine",
    "compile",
    "dynamo",
    "errors",
    "load",
    "save",
]
