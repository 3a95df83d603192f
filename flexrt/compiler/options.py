"""The compile options and the device: `flexrt.compile`'s keywords -> settings and run-time options,
the device defaulting to where the model lives. Light: a warm compile needs nothing else to start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.utils._pytree as pytree

from flexrt.errors import InputSpecError
from flexrt.settings import CompileSettings, RuntimeOptions, parse_options


def module_device(model: torch.nn.Module) -> torch.device | None:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return None


def tensors_device(values: Any) -> torch.device | None:
    for leaf in pytree.tree_leaves(values):
        if isinstance(leaf, torch.Tensor):
            return leaf.device
    return None


def resolve_options(options: Mapping[str, Any], *devices: torch.device | None) -> tuple[CompileSettings, RuntimeOptions]:
    """Settings and run-time options, the device defaulting to where the model (or its example tensors) lives."""
    found = next((d for d in devices if d is not None), None)
    settings, runtime = parse_options(options, device=found)
    if found is not None and devices[0] is not None and found.type != settings.device.type:
        raise InputSpecError(
            f"the model is on {found} but device={str(settings.device)!r} was requested; move the model with "
            f".to({str(settings.device)!r}) first, or leave device= unset"
        )
    return settings, runtime
