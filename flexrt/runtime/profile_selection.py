"""`optimization_profile(module, k)`: pin a profile for a `with` block, as Torch-TensorRT's
`torch_tensorrt.runtime.optimization_profile` does.

Why pin: with profiles that overlap (a decode profile of sequence 1 and a prefill profile of 1..256),
the caller knows which one a call is meant for. While pinned, a shape the profile does not accept
is a `ShapeOutOfRangeError` naming the pinned profile. `"auto"` (or None) selects by shape with
flexrt's rule: keep the current profile while it fits, else the narrowest that fits. The previous
state is restored on exit, so blocks nest.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from flexrt.runtime.module import CompiledModule

logger = logging.getLogger(__name__)


def compiled_modules(module: Any) -> list[CompiledModule]:
    """Every flexrt CompiledModule in `module` (itself, or among its submodules)."""
    if isinstance(module, CompiledModule):
        return [module]
    if isinstance(module, torch.nn.Module):
        return [m for m in module.modules() if isinstance(m, CompiledModule)]
    return []


class _ProfileContext:
    def __init__(self, module: Any, profile: int | str | None) -> None:
        self.module = module
        self.profile = profile
        self._saved: list[tuple[CompiledModule, tuple[int | None, int]]] = []

    def __enter__(self) -> Any:
        found = compiled_modules(self.module)
        if not found:
            logger.warning("optimization_profile(): %s holds no flexrt compiled module", type(self.module).__name__)
        for m in found:
            saved = m.get_optimization_profile_state()
            m.set_optimization_profile(self.profile)  # validates before anything is changed on this module
            self._saved.append((m, saved))
        return self.module

    def __exit__(self, *exc: Any) -> None:
        for m, saved in reversed(self._saved):
            m.restore_optimization_profile_state(saved)
        self._saved.clear()


def optimization_profile(module: Any, profile: int | str | None) -> _ProfileContext:
    """Pin profile `profile` (an index) for a `with` block, or "auto"/None to choose by shape."""
    return _ProfileContext(module, profile)
