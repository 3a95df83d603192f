"""flexrt: compile a PyTorch model once for ranges of input shapes, run any shape in them.

Drop-in for Torch-TensorRT's dynamic-shape workflow: `import flexrt as torch_tensorrt`.
"""

__version__ = "0.1.0"

import sys as _sys

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

# torch.compile(model, backend="flexrt"): an installed flexrt is found through its
# torch_dynamo_backends entry point; register the name here too when dynamo is loaded already
# (then it costs nothing), so a source checkout on sys.path works as well.
if "torch._dynamo" in _sys.modules:
    _backend.register()

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
