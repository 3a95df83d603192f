"""The model tier's queue: calls that arrive while the model thread is busy run as one.

Behind N front ends each front end batches only its own share of the traffic, so a model replica
gets many small calls (2-3 ResNet-50 images each at 1000 requests/s with 8 front ends on the H200),
one GPU call at a time on its model thread. Here calls that queue while a GPU call runs are stacked
into the next one (greedy batching: no wait is added; an idle thread takes a call at once), grouped
by shape and cut to fit a profile exactly as a front end's batch is (`batching.Batch`), then padded
by the pad policy; each call gets back its own rows. Without batch dims each call still runs alone,
several per hop to the model thread. Measured on the H200 (benchmarks/results/serve/h200-2026-11-30g):
about a fifth of the calls merged at the knee of 12 front ends before two model replicas; it did
not raise one model replica's knee, whose limit is its process's per-call path, not its GPU calls.
Imports no Ray.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import torch

from flexrt.serving.batching import Batch, BatchPlan
from flexrt.serving.host import ModelHost

logger = logging.getLogger(__name__)


class _Call:
    __slots__ = ("inputs", "future")

    def __init__(self, inputs: dict[str, torch.Tensor], future: asyncio.Future[dict[str, torch.Tensor]]) -> None:
        self.inputs = inputs
        self.future = future


def _shapes(call: _Call) -> dict[str, tuple[int, ...]]:
    return {n: tuple(t.shape) for n, t in call.inputs.items()}


def _tensors(call: _Call) -> dict[str, torch.Tensor]:
    return call.inputs


class MergingQueue:
    """Runs the calls given to `submit` on the host's model thread, merging those that wait."""

    def __init__(self, host: ModelHost) -> None:
        self.host = host
        self.plan: BatchPlan | None = host.plan
        self._waiting: list[_Call] = []
        self._drain: asyncio.Task[None] | None = None
        self.received = 0  # calls submitted (the host counts the model calls they became)

    async def submit(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One call's outputs (its own rows), or its merged call's exception."""
        future: asyncio.Future[dict[str, torch.Tensor]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Call(inputs, future))
        self.received += 1
        if self._drain is None or self._drain.done():
            self._drain = asyncio.ensure_future(self._run_waiting())
        return await future

    async def _run_waiting(self) -> None:
        """While calls wait: take them all, run them as few model calls as fit, answer each."""
        while self._waiting:
            calls, self._waiting = self._waiting, []
            calls = [c for c in calls if not c.future.done()]  # callers gone already (cancelled): not run
            try:
                batch = Batch.prepare(calls, _shapes, _tensors, self.plan, self.host.signature, self.host.config.padding)
                await self.host.run(batch.run, self.host.execute)
                results: list[Any] = batch.results()
            except Exception as e:  # the model thread itself failed: every call gets it
                logger.exception("model calls failed")
                results = [e] * len(calls)
            except BaseException:  # this task cancelled (the replica shutting down): no caller left waiting
                for call in [*calls, *self._waiting]:
                    if not call.future.done():
                        call.future.set_exception(RuntimeError("the model replica stopped before this call ran"))
                self._waiting = []
                raise
            for call, result in zip(calls, results):
                if call.future.done():  # its caller went away (cancelled)
                    continue
                if isinstance(result, BaseException):
                    call.future.set_exception(result)
                else:
                    call.future.set_result(result)
