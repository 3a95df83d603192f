"""flexrt: compile a PyTorch model once for ranges of input shapes, run any shape in them.

Drop-in for Torch-TensorRT's dynamic-shape workflow: `import flexrt as torch_tensorrt`.
"""

__version__ = "0.1.0"

from flexrt import backend as _backend  # noqa: E402
from flexrt import dynamo, errors  # noqa: E402
from flexrt.compiler import build_engine  # noqa: E402
from flexrt.compiler import compile_module as compile  # noqa: E402
from flexrt.engine.context import ExecutionContext  # noqa: E402
from flexrt.engine.engine import Engine  # noqa: E402
from flexrt.runtime import CompiledModule  # noqa: E402
from flexrt.serialize import Artifact, load, save  # noqa: E402
from flexrt.settings import CompileSettings  # noqa: E402
from flexrt.spec import Input, Profile  # noqa: E402

_backend.register()  # torch.compile(model, backend="flexrt")

__all__ = [
    "Artifact",
    "CompileSettings",
    "CompiledModule",
    "Engine",
    "ExecutionContext",
    "Input",
    "Profile",
    "build_engine",
    "compile",
    "dynamo",
    "errors",
    "load",
    "save",
]
