"""The memory blocks a CUDA graph's capture allocated, which are what its replays write.

All graphs of a cache share one memory pool, so a graph captured later may be given blocks an earlier
graph freed after its capture. If its outputs land on such a block, replaying the earlier graph
overwrites outputs a caller still holds. Knowing each kept graph's blocks exactly lets a capture copy
its outputs out only when that can happen. The alternative, "any memory the pool held before", made
the seed model copy a 29 MB output at every replay of batches 3-16 on the H200
(`research/probes/graph_overlap.py`, `shared_workspace.py`).

The blocks come from the caching allocator's own history (`torch.cuda.memory._record_memory_history`,
the API behind PyTorch's memory snapshots), switched on around the capture only. Where it cannot be
used (an older torch, or a user recording it already, whose history would be cut), `recorded_blocks`
yields None and the caller keeps the conservative test; so does a trace that was cut short while we
recorded (someone else switched the history off or cleared it: its first event must be our sentinel's).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import torch

logger = logging.getLogger(__name__)

Ranges = list[tuple[int, int]]  # [start, end) device addresses


def _history_api() -> tuple[Any, Any, Any] | None:
    """(record, snapshot, is_enabled) of the allocator's history, or None where torch lacks one of them."""
    memory = torch.cuda.memory
    record, snapshot = getattr(memory, "_record_memory_history", None), getattr(memory, "_snapshot", None)
    enabled = getattr(torch._C, "_cuda_isHistoryEnabled", None)
    return (record, snapshot, enabled) if None not in (record, snapshot, enabled) else None


def _start(device: torch.device, stream: torch.cuda.Stream | None) -> tuple[tuple[Any, Any, Any], int, int] | None:
    """Switch the history on and allocate a sentinel block (on `stream`, if given); the API, the device's
    index and the sentinel's address, or None where the history cannot be used here."""
    api = _history_api()
    if api is None:
        return None
    record, _, enabled = api
    try:
        if enabled():
            return None  # someone records the history already (any device): leave it alone
        index = device.index if device.index is not None else torch.cuda.current_device()
        record(enabled="all", context=None, stacks="python", clear_history=True)
        try:
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                sentinel = torch.empty(1, device=device)  # the stream's first event, if nobody cuts the trace
        except Exception:
            record(enabled=None)
            raise
        address = sentinel.data_ptr()
        del sentinel
    except Exception as e:  # noqa: BLE001 - the history is an aid; without it the caller stays conservative
        logger.debug("allocator history unavailable (%s): graph outputs checked conservatively", e)
        return None
    return api, index, address


@dataclasses.dataclass
class Blocks:
    """What the allocator did inside a block of code: every block allocated, and those still allocated
    at its end (not freed inside it). `complete` is False until a whole trace was read."""

    allocated: Ranges = dataclasses.field(default_factory=list)
    kept: Ranges = dataclasses.field(default_factory=list)
    complete: bool = False


def read_trace(trace: list[dict[str, Any]], sentinel: int, stream: int | None = None) -> Blocks:
    """The blocks of a device trace whose first block allocation is the sentinel's; an incomplete `Blocks`
    if it is not (the history was cleared or switched off in between, and allocations are missing).
    The sentinel's own events are left out (it lived outside whatever was recorded). With `stream`, only
    that stream's events count, the sentinel's among them: other threads, on other streams, may
    allocate meanwhile, before the sentinel too."""
    blocks = Blocks()
    if stream is not None:
        trace = [e for e in trace if e.get("stream") == stream]
    # its first block allocation (a new segment for it may come first)
    first = next((i for i, e in enumerate(trace) if e.get("action") == "alloc"), None)
    if first is None or trace[first].get("addr") != sentinel:
        return blocks
    live: dict[int, tuple[int, int]] = {}
    own = {"free_requested", "free_completed"}  # the sentinel's own events; a later block may reuse its address
    for e in trace[first + 1:]:
        if e.get("addr") == sentinel and e.get("action") in own:
            own.discard(e["action"])
            continue
        if e["action"] == "alloc":
            blocks.allocated.append((e["addr"], e["addr"] + e["size"]))
            live[e["addr"]] = (e["addr"], e["addr"] + e["size"])
        elif e["action"] == "free_requested":
            live.pop(e["addr"], None)
    blocks.kept.extend(live.values())
    blocks.complete = True
    return blocks


@contextlib.contextmanager
def recorded_blocks(device: torch.device, stream: torch.cuda.Stream | None = None) -> Iterator[Blocks | None]:
    """Yields a `Blocks` filled when the block ends (check `complete`: a cut trace is not); or None
    when the allocator's history cannot be recorded here. With `stream` (one no other thread uses: a
    capture's), only the blocks allocated on it."""
    started = _start(device, stream)
    if started is None:
        yield None
        return
    (record, snapshot, enabled), index, sentinel = started
    blocks = Blocks()
    try:
        yield blocks
    finally:
        still = enabled()  # off: someone switched it off meanwhile; theirs now, and the trace is cut
        try:
            trace = snapshot(device)["device_traces"][index] if still else []
        finally:
            if still:
                record(enabled=None)
        found = read_trace(trace, sentinel, stream.cuda_stream if stream is not None else None)
        blocks.allocated, blocks.kept, blocks.complete = found.allocated, found.kept, found.complete


def overlaps(tensors: list[torch.Tensor], ranges: Ranges) -> bool:
    """Whether any tensor's storage (all of it: a view's too) touches any of the ranges [start, end)."""
    for t in tensors:
        lo = t.untyped_storage().data_ptr()
        hi = lo + t.untyped_storage().nbytes()
        if any(lo < end and start < hi for start, end in ranges):
            return True
    return False
