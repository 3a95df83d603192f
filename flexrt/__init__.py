"""flexrt: compile a PyTorch model once for ranges of input shapes, run any shape in them.

Drop-in for Torch-TensorRT's dynamic-shape workflow: `import flexrt as torch_tensorrt`.

Every public name is imported on first use: `flexrt --help` needs no torch, and a process that only
loads and runs artifacts never imports the tracer, the lowering passes, the partitioner or Inductor.
"""

from __future__ import annotations

import importlib
import sys as _sys
from typing import Any

from flexrt import errors
from flexrt._version import __version__

# public name -> (module, attribute); attribute None means the module itself
_PUBLIC = {
    "Artifact": ("flexrt.serialize.load", "Artifact"),
    "CompileSettings": ("flexrt.settings", "CompileSettings"),
    "CompiledModule": ("flexrt.runtime", "CompiledModule"),
    "Engine": ("flexrt.runtime", "Engine"),
    "ExecutionContext": ("flexrt.runtime", "ExecutionContext"),
    "Input": ("flexrt.spec", "Input"),
    "Profile": ("flexrt.spec", "Profile"),
    "Runner": ("flexrt.runtime", "Runner"),
    "RuntimeOptions": ("flexrt.settings", "RuntimeOptions"),
    "load": ("flexrt.serialize.load", "load"),
    "compile": ("flexrt.compiler.api", "compile_module"),
    "build_engine": ("flexrt.compiler.api", "build_engine"),
    "save": ("flexrt.serialize.save", "save"),
    "dynamo": ("flexrt.dynamo", None),
    "runtime": ("flexrt.runtime", None),
}


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'flexrt' has no attribute {name!r}")
    module_name, attr = _PUBLIC[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


# torch.compile(model, backend="flexrt"): an installed flexrt is found through its
# torch_dynamo_backends entry point; register the name here too when dynamo is loaded already
# (then it costs nothing), so a source checkout on sys.path works as well.
if "torch._dynamo" in _sys.modules:
    from flexrt.backend import register as _register

    _register()

__all__ = [
    "Artifact",
    "CompileSettings",
    "CompiledModule",
    "Engine",
    "ExecutionContext",
    "Input",
    "Profile",
    "Runner",
    "RuntimeOptions",
    "__version__",
    "build_engine",
    "compile",
    "dynamo",
    "errors",
    "load",
    "runtime",
    "save",
]
