"""The compiled module: takes the model's own arguments, checks them, picks a profile, runs it.

Per call: flatten the arguments (a tuple of tensors needs no pytree work), check dtype, rank,
device and tied dims, keep the current profile while it fits (else the narrowest that fits, else
`on_out_of_range`), run that profile's execution context, and rebuild the model's output structure.
Shapes outside every profile go to the `Fallback` the module was given, if any (see fallback.py).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.nn.modules import module as _nn_module

from flexrt.errors import InputSpecError
from flexrt.runtime.engine import Engine
from flexrt.runtime.fallback import Fallback
from flexrt.settings import RuntimeOptions
from flexrt.spec import Profile, random_tensor

logger = logging.getLogger(__name__)


def tree_children(spec: pytree.TreeSpec) -> list[pytree.TreeSpec]:
    """A spec's children on torch 2.11 (children_specs) and 2.13 (children(); the attribute warns)."""
    children = getattr(spec, "children", None)
    return list(children()) if callable(children) else list(spec.children_specs)


def _positional_leaves(in_spec: pytree.TreeSpec) -> int | None:
    """n when the model takes exactly n positional tensors and no keywords, else None."""
    if in_spec.num_children != 2:
        return None
    args_spec, kwargs_spec = tree_children(in_spec)
    if kwargs_spec.num_children != 0 or args_spec.type not in (tuple, list):
        return None
    if all(c.is_leaf() for c in tree_children(args_spec)):
        return args_spec.num_children
    return None


def _global_hooks() -> bool:
    return bool(_nn_module._global_forward_hooks or _nn_module._global_forward_pre_hooks)


