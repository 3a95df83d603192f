"""Host microseconds of each step of a CUDA-graph call, and of cheaper ways to take them.

    python -m research.probes.host_ops [--out DIR]

The seed model at batch 1 is host-bound (`host_path.py`). This times, with time.perf_counter over
many back-to-back calls (the GPU work of each is far below its host cost), the steps of
`CudaGraphCache.run` and candidate replacements: the input copy through `Tensor.copy_`, through
`torch._foreach_copy_`, and through the driver's `cuMemcpyDtoDAsync` called with ctypes on the
current stream; the copy as a memcpy node of the graph whose source is re-pointed before each
replay (flexrt's `graph_inputs`, `cudaGraphExecMemcpyNodeSetParams1D`), against `copy_` then
replay; the held-output check through `untyped_storage()` per call and through a storage handle
kept from capture; and `CUDAGraph.replay` of a one-kernel graph.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.report import save_json
from flexrt.runtime import graph_inputs


def host_us(fn: Callable[[], Any], n: int = 3000, rounds: int = 7) -> float:
    """Median over rounds of host µs per call (synchronised before and after each round)."""
    for _ in range(200):
        fn()
    torch.cuda.synchronize()
    per: list[float] = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        per.append((time.perf_counter() - t) * 1e6 / n)
        torch.cuda.synchronize()
    return statistics.median(per)


def _repointed_graph(src: torch.Tensor, static: torch.Tensor) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(re-point the graph's input copy at `src` then replay, copy_ into the static input then replay)
    for a graph holding `static <- staging` then one kernel on `static`; the re-pointing is flexrt's
    own (`graph_inputs.find_input_copies`)."""
    staging = torch.empty_like(static)
    g = torch.cuda.CUDAGraph(keep_graph=True)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        static.copy_(staging)
        static.mul_(2.0)
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        static.copy_(staging)
        static.mul_(2.0)
    g.instantiate()
    feed = graph_inputs.find_input_copies(g, [static], [staging])
    assert feed is not None, "no memcpy node reads the staging buffer"

    def repoint_and_replay() -> None:
        feed([src])
        g.replay()

    def copy_and_replay() -> None:
        static.copy_(src)
        g.replay()

    repoint_and_replay()
    torch.cuda.synchronize()
    assert torch.equal(static, src * 2), "re-pointed graph did not read the new source"
    return repoint_and_replay, copy_and_replay


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    src = torch.randn(1, 196, 768, device="cuda")
    dst = torch.empty_like(src)
    libcuda = ctypes.CDLL("libcuda.so.1")
    memcpy = libcuda.cuMemcpyDtoDAsync_v2
    memcpy.argtypes = [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_size_t, ctypes.c_void_p]
    memcpy.restype = ctypes.c_int
    raw_stream = torch._C._cuda_getCurrentRawStream
    nbytes = src.numel() * src.element_size()

    def driver_copy() -> None:
        rc = memcpy(dst.data_ptr(), src.data_ptr(), nbytes, raw_stream(0))
        if rc:
            raise RuntimeError(f"cuMemcpyDtoDAsync: {rc}")

    driver_copy()
    torch.cuda.synchronize()
    src2 = torch.randn_like(src)
    dst.copy_(src2)
    driver_copy()
    torch.cuda.synchronize()
    assert torch.equal(dst, src), "driver copy did not copy"

    storage = dst.untyped_storage()
    cdata = storage._cdata
    use_count = torch._C._storage_Use_Count
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        dst.mul_(1.0)
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        dst.mul_(1.0)
    repoint, copy_replay = _repointed_graph(src, torch.empty_like(src))
    steps = {
        "graph_repoint_input_then_replay": repoint,
        "graph_copy_input_then_replay": copy_replay,
        "tensor_copy_": lambda: dst.copy_(src),
        "foreach_copy_": lambda: torch._foreach_copy_([dst], [src]),
        "driver_memcpy_ctypes": driver_copy,
        "raw_stream_lookup": lambda: raw_stream(0),
        "data_ptr_x2": lambda: (dst.data_ptr(), src.data_ptr()),
        "use_count_via_untyped_storage": lambda: use_count(dst.untyped_storage()._cdata),
        "use_count_cached_handle": lambda: use_count(cdata),
        "getrefcount": lambda: sys.getrefcount(dst),
        "graph_replay_one_kernel": g.replay,
        "empty_call": lambda: None,
    }
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "bytes": nbytes,
              "host_us": {name: host_us(fn) for name, fn in steps.items()}}
    print(report, flush=True)
    if args.out:
        save_json(report, args.out, "host_ops.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
