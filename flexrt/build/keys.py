"""What the cache keys are made of that a warm compile needs before any build: the device, a tensor's
bytes, the hash of text parts and named tensors, the process's Inductor settings. Apart from `inductor.py` so that computing a module-cache
key imports neither sympy nor Inductor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch


def device_key(device: torch.device) -> str:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"cuda-sm{major}{minor}"
    return "cpu"


def tensor_bytes(t: torch.Tensor) -> Any:
    """A constant's bytes for the cache key, as a buffer (no copy beyond the one to the host): 0-dim
    tensors (BatchNorm's num_batches_tracked, a scalar scale) flattened first, since a 0-dim tensor
    cannot be viewed as bytes of another size."""
    if t.numel() == 0:
        return b""
    return t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy()


def digest(parts: Sequence[str], tensors: Sequence[tuple[str, Any]]) -> str:
    """sha256 of the text parts, then of each named tensor's dtype, shape and bytes (the engine,
    segment and module keys)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    for name, t in tensors:
        if isinstance(t, torch.Tensor):
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(tensor_bytes(t))
    return h.hexdigest()


def process_inductor_config() -> dict[str, Any]:
    """This process's own Inductor settings, as Inductor counts them in its cache keys (no paths,
    thread counts or custom passes). A user's `torch._inductor.config` changes shape an engine as
    flexrt's own patch does: the cache keys cover them, and build workers take the caller's."""
    import torch._inductor.config as inductor_config

    config = inductor_config.save_config_portable()
    # metadata for the package, not the code; AOTInductor also writes into it during a build, so
    # it changes between a process's first build and its next
    config.pop("aot_inductor.metadata", None)
    return config