class CompiledModule(torch.nn.Module):
    """What `flexrt.compile` returns: call it like the original model."""

    def __init__(self, engine: Engine, fallback: Fallback | None = None) -> None:
        super().__init__()
        self.engine = engine
        self.in_spec = engine.state.in_spec
        self.out_spec = engine.state.out_spec
        self.contexts = [engine.create_execution_context(p) for p in range(len(engine.profiles))]
        self.current = 0
        self.pinned: int | None = None  # set by `optimization_profile(module, k)`: only profile k runs
        self._positional = _positional_leaves(self.in_spec)
        self._single_output = self.out_spec.is_leaf()
        self.fallback = fallback
        self._warned_eager = False
        self._warned_grad = False
        self._lock = threading.Lock()
        args_spec, kwargs_spec = tree_children(self.in_spec)
        self._num_args = args_spec.num_children
        self._kw_names: list[str] = list(kwargs_spec.context or [])

    def replace_engine(self, engine: Engine, fallback: Fallback | None) -> None:
        """Run `engine` from now on (a refit in place): same inputs and outputs, new weights."""
        if engine.state.in_spec != self.in_spec or engine.state.out_spec != self.out_spec:
            raise InputSpecError("replace_engine: the new engine takes or returns a different structure")
        self.engine = engine
        self.fallback = fallback
        self.contexts = [engine.create_execution_context(p) for p in range(len(engine.profiles))]

    @property
    def options(self) -> RuntimeOptions:
        return self.engine.options

    @property
    def on_out_of_range(self) -> str:
        return self.engine.options.on_out_of_range

    # -- arguments -------------------------------------------------------------------------------

    def _flatten(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        if self._positional is not None and not kwargs and len(args) == self._positional:
            return list(args)
        if len(args) != self._num_args or set(kwargs) != set(self._kw_names):
            missing = sorted(set(self._kw_names) - set(kwargs))
            extra = sorted(set(kwargs) - set(self._kw_names))
            raise InputSpecError(
                f"the compiled model takes {self._num_args} positional input(s) "
                f"({', '.join(self.engine.input_names[: self._num_args]) or 'none'})"
                f"{' and keyword input(s) ' + str(self._kw_names) if self._kw_names else ''}; got {len(args)} positional"
                f"{', missing ' + str(missing) if missing else ''}{', unexpected ' + str(extra) if extra else ''}"
            )
        ordered = {k: kwargs[k] for k in self._kw_names}
        flat, spec = pytree.tree_flatten((args, ordered))
        if spec != self.in_spec:
            raise InputSpecError(
                f"the inputs' structure differs from the one compiled: expected {self.in_spec}, got {spec}"
            )
        return flat

    # -- calls -------------------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # nn.Module.__call__ costs several microseconds of hook bookkeeping; skip it when no hook is set
        if self._forward_hooks or self._forward_pre_hooks or _global_hooks():
            return super().__call__(*args, **kwargs)
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        flat = self._flatten(args, kwargs)
        return self._dispatch(flat, args, kwargs)

    def _dispatch(self, flat: list[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run the flat inputs on the profile that fits them (checked first)."""
        checker = self.engine.checker
        profile = self.current if self.pinned is None else self.pinned
        if not checker.fast_fits(flat, profile):
            checker.check(flat)  # raises the precise error for dtype, rank, device and tied dims
            shapes = [t.shape for t in flat]
            if self.pinned is not None:
                if checker.fits(profile, shapes):
                    return self._run(profile, flat)
                raise checker.out_of_range(
                    shapes, [profile],
                    hint=f"Profile {profile} is pinned by optimization_profile(module, {profile}); pin a profile that "
                    "fits, or use optimization_profile(module, 'auto').",
                )
            chosen = checker.choose(shapes, profile)
            if chosen is None:
                return self._out_of_range(args, kwargs, flat, shapes)
            profile = chosen
            object.__setattr__(self, "current", profile)  # plain attribute: nn.Module.__setattr__ is slow
        return self._run(profile, flat)

    def _run(self, profile: int, flat: list[Any]) -> Any:
        if not self._warned_grad and torch.is_grad_enabled() and any(t.requires_grad for t in flat):
            logger.warning("flexrt engines are inference-only: outputs carry no gradient (wrap calls in torch.no_grad())")
            self._warned_grad = True
        outs = self.contexts[profile].run_checked(flat)
        return outs[0] if self._single_output else pytree.tree_unflatten(outs, self.out_spec)

    def _out_of_range(self, args: tuple[Any, ...], kwargs: dict[str, Any], flat: list[Any], shapes: list[Any]) -> Any:
        policy = self.on_out_of_range
        if policy == "eager" and self.fallback is not None:
            if not self._warned_eager:
                error = self.engine.checker.out_of_range(shapes, hint="Running it in PyTorch, as on_out_of_range='eager' asks.")
                logger.warning("%s", error)
                self._warned_eager = True
            with torch.no_grad():
                return self.fallback.eager(*args, **kwargs)
        if policy == "build" and self.fallback is not None:
            with self._lock:
                profile = self._add_static_profile(flat)
            object.__setattr__(self, "current", profile)
            return pytree.tree_unflatten(self.contexts[profile].run_checked(flat), self.out_spec)
        raise self.engine.checker.out_of_range(shapes)

    def _add_static_profile(self, flat: list[Any]) -> int:
        assert self.fallback is not None
        existing = self.engine.checker.choose([t.shape for t in flat], self.current)
        if existing is not None:
            return existing
        profile = Profile()
        for name, t in zip(self.engine.input_names, flat):
            profile.add(name, min=tuple(t.shape), opt=tuple(t.shape), max=tuple(t.shape))
        index = len(self.engine.profiles)
        logger.warning("building profile %d for shapes %s (on_out_of_range='build')", index, [tuple(t.shape) for t in flat])
        program = self.fallback.build_profile(profile, index)
        self.engine.add_profile(profile, program, publish=False)
        self.contexts.append(self.engine.create_execution_context(index))
        self.engine.publish_profiles()  # only now can another thread's call choose it
        return index

    # -- captured shapes ---------------------------------------------------------------------------

    def capture_cuda_graphs(self, shapes: Sequence[Sequence[Sequence[int]]]) -> dict[str, Any]:
        """Capture CUDA graphs for these input shapes now (each item: one shape per flat input, in
        `engine.input_names` order), largest first: later, smaller captures then reuse the memory the
        largest one took in its profile's pool (vLLM captures its batch sizes so). Runs on random
        inputs; returns `cuda_graph_memory()`."""
        specs = self.engine.inputs
        items = [[tuple(int(d) for d in shape) for shape in item] for item in shapes]
        for item in items:
            if len(item) != len(specs):
                raise InputSpecError(f"capture_cuda_graphs: {len(item)} shape(s) given, the model takes {len(specs)} "
                                     f"({', '.join(s.name for s in specs)})")
        checker = self.engine.checker
        for item in items:
            if checker.choose(item, self.current) is None:
                raise checker.out_of_range(item, hint="capture_cuda_graphs takes shapes inside the compiled profiles.")
        items.sort(key=lambda item: -sum(math.prod(shape) for shape in item))
        with torch.no_grad():
            for item in items:
                flat = [random_tensor(shape, spec.dtype, self.engine.device, spec.format) for shape, spec in zip(item, specs)]
                for _ in range(2):  # the first call of a shape runs plainly, the second captures
                    self._dispatch(flat, (), {})
        return self.cuda_graph_memory()

    def cuda_graph_memory(self) -> dict[str, Any]:
        """Memory held by captured CUDA graphs: in all, and per profile and captured shape."""
        profiles = [{"profile": k, **c.graphs.memory()} for k, c in enumerate(self.contexts) if c.graphs is not None]
        return {"total_bytes": sum(p["total_bytes"] for p in profiles), "profiles": profiles}

    # -- profile selection (Torch-TensorRT's TorchTensorRTModule methods, used by `optimization_profile`) --

    def set_optimization_profile(self, profile: int | str | None) -> None:
        """Pin profile `profile` (an index), or choose by shape ("auto" or None: flexrt's default rule)."""
        if profile is None or profile == "auto":
            object.__setattr__(self, "pinned", None)
            return
        count = len(self.engine.profiles)
        if isinstance(profile, bool) or not isinstance(profile, int):
            raise InputSpecError(f"optimization profile must be an index (int), 'auto' or None, got {profile!r}")
        if not 0 <= profile < count:
            raise InputSpecError(f"optimization profile {profile} does not exist; this module has {count} (0..{count - 1})")
        object.__setattr__(self, "pinned", profile)
        object.__setattr__(self, "current", profile)

    def get_optimization_profile_state(self) -> tuple[int | None, int]:
        """(pinned profile or None, current profile): what `restore_optimization_profile_state` puts back."""
        return self.pinned, self.current

    def restore_optimization_profile_state(self, state: tuple[int | None, int]) -> None:
        object.__setattr__(self, "pinned", state[0])
        object.__setattr__(self, "current", state[1])

    def extra_repr(self) -> str:
        return repr(self.engine)

