"""Host cost of the steps the thread-safe replay path added: a lock, and reading the current stream
(torch's cheap handle against `torch.cuda.current_stream()`). (H200 host, torch 2.11: Lock 0.157 µs,
RLock 0.162, `_cuda_getCurrentStream` 0.109, `current_stream()` 3.97.) Run:
`python -m research.probes.replay_host_costs`."""

from __future__ import annotations

import threading
import timeit

import torch


def per_call_us(stmt: str, n: int = 200_000, **names: object) -> float:
    return round(min(timeit.repeat(stmt, number=n, repeat=5, globals={"torch": torch, **names})) / n * 1e6, 3)


def main() -> None:
    torch.cuda.init()
    print("µs per call:",
          "Lock", per_call_us("with lock: pass", lock=threading.Lock()),
          "RLock", per_call_us("with lock: pass", lock=threading.RLock()),
          "getCurrentStream", per_call_us("torch._C._cuda_getCurrentStream(0)"),
          "getCurrentRawStream", per_call_us("torch._C._cuda_getCurrentRawStream(0)"),
          "current_stream()", per_call_us("torch.cuda.current_stream()", n=50_000))


if __name__ == "__main__":
    main()
