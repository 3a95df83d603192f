"""What a compile of an nn.Module is made from, hashed before any tracing: the key of the module cache.

A warm compile (`module_cache`) finds its engine from this key alone, so the key must see everything
that can change what the trace and the build produce: the module tree (classes, their methods' code,
every attribute, parameters, buffers and hooks, the weights' bytes), the inputs and profiles, the
settings, the process's Inductor configuration and the global torch flags that steer tracing, and the
versions of torch, flexrt and Python. The Python files the model's code lives in are checked
separately (`module_cache.source_files`), since they are only known after the first trace.

Anything it cannot describe exactly (an attribute holding a lock, a C object, a class defined at an
interactive prompt) makes `module_key` return None: that compile traces as usual, never guesses.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import inspect
import logging
import os
import platform
import sys
import types
from collections.abc import Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree

from flexrt._version import __version__
from flexrt.build.keys import device_key, digest, process_inductor_config, tensor_bytes
from flexrt.settings import CompileSettings
from flexrt.spec import Input, Profile
from flexrt.spec.flat import FlatInputs, is_leaf

logger = logging.getLogger(__name__)

_MAX_DEPTH = 8  # nesting of plain objects (a config inside a module inside a list...) described
_HOOKS = "hook"  # nn.Module's hook dicts all have it in their names
_TREE = frozenset({"_parameters", "_buffers", "_modules"})
# Inductor's environment variables that change no engine (where its caches live, its compile pool)
_INDUCTOR_ENV_KEPT_OUT = frozenset({"TORCHINDUCTOR_CACHE_DIR", "TORCHINDUCTOR_COMPILE_THREADS"})


class Undescribable(Exception):
    """A value the key cannot describe exactly; the compile traces instead."""


def module_key(model: torch.nn.Module, flat: FlatInputs, profiles: Sequence[Profile] | None,
               settings: CompileSettings) -> str | None:
    """The module cache's key for compiling `model` over `flat`/`profiles` with `settings`, or None
    (with the reason at DEBUG) when something in the model cannot be described."""
    try:
        parts = _parts(model, flat, profiles, settings)
    except Undescribable as e:
        logger.debug("module cache: not used for %s: %s", type(model).__qualname__, e)
        return None
    tensors = _tensors(model)
    layouts = repr([(name, tuple(t.stride()), t.device.type, t.requires_grad) for name, t in tensors])
    return "module-" + digest([*parts, layouts], tensors)


def _parts(model: torch.nn.Module, flat: FlatInputs, profiles: Sequence[Profile] | None,
           settings: CompileSettings) -> list[str]:
    described = {k: v for k, v in settings.describe().items() if k not in ("cache_dir", "build_workers")}
    tree = frozenset(id(m) for m in model.modules())
    return [
        "flexrt-module-1", __version__, torch.__version__, platform.python_version(),
        device_key(settings.device), _inductor_state(), repr(sorted(described.items())), _torch_flags(),
        _inputs(flat), repr([repr(p) for p in profiles or ()]),
        *(_module(path, m, tree) for path, m in model.named_modules(remove_duplicate=False)),
        *_class_code(model),
    ]


def _inductor_state() -> str:
    """The process's Inductor settings that differ from Inductor's defaults. Without importing
    Inductor (seconds of a warm compile) when nothing can have changed them: its config not imported
    and none of its environment variables set. flexrt's own Inductor patch follows from the settings
    and flexrt's code, both in the key."""
    env = sorted(k for k in os.environ if k.startswith("TORCHINDUCTOR_") and k not in _INDUCTOR_ENV_KEPT_OUT)
    if "torch._inductor.config" not in sys.modules and not env:
        return "inductor: defaults"
    import torch._inductor.config as inductor_config

    # by value: a patch that Inductor undoes by assigning the old value back leaves it "overridden"
    changed = sorted((k, repr(v)) for k, v in process_inductor_config().items() if v != inductor_config._config[k].default)
    return f"inductor: {changed}" if changed else "inductor: defaults"


