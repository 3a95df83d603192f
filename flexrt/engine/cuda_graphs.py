"""CUDA graphs per exact input shape: launch overhead dominates small shapes on the H100 host
(DESIGN §5), so each shape seen is captured once and replayed from then on.

One graph per shape in a bounded LRU, all sharing one memory pool; static input buffers are
filled by copy. Results are cloned out of the static outputs unless the caller asked for
zero-copy, so a later call never overwrites a tensor already handed out.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    outputs: list[Any]


class CudaGraphCache:
    """Runs `fn` through captured graphs keyed by input shapes; falls back to `fn` if capture fails."""

    def __init__(self, fn: Callable[[Sequence[Any]], list[Any]], device: torch.device, capacity: int) -> None:
        self.fn = fn
        self.device = device
        self.capacity = capacity
        self.entries: collections.OrderedDict[tuple[Any, ...], _Captured] = collections.OrderedDict()
        self.pool = torch.cuda.graph_pool_handle()
        self.stream: torch.cuda.Stream | None = None
        self.disabled = False
        self.captures = 0

    def __len__(self) -> int:
        return len(self.entries)

    def run(self, inputs: Sequence[torch.Tensor], zero_copy: bool = False) -> list[Any]:
        key = tuple(t.shape for t in inputs)
        entry = self.entries.get(key)
        if entry is None:
            result = self.fn(inputs)  # the first call of a shape runs plainly (and loads lazy kernels)
            if not self.disabled:
                self._capture(key, inputs)
            return result
        self.entries.move_to_end(key)
        for dst, src in zip(entry.inputs, inputs):
            dst.copy_(src)
        entry.graph.replay()
        if zero_copy:
            return list(entry.outputs)
        return [o.clone() if isinstance(o, torch.Tensor) else o for o in entry.outputs]

    def _capture(self, key: tuple[Any, ...], inputs: Sequence[torch.Tensor]) -> None:
        static = [t.detach().clone() for t in inputs]
        if self.stream is None:
            self.stream = torch.cuda.Stream(self.device)
        graph = torch.cuda.CUDAGraph()
        try:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):
                self.fn(static)  # warm up on the capture stream
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
            with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
                outputs = self.fn(static)
        except Exception as e:  # noqa: BLE001 - any capture failure means: run without graphs
            logger.warning("CUDA graph capture failed (%s); this context runs without CUDA graphs", e)
            self.disabled = True
            self.entries.clear()
            return
        self.entries[key] = _Captured(graph, static, list(outputs))
        self.captures += 1
        logger.debug("captured a CUDA graph for input shapes %s (%d cached)", [tuple(s) for s in key], len(self.entries))
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)
