"""TF32 for float32 matrix products and convolutions in CUDA engines, as TensorRT allows by default.

Why: TensorRT builds float32 layers with TF32 tensor cores unless `disable_tf32=True`
(Torch-TensorRT's option of that name), and its users expect that speed. An AOTInductor engine
calls cuBLAS and cuDNN through ATen, which read PyTorch's process-wide TF32 flags when a kernel is
chosen: at a plain run, and at capture for a CUDA graph (replays keep the captured kernels). So
the flags are set to the engine's policy around those calls and restored after, and the build runs
under the same policy (Inductor's Triton GEMM templates read it at compile time).

The flags are process-wide: eager float32 work on another thread while an engine call is in flight
sees the engine's policy. Changes from several threads take turns (a process-wide lock): interleaved,
the last restore could leave the process with a policy nobody asked for. A call whose policy the
flags already say takes no lock, so another thread's change can still reach its kernels mid-call
(plain runs only: a CUDA-graph capture holds its policy throughout, see `runtime/cuda_graphs.py`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import torch

logger = logging.getLogger(__name__)

# The relative error (norm of the difference over the norm of eager's result) flexrt's own checks
# (demo, benchmarks, tests) accept from a float32 engine against strict float32 eager when TF32 is
# on: inputs to each product are rounded to 10 mantissa bits, about 3e-4 per product.
TF32_TOLERANCE = 2e-3

_get_cublas, _set_cublas = torch._C._get_cublas_allow_tf32, torch._C._set_cublas_allow_tf32
_get_cudnn, _set_cudnn = torch._C._get_cudnn_allow_tf32, torch._C._set_cudnn_allow_tf32


_POLICY_LOCK = threading.RLock()  # re-entrant: a build verifies its engines under its own policy


@contextlib.contextmanager
def tf32_policy(allow: bool) -> Iterator[None]:
    """cuBLAS and cuDNN TF32 set to `allow` for the block, then restored; one thread at a time."""
    with _POLICY_LOCK:
        before = (_get_cublas(), _get_cudnn())
        _set_cublas(allow)
        _set_cudnn(allow)
        try:
            yield
        finally:
            _set_cublas(before[0])
            _set_cudnn(before[1])


def in_effect(allow: bool) -> bool:
    """Whether both flags already say `allow` (two cheap reads: the per-call check)."""
    return _get_cublas() == allow and _get_cudnn() == allow
