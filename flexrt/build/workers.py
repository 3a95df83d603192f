"""Engine builds side by side: every engine job after the first runs in a Python process of its own.

Why processes: torch.export and Inductor keep process-wide state (config patches, the tracing
context), so two builds cannot overlap in one process, while the engines of several profiles (or
segments) are independent and each build is mostly single-threaded Python and one C++ compile. A
worker gets the segment's graph, its example inputs and its dynamic dims as data (`torch.save`),
exports and compiles it as this process would (`export_with_dims`, `compile_engine`), and sends the
engine back. A worker that fails for any reason (an op it cannot import, memory, a crash) returns
nothing and the caller builds that job here, so errors surface exactly as in a sequential build.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from flexrt.build import cache
from flexrt.build.inductor import DimSpec
from flexrt.build.keys import process_inductor_config
from flexrt.ir.binary import EngineBinary
from flexrt.settings import CompileSettings
from flexrt.stage_log import stage_done, stage_started

logger = logging.getLogger(__name__)

WORKER_TIMEOUT_S = 3600.0  # one engine build; a worker past it is killed and its job built here


@dataclasses.dataclass
class EngineJob:
    """One engine to build: a segment at one profile, with what its export needs."""

    module: torch.fx.GraphModule
    examples: list[Any]  # already widened (widen_data_dependent)
    dims: list[Mapping[int, DimSpec] | None]  # segment_dims, made where the graph's symbolic sizes live
    oblivious: bool
    segment: str | None  # its segment key, remembered as leading to the engine
    label: str
    stage: str  # e.g. "segment 0 profile 1", for the stage log


def worker_count(settings: CompileSettings, jobs: int) -> int:
    """Processes to build `jobs` engines with (1: all here). `build_workers=0` (the default) means one
    per 4 CPU cores on CUDA, where a build is mostly one thread of Python and one C++ compile; on CPU
    Inductor's own C++ kernel compiles already use every core. (One per 8 cores left 3 profiles on a
    16-core H200 host to 2 processes, the worker building two engines in turn: slower than one
    process building all three, which reuses its warm caches.)"""
    if settings.build_workers:
        return max(1, min(settings.build_workers, jobs))
    if settings.device.type != "cuda":
        return 1
    return max(1, min(jobs, (os.cpu_count() or 1) // 4))


class WorkerPool:
    """Worker processes for engine builds. They start when the pool is made, before the jobs are
    known (`prestarted`: while the caller traces), and import torch and Inductor and start their
    compile pools meanwhile; `submit` then hands each job to a process of its own. `close()` (also on
    an error in the caller) stops every worker still running: no build outlives the compile call."""

    def __init__(self, settings: CompileSettings, workers: int) -> None:
        self._settings = settings
        self._dir = tempfile.TemporaryDirectory(prefix="flexrt-workers-")
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._closed = False
        self._jobs = 0
        self._err_paths: dict[int, str] = {}  # each worker's stderr file, by pid
        # each building process's share of the cores for Inductor's compile pool, not all of them each
        # (three BERT profiles on 32 cores: 33.5 s with 8 threads per worker against 37.9 with 32)
        self._compile_threads = max(1, (os.cpu_count() or 1) // max(1, workers))
        slots = max(1, workers - 1)
        self._ready: queue.Queue[tuple[int, subprocess.Popen[bytes] | None]] = queue.Queue()
        for slot in range(slots):
            self._ready.put((slot, self._spawn(slot)))
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=slots, thread_name_prefix="flexrt-build")
        self._futures: list[concurrent.futures.Future[EngineBinary | None]] = []

    def submit(self, jobs: Sequence[EngineJob]) -> None:
        """Build `jobs` in the workers, each in a process of its own (at most one per slot at once)."""
        for job in jobs:
            path = os.path.join(self._dir.name, f"job{self._jobs}.pt")
            self._jobs += 1
            # saved here, before its thread runs; with the caller's Inductor settings, which the
            # worker builds under (a user's `torch._inductor.config` changes apply there too)
            torch.save((job, self._settings, process_inductor_config()), path)
            stage_started(logger, f"engine {job.stage} (worker)")
            self._futures.append(self._pool.submit(self._run, path, job))

    def _run(self, path: str, job: EngineJob) -> EngineBinary | None:
        slot, proc = self._ready.get()
        try:
            if self._closed:
                return None
            if proc is None or proc.poll() is not None:  # the slot's process was used, or died waiting
                proc = self._spawn(slot)
            if proc is None:
                logger.warning("build worker for %s did not start; building it here", job.label)
                return None
            return self._await(proc, path, job)
        finally:
            self._ready.put((slot, None))

    def results(self) -> list[EngineBinary | None]:
        """The workers' engines, in submission order (None where one failed); waits for all of them."""
        try:
            return [f.result() for f in self._futures]
        finally:
            self.close()

    def close(self) -> None:
        self._closed = True
        for proc in list(self._procs):
            _kill(proc)
        self._pool.shutdown(wait=True)
        for proc in list(self._procs):  # spares that never got a job
            proc.wait()
        self._procs.clear()
        self._dir.cleanup()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self, slot: int) -> subprocess.Popen[bytes] | None:
        """A worker process, waiting for its job on stdin. Each worker slot has an Inductor cache
        directory of its own: builds that share kernels race in a shared one (on the H200 a worker
        found another's `.cubin.o` gone)."""
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        env = dict(os.environ)
        env["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(cache_dir(), f"flexrt-worker-{slot}")
        env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(self._compile_threads))  # a user's own setting stays
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # where flexrt imports from
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        # stderr to a file, not a pipe: the worker's compile pool outlives it by a moment and would hold
        # a pipe open, so that waiting for the pipe's end would wait for the pool's shutdown too
        err_path = os.path.join(self._dir.name, f"worker{len(self._err_paths)}.err")
        try:
            with open(err_path, "wb") as err:
                proc = subprocess.Popen([sys.executable, "-m", "flexrt.build.worker", str(self._settings.device)],
                                        env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                                        start_new_session=True)
        except OSError as e:
            logger.debug("build worker did not start: %s", e)
            return None
        self._err_paths[proc.pid] = err_path
        self._procs.add(proc)
        logger.debug("build worker started (slot %d, pid %d)", slot, proc.pid)
        if self._closed:  # close() ran meanwhile
            _kill(proc)
        return proc

    def _await(self, proc: subprocess.Popen[bytes], path: str, job: EngineJob) -> EngineBinary | None:
        """Give `proc` its job and wait for its engine."""
        start, sent_at = time.perf_counter(), time.time()
        out = path + ".out"
        try:
            proc.communicate(input=path.encode() + b"\n", timeout=WORKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
        finally:
            _kill(proc)  # a timed-out worker, or what a finished one left running (its compile pool)
            proc.wait()
            self._procs.discard(proc)
        if self._closed:
            return None
        if proc.returncode != 0 or not os.path.exists(out + ".json"):
            with open(self._err_paths[proc.pid], "rb") as f:
                tail = f.read().decode(errors="replace").strip().splitlines()[-3:]
            logger.warning("build worker for %s failed (exit %d: %s); building it here", job.label, proc.returncode,
                           " | ".join(tail))
            return None
        with open(out + ".json") as f:
            meta = json.load(f)
        with open(out, "rb") as f:
            blob = f.read()  # EngineBinary.to_bytes(), as the worker wrote it
        engine = EngineBinary.from_bytes(blob, key=meta["key"])
        if job.segment is not None:  # the worker wrote the disk cache; this process remembers it in memory
            cache.put(job.segment, meta["key"].encode("ascii"), None)
        cache.put(meta["key"], blob, None)
        cache.record(hit=not meta["built"])
        stage_done(logger, f"export {job.stage}", meta["export_s"], "in a worker")
        stage_done(logger, f"engine {job.stage}", time.perf_counter() - start,
                   f"in a worker: {_timeline(meta.get('timeline', {}), sent_at, meta.get('written_at'))}"
                   f"build {meta['engine_s']:.1f} s: {meta.get('times', '')}")
        return engine


def _timeline(t: Mapping[str, float], sent_at: float, written_at: float | None) -> str:
    """Where a worker's time went before and after its build, from the wall-clock times it reports."""
    if not {"started_at", "imported_at", "ready_at", "loaded_at"} <= t.keys():
        return ""
    waited = max(0.0, t["ready_at"] - sent_at)  # the job waited for the worker's warm-up
    parts = [f"imports {t['imported_at'] - t['started_at']:.1f} s", f"warm-up {t['ready_at'] - t['imported_at']:.1f} s",
             f"job waited {waited:.1f} s for it", f"job load {t['loaded_at'] - max(t['job_at'], sent_at):.1f} s"]
    if written_at is not None:
        parts.append(f"engine back {time.time() - written_at:.1f} s after written")
    return ", ".join(parts) + "; "


def prestarted(settings: CompileSettings, profiles: int) -> WorkerPool | contextlib.nullcontext[None]:
    """Workers for the engines of `profiles` profiles, started now so that their imports and warm-up
    overlap the caller's trace; a null context where one process will build everything."""
    workers = worker_count(settings, profiles)
    return WorkerPool(settings, workers) if profiles > 1 and workers > 1 else contextlib.nullcontext()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """The worker and everything it started (Inductor's compile workers, the C++ compiler): its group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
