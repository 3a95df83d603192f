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
yields None and the caller keeps the conservative test.
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


def _history_api() -> tuple[Any, Any] | None:
    memory = torch.cuda.memory
    record, snapshot = getattr(memory, "_record_memory_history", None), getattr(memory, "_snapshot", None)
    return (record, snapshot) if record is not None and snapshot is not None else None


def _start(device: torch.device) -> tuple[Any, int] | None:
    """Switch the history on; the API and the device's index, or None where it cannot be used."""
    api = _history_api()
    if api is None:
        return None
    try:
        index = device.index if device.index is not None else torch.cuda.current_device()
        if api[1](device)["device_traces"][index]:
            return None  # someone records the history already: leave it alone
        api[0](enabled="all", context=None, stacks="python", clear_history=True)
    except Exception as e:  # noqa: BLE001 - the history is an aid; without it the caller stays conservative
        logger.debug("allocator history unavailable (%s): graph outputs checked conservatively", e)
        return None
    return api, index


@dataclasses.dataclass
class Blocks:
    """What the allocator did inside a block of code: every block allocated, and those still allocated
    at its end (not freed inside it)."""

    allocated: Ranges = dataclasses.field(default_factory=list)
    kept: Ranges = dataclasses.field(default_factory=list)


@contextlib.contextmanager
def recorded_blocks(device: torch.device) -> Iterator[Blocks | None]:
    """Yields a `Blocks` filled when the block ends; or None when the allocator's history cannot be
    recorded here."""
    started = _start(device)
    if started is None:
        yield None
        return
    (record, snapshot), index = started
    blocks = Blocks()
    try:
        yield blocks
    finally:
        try:
            trace = snapshot(device)["device_traces"][index]
        finally:
            record(enabled=None)
        live: dict[int, tuple[int, int]] = {}
        for e in trace:
            if e["action"] == "alloc":
                blocks.allocated.append((e["addr"], e["addr"] + e["size"]))
                live[e["addr"]] = (e["addr"], e["addr"] + e["size"])
            elif e["action"] == "free_requested":
                live.pop(e["addr"], None)
        blocks.kept.extend(live.values())


def overlaps(tensors: list[torch.Tensor], ranges: Ranges) -> bool:
    """Whether any tensor's storage (all of it: a view's too) touches any of the ranges [start, end)."""
    for t in tensors:
        lo = t.untyped_storage().data_ptr()
        hi = lo + t.untyped_storage().nbytes()
        if any(lo < end and start < hi for start, end in ranges):
            return True
    return False