def _torch_flags() -> str:
    """Process-wide torch state that a trace reads."""
    cuda = torch.backends.cuda
    return repr([
        torch.is_grad_enabled(), torch.get_default_dtype(), torch.are_deterministic_algorithms_enabled(),
        torch.get_float32_matmul_precision(), cuda.flash_sdp_enabled(), cuda.mem_efficient_sdp_enabled(),
        cuda.math_sdp_enabled(), torch.backends.cudnn.enabled, torch.backends.mkldnn.enabled,
    ])


def _inputs(flat: FlatInputs) -> str:
    def leaf(x: Any) -> str:
        if isinstance(x, Input):
            return f"{x!r} domain={x.tensor_domain}"
        return f"tensor {tuple(x.shape)} {x.dtype} {tuple(x.stride())} {x.device.type}"

    leaves, structure = pytree.tree_flatten((flat.args, flat.kwargs), is_leaf=is_leaf)
    return repr([str(structure), flat.names, [repr(s) for s in flat.specs], [leaf(x) for x in leaves]])


def _module(path: str, m: torch.nn.Module, tree: frozenset[int]) -> str:
    """One module of the tree: its class, its attributes and hooks, which parameters and buffers it
    holds (their bytes are hashed by `_tensors`)."""
    state = {}
    for k, v in vars(m).items():
        if k in _TREE:
            continue
        # hook dicts are keyed by handle ids, which differ between processes: their hooks, in order
        state[k] = describe(list(v.values()) if _HOOKS in k and isinstance(v, dict) else v, tree)
    return repr([path, _class_name(type(m)), sorted(m._parameters), sorted(m._buffers), sorted(m._modules),
                 sorted(state.items())])


