"""Latency of flexrt and its peers at the opt and max shapes (benchmarks.timing.time_calls: medians
of CUDA events after warm-up, on a rotation of three random input sets).

Two phases, so that shards sharing a GPU do not time each other's compiles: every peer is built and
warmed at both shapes first (torch.compile compiles there, CUDA graphs are captured), then the timed
runs of all peers happen together while this process holds the GPU's lock (`gpu_lock`): no two
processes time on one GPU at once. Other processes' builds and checks may still launch kernels then.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from benchmarks.timing import free_memory, time_calls
from benchmarks.zoo.spec import ZooModel

logger = logging.getLogger(__name__)

PEERS = ("eager", "compile_dynamic", "reduce_overhead")
WARM_CALLS = 3  # torch.compile's first call compiles; reduce-overhead records its graph on the third


def _call(fn: Callable[..., Any]) -> Callable[[tuple[list[Any], dict[str, Any]]], Any]:
    def run(inputs: tuple[list[Any], dict[str, Any]]) -> Any:
        with torch.no_grad():
            return fn(*inputs[0], **inputs[1])
    return run


def _median(fn: Callable[..., Any], rotation: list[Any], device: torch.device, smoke: bool) -> float:
    if smoke:
        return time_calls(_call(fn), rotation, device, warmup=2, iters=5)["median_ms"]
    return time_calls(_call(fn), rotation, device, warmup=10, iters=50, warmup_ms=25, rep_ms=100)["median_ms"]


@contextlib.contextmanager
def gpu_lock(device: torch.device) -> Iterator[float]:
    """An exclusive lock per physical GPU (by UUID) across processes; yields the seconds waited."""
    if device.type != "cuda":
        yield 0.0
        return
    uuid = str(torch.cuda.get_device_properties(device).uuid)
    start = time.perf_counter()
    with open(f"/tmp/flexrt-zoo-gpu-{uuid}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield time.perf_counter() - start
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _peer(name: str, model: torch.nn.Module, compiled: Any) -> Callable[..., Any]:
    if name == "flexrt":
        return compiled
    if name == "eager":
        return model
    if name == "compile_dynamic":
        return torch.compile(model, dynamic=True)
    if name == "reduce_overhead":  # static: one graph per shape, as a user specialising per shape would
        return torch.compile(model, mode="reduce-overhead", dynamic=False)
    raise ValueError(f"unknown peer {name!r}; choose from {PEERS}")


def time_all(entry: ZooModel, model: torch.nn.Module, compiled: Any, dtype: torch.dtype, device: torch.device,
             smoke: bool, peers: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """{shape name: {peer: median ms or an error string}} at opt and max."""
    dims = entry.dims_for(smoke)
    shapes = {"opt": {d.name: d.opt for d in dims}, "max": {d.name: d.hi for d in dims}}
    rotations = {label: [entry.make_inputs(sizes, dtype, device, 3000 + i, smoke) for i in range(3)]
                 for label, sizes in shapes.items()}
    out: dict[str, dict[str, Any]] = {label: {"sizes": sizes} for label, sizes in shapes.items()}
    torch._dynamo.reset()
    ready: dict[str, Callable[..., Any]] = {}
    for peer in ("flexrt", *peers):  # phase 1: build and warm, no lock held
        start = time.perf_counter()
        try:
            fn = _peer(peer, model, compiled)
            for label in shapes:
                for i in range(WARM_CALLS):
                    _call(fn)(rotations[label][i % 3])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            ready[peer] = fn
        except Exception as e:  # noqa: BLE001 - a peer that fails is reported, the others still run
            logger.warning("%s: peer %s failed to build or warm up: %s", entry.name, peer, e)
            for label in shapes:
                out[label][peer] = f"error: {type(e).__name__}: {str(e)[:300]}"
        for label in shapes:
            out[label][f"{peer}_build_and_warm_seconds"] = round(time.perf_counter() - start, 2)
    with gpu_lock(device) as waited:  # phase 2: the timed runs, alone on this GPU among the zoo's processes
        for label in shapes:
            out[label]["lock_wait_seconds"] = round(waited, 2)
            for peer, fn in ready.items():
                try:
                    out[label][peer] = _median(fn, rotations[label], device, smoke)
                except Exception as e:  # noqa: BLE001
                    logger.warning("%s: peer %s failed at %s: %s", entry.name, peer, label, e)
                    out[label][peer] = f"error: {type(e).__name__}: {str(e)[:300]}"
    del rotations, ready
    free_memory(device)
    torch._dynamo.reset()
    return out


def best_peer_ratio(latency: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """flexrt's median over the best peer's at each timed shape (below 1: flexrt faster)."""
    ratios = {}
    for label, row in latency.items():
        peers = {k: v for k, v in row.items() if k in PEERS and isinstance(v, float)}
        if isinstance(row.get("flexrt"), float) and peers:
            best = min(peers, key=peers.__getitem__)
            ratios[label] = {"ratio": row["flexrt"] / peers[best], "best_peer": best}
    return ratios
