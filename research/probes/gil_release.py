"""Does an engine call release the GIL? A thread calls a compiled model in a loop while the main
thread counts pure-Python iterations; compared with the counts while that thread sleeps.
Why: a serving replica's event loop (HTTP, decoding, encoding) shares one GIL with its model thread;
an engine call that keeps the GIL stalls every request in the replica for the call's length."""

from __future__ import annotations

import argparse
import threading
import time

import torch

import flexrt


def _count(seconds: float) -> int:
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        n += 1
    return n


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dim", type=int, default=1024)
    args = p.parse_args()
    torch.set_num_threads(1)  # on a CPU: one core for the engine, one for the counting loop
    model = torch.nn.Sequential(*[torch.nn.Linear(args.dim, args.dim) for _ in range(8)]).eval().to(args.device)
    x = torch.randn(64, args.dim, device=args.device)
    module = flexrt.compile(model, inputs=[flexrt.Input(min_shape=(1, args.dim), opt_shape=(64, args.dim),
                                                        max_shape=(128, args.dim))], cuda_graphs=False)
    stop = threading.Event()
    calls = [0]

    def run() -> None:
        with torch.inference_mode():
            while not stop.is_set():
                module(x)
                if args.device == "cuda":
                    torch.cuda.synchronize()
                calls[0] += 1

    alone = _count(2.0)
    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    beside = _count(2.0)
    stop.set()
    t.join()
    print(f"{args.device} torch {torch.__version__}: python loop alone {alone}, beside engine calls {beside} "
          f"({beside / alone:.2f}); engine calls {calls[0]}")


if __name__ == "__main__":
    main()
