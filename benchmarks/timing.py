"""Timing, memory and device-rate measurements shared by every peer.

On CUDA each call is bracketed by CUDA events (device time between enqueue points, which also
shows host launch cost whenever the GPU waits on the host); on CPU by time.perf_counter.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from flexrt.tf32 import tf32_policy

logger = logging.getLogger(__name__)

Call = Callable[[tuple[torch.Tensor, ...]], Any]

_PROBE_CALLS = 5  # back-to-back calls after warm-up that set how many fill rep_ms


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], object], device: torch.device, reps: int, warmup: int = 3) -> float:
    """Median latency after warm-up: CUDA events on a GPU, perf_counter on the CPU."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) without numpy."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def first_call(fn: Call, inputs: tuple[torch.Tensor, ...], device: torch.device) -> tuple[Any, float]:
    """The output and wall seconds of one call, synchronized: what a new shape costs the first time."""
    sync(device)
    start = time.perf_counter()
    out = fn(inputs)
    sync(device)
    return out, time.perf_counter() - start


def time_calls(fn: Call, rotation: Sequence[tuple[torch.Tensor, ...]], device: torch.device, warmup: int, iters: int,
               warmup_ms: float = 0.0, rep_ms: float = 0.0, max_iters: int = 2000) -> dict[str, float]:
    """Median and p90 per-call latency (ms) after warm-up, rotating over pre-made inputs.

    At least `warmup` calls and `warmup_ms` of warm-up, then at least `iters` timed calls and as many
    as fill `rep_ms` (at most `max_iters`), as triton's do_bench budgets by time: a 30 us call timed
    50 times is 1.5 ms of samples, where one slow stretch of the host moves the median."""
    n = 0
    start = time.perf_counter()
    while n < warmup or (time.perf_counter() - start) * 1e3 < warmup_ms:
        fn(rotation[n % len(rotation)])
        n += 1
        if n >= warmup:
            sync(device)
    if rep_ms > 0:  # the per-call time from warm calls only (first calls may compile or capture)
        sync(device)
        probe = time.perf_counter()
        for i in range(_PROBE_CALLS):
            fn(rotation[(n + i) % len(rotation)])
        sync(device)
        n += _PROBE_CALLS
        per_call_ms = max((time.perf_counter() - probe) * 1e3 / _PROBE_CALLS, 1e-6)
        iters = max(iters, min(max_iters, int(rep_ms / per_call_ms)))
    sync(device)
    wall = time.perf_counter()
    if device.type == "cuda":
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        for i in range(iters):
            starts[i].record()
            fn(rotation[i % len(rotation)])
            ends[i].record()
        torch.cuda.synchronize(device)
        times = [s.elapsed_time(e) for s, e in zip(starts, ends)]
    else:
        times = []
        for i in range(iters):
            t = time.perf_counter()
            fn(rotation[i % len(rotation)])
            times.append((time.perf_counter() - t) * 1e3)
    wall_ms = (time.perf_counter() - wall) * 1e3 / iters
    return {
        "median_ms": statistics.median(times),
        "p90_ms": percentile(times, 90),
        "min_ms": min(times),
        "wall_ms_per_call": wall_ms,
        "warmup_calls": n,
        "timed_calls": iters,
    }


def as_tensor(out: Any) -> torch.Tensor:
    """The one output tensor of a call (some runners return a one-element list)."""
    while isinstance(out, (list, tuple)) and len(out) == 1:
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"expected one output tensor, got {type(out).__name__}")
    return out


