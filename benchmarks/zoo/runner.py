"""Run a shard of the zoo in subprocesses: one model each by default, or a group per process
(`in_process`) restarted after a crash or hang with the models left, within a time budget."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

from benchmarks.zoo.models import ZOO

logger = logging.getLogger(__name__)


def shard_models(shard: str, names: list[str] | None = None) -> list[str]:
    """Models of shard 'K/N' (1-based), round-robin over the zoo's order (or over `names`)."""
    k, n = (int(v) for v in shard.split("/"))
    if not 1 <= k <= n:
        raise SystemExit(f"--shard {shard}: K must be in 1..N")
    pool = names or list(ZOO)
    return [m for i, m in enumerate(pool) if i % n == k - 1]


def _worker_cmd(names: list[str], out_dir: str, device: str, smoke: bool, peers: str) -> list[str]:
    cmd = [sys.executable, "-m", "benchmarks.zoo", "--worker", "--models", ",".join(names), "--out", out_dir,
           "--device", device, "--peers", peers]
    return cmd + (["--smoke"] if smoke else [])


def run_shard(names: list[str], out_dir: str, device: str, smoke: bool, peers: str, in_process: bool,
              timeout: float, budget: float, deadline: float = 1e9) -> list[dict[str, Any]]:
    """Every model gets a result: its worker's JSON, or crashed / timed out / not run.

    No model starts after `budget` seconds; a model still running at `deadline` is killed (so the
    shard ends within one device call), one running longer than `timeout` too."""
    os.makedirs(out_dir, exist_ok=True)
    start = time.monotonic()
    left = list(names)
    while left:
        if time.monotonic() - start > budget:
            for name in left:
                _write(out_dir, {"model": name, "status": "not run: shard time budget spent"})
            break
        group = left if in_process else left[:1]
        marker = os.path.join(out_dir, "current")
        if os.path.exists(marker):
            os.remove(marker)
        proc = subprocess.Popen(_worker_cmd(group, out_dir, device, smoke, peers))
        last, current = time.monotonic(), None
        while proc.poll() is None:
            time.sleep(1)
            now_current = open(marker).read().strip() if os.path.exists(marker) else None
            if now_current != current:
                current, last = now_current, time.monotonic()
            over_deadline = time.monotonic() - start > deadline
            if time.monotonic() - last > timeout or over_deadline:
                proc.kill()
                proc.wait()
                if current:
                    why = f"the shard deadline ({deadline:.0f} s)" if over_deadline else f"{timeout:.0f} s"
                    _write(out_dir, {"model": current, "status": "timeout", "error": f"no result within {why}"})
                if over_deadline:
                    budget = -1.0  # start nothing more
                break
        done = {n for n in group if os.path.exists(os.path.join(out_dir, f"{n}.json"))}
        if proc.returncode not in (0, None) and current and current not in done:
            _write(out_dir, {"model": current, "status": "crashed", "error": f"worker exited with {proc.returncode}"})
            done.add(current)
        if not done:  # the worker died before its first model: do not loop forever
            first = group[0]
            _write(out_dir, {"model": first, "status": "crashed", "error": f"worker exited with {proc.returncode}"})
        left = [n for n in left if not os.path.exists(os.path.join(out_dir, f"{n}.json"))]
    return [json.load(open(os.path.join(out_dir, f"{n}.json"))) for n in names]


def _write(out_dir: str, result: dict[str, Any]) -> None:
    entry = ZOO.get(result["model"])
    if entry is not None:
        result.setdefault("family", entry.family)
        result.setdefault("library", entry.library)
    with open(os.path.join(out_dir, f"{result['model']}.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
