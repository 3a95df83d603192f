"""After a capture that another thread's device-wide sync invalidated, can its memory pool be captured
into again once the caching allocator's recording is ended (`torch._C._cuda_endAllocateToPool`)?
(H200, torch 2.11: no. The next capture still fails with "beginAllocateToPool: already recording to
mempool_id", which the pinned-memory allocator raises: nothing ends its recording, so flexrt moves on
to a new pool.) Run: `python -m research.probes.capture_pool` (prints what it saw)."""

from __future__ import annotations

import sys
import threading

import torch


def main() -> None:
    sys.setswitchinterval(1e-6)
    w, x = torch.randn(256, 256, device="cuda"), torch.randn(64, 256, device="cuda")
    pool, stream, kept = torch.cuda.graph_pool_handle(), torch.cuda.Stream(), []
    with torch.cuda.stream(stream):
        x @ w  # cuBLAS's handle and workspace before any capture
    torch.cuda.synchronize()
    first = torch.cuda.CUDAGraph()
    with torch.cuda.graph(first, pool=pool, stream=stream, capture_error_mode="thread_local"):
        x @ w
    kept.append(first)  # the pool stays held by a graph, as in a graph cache
    done = threading.Event()

    def sync() -> None:
        while not done.is_set():
            try:
                torch.cuda.synchronize()
            except RuntimeError:
                pass

    thread = threading.Thread(target=sync, daemon=True)
    thread.start()
    for attempt in range(5):
        g = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(g, pool=pool, stream=stream, capture_error_mode="thread_local"):
                for _ in range(50):
                    (x @ w).relu()
            print(attempt, "captured")
            kept.append(g)
        except RuntimeError as e:
            print(attempt, "failed:", repr(e)[:120])
            print("  the caller is left on the capture stream:", torch.cuda.current_stream() == stream)
            for _ in range(2):  # the second call shows whether the first ended a recording
                try:
                    torch._C._cuda_endAllocateToPool(torch.cuda.current_device(), pool)
                    print("  endAllocateToPool: ended a recording")
                except RuntimeError as e2:
                    print("  endAllocateToPool:", repr(e2)[:120])
            torch.cuda.set_stream(torch.cuda.default_stream())
            if attempt == 2:
                done.set()
    done.set()
    thread.join(30)
    g = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(g, pool=pool, stream=stream, capture_error_mode="thread_local"):
            x @ w
        print("after the other thread stopped: captured into the same pool")
    except RuntimeError as e:
        print("after the other thread stopped: failed", repr(e)[:200])


if __name__ == "__main__":
    main()
