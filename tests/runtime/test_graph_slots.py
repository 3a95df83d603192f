"""The CUDA-graph slot's liveness check (CPU): a slot is free only when the caller holds nothing of
its outputs — not the tensor, not a container of it, not a view of its storage. And the address
test that decides whether a capture copies its outputs out of the shared pool, the reading of
the allocator's trace that says which blocks a capture allocated, and what failed captures cost."""

from __future__ import annotations

import collections

import torch

from flexrt.runtime.cuda_graphs import MAX_CAPTURE_FAILURES, CudaGraphCache, _Slot
from flexrt.runtime.graph_writes import overlaps, read_trace


def _slot() -> _Slot:
    outputs = [torch.randn(4, 4), 3, torch.randn(8)]
    slot = _Slot(None, [], outputs, [o for o in outputs if isinstance(o, torch.Tensor)], [], False, lambda inputs: None)  # type: ignore[arg-type]
    slot.measure()
    return slot


def test_a_slot_nobody_holds_is_free():
    slot = _slot()
    assert slot.free()
    returned = list(slot.outputs)  # what a call hands out
    del returned
    assert slot.free()


def test_any_hold_on_an_output_keeps_the_slot_busy():
    slot = _slot()
    holds = [
        lambda: list(slot.outputs),  # the returned list
        lambda: slot.outputs[0],  # one tensor
        lambda: {"y": slot.outputs[2]},  # inside a container
        lambda: slot.outputs[2][1:5],  # a view of the storage only
        lambda: slot.outputs[0].view(-1),  # a reshaped view
    ]
    for hold in holds:
        held = hold()
        assert not slot.free()
        del held
        assert slot.free()


def test_an_output_overlaps_a_range_when_any_byte_of_its_storage_is_in_it():
    base = torch.zeros(64, dtype=torch.uint8)
    start = base.data_ptr()
    view = base[16:32]  # a view: the whole block it lives in counts (conservative)
    assert overlaps([view], [(start + 63, start + 100)])  # the storage's last byte
    assert overlaps([view], [(start - 10, start + 1)])  # its first byte
    assert not overlaps([view], [(start + 64, start + 100), (start - 10, start)])  # touching ends only
    assert not overlaps([view], [])  # an empty pool before the first capture
    other = torch.zeros(8)
    assert overlaps([other, view], [(start + 5, start + 6)])  # any of several outputs


def _event(action: str, addr: int, size: int = 512) -> dict:
    return {"action": action, "addr": addr, "size": size}


def test_a_trace_gives_every_block_allocated_and_those_still_held():
    sentinel = 0x100
    trace = [_event("alloc", sentinel), _event("free_requested", sentinel), _event("free_completed", sentinel),
             _event("alloc", 0x1000, 4096), _event("alloc", 0x3000, 1024), _event("segment_alloc", 0x8000, 2**20),
             _event("free_requested", 0x1000, 4096), _event("free_completed", 0x1000, 4096)]
    blocks = read_trace(trace, sentinel)
    assert blocks.complete
    assert blocks.allocated == [(0x1000, 0x2000), (0x3000, 0x3400)]  # the sentinel and the segment are not blocks written
    assert blocks.kept == [(0x3000, 0x3400)]  # freed inside the capture: written by it, not held after it
    # a block at the sentinel's address after it was freed is one the capture allocated
    reused = read_trace(trace + [_event("alloc", sentinel, 2048)], sentinel)
    assert reused.allocated[-1] == (sentinel, sentinel + 2048) and (sentinel, sentinel + 2048) in reused.kept
    # the sentinel's block may need a new segment first
    assert read_trace([_event("segment_alloc", 0x100, 2**20)] + trace, sentinel) == blocks


def test_a_trace_cut_short_is_not_complete():
    """Someone cleared or switched off the history while a capture recorded: its first events, the
    sentinel's among them, are gone, so blocks the graph writes may be missing."""
    cut = [_event("alloc", 0x3000, 1024), _event("free_requested", 0x3000, 1024)]
    for trace in (cut, [], [_event("alloc", 0x200)] + cut):
        blocks = read_trace(trace, 0x100)
        assert not blocks.complete and blocks.allocated == [] and blocks.kept == []


def test_only_the_capture_streams_blocks_count_when_other_threads_allocate():
    """Other threads may allocate and free while a capture records (the capture is thread-local), before
    the sentinel too: their blocks are not the graph's, and they do not make the trace look cut. The
    sentinel is allocated on the capture stream, so a trace without it there is still a cut one."""
    sentinel, capture, other = 0x100, 7, 9

    def on(stream: int, event: dict) -> dict:
        return {**event, "stream": stream}

    trace = [on(other, _event("alloc", 0x9000)), on(capture, _event("alloc", sentinel)),
             on(capture, _event("free_requested", sentinel)), on(capture, _event("alloc", 0x1000, 4096)),
             on(other, _event("alloc", 0x5000, 2048)), on(other, _event("free_requested", 0x5000, 2048)),
             on(other, _event("alloc", 0x6000, 1024)), on(capture, _event("alloc", 0x3000, 1024)),
             on(capture, _event("free_requested", 0x1000, 4096))]
    blocks = read_trace(trace, sentinel, capture)
    assert blocks.complete
    assert blocks.allocated == [(0x1000, 0x2000), (0x3000, 0x3400)] and blocks.kept == [(0x3000, 0x3400)]
    assert not read_trace(trace, sentinel).complete  # without the stream, the other thread's block came first
    cut = [e for e in trace if e["addr"] != sentinel]
    assert not read_trace(cut, sentinel, capture).complete


def _failing_cache() -> CudaGraphCache:
    """The failure bookkeeping of a graph cache, without CUDA."""
    cache = CudaGraphCache.__new__(CudaGraphCache)
    cache.failures, cache.key_failures, cache.disabled = 0, {}, False
    cache.entries = collections.OrderedDict()
    return cache


def test_a_shape_whose_captures_keep_failing_runs_plainly_after_three_tries():
    """Graphs used to be switched off at the first failed capture; now a failure (often another
    thread's device-wide sync) costs that call its graph, and the shape is tried again, three times."""
    cache = _failing_cache()
    key, other = (torch.Size([3, 4]),), (torch.Size([5, 4]),)
    for n in range(1, MAX_CAPTURE_FAILURES):
        cache._capture_failed(key, RuntimeError("invalidated"))
        assert cache.key_failures[key] == n and not cache.disabled
        cache.failures = 0  # another shape captured in between: the run of failures is broken
    cache._capture_failed(key, RuntimeError("invalidated"))
    assert not cache.disabled
    assert cache._capture(key, []) is None  # not tried again: no CUDA work at all (there is none here)
    assert other not in cache.key_failures


def test_failures_in_a_row_whatever_the_shapes_switch_the_graphs_off():
    cache = _failing_cache()
    cache.entries[(torch.Size([1]),)] = []
    for b in range(MAX_CAPTURE_FAILURES):
        assert not cache.disabled
        cache._capture_failed((torch.Size([b + 2, 4]),), RuntimeError("invalidated"))
    assert cache.disabled and not cache.entries
