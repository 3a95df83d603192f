"""Torch-TensorRT's backend names, `torch.compile(model, backend="tensorrt")` and
`backend="torch_tensorrt"`, served by flexrt while the real torch_tensorrt is not installed.

Dynamo finds these through flexrt's `torch_dynamo_backends` entry points without importing flexrt:
`lookup_backend("tensorrt")` loads the entry point (an attribute of this module) and registers
what it gets under that name. This module imports no torch, so that reading the attribute costs
nothing but the answer. When torch_tensorrt is installed the name is its own: importing it
registers both names with `register_backend` (which raises on a name taken already), so the
attribute imports it and hands its registration back for dynamo's lookup to make again.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

ALIASES = ("tensorrt", "torch_tensorrt")


def real_torch_tensorrt() -> bool:
    """True when the real torch_tensorrt can be imported (then its backends own the names)."""
    return importlib.util.find_spec("torch_tensorrt") is not None


def __getattr__(name: str) -> Any:
    if name not in ALIASES:
        raise AttributeError(f"module 'flexrt.backend_alias' has no attribute {name!r}")
    if not real_torch_tensorrt():
        from flexrt.backend import flexrt_backend

        return flexrt_backend
    importlib.import_module("torch_tensorrt")  # registers "tensorrt" and "torch_tensorrt" with dynamo
    from torch._dynamo.backends.registry import _COMPILER_FNS

    real = _COMPILER_FNS.pop(name, None)  # lookup_backend registers what this returns under `name`
    if real is None:
        from flexrt.errors import CompilationError

        raise CompilationError(f"torch_tensorrt is installed but registered no backend {name!r}; import torch_tensorrt first")
    return real
