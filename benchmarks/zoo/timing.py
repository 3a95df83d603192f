"""Latency of flexrt and its peers at the opt and max shapes (benchmarks.timing.time_calls: medians
of CUDA events after warm-up, on a rotation of three random input sets)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.timing import free_memory, time_calls
from benchmarks.zoo.spec import ZooModel

logger = logging.getLogger(__name__)

PEERS = ("eager", "compile_dynamic", "reduce_overhead")


def _call(fn: Callable[..., Any]) -> Callable[[tuple[list[Any], dict[str, Any]]], Any]:
    def run(inputs: tuple[list[Any], dict[str, Any]]) -> Any:
        with torch.no_grad():
            return fn(*inputs[0], **inputs[1])
    return run


def _median(fn: Callable[..., Any], rotation: list[Any], device: torch.device, smoke: bool) -> float:
    if smoke:
        return time_calls(_call(fn), rotation, device, warmup=2, iters=5)["median_ms"]
    return time_calls(_call(fn), rotation, device, warmup=10, iters=50, warmup_ms=25, rep_ms=100)["median_ms"]


def time_all(entry: ZooModel, model: torch.nn.Module, compiled: Any, dtype: torch.dtype, device: torch.device,
             smoke: bool, peers: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """{shape name: {peer: median ms or an error string}} at opt and max; torch.compile peers are built here
    (reduce-overhead once per shape, as a user specialising per shape would)."""
    dims = entry.dims_for(smoke)
    shapes = {"opt": {d.name: d.opt for d in dims}, "max": {d.name: d.hi for d in dims}}
    out: dict[str, dict[str, Any]] = {}
    dynamic = None
    for label, sizes in shapes.items():
        rotation = [entry.make_inputs(sizes, dtype, device, 3000 + i, smoke) for i in range(3)]
        row: dict[str, Any] = {"sizes": sizes}
        for peer in ("flexrt", *peers):
            start = time.perf_counter()
            try:
                if peer == "flexrt":
                    fn = compiled
                elif peer == "eager":
                    fn = model
                elif peer == "compile_dynamic":
                    if dynamic is None:
                        torch._dynamo.reset()
                        dynamic = torch.compile(model, dynamic=True)
                    fn = dynamic
                elif peer == "reduce_overhead":
                    torch._dynamo.reset()
                    fn = torch.compile(model, mode="reduce-overhead", dynamic=False)
                else:
                    raise ValueError(f"unknown peer {peer!r}; choose from {PEERS}")
                row[peer] = _median(fn, rotation, device, smoke)
            except Exception as e:  # noqa: BLE001 - a peer that fails is reported, the others still run
                logger.warning("%s: peer %s failed at %s: %s", entry.name, peer, label, e)
                row[peer] = f"error: {type(e).__name__}: {str(e)[:300]}"
            row[f"{peer}_seconds_incl_build"] = round(time.perf_counter() - start, 2)
        out[label] = row
        del rotation
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
