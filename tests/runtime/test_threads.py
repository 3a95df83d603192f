"""Threads sharing one compiled module on the GPU (a threaded server, a thread pool): every call gets
the result of its own input, on the default stream and on a stream per thread, while shapes are
captured and replayed; and another thread's CUDA work during a capture neither fails in that thread
nor costs the module its CUDA graphs."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import torch
from helpers import assert_matches, in_threads

import flexrt

pytestmark = pytest.mark.cuda

THREADS = 4
CALLS = 60  # per thread
SPEC = flexrt.Input(min_shape=(1, 64), opt_shape=(8, 64), max_shape=(64, 64), name="x")


@pytest.fixture(scope="module")
def compiled():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64)).eval().cuda()
    return model, flexrt.compile(model, inputs=[SPEC], cuda_graph_cache_size=32)


@pytest.fixture
def frequent_switches() -> Iterator[None]:
    """Threads switch every microsecond, not every 5 ms: interleavings a short test would rarely see."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.parametrize(("streams", "batches"), [("default", (3, 5, 9)), ("per_thread", (4, 6, 11))])
def test_threads_sharing_a_module_each_get_their_own_results(compiled, frequent_switches, streams, batches):
    model, m = compiled
    graphs = m.contexts[0].graphs
    assert graphs is not None
    with torch.no_grad():
        for b in batches[:-1]:  # captured before the threads start; the last shape is captured among them
            for _ in range(2):
                m(torch.randn(b, 64, device="cuda"))
    captures = graphs.captures

    def work(i: int) -> None:
        gen = torch.Generator().manual_seed(i)
        stream = torch.cuda.Stream() if streams == "per_thread" else torch.cuda.current_stream()
        with torch.no_grad(), torch.cuda.stream(stream):
            for k in range(CALLS):
                b = batches[(i + k) % len(batches)]
                x = torch.randn(b, 64, generator=gen).cuda()
                y = m(x)
                assert_matches(y, model(x))

    errors = in_threads(work, THREADS)
    assert not errors, f"{len(errors)} of {THREADS * CALLS} calls failed; first: {errors[0]!r}"
    assert not graphs.disabled and graphs.captures > captures  # the calls did replay captured graphs


def _bystander(done: threading.Event, action: Callable[[int], None]) -> Callable[[int], None]:
    """A thread's loop: action(n) until `done` (at most 120 s and 200000 times)."""

    def loop(i: int) -> None:
        deadline, n = time.monotonic() + 120.0, 0
        while not done.is_set() and time.monotonic() < deadline and n < 200_000:
            action(n)
            n += 1

    return loop


def _allocate_and_wait(n: int, side: torch.cuda.Stream) -> None:
    """Allocations on the default and a side stream (new segments now and then), and stream syncs."""
    with torch.cuda.stream(side if n % 2 else torch.cuda.default_stream()):
        kept = torch.empty((n % 64 + 1) * 2**18, device="cuda")  # up to 64 MiB
        kept.fill_(1.0)
    (side if n % 2 else torch.cuda.default_stream()).synchronize()


def test_another_threads_cuda_work_during_captures_is_undisturbed(compiled, frequent_switches):
    """Captures used CUDA's global mode: another thread's allocation or stream synchronisation during
    one failed in that thread, and failed the capture (and the context ran without graphs from then on)."""
    model, m = compiled
    graphs = m.contexts[0].graphs
    assert graphs is not None
    done, side = threading.Event(), torch.cuda.Stream()
    seen: list[BaseException] = []
    loop = _bystander(done, lambda n: _allocate_and_wait(n, side))
    thread = threading.Thread(target=lambda: seen.extend(in_threads(loop, 1)), daemon=True)
    thread.start()
    captures = graphs.captures
    batches = list(range(10, 40, 2))  # shapes no other test captured
    try:
        with torch.no_grad():
            for b in batches:
                for _ in range(3):  # plain run, capture, replay
                    x = torch.randn(b, 64, device="cuda")
                    assert_matches(m(x), model(x))
    finally:
        done.set()
        thread.join(130)
    assert not seen, f"the other thread failed: {seen[0]!r}"
    assert not graphs.disabled and graphs.failures == 0
    assert graphs.captures - captures >= len(batches)


def test_a_capture_failed_by_a_device_sync_elsewhere_costs_nothing_after(compiled, frequent_switches):
    """CUDA forbids a device-wide synchronisation during any capture: the capture fails. That call runs
    without a graph. torch's failed capture left its CUDA generator "capturing" (every later CUDA random
    number in the process raised), the caller on the capture stream and the allocators recording into
    the pool (every later capture into it failed), and the context stopped capturing for good."""
    model, m = compiled
    graphs = m.contexts[0].graphs
    assert graphs is not None
    caller = torch.cuda.current_stream()
    done = threading.Event()
    loop = _bystander(done, lambda n: torch.cuda.synchronize())
    syncing = threading.Thread(target=lambda: in_threads(loop, 1), daemon=True)  # its own errors are CUDA's rule
    syncing.start()
    try:
        with torch.no_grad():
            for b in range(41, 61, 2):  # new shapes until one capture fails (it nearly always does at once)
                for _ in range(2):
                    x = torch.randn(b, 64, device="cuda")
                    assert_matches(m(x), model(x))
                if graphs.failures:
                    break
    finally:
        done.set()
        syncing.join(130)
    assert graphs.failures == 1, "no capture overlapped the other thread's synchronisations"
    assert torch.cuda.current_stream() == caller
    torch.randn(4, device="cuda")  # the generator works
    captures = graphs.captures
    with torch.no_grad():
        for _ in range(3):
            x = torch.randn(b, 64, device="cuda")
            assert_matches(m(x), model(x))
    assert not graphs.disabled and graphs.captures > captures and graphs.failures == 0  # captured now