def rel_error(out: Any, ref: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float32 (inf on a shape mismatch, nan if the output has nan)."""
    a = as_tensor(out).detach().float()
    b = ref.detach().float().to(a.device)
    if a.shape != b.shape:
        return float("inf")
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# ---------------------------------------------------------------------------------------------
# Memory


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def memory_start(device: torch.device) -> dict[str, int]:
    """Reset the peak counter; what is resident before a peer is built (model, reference data)."""
    free_memory(device)
    if device.type != "cuda":
        return {}
    torch.cuda.reset_peak_memory_stats(device)
    free, total = torch.cuda.mem_get_info(device)
    return {"allocated": torch.cuda.memory_allocated(device), "device_used": total - free}


def memory_end(device: torch.device, start: dict[str, int]) -> dict[str, Any]:
    """Peak allocator memory over the peer's life, and device memory it holds beyond the allocator
    (AOTInductor constants and CUDA graph pools can live outside torch's caching allocator)."""
    if device.type != "cuda":
        return {"note": "CPU: not measured"}
    free, total = torch.cuda.mem_get_info(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {
        "peak_allocated_bytes": peak,
        "peak_over_baseline_bytes": peak - start["allocated"],
        "baseline_allocated_bytes": start["allocated"],
        "device_used_delta_bytes": (total - free) - start["device_used"],
    }


# ---------------------------------------------------------------------------------------------
# Device rates and the physical floor


def _time_op(op: Callable[[], Any], device: torch.device, iters: int) -> float:
    """Median seconds of op (median_ms: CUDA events on a GPU, perf_counter on a CPU)."""
    sync(device)
    return median_ms(op, device, iters) / 1e3


def device_rates(device: torch.device, dtypes: Sequence[torch.dtype]) -> dict[str, Any]:
    """Matrix rate (FLOP/s of a large square matmul, per dtype; on CUDA float32 also with TF32, as
    "tfloat32") and copy bandwidth (read+write B/s)."""
    cuda = device.type == "cuda"
    rates: dict[str, float] = {}
    kinds = [(d, False) for d in dict.fromkeys([torch.float16, *dtypes] if cuda else dtypes)]
    if cuda and torch.float32 in dtypes:
        kinds.append((torch.float32, True))
    for dtype, tf32 in kinds:
        n = 8192 if cuda else 1024
        a = torch.randn(n, n, device=device, dtype=torch.float32).to(dtype)
        b = torch.randn(n, n, device=device, dtype=torch.float32).to(dtype)
        with tf32_policy(tf32) if cuda else contextlib.nullcontext():
            seconds = _time_op(lambda a=a, b=b: a @ b, device, 10 if cuda else 5)
        rates["tfloat32" if tf32 else str(dtype).replace("torch.", "")] = 2 * n**3 / seconds
        del a, b
    numel = (1 << 28) if cuda else (1 << 24)  # 1 GiB / 64 MiB of float32
    bufs = [torch.empty(numel, device=device, dtype=torch.float32).fill_(1.0) for _ in range(2)]
    seconds = _time_op(lambda: bufs[1].copy_(bufs[0]), device, 10)
    bandwidth = 2 * numel * 4 / seconds
    bufs.clear()
    free_memory(device)
    return {"matmul_flops_per_s": rates, "matmul_n": 8192 if cuda else 1024, "copy_bytes_per_s": bandwidth,
            "copy_bytes": numel * 4}


def model_bytes(model: torch.nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def work(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], weights: int) -> dict[str, Any]:
    """FLOPs of one eager call (FlopCounterMode) and the bytes it must move at least:
    weights read once, inputs read, output written."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = as_tensor(model(*inputs))
    io = sum(t.numel() * t.element_size() for t in inputs) + out.numel() * out.element_size()
    return {"flops": int(counter.get_total_flops()), "bytes": weights + io, "weight_bytes": weights, "io_bytes": io}


def floor_ms(w: dict[str, Any], rates: dict[str, Any], dtype: torch.dtype) -> float:
    """max(FLOPs / matrix rate, bytes / copy bandwidth), in ms; float32 at the TF32 rate where one
    was measured (flexrt's float32 engines use TF32 by default)."""
    name = str(dtype).replace("torch.", "")
    rate = rates["matmul_flops_per_s"].get("tfloat32" if name == "float32" else name) or rates["matmul_flops_per_s"].get(name)
    if rate is None:
        rate = max(rates["matmul_flops_per_s"].values())
    return max(w["flops"] / rate, w["bytes"] / rates["copy_bytes_per_s"]) * 1e3
