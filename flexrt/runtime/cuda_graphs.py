"""CUDA graphs per exact input shape: launch overhead dominates small shapes on the H100 host
(DESIGN §5), so each shape seen is captured once and replayed from then on.

The first call of a shape runs plainly (a cold start's first call pays for no capture); the second
captures. One entry per shape in a bounded LRU, all graphs sharing one memory pool. Each graph
begins by copying its inputs into static buffers, and before each replay those copies are re-pointed
at the caller's tensors (`graph_inputs`: no copy launched from the host); where that is not
available, the static buffers are filled by one copy launch before the replay. A graph's intermediates go back to the
shared pool after capture, so a graph captured later may place its outputs on them, and replaying
the earlier graph would then overwrite outputs the caller holds. So each capture checks where its
outputs landed (`graph_writes`): on no block a kept graph's capture allocated (the allocator's
history, recorded around each capture), they are handed out as they are, the graph's static output
tensors themselves; otherwise the graph is recorded again, ending with a copy of its outputs into
buffers allocated outside the pool (device work inside the graph, no host work per call). Where
the history cannot be recorded, any memory the pool held before the capture counts as written (a
copy far more often: every slot of the seed model's batches 3-16 on the H200). A graph is replayed only
when nothing of its outputs is alive any more (no reference to the tensor, no view of its
storage): each shape has up to two captured slots (the usual `y = model(x)` loop alternates
between them while the previous `y` is still referenced), and when the caller holds the outputs
of both, the call runs without a graph.
So a later call never overwrites a tensor already handed out; zero-copy callers get the static
buffers themselves and accept that.

cuBLAS keeps one workspace per stream and a captured GEMM keeps its address. Left as it is, the
capture stream's workspace was allocated by the warm-up run outside the pool, and whoever clears
cuBLAS's workspaces (torch.compile's CUDA-graph trees do, at every capture) returns it to the
allocator while our graphs still write to it: a later replay then scribbled on other tensors, or hit
unmapped memory (`unspecified launch failure`, the zoo's LLaMA/Qwen2/Mistral/T5 after a
reduce-overhead peer). So each capture starts by clearing the workspaces and allocating the capture
stream's again, first, inside the capture: it is a block of the pool, which keeps its memory while
its graphs live, whoever clears cuBLAS's map later. It stays allocated after the capture (cuBLAS
holds it), and the next capture's first allocation gets the same block back (same size): the graphs
of a cache share one workspace, and no output lands on it. (Cleared after each capture as well, it
was freed into the pool, and later captures' outputs landed on it: the copies above.)

Memory: the graphs of one cache share its pool, so a shape captured after a larger one mostly reuses
the larger one's intermediates; `memory()` reports the pool and what each capture added to it.
`capture` order is the caller's: capturing the largest shape first (as vLLM does; see
`CompiledModule.capture_cuda_graphs`) keeps the whole close to the largest alone. With a memory
cap, a capture that takes the cache past it drops every graph and starts a new pool with the
current shape alone, so the cache never holds more than the cap or one shape's graph.

While a shape is captured, cuDNN may benchmark its convolution algorithms (the
process-wide flag is set only around those calls and restored), as TensorRT times tactics at build.

Threads: a cache is called from several threads when they share a compiled module (a threaded web
server, a thread pool). Choosing a slot, re-pointing its input copies and launching its replay is one
step under the cache's lock: two threads re-pointing one graph's copies before either replayed it gave
one of them the other's result. A capture holds the lock too (another thread's calls of this cache
wait for it); plain runs do not. A replay on another stream than the cache's last one first waits
for that stream (the graphs share their pool's intermediates), and for the stream of the call that
last held the slot's outputs (they may still be read there); a capture's warm-up waits for the last
replay as well (its GEMMs use the workspace the graphs write): graphs of one cache run one at a time
on the GPU, whichever threads and streams call them. Captures take turns in the process, warm-up
included, and each is in CUDA's thread-local capture mode, as torch.compile's CUDA-graph trees
capture: in the default global mode, another thread's allocation or stream synchronisation during a
capture failed, in that thread, and failed the capture. A device-wide synchronisation on another
thread still fails a capture (CUDA's rule, in every mode; `research/probes/capture_threads.py`):
that call runs plainly, what torch's failed capture left behind is put right under the capture lock
(`_FailedCapture`, `_record`), and the shape is captured at a later call, up to MAX_CAPTURE_FAILURES
times; as many failures in a row, whatever the shapes, switch the context's graphs off. A capture
holds fn's TF32 policy (`policy`) from its warm-up to its end, so no other thread's policy change
reaches the kernels it records.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.cuda._utils import _get_device_index

from flexrt.runtime import graph_inputs, graph_writes

logger = logging.getLogger(__name__)

# cuBLAS's workspace map and the allocator's history are the process's, not a cache's: one capture
# at a time, so one capture's clearing or recording cannot cut into another's
_CAPTURE_LOCK = threading.Lock()

SLOTS_PER_SHAPE = 2
MAX_CAPTURE_FAILURES = 3  # per shape: then it runs plainly; in a row, any shapes: the context runs without graphs

StreamKey = tuple[int, int, int]  # (stream id, device index, device type): torch's cheap handle for a stream


def _stream(key: StreamKey) -> torch.cuda.Stream:
    return torch.cuda.Stream(stream_id=key[0], device_index=key[1], device_type=key[2])


def _use_count(t: torch.Tensor) -> int:
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


def _copy_all(dst: Sequence[torch.Tensor], src: Sequence[torch.Tensor]) -> None:
    """dst[i] <- src[i]; one launch for several tensors."""
    if len(dst) == 1:
        dst[0].copy_(src[0])
    elif dst:
        torch._foreach_copy_(list(dst), list(src))


@contextlib.contextmanager
def cudnn_autotune() -> Iterator[None]:
    """cudnn.benchmark on for the duration (conv algorithms timed once per shape), then restored."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def cublas_workspace_in_pool() -> None:
    """Call inside a capture, first, with this thread's cuBLAS handle created and cuBLAS's workspaces
    cleared just before (outside the capture): the capture stream's
    workspace is allocated now, in the graph's pool, before any other block (no kernel: fetching the
    handle allocates it). It stays allocated after the capture (cuBLAS holds it), so no later graph's
    outputs land on it, and the next capture gets the same block back (the first request, same size)."""
    torch._C._cuda_getCurrentBlasHandle()


