"""Tensors as the model tier's calls carry them: numpy arrays, which pickle as their raw bytes.

Between a front end and the model tier every call's inputs and outputs are pickled (Serve's gRPC
transport, or Ray's object store). A torch tensor pickles through `torch.save` into a buffer of its
own: a batch of three 3x224x224 fp16 images took 146 us to pickle and unpickle as a tensor, 37 us as
an array (2-core CPU); on the H200 host, 22% of the model replica's event-loop time holding the GIL
went to unpickling tensors.
Dtypes numpy lacks (bfloat16, float8) travel as integers of their width, with their name.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

Packed = np.ndarray | tuple[np.ndarray, str]

_INT_OF_WIDTH = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def pack(tensors: Mapping[str, torch.Tensor]) -> dict[str, Packed]:
    """Named CPU tensors -> named arrays (no copy where numpy has the dtype)."""
    out: dict[str, Packed] = {}
    for name, t in tensors.items():
        try:
            out[name] = t.numpy()
        except TypeError:  # no numpy dtype: the same bytes as an integer array, and the dtype's name
            out[name] = (t.view(_INT_OF_WIDTH[t.element_size()]).numpy(), str(t.dtype).removeprefix("torch."))
    return out


def unpack(arrays: Mapping[str, Packed]) -> dict[str, torch.Tensor]:
    """`pack`'s output (after a round trip through pickle) -> named CPU tensors sharing its memory."""
    out: dict[str, torch.Tensor] = {}
    for name, value in arrays.items():
        if isinstance(value, tuple):
            array, dtype = value
            out[name] = torch.from_numpy(array).view(getattr(torch, dtype))
        else:
            out[name] = torch.from_numpy(value)
    return out
