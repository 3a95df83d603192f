"""Measuring one peer end to end: build, per-shape latency and correctness, the random-shape
stream, memory, and (for artifacts that can be saved) cold start in a fresh process.

Any exception is recorded in the peer's entry and the run goes on: a peer that fails at one
shape still reports the others.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from benchmarks import coldstart, timing
from benchmarks.models import Case
from benchmarks.peers import Peer

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Plan:
    """What every peer is measured on, made once per run so that all peers see the same data."""

    case: Case
    device: torch.device
    sizes: list[int]
    rotations: dict[int, list[tuple[torch.Tensor, ...]]]  # per size; [0] is the reference input
    refs: dict[int, torch.Tensor]  # eager output on the reference input
    warmup: int
    iters: int
    warmup_ms: float
    rep_ms: float
    stream_calls: int
    stream_budget_s: float
    deadline: float  # perf_counter time after which remaining work is skipped
    workdir: str
    log: Callable[..., None]  # (message, style=None)

    @property
    def tolerance(self) -> float:
        return 1e-2 if self.case.dtype in (torch.float16, torch.bfloat16) else 1e-4

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()


def inductor_cache(fresh: bool, workdir: str) -> contextlib.AbstractContextManager[Any]:
    """A fresh Inductor + Triton cache (on disk and in memory) for one peer, so that its compile
    time owes nothing to kernels an earlier peer of the same run compiled."""
    if not fresh:
        return contextlib.nullcontext()
    from torch._inductor import utils

    fresh_cache = getattr(utils, "fresh_cache", None) or getattr(utils, "fresh_inductor_cache", None)
    if fresh_cache is None:
        logger.warning("this torch has no Inductor fresh_cache(); compile caches are shared between peers")
        return contextlib.nullcontext()
    return fresh_cache(dir=workdir, delete=False)


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).strip()[:600]}"


def _shape(peer: Peer, plan: Plan, size: int) -> dict[str, Any]:
    tolerance = peer.tolerance(plan.tolerance)
    inputs, ref = plan.rotations[size][0], plan.refs[size]
    out, first_s = timing.first_call(peer, inputs, plan.device)
    rel_first = timing.rel_error(out, ref)
    del out
    stats = timing.time_calls(peer, plan.rotations[size], plan.device, plan.warmup, plan.iters, plan.warmup_ms, plan.rep_ms)
    rel = timing.rel_error(peer(inputs), ref)
    return {**stats, "first_call_s": first_s, "rel_err": rel, "rel_err_first_call": rel_first,
            "rel_err_flag": not rel <= tolerance or not rel_first <= tolerance, "tolerance": tolerance}


def _compiles_text(delta: dict[str, int], total: dict[str, int]) -> str:
    if not total:
        return "0"
    parts = [f"{k}={total[k]}" if k == "profiles" else f"{k} +{delta[k]} (total {total[k]})" for k in total]
    return ", ".join(parts)


def stream(peer: Peer, plan: Plan, seed: int = 0) -> dict[str, Any]:
    """Compiles and captures over a stream of random sizes in the range (time-boxed)."""
    case = plan.case
    rng = random.Random(seed)
    sizes = [rng.randint(case.lo, case.hi) for _ in range(plan.stream_calls)]
    stop = min(plan.deadline, time.perf_counter() + plan.stream_budget_s)
    before = peer.compile_counts()
    start = time.perf_counter()
    done, slowest, error = 0, 0.0, None
    for k, size in enumerate(sizes):
        if time.perf_counter() > stop:
            break
        inputs = case.make_inputs(size, plan.device, seed=10_000 + k)
        try:
            _, seconds = timing.first_call(peer, inputs, plan.device)
        except Exception as e:  # noqa: BLE001 - recorded, the stream stops
            error = _error(e)
            break
        slowest = max(slowest, seconds)
        done += 1
    after = peer.compile_counts()
    delta = {k: v - before.get(k, 0) for k, v in after.items()}
    truncated = done < len(sizes)
    note = peer.stream_note(after)
    text = _compiles_text(delta, after) + (f" (stopped after {done} calls)" if truncated else "") + (f"; {note}" if note else "")
    return {"calls": len(sizes), "calls_done": done, "truncated": truncated, "error": error, "note": note,
            "distinct_sizes": len(set(sizes[:done])), "new_sizes": len(set(sizes[:done]) - set(plan.sizes)),
            "seconds": time.perf_counter() - start, "slowest_call_s": slowest, "compiles_delta": delta,
            "compiles_total": after, "compiles_text": text}


def _cold_start(peer: Peer, plan: Plan) -> dict[str, Any]:
    if plan.remaining() < 0:
        return {"status": "skipped: time budget"}
    size = plan.case.opt if plan.case.opt in plan.refs else plan.sizes[len(plan.sizes) // 2]
    if peer.cold_start == "flexrt":
        artifact = os.path.join(plan.workdir, "model.flexrt")
        try:
            t = time.perf_counter()
            coldstart.save_flexrt(peer.fn, artifact)
            save_s = time.perf_counter() - t
        except (AttributeError, ImportError) as e:
            return {"status": "n/a", "reason": f"flexrt.save/load not available ({_error(e)})"}
    else:
        artifact, save_s = peer.artifact, 0.0
    r = coldstart.run_child(peer.cold_start or "", artifact, plan.rotations[size][0], plan.refs[size], plan.device,
                            plan.workdir, timeout_s=max(60.0, min(300.0, plan.remaining() + 60)))
    return {"status": "ok", "size": size, "save_s": save_s, **r}


def measure(cls: type[Peer], model: torch.nn.Module, plan: Plan) -> dict[str, Any]:
    """The full entry for one peer."""
    entry: dict[str, Any] = {"status": "ok", "date": datetime.datetime.now().isoformat(timespec="seconds")}
    mine = copy.deepcopy(model)
    mem = timing.memory_start(plan.device)
    peer = cls(plan.case, mine, plan.device, plan.workdir)
    try:
        with torch.no_grad():
            t = time.perf_counter()
            entry["details"] = peer.setup()
            entry["setup_s"] = time.perf_counter() - t
            plan.log(f"{cls.name}: built in {entry['setup_s']:.1f} s")
            shapes: dict[str, Any] = {}
            for size in plan.sizes:
                if plan.remaining() < 0:
                    shapes[str(size)] = {"error": "skipped: time budget"}
                    continue
                try:
                    shapes[str(size)] = _shape(peer, plan, size)
                    s = shapes[str(size)]
                    plan.log(f"{cls.name} {plan.case.dim}={size}: {s['median_ms']:.3f} ms (p90 {s['p90_ms']:.3f}), "
                             f"first call {s['first_call_s']:.2f} s, rel err {s['rel_err']:.1e}")
                except Exception as e:  # recorded per shape (BLE001 allows it: logged with exc_info)
                    logger.debug("%s at %s failed", cls.name, size, exc_info=True)
                    shapes[str(size)] = {"error": _error(e)}
                    plan.log(f"{cls.name} {plan.case.dim}={size}: {_error(e)[:200]}", "red")
            timed = {k: v for k, v in shapes.items() if "median_ms" in v}
            entry["shapes"] = timed
            entry["shape_errors"] = {k: v["error"] for k, v in shapes.items() if "error" in v}
            entry["first_call_s_total"] = sum(v["first_call_s"] for v in timed.values())
            entry["build_s"] = entry["setup_s"] + entry["first_call_s_total"]
            if not timed:
                entry["status"] = "error"
                entry["error"] = next(iter(entry["shape_errors"].values()), "no shape measured")
            else:
                if entry["shape_errors"]:
                    entry["status"] = "partial"
                entry["memory"] = timing.memory_end(plan.device, mem)  # the measured shapes only
                entry["stream"] = stream(peer, plan) if plan.remaining() > 0 else {"compiles_text": "skipped: time budget"}
                plan.log(f"{cls.name}: stream {entry['stream']['compiles_text']}")
            entry["memory_with_stream"] = timing.memory_end(plan.device, mem)
    except Exception as e:  # a peer that fails is recorded, the run goes on
        logger.debug("%s failed", cls.name, exc_info=True)
        entry.update(status="error", error=_error(e))
        plan.log(f"{cls.name} failed: {_error(e)[:300]}", "red")
    if peer.cold_start and entry["status"] != "error":
        try:
            entry["cold_start"] = _cold_start(peer, plan)
        except Exception as e:  # noqa: BLE001 - recorded
            entry["cold_start"] = {"status": "error", "error": _error(e)}
        plan.log(f"{cls.name}: cold start {entry['cold_start']}")
    peer.close()
    del peer, mine
    timing.free_memory(plan.device)
    return entry


def make_plan_data(case: Case, model: torch.nn.Module, sizes: Sequence[int], device: torch.device, rotate: int
                   ) -> tuple[dict[int, list[tuple[torch.Tensor, ...]]], dict[int, torch.Tensor]]:
    """Pre-made inputs per size and the eager reference output on the first of them."""
    rotations = {s: [case.make_inputs(s, device, seed=1000 * s + k) for k in range(rotate)] for s in sizes}
    with torch.no_grad():
        refs = {s: timing.as_tensor(model(*rotations[s][0])).detach().clone() for s in sizes}
    return rotations, refs
