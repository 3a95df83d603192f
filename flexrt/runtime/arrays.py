"""NumPy arrays in and out of runners, as Polygraphy's runners take them.

Polygraphy's runners return NumPy arrays for NumPy inputs and tensors for tensor inputs; flexrt's
`Runner` does the same, so a Polygraphy script's feed_dict and comparisons work unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def is_numpy(value: Any) -> bool:
    return isinstance(value, (np.ndarray, np.generic))


def to_tensor(value: Any, device: torch.device) -> Any:
    """A NumPy array as a tensor on the engine's device (shared memory on the CPU); anything else as is."""
    if not is_numpy(value):
        return value
    array = np.ascontiguousarray(value)  # torch.from_numpy refuses negative strides
    return torch.from_numpy(array).to(device)


def to_numpy(value: Any) -> Any:
    """A tensor as a NumPy array on the host; bfloat16, which NumPy lacks, becomes float32."""
    if not isinstance(value, torch.Tensor):
        return value
    value = value.detach()
    if value.dtype == torch.bfloat16:
        value = value.float()
    return value.cpu().numpy()