@dataclasses.dataclass
class _Slot:
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    outputs: list[Any]
    tensors: list[torch.Tensor]  # the tensor outputs, handed out as they are (no view per call)
    baseline: list[tuple[int, int]]  # (references, storage uses) of each when nobody but us holds it
    copies_out: bool  # the graph copies its outputs out of the shared pool (see the module docstring)
    feed: Callable[[Sequence[torch.Tensor]], None]  # gives the graph the caller's inputs before a replay
    writes: graph_writes.Ranges | None = None  # blocks its capture allocated (what replays write); None: unknown
    stream: StreamKey | None = None  # the stream of its last replay, whose caller got its outputs
    pool: tuple[int, int] | None = None  # the memory pool it was captured into

    @property
    def buffer_bytes(self) -> int:
        """Memory outside the pool: the static inputs, and the output buffers when copied out."""
        held = self.inputs + (self.tensors if self.copies_out else [])
        return sum(t.untyped_storage().nbytes() for t in held)

    def free(self) -> bool:
        """No caller holds an output, or anything sharing its storage (a view, a slice)."""
        return self._counts() == self.baseline  # holders only add: any difference means held

    def measure(self) -> None:
        self.baseline = self._counts()

    def _counts(self) -> list[tuple[int, int]]:
        # measure() and free() count through this one frame, so the references it adds cancel out
        return [(sys.getrefcount(t), _use_count(t)) for t in self.tensors]


