"""CUDA graphs per exact input shape: launch overhead dominates small shapes on the H100 host
(DESIGN §5), so each shape seen is captured once and replayed from then on.

The first call of a shape runs plainly (a cold start's first call pays for no capture); the second
captures. One entry per shape in a bounded LRU, all graphs sharing one memory pool; static input
buffers are filled by copy (one launch for all inputs). Outputs are handed out without a copy:
the graph's static output tensors themselves. A graph is replayed only when nothing of its outputs
is alive any more (no reference to the tensor, no view of its storage): each shape has up to two
captured slots (the usual `y = model(x)` loop alternates between them while the previous `y` is
still referenced), and when the caller holds the outputs of both, the call runs without a graph.
So a later call never overwrites a tensor already handed out; zero-copy callers get the static
buffers themselves and accept that.

While a shape is captured, cuDNN may benchmark its convolution algorithms (the
process-wide flag is set only around those calls and restored), as TensorRT times tactics at build.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

logger = logging.getLogger(__name__)

SLOTS_PER_SHAPE = 2


def _use_count(t: torch.Tensor) -> int:
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


@contextlib.contextmanager
def cudnn_autotune() -> Iterator[None]:
    """cudnn.benchmark on for the duration (conv algorithms timed once per shape), then restored."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


@dataclasses.dataclass
class _Slot:
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    outputs: list[Any]
    tensors: list[torch.Tensor]  # the tensor outputs, handed out as they are (no view per call)
    baseline: list[tuple[int, int]]  # (references, storage uses) of each when nobody but us holds it

    def free(self) -> bool:
        """No caller holds an output, or anything sharing its storage (a view, a slice)."""
        return self._counts() == self.baseline  # holders only add: any difference means held

    def measure(self) -> None:
        self.baseline = self._counts()

    def _counts(self) -> list[tuple[int, int]]:
        # measure() and free() count through this one frame, so the references it adds cancel out
        return [(sys.getrefcount(t), _use_count(t)) for t in self.tensors]


class CudaGraphCache:
    """Runs `fn` through captured graphs keyed by input shapes; falls back to `fn` if capture fails."""

    def __init__(self, fn: Callable[[Sequence[Any]], list[Any]], device: torch.device, capacity: int) -> None:
        self.fn = fn
        self.device = device
        self.capacity = capacity
        self.entries: collections.OrderedDict[tuple[Any, ...], list[_Slot]] = collections.OrderedDict()
        self.pool = torch.cuda.graph_pool_handle()
        self.stream: torch.cuda.Stream | None = None
        self.disabled = False
        self.seen: collections.OrderedDict[tuple[Any, ...], None] = collections.OrderedDict()
        self.captures = 0
        self.plain_runs = 0

    def __len__(self) -> int:
        return len(self.entries)

    def run(self, inputs: Sequence[torch.Tensor], zero_copy: bool = False) -> list[Any]:
        key = tuple([t.shape for t in inputs])
        slots = self.entries.get(key)
        if slots is None:
            if self.disabled or key not in self.seen:
                self.seen[key] = None
                while len(self.seen) > 4 * self.capacity:
                    self.seen.popitem(last=False)
                return self.fn(inputs)  # first sight of a shape: a plain run (it also loads lazy kernels)
            if self._capture(key, inputs) is None:
                return self.fn(inputs)
            slots = self.entries[key]
        self.entries.move_to_end(key)
        if zero_copy:
            slot = slots[0]
        else:
            for slot in slots:
                if slot.free():
                    break
            else:
                slot = None
            if slot is None and len(slots) < SLOTS_PER_SHAPE:
                slot = self._capture(key, inputs)
            if slot is None:  # the caller holds the outputs of every slot: do not overwrite them
                self.plain_runs += 1
                return self.fn(inputs)
        if len(inputs) == 1:
            slot.inputs[0].copy_(inputs[0])
        else:  # one launch for all inputs
            torch._foreach_copy_(slot.inputs, list(inputs))
        slot.graph.replay()
        return list(slot.outputs)

    def _capture(self, key: tuple[Any, ...], inputs: Sequence[torch.Tensor]) -> _Slot | None:
        static = [t.detach().clone() for t in inputs]
        if self.stream is None:
            self.stream = torch.cuda.Stream(self.device)
        graph = torch.cuda.CUDAGraph()
        try:
            with cudnn_autotune():
                self.stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(self.stream):
                    self.fn(static)  # warm up on the capture stream
                torch.cuda.current_stream(self.device).wait_stream(self.stream)
                with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
                    outputs = list(self.fn(static))
        except Exception as e:  # noqa: BLE001 - any capture failure means: run without graphs
            logger.warning("CUDA graph capture failed (%s); this context runs without CUDA graphs", e)
            self.disabled = True
            self.entries.clear()
            return None
        slot = _Slot(graph, static, outputs, [o for o in outputs if isinstance(o, torch.Tensor)], [])
        slot.measure()
        self.entries.setdefault(key, []).append(slot)
        self.captures += 1
        logger.debug("captured a CUDA graph for input shapes %s (%d shapes cached)", [tuple(s) for s in key], len(self.entries))
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)
        return slot