def _tensors(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every parameter and buffer, by name (tensors held otherwise are hashed where `describe` meets them)."""
    out = [(f"p:{n}", t) for n, t in model.named_parameters(remove_duplicate=False)]
    return out + [(f"b:{n}", t) for n, t in model.named_buffers(remove_duplicate=False) if t is not None]


def _class_code(model: torch.nn.Module) -> list[str]:
    """The code of every method of the classes in the tree (and their bases below nn.Module), and of
    the functions their own modules define: a method or helper patched in this process changes it."""
    classes = {c for m in model.modules() for c in type(m).__mro__ if c not in (object, torch.nn.Module)}
    modules = {c.__module__ for c in classes}
    out = []
    for c in sorted(classes, key=_class_name):
        out.append(repr([_class_name(c), sorted((k, _code_id(v)) for k, v in vars(c).items() if _is_code(v))]))
    for name in sorted(modules):
        mod = sys.modules.get(name)
        if mod is None or not getattr(mod, "__file__", None):
            raise Undescribable(f"the model's class module {name!r} has no source file (defined interactively?)")
        if name.startswith("torch."):
            continue  # torch's own layers: its version is in the key
        out.append(repr([name, sorted((k, _code_id(v)) for k, v in vars(mod).items()
                                      if isinstance(v, types.FunctionType) and v.__module__ == name)]))
    return out


def _code_id(v: Any) -> str:
    """Which function a method or helper is (name and code; what it closes over is the file's)."""
    if isinstance(v, (staticmethod, classmethod)):
        return _code_id(v.__func__)
    if isinstance(v, property):
        return repr([_code_id(v.fget), _code_id(v.fset)])
    if isinstance(v, functools.partialmethod):
        return _code_id(v.func)
    if isinstance(v, types.FunctionType):
        return f"{v.__module__}.{v.__qualname__}:{_code(v.__code__)}"
    return f"{type(v).__name__}:{getattr(v, '__qualname__', '')}"


def _is_code(v: Any) -> bool:
    return isinstance(v, (types.FunctionType, staticmethod, classmethod, property, functools.partialmethod))


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def describe(value: Any, tree: frozenset[int], depth: int = 0, seen: frozenset[int] = frozenset()) -> str:
    """An exact, address-free text for a value the model holds; Undescribable if there is none.
    `tree`: the ids of the model's registered modules (described by the tree walk)."""
    if depth > _MAX_DEPTH:
        raise Undescribable(f"a value nested more than {_MAX_DEPTH} deep ({type(value).__name__})")
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return f"{type(value).__name__}:{value!r}"
    if isinstance(value, (torch.dtype, torch.device, torch.Size, torch.memory_format, torch.layout, enum.Enum)):
        return f"{type(value).__name__}:{value}"
    if isinstance(value, torch.Tensor):  # a plain tensor attribute, or one in a list or a dict
        h = hashlib.sha256(tensor_bytes(value))
        return f"tensor:{value.dtype}:{tuple(value.shape)}:{tuple(value.stride())}:{value.device.type}:{h.hexdigest()}"
    if isinstance(value, type):
        return f"class:{_class_name(value)}"
    if id(value) in seen:
        return "cycle"
    seen = seen | {id(value)}
    nested = functools.partial(describe, tree=tree, depth=depth + 1, seen=seen)
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}[{','.join(nested(v) for v in value)}]"
    if isinstance(value, (set, frozenset)):
        return f"{type(value).__name__}[{','.join(sorted(nested(v) for v in value))}]"
    if isinstance(value, dict):
        return f"{type(value).__name__}{{{','.join(sorted(f'{nested(k)}:{nested(v)}' for k, v in value.items()))}}}"
    if isinstance(value, torch.nn.Module):
        if id(value) not in tree:  # its weights are nobody's parameters: not hashed
            raise Undescribable(f"an nn.Module ({_class_name(type(value))}) held outside the module tree")
        return f"module:{_class_name(type(value))}"  # a registered one: described in the tree walk
    if isinstance(value, (types.FunctionType, types.MethodType, types.BuiltinFunctionType, functools.partial,
                          staticmethod, classmethod, property, functools.partialmethod)):
        return _callable(value, nested)
    if dataclasses.is_dataclass(value) or hasattr(value, "__dict__"):
        if inspect.ismodule(value):
            return f"pymodule:{value.__name__}"
        fields = vars(value) if hasattr(value, "__dict__") else {}
        slots = {s: getattr(value, s) for c in type(value).__mro__ for s in getattr(c, "__slots__", ()) if hasattr(value, s)}
        return f"object:{_class_name(type(value))}{{{','.join(sorted(f'{k}:{nested(v)}' for k, v in {**fields, **slots}.items()))}}}"
    raise Undescribable(f"an attribute of type {_class_name(type(value))} (no exact description)")


def _callable(value: Any, nested: Any) -> str:
    if isinstance(value, functools.partial):
        return f"partial:{nested(value.func)}:{nested(value.args)}:{nested(value.keywords)}"
    if isinstance(value, (staticmethod, classmethod)):
        return f"{type(value).__name__}:{nested(value.__func__)}"
    if isinstance(value, property):
        return f"property:{nested(value.fget)}:{nested(value.fset)}"
    if isinstance(value, functools.partialmethod):
        return f"partialmethod:{nested(value.func)}:{nested(value.args)}:{nested(value.keywords)}"
    if isinstance(value, types.MethodType):
        return f"method:{nested(value.__func__)}:of:{_class_name(type(value.__self__))}"
    if isinstance(value, types.BuiltinFunctionType):
        return f"builtin:{getattr(value, '__module__', None)}.{value.__qualname__}"
    code = value.__code__
    cells = [c.cell_contents for c in value.__closure__ or () if _filled(c)]
    return (f"function:{value.__module__}.{value.__qualname__}:{_code(code)}:{nested(value.__defaults__)}:"
            f"{nested(value.__kwdefaults__)}:{nested(cells)}")


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _code(code: types.CodeType) -> str:
    """A code object's bytecode, names and constants (nested functions' code included)."""
    h = hashlib.sha256(code.co_code)
    h.update(repr([code.co_names, code.co_varnames, code.co_freevars, [_const(c) for c in code.co_consts]]).encode())
    return h.hexdigest()[:32]


def _const(c: Any) -> str:
    """A code constant as text that is the same in every process (a frozenset's repr follows string
    hashing, which each process seeds anew: `x in {"a", "b"}` compiles to one)."""
    if isinstance(c, types.CodeType):
        return _code(c)
    if isinstance(c, frozenset):
        return f"frozenset({sorted(_const(x) for x in c)})"
    if isinstance(c, tuple):
        return f"({','.join(_const(x) for x in c)})"
    return repr(c)
