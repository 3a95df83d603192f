"""Feed a captured CUDA graph the caller's input tensors by re-pointing its input copies, instead of
copying into the graph's static inputs before each replay.

Why: at small shapes a call is bound by the host, and the input copy was its largest step. On the
H100 host, `Tensor.copy_` of a 0.6 MB input took 9.2-11.0 us of host time and a graph replay
4.6-5.6 us; re-pointing the graph's own copy and replaying took 9.9 us against 17.3 us for
`copy_` then replay (`research/results/host_ops.json`).

How: the graph is captured with `static <- input` (one memcpy per input) as its first work. After
instantiation the memcpy node of each input is found by its source and destination addresses, and
before each replay `cudaGraphExecMemcpyNodeSetParams1D` sets its source to the caller's tensor
(contiguous, same size: the shape key and the input checks guarantee it). The update affects only
later launches, and the copy runs on the caller's stream inside the graph, so the caller's tensor
is read in stream order exactly as `copy_` would read it. This needs the CUDA runtime's graph API
(taken from the library torch has loaded) and torch's raw graph handles; where either is missing,
`find_input_copies` returns None and the cache copies as before.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable, Sequence

import torch

from flexrt.errors import FlexrtError

logger = logging.getLogger(__name__)

_NODE_TYPE_MEMCPY = 1  # cudaGraphNodeTypeMemcpy
_DEVICE_TO_DEVICE = 3  # cudaMemcpyDeviceToDevice


class _Memcpy3DParms(ctypes.Structure):
    """cudaMemcpy3DParms: arrays, positions (3 x size_t), pitched pointers (ptr, pitch, xsize, ysize)."""

    _fields_ = [("srcArray", ctypes.c_void_p), ("srcPos", ctypes.c_size_t * 3), ("srcPtr", ctypes.c_size_t * 4),
                ("dstArray", ctypes.c_void_p), ("dstPos", ctypes.c_size_t * 3), ("dstPtr", ctypes.c_size_t * 4),
                ("extent", ctypes.c_size_t * 3), ("kind", ctypes.c_int)]


@functools.cache
def cudart() -> ctypes.CDLL | None:
    """The CUDA runtime library torch loaded (matching torch's CUDA major version), or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "/libcudart.so" in line})
    except OSError:
        return None
    major = (torch.version.cuda or "").split(".")[0]
    paths = [p for p in paths if f"libcudart.so.{major}" in p] or paths
    if not paths:
        return None
    try:
        lib = ctypes.CDLL(paths[0])
        setp = lib.cudaGraphExecMemcpyNodeSetParams1D
    except (OSError, AttributeError) as e:
        logger.info("CUDA runtime graph API unavailable (%s): graph inputs are copied", e)
        return None
    setp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    setp.restype = ctypes.c_int
    return lib


def supported() -> bool:
    """Whether graphs can be captured for re-pointing here (runtime API found, torch keeps graphs)."""
    return cudart() is not None and hasattr(torch.cuda.CUDAGraph, "raw_cuda_graph_exec")


class InputCopies:
    """The memcpy nodes of one instantiated graph that fill its static inputs; calling it with the
    caller's inputs re-points them."""

    def __init__(self, graph: torch.cuda.CUDAGraph | None, exec_: int, set_params: Callable[..., int], nodes: list[int],
                 static: Sequence[torch.Tensor]) -> None:
        self.graph = graph  # keeps the executable graph (and so the handles) alive
        self.exec = exec_
        self.set_params = set_params  # cudaGraphExecMemcpyNodeSetParams1D
        self.nodes = nodes
        self.dsts = [t.data_ptr() for t in static]
        self.nbytes = [t.numel() * t.element_size() for t in static]
        self.made: list[torch.Tensor] = []

    def __call__(self, inputs: Sequence[torch.Tensor]) -> None:
        made: list[torch.Tensor] = []
        for node, dst, nbytes, t in zip(self.nodes, self.dsts, self.nbytes, inputs):
            if not t.is_contiguous():
                t = t.contiguous()
                made.append(t)
            rc = self.set_params(self.exec, node, dst, t.data_ptr(), nbytes, _DEVICE_TO_DEVICE)
            if rc:
                raise FlexrtError(f"cudaGraphExecMemcpyNodeSetParams1D failed (CUDA error {rc}) while feeding a CUDA graph")
        # Contiguous copies made here must outlive this call: freed now, the allocator could give one's
        # memory to the next input's copy before the replay reads it. Kept until the next call (by then
        # the replay that reads them is enqueued, and stream order protects them).
        self.made = made


def find_input_copies(graph: torch.cuda.CUDAGraph, static: Sequence[torch.Tensor],
                      sources: Sequence[torch.Tensor]) -> InputCopies | None:
    """The memcpy node `static[i] <- sources[i]` of each input in a graph captured with
    `keep_graph=True` and instantiated; None unless each input has exactly one."""
    lib = cudart()
    if lib is None or any(t.numel() == 0 for t in static):
        return None
    raw = ctypes.c_void_p(graph.raw_cuda_graph())
    count = ctypes.c_size_t(0)
    if lib.cudaGraphGetNodes(raw, None, ctypes.byref(count)):
        return None
    handles = (ctypes.c_void_p * count.value)()
    if lib.cudaGraphGetNodes(raw, handles, ctypes.byref(count)):
        return None
    wanted = {(s.data_ptr(), d.data_ptr()): i for i, (s, d) in enumerate(zip(sources, static))}
    found: dict[int, list[int]] = {i: [] for i in range(len(static))}
    for handle in handles:
        kind = ctypes.c_int(-1)
        if lib.cudaGraphNodeGetType(ctypes.c_void_p(handle), ctypes.byref(kind)) or kind.value != _NODE_TYPE_MEMCPY:
            continue
        params = _Memcpy3DParms()
        if lib.cudaGraphMemcpyNodeGetParams(ctypes.c_void_p(handle), ctypes.byref(params)):
            continue
        i = wanted.get((params.srcPtr[0], params.dstPtr[0]))
        if i is not None:
            found[i].append(handle)
    if any(len(nodes) != 1 for nodes in found.values()):
        logger.info("CUDA graph: input copies not found as single memcpy nodes (%s); inputs are copied",
                    {i: len(n) for i, n in found.items()})
        return None
    return InputCopies(graph, graph.raw_cuda_graph_exec(), lib.cudaGraphExecMemcpyNodeSetParams1D,
                       [nodes[0] for nodes in found.values()], static)