class _FailedCapture:
    """Puts right what a capture that CUDA refused to end leaves behind; returns whether it was one (the
    pool and torch's CUDA generator state are then given up too: see `CudaGraphCache._record`). torch's
    `torch.cuda.graph` skips its own clean-up when CUDA refuses to end a capture (another thread's
    device-wide sync invalidated it): the caller's thread was left on the capture stream, and the
    caching allocator recording into the pool, which kept the pool's use count (its memory was never
    freed)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.device = torch.cuda.current_device()
        self.stream = torch.cuda.current_stream(index)

    def __call__(self, pool: tuple[int, int]) -> bool:
        torch.cuda.set_stream(self.stream)  # which also makes its device current: the caller's is restored
        torch.cuda.set_device(self.device)
        try:
            torch._C._cuda_endAllocateToPool(self.index, pool)
        except (RuntimeError, AttributeError):  # the capture ended (or never began): nothing was left
            return False
        try:  # the capture's own hold on the pool, which its graph never gives back
            torch._C._cuda_releasePool(self.index, pool)
        except (RuntimeError, AttributeError) as e:
            logger.debug("could not release a failed capture's memory pool (%s); it stays reserved", e)
        return True


class CudaGraphCache:
    """Runs `fn` through captured graphs keyed by input shapes; falls back to `fn` if capture fails."""

    def __init__(self, fn: Callable[[Sequence[Any]], list[Any]], device: torch.device, capacity: int,
                 memory_cap: int | None = None,
                 policy: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext) -> None:
        self.fn = fn
        self.policy = policy  # fn's process-wide settings (TF32), held across a whole capture
        self.device = device
        self.capacity = capacity
        self.memory_cap = memory_cap  # bytes; None: bounded by `capacity` only
        self.growth: dict[tuple[Any, ...], int] = {}  # bytes the pool grew by at each shape's first capture
        self.entries: collections.OrderedDict[tuple[Any, ...], list[_Slot]] = collections.OrderedDict()
        self.pool = torch.cuda.graph_pool_handle()
        self.stream: torch.cuda.Stream | None = None
        self.disabled = False
        self.shared_writes: graph_writes.Ranges = []  # blocks every later graph may write (the workspaces)
        self.seen: collections.OrderedDict[tuple[Any, ...], None] = collections.OrderedDict()
        self.captures = 0
        self.plain_runs = 0
        self.failures = 0  # captures failed in a row
        self.key_failures: dict[tuple[Any, ...], int] = {}  # failed captures per shape since its last success
        self._lock = threading.RLock()  # one caller at a time chooses, feeds and launches (see the docstring)
        self._index = _get_device_index(device, optional=True)
        self._last_stream: StreamKey | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def run(self, inputs: Sequence[torch.Tensor], zero_copy: bool = False) -> list[Any]:
        with self._lock:
            outputs = self._replay(inputs, zero_copy)
        return self.fn(inputs) if outputs is None else outputs  # a plain run needs no graph: not under the lock

    def _replay(self, inputs: Sequence[torch.Tensor], zero_copy: bool) -> list[Any] | None:
        """Replay (capturing first if due) the graph for these inputs' shapes; None: run them plainly."""
        key = tuple([t.shape for t in inputs])
        slots = self.entries.get(key)
        if slots is None:
            if self.disabled or key not in self.seen:
                self.seen[key] = None
                while len(self.seen) > 4 * self.capacity:
                    self.seen.popitem(last=False)
                return None  # first sight of a shape: a plain run (it also loads lazy kernels)
            if self._capture(key, inputs) is None:
                return None
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
                return None
        stream = torch._C._cuda_getCurrentStream(self._index)
        if stream != self._last_stream or stream != slot.stream:
            self._follow(stream, slot)
        slot.feed(inputs)
        slot.graph.replay()
        return list(slot.outputs)

    def _follow(self, stream: StreamKey, slot: _Slot) -> None:
        """Before a replay on `stream`: wait for the cache's last replay and for the last holder of this
        slot's outputs, where they ran on other streams (a caller switching streams, or threads)."""
        current = _stream(stream)
        for other in {self._last_stream, slot.stream} - {None, stream}:
            current.wait_stream(_stream(other))
        self._last_stream = slot.stream = stream

    def _capture(self, key: tuple[Any, ...], inputs: Sequence[torch.Tensor]) -> _Slot | None:
        if self.key_failures.get(key, 0) >= MAX_CAPTURE_FAILURES:
            return None  # this shape's captures keep failing: it runs plainly
        static = [t.detach().clone() for t in inputs]
        sources = [t if t.is_contiguous() else t.contiguous() for t in inputs] if graph_inputs.supported() else None
        if self.stream is None:
            self.stream = torch.cuda.Stream(self.device)
        caller = torch.cuda.current_stream(self.device)
        try:
            # one capture at a time in the process, warm-up included: cuBLAS's workspace map, the
            # allocator's history and cuDNN's benchmark flag are the process's; fn's TF32 policy held
            # throughout, taken first (a build may hold it: wait for it before the capture lock)
            with self.policy(), _CAPTURE_LOCK, cudnn_autotune():
                self.stream.wait_stream(caller)
                if self._last_stream is not None:  # the warm-up's GEMMs use the workspace the graphs write
                    self.stream.wait_stream(_stream(self._last_stream))
                with torch.cuda.stream(self.stream):
                    self.fn(static)  # warm up on the capture stream
                caller.wait_stream(self.stream)
                earlier = self._pool_segments()
                pool_before = sum(hi - lo for lo, hi in earlier)
                graph, outputs, out, writes = self._record_checked(static, sources, earlier)
                feed = graph_inputs.find_input_copies(graph, static, sources) if sources is not None else None
                if feed is None and sources is not None:  # its input copies cannot be re-pointed: record plainly
                    superseded = graph  # alive until its successor is recorded (see `_record_checked`)
                    del outputs, out
                    graph, outputs, out, writes = self._record_checked(static, None, earlier)
                    del superseded
        except Exception as e:  # noqa: BLE001 - a failed capture means: this call runs without a graph
            self._capture_failed(key, e)
            return None
        self.failures = 0
        self.key_failures.pop(key, None)
        copies_out = out is not None
        slot = _Slot(graph, static, outputs, _tensors(outputs), [], copies_out, feed or functools.partial(_copy_all, static),
                     writes, pool=self.pool)
        slot.measure()
        self.entries.setdefault(key, []).append(slot)
        self.growth[key] = self.growth.get(key, 0) + self.pool_bytes() - pool_before
        self.captures += 1
        logger.debug("captured a CUDA graph for input shapes %s (%d shapes cached, outputs copied out: %s, inputs re-pointed: %s)",
                     [tuple(s) for s in key], len(self.entries), copies_out, isinstance(feed, graph_inputs.InputCopies))
        while len(self.entries) > self.capacity:
            self.growth.pop(self.entries.popitem(last=False)[0], None)
        held = self._memory()["total_bytes"] if self.memory_cap is not None and len(self.entries) > 1 else 0
        if self.memory_cap is not None and held > self.memory_cap:
            logger.info("CUDA graphs: %.1f MiB past the cap of %.1f MiB; dropping %d captured shapes, keeping %s",
                        held / 2**20, self.memory_cap / 2**20, len(self.entries) - 1, [tuple(s) for s in key])
            self.entries.clear()
            self.growth.clear()
            self.pool = torch.cuda.graph_pool_handle()  # the old pool's memory returns to the allocator with its graphs
            self.shared_writes = []
            return self._capture(key, inputs)
        return slot

    def _capture_failed(self, key: tuple[Any, ...], error: Exception) -> None:
        """A capture failed: often another thread's device-wide synchronisation (CUDA forbids it during
        any capture). The shape is captured again at a later call, up to MAX_CAPTURE_FAILURES times;
        as many failures in a row, whatever the shapes, switch the context's graphs off."""
        self.failures += 1
        self.key_failures[key] = self.key_failures.get(key, 0) + 1
        shapes = [tuple(s) for s in key]
        if self.failures >= MAX_CAPTURE_FAILURES:
            logger.warning("CUDA graph capture failed %d times in a row (last: %s); this context runs without CUDA graphs",
                           self.failures, error)
            self.disabled = True
            self.entries.clear()
        elif self.key_failures[key] >= MAX_CAPTURE_FAILURES:
            logger.warning("CUDA graph capture for input shapes %s failed %d times (last: %s); they run without a graph",
                           shapes, self.key_failures[key], error)
        else:
            logger.warning("CUDA graph capture for input shapes %s failed (%s); this call runs without a graph, a later "
                           "one captures again", shapes, error)

    def pool_bytes(self) -> int:
        return sum(hi - lo for lo, hi in self._pool_segments())

    def memory(self) -> dict[str, Any]:
        """The pool's bytes, the buffers outside it, and per captured shape what its capture added."""
        with self._lock:  # not while another thread captures
            return self._memory()

    def _memory(self) -> dict[str, Any]:
        captured = [{"shapes": [list(s) for s in key], "slots": len(slots), "pool_growth_bytes": self.growth.get(key, 0),
                     "buffer_bytes": sum(slot.buffer_bytes for slot in slots)} for key, slots in self.entries.items()]
        pool = self.pool_bytes()
        buffers = sum(c["buffer_bytes"] for c in captured)
        return {"pool_bytes": pool, "buffer_bytes": buffers, "total_bytes": pool + buffers, "captured": captured}

    def _record_checked(self, static: list[torch.Tensor], sources: list[torch.Tensor] | None, earlier: list[tuple[int, int]]
                        ) -> tuple[torch.cuda.CUDAGraph, list[Any], list[Any] | None, graph_writes.Ranges | None]:
        """Record; if an output landed on a block a kept graph writes (or, where those blocks are not
        known, on any memory the pool had before this capture: `earlier`), record again copying the
        outputs out of the pool. Returns the graph, its outputs, the out-of-pool buffers (None when not
        copied out) and the blocks the kept recording allocated."""
        graph, outputs, writes = self._record(static, sources, None)
        kept = self._kept_writes()
        if not graph_writes.overlaps(_tensors(outputs), kept if writes is not None and kept is not None else earlier):
            return graph, outputs, None, writes
        out = [torch.empty_like(o) if isinstance(o, torch.Tensor) else o for o in outputs]
        # the first recording stays alive until the second is made: a pool that no graph holds but that
        # still has a block allocated (the workspace) cannot be captured into again
        superseded = graph
        del outputs
        graph, outputs, writes = self._record(static, sources, out)
        del superseded
        return graph, outputs, out, writes

    def _kept_writes(self) -> graph_writes.Ranges | None:
        """Every block the kept graphs write, or None if any graph's are unknown."""
        ranges: graph_writes.Ranges = list(self.shared_writes)
        for slots in self.entries.values():
            for slot in slots:
                if slot.writes is None:
                    return None
                ranges.extend(slot.writes)
        return ranges

    def _record(self, static: list[torch.Tensor], sources: list[torch.Tensor] | None,
                out: list[Any] | None) -> tuple[torch.cuda.CUDAGraph, list[Any], graph_writes.Ranges | None]:
        """Capture fn(static) into the shared pool. With `sources`, the graph begins by copying them
        into `static` (one memcpy each, re-pointed per call) and is kept for `graph_inputs`; with
        `out`, it ends by copying its outputs there (buffers from outside the pool), and fn's own
        outputs go back to the pool. Also returns the blocks the capture allocated (None: unknown)."""
        graph = torch.cuda.CUDAGraph(keep_graph=True) if sources is not None else torch.cuda.CUDAGraph()
        # the warm-up may have allocated the stream's workspace outside the pool (after someone cleared
        # cuBLAS's map); cleared, the capture allocates it in the pool, in the block it had (same size)
        generator = torch.cuda.default_generators[self._index]
        with graph_writes.recorded_blocks(self.device, self.stream) as blocks:  # under _CAPTURE_LOCK (`_capture`)
            with torch.cuda.stream(self.stream):
                # this thread's cuBLAS handle must exist before the capture: creating it there is an
                # error that fails the capture (a model without matrix products never created it)
                torch._C._cuda_getCurrentBlasHandle()
            torch._C._cuda_clearCublasWorkspaces()
            undo = _FailedCapture(self._index)
            rng = generator.clone_state()  # a seed and an offset, taken right before the capture
            try:
                with torch.cuda.graph(graph, pool=self.pool, stream=self.stream, capture_error_mode="thread_local"):
                    cublas_workspace_in_pool()
                    for dst, src in zip(static, sources or ()):
                        dst.copy_(src)
                    produced = list(self.fn(static))
                    if out is not None:
                        _copy_all(_tensors(out), _tensors(produced))
            except BaseException:  # still under the capture lock: no other capture sees what it left
                if undo(self.pool):  # the capture never ended
                    # every capture registers torch's CUDA generator, and one that never ended left it
                    # "capturing": every later CUDA random number in the process raised
                    generator.graphsafe_set_state(rng)
                    # torch's pinned-memory allocator still records into the pool (nothing ends that) and
                    # refuses any later capture into it: a new pool (kept graphs keep theirs, see
                    # `_pool_segments`)
                    self.pool = torch.cuda.graph_pool_handle()
                raise
        if sources is not None:
            graph.instantiate()
        result = produced if out is None else out
        if blocks is None or not blocks.complete:
            return graph, result, None
        # what stays allocated besides the outputs (the workspace) is written by every later graph too,
        # even after cuBLAS lets go of it (its memory stays the pool's while the graphs live)
        outputs = _tensors(produced)
        self.shared_writes.extend(r for r in blocks.kept if r not in self.shared_writes and not graph_writes.overlaps(outputs, [r]))
        return graph, result, blocks.allocated

    def _pool_segments(self) -> list[tuple[int, int]]:
        """Address ranges of the shared pool's memory (and of older pools kept graphs were captured into,
        after a failed capture): where earlier graphs may keep intermediates."""
        pools = {tuple(self.pool)} | {tuple(slot.pool) for slots in self.entries.values() for slot in slots if slot.pool}
        return [(s["address"], s["address"] + s["total_size"]) for s in torch.cuda.memory_snapshot()
                if tuple(s["segment_pool_id"]) in pools]


def _tensors(values: Sequence[Any]) -> list[torch.Tensor]:
    return [v for v in values if isinstance(v, torch.Tensor)]
