"""Run zoo models in this process, one after another, writing one JSON per model as each finishes.

`runner.py` starts this as a subprocess (one model, or a group with --in-process) and restarts it
after a crash or timeout with the models that are left.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
import traceback
from typing import Any

import torch

from benchmarks.zoo import check, timing
from benchmarks.zoo.models import ZOO
from benchmarks.zoo.report import check_status, float32_status
from benchmarks.zoo.spec import MissingLibrary

logger = logging.getLogger(__name__)


def _error_class(e: BaseException) -> str:
    text = str(e)
    stage = text.split(":", 1)[0] if text.split(":", 1)[0] in ("trace", "lower", "partition", "build") else ""
    return f"{type(e).__name__}{f' ({stage})' if stage else ''}"


def error_head(e: BaseException, lines: int = 6) -> str:
    """The exception's type and the first lines of its message, before any C++ frames (a torch error
    raised in C++ carries "Exception raised from ..." and a list of `frame #N` lines)."""
    head = []
    for line in str(e).splitlines():
        if line.startswith("Exception raised from") or line.startswith("frame #"):
            break
        head.append(line)
        if len(head) == lines:
            break
    return f"{type(e).__name__}: " + "\n".join(head).strip()


def python_frames(e: BaseException, first: int = 4, last: int = 24, limit: int = 8000) -> str:
    """The Python frames of `e` (and of the exceptions it was raised from): the first `first` of each
    (which stage called) and its last `last` (where it failed). `format_exc` ends in the C++ frames
    that a torch error's message carries; these are the frames that say which Python code called."""
    parts, seen = [], set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        frames = traceback.format_tb(cur.__traceback__)
        if len(frames) > first + last:
            frames = [*frames[:first], f"  ... {len(frames) - first - last} frames ...\n", *frames[-last:]]
        parts.append(f"{type(cur).__name__} raised at:\n" + "".join(frames))
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    text = "\n".join(parts)
    return text if len(text) <= limit else text[:limit // 4] + "\n...\n" + text[-(limit - limit // 4):]


def run_model(name: str, device: torch.device, smoke: bool, peers: tuple[str, ...]) -> dict[str, Any]:
    """Build, compile, check and time one model; never raises (the error is the result)."""
    entry = ZOO[name]
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    result: dict[str, Any] = {"model": name, "family": entry.family, "library": entry.library, "smoke": smoke,
                              "device": str(device), "dtype": str(dtype).replace("torch.", ""),
                              "dims": {d.name: [d.lo, d.opt, d.hi] for d in entry.dims_for(smoke)},
                              "torch": torch.__version__, "host": platform.node()}
    if smoke and entry.smoke_dims is None:
        return {**result, "status": "skipped: no smoke config"}
    try:
        torch.manual_seed(0)  # the same random weights in every run
        model = entry.build(smoke).eval()
    except MissingLibrary as e:
        return {**result, "status": f"skipped: {e}"}
    except Exception as e:  # noqa: BLE001 - a config the library rejects is the zoo's own failure, not a crash
        return {**result, "status": "failed at build", "error_class": type(e).__name__, "error": str(e)[:4000],
                "error_head": error_head(e), "traceback": python_frames(e)}
    stage = "compile"
    try:
        reference = check.fp32_reference(model).to(device)
        model = model.to(device=device, dtype=dtype)
        compiled, seconds, segments = check.compile_flexrt(entry, model, dtype, smoke, device)
        result.update(build_seconds=round(seconds, 2), segments=segments)
        stage = "check"
        rows = check.check_shapes(entry, compiled, reference, dtype, smoke, device, eager=model)
        result["shapes"] = rows
        result["max_error"] = max(r["max_error"] for r in rows)
        result["eager_fp16_error"] = max(r["eager_error"] for r in rows)
        status = check_status(rows)
        if status.startswith("unverified"):  # float16 says nothing here: check the model compiled in float32
            stage = "float32 check"
            rows32 = check.recheck_float32(entry, reference, smoke, device)
            result["float32_shapes"] = rows32
            status = float32_status(rows32)
        del reference
        stage = "timing"
        if peers is not None:
            result["latency_ms"] = timing.time_all(entry, model, compiled, dtype, device, smoke, peers)
            result["ratio"] = timing.best_peer_ratio(result["latency_ms"])
        result["status"] = status
    except Exception as e:  # noqa: BLE001
        result.update(status="failed" if stage == "compile" else f"failed at {stage}", error_class=_error_class(e),
                      error=str(e)[:4000], error_head=error_head(e), traceback=python_frames(e))
    return result


def main(names: list[str], out_dir: str, device: str, smoke: bool, peers: tuple[str, ...]) -> None:
    os.makedirs(out_dir, exist_ok=True)
    dev = torch.device(device)
    for name in names:
        with open(os.path.join(out_dir, "current"), "w") as f:  # the runner blames a crash on this model
            f.write(name)
        start = time.perf_counter()
        result = run_model(name, dev, smoke, peers)
        result["seconds"] = round(time.perf_counter() - start, 1)
        with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
            json.dump(result, f, indent=1, default=str)
        print(f"zoo: {name}: {result['status']} in {result['seconds']} s", file=sys.stderr, flush=True)
        torch._dynamo.reset()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
