"""Which CUDA work on another thread breaks a CUDA-graph capture, in each capture mode? And does a failed
capture leave the process's CUDA random generator unusable, and can it be given back?

Each (mode, action) pair runs in its own process: a bystander thread repeats the action while the main
thread captures a small graph many times (a private pool, a matrix product). Run:
`python -m research.probes.capture_threads --out DIR`.

Answer (H200, torch 2.11, `research/results/capture_threads_h200.json`): in CUDA's global mode every
action failed captures, and the bystander's own calls failed ("operation not permitted when stream is
capturing"); in the thread-local and relaxed modes allocations and stream syncs on any stream left
captures alone (0 of 200 failed), and only a device-wide sync still failed them (and itself). Each
failure left torch's CUDA generator unusable until its state was set back (`graphsafe_set_state`).
Once one capture had failed, every later one into the same pool failed too (`capture_pool.py`): the
counts of failures mean "some failed", not how many a bystander broke.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

MODES = ("global", "thread_local", "relaxed")
ACTIONS = ("alloc_default_stream", "alloc_side_stream", "device_sync", "default_stream_sync", "side_stream_sync")


def _bystander(action: str, done: threading.Event, errors: list[str]) -> None:
    import torch

    side = torch.cuda.Stream()
    n = 0
    while not done.is_set() and n < 200_000:
        try:
            if action.startswith("alloc"):
                with torch.cuda.stream(side if action == "alloc_side_stream" else torch.cuda.default_stream()):
                    t = torch.empty((n % 64 + 1) * 2**18, device="cuda")
                    t.fill_(1.0)
                    del t
            elif action == "device_sync":
                torch.cuda.synchronize()
            elif action == "default_stream_sync":
                torch.cuda.default_stream().synchronize()
            else:
                side.synchronize()
        except Exception as e:  # noqa: BLE001 - counted
            errors.append(repr(e)[:200])
        n += 1


def one(mode: str, action: str, captures: int) -> dict:
    import torch

    sys.setswitchinterval(1e-6)
    w = torch.randn(256, 256, device="cuda")
    x = torch.randn(64, 256, device="cuda")
    pool = torch.cuda.graph_pool_handle()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        x @ w  # warm-up: cuBLAS handle and workspace
    torch.cuda.synchronize()
    done, errors = threading.Event(), []
    thread = threading.Thread(target=_bystander, args=(action, done, errors), daemon=True)
    thread.start()
    failed, rng_broken, rng_restored, first = 0, 0, 0, None
    gen = torch.cuda.default_generators[torch.cuda.current_device()]
    t0 = time.monotonic()
    kept = []  # a pool whose graphs are all gone, but which still holds a block, cannot be captured into again
    for _ in range(captures):
        saved = gen.clone_state()
        g = torch.cuda.CUDAGraph()
        kept.append(g)
        try:
            with torch.cuda.graph(g, pool=pool, stream=stream, capture_error_mode=mode):
                y = x @ w
            g.replay()
            torch.cuda.current_stream().synchronize()
            assert torch.allclose(y, x @ w, rtol=1e-2, atol=1e-2)
            del y
        except Exception as e:  # noqa: BLE001 - counted
            failed += 1
            first = first or repr(e)[:300]
            try:
                torch.randn(4, device="cuda")
            except RuntimeError:
                rng_broken += 1
                gen.graphsafe_set_state(saved)
                try:
                    torch.randn(4, device="cuda")
                    rng_restored += 1
                except RuntimeError:
                    pass
    done.set()
    thread.join(30)
    return {"mode": mode, "action": action, "captures": captures, "failed": failed, "bystander_errors": len(errors),
            "first_bystander_error": errors[0] if errors else None, "first_capture_error": first,
            "rng_broken_after_failure": rng_broken, "rng_restored": rng_restored, "seconds": round(time.monotonic() - t0, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--captures", type=int, default=200)
    ap.add_argument("--one", nargs=2, metavar=("MODE", "ACTION"))
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.captures)))
        return
    rows = []
    for mode in MODES:
        for action in ACTIONS:
            p = subprocess.run([sys.executable, "-m", "research.probes.capture_threads", "--one", mode, action,
                                "--captures", str(args.captures)], capture_output=True, text=True, timeout=120)
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
            row = json.loads(lines[-1]) if lines else {"mode": mode, "action": action, "rc": p.returncode,
                                                         "stderr": p.stderr[-400:]}
            rows.append(row)
            print({k: row.get(k) for k in ("mode", "action", "failed", "bystander_errors", "rng_broken_after_failure",
                                           "rng_restored", "rc")}, flush=True)
    with open(f"{args.out}/capture_threads.json", "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
