"""Engines of several profiles built side by side in worker processes (`build_workers`)."""

from __future__ import annotations

import logging
import os
import sys
import time

import pytest
import torch
from helpers import sweep
from models import ResidualNet, SelfAttention

import flexrt
from flexrt.build import cache as engine_cache
from flexrt.build import workers
from flexrt.errors import InputSpecError


def _compile(build_workers: int, seed: int, **options) -> tuple[torch.nn.Module, torch.nn.Module, list[flexrt.Input]]:
    """SelfAttention over two profiles of the batch."""
    torch.manual_seed(seed)  # other weights, other engines: nothing comes from the engine cache
    model = SelfAttention().eval()
    specs = [flexrt.Input(min_shape=(1, 4, 64), opt_shape=(4, 16, 64), max_shape=(8, 32, 64))]
    profiles = []
    for lo, hi in [(1, 3), (4, 8)]:
        p = flexrt.Profile()
        p.add("x", min=(lo, 4, 64), opt=(hi, 16, 64), max=(hi, 32, 64))
        profiles.append(p)
    compiled = flexrt.compile(model, ir="dynamo", arg_inputs=specs, profiles=profiles, build_workers=build_workers,
                              **options)
    return compiled, model, specs


@pytest.mark.slow
def test_profiles_built_in_workers_match_eager(caplog) -> None:
    before = engine_cache.stats()
    with caplog.at_level(logging.INFO, logger="flexrt"):
        compiled, model, specs = _compile(build_workers=2, seed=1)
    assert any("in a worker" in r.getMessage() for r in caplog.records)  # profile 1 was built in another process
    assert not any("failed" in r.getMessage() for r in caplog.records)
    # the worker's own Inductor timers come back with its stage (where a worker's build time goes)
    assert any("in a worker" in getattr(r, "detail", "") and "AOTInductor" in r.detail for r in caplog.records)
    # and its timeline: imports, warm-up, how long the job waited for it, the engine's way back
    assert any("job waited" in getattr(r, "detail", "") and "engine back" in r.detail for r in caplog.records)
    after = engine_cache.stats()
    assert after["misses"] - before["misses"] == 2  # the worker's build is counted here too
    assert sweep(compiled, model, specs) >= 5
    for batch in (1, 3, 4, 8):  # each profile at its own bounds
        x = torch.randn(batch, 9, 64)
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_workers_start_before_the_trace_and_stop_when_unused(caplog, tmp_path) -> None:
    """Workers start before the trace (their imports overlap it); a second compile that finds every
    engine in the cache gives them no job, and none outlives the compile; one that finds the whole
    module in the module cache starts none."""
    def started() -> list[tuple[int, int]]:  # (record index, pid) of each worker start
        return [(i, int(r.getMessage().rsplit(" ", 1)[1].rstrip(")"))) for i, r in enumerate(caplog.records)
                if r.getMessage().startswith("build worker started")]

    with caplog.at_level(logging.DEBUG, logger="flexrt"):
        _compile(build_workers=2, seed=5, cache_dir=str(tmp_path))
        trace = next(i for i, r in enumerate(caplog.records) if getattr(r, "stage_started", None) == "trace")
        assert [i for i, _ in started()] and started()[0][0] < trace
        for entry in tmp_path.glob("module-*.engine"):
            entry.unlink()  # the engines stay; the trace runs again
        caplog.clear()
        before = engine_cache.stats()
        compiled, model, specs = _compile(build_workers=2, seed=5, cache_dir=str(tmp_path))
        assert engine_cache.stats()["misses"] == before["misses"]  # both engines from the cache
        pids = [pid for _, pid in started()]
        assert pids  # started, then stopped unused
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert sweep(compiled, model, specs) >= 5
        caplog.clear()
        compiled, model, specs = _compile(build_workers=2, seed=5, cache_dir=str(tmp_path))
        assert not started() and "reused from the module cache" in caplog.text
    assert sweep(compiled, model, specs) >= 5


def _no_python_for_workers(monkeypatch) -> None:
    """Build workers cannot start (their interpreter is missing); other subprocesses, such as
    Inductor's compile pool starting in this test, still can (patching sys.executable broke those)."""
    real = workers.subprocess.Popen

    def popen(args, *rest, **kwargs):
        if isinstance(args, list) and args[1:3] == ["-m", "flexrt.build.worker"]:
            args = ["/nonexistent/python", *args[1:]]
        return real(args, *rest, **kwargs)

    monkeypatch.setattr(workers.subprocess, "Popen", popen)


@pytest.mark.slow
def test_a_failed_worker_is_built_here(caplog, monkeypatch) -> None:
    """A worker that cannot run (here: no Python to start) costs time, never the build."""
    _no_python_for_workers(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="flexrt"):
        compiled, model, specs = _compile(build_workers=2, seed=2)
    assert any("building it here" in r.getMessage() for r in caplog.records)
    assert sweep(compiled, model, specs) >= 5


@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_build_workers_must_be_a_count(value) -> None:
    with pytest.raises(InputSpecError, match="build_workers"):
        flexrt.compile(SelfAttention().eval(), ir="dynamo", arg_inputs=[flexrt.Input(shape=(1, 4, 64))], build_workers=value)


@pytest.mark.cuda
def test_cuda_profiles_built_in_workers_match_eager(caplog) -> None:
    """On the GPU, with the lowering's fused cuDNN convolutions (whose shape functions a worker must
    register itself): two profiles, the second built in a worker, both match eager."""
    torch.manual_seed(3)
    model = ResidualNet().eval().cuda().half()
    specs = [flexrt.Input(min_shape=(1, 3, 32, 32), opt_shape=(4, 3, 32, 32), max_shape=(8, 3, 32, 32), dtype=torch.half)]
    profiles = []
    for lo, hi in [(1, 3), (4, 8)]:
        p = flexrt.Profile()
        p.add("x", min=(lo, 3, 32, 32), opt=(hi, 3, 32, 32), max=(hi, 3, 32, 32))
        profiles.append(p)
    with caplog.at_level(logging.INFO, logger="flexrt"):
        compiled = flexrt.compile(model, ir="dynamo", arg_inputs=specs, profiles=profiles, build_workers=2,
                                  enabled_precisions={torch.half})
    assert any("in a worker" in r.getMessage() for r in caplog.records)
    assert not any("building it here" in r.getMessage() for r in caplog.records)
    assert sweep(compiled, model, specs, device="cuda", precision=torch.half) >= 5


def test_closing_the_pool_stops_running_workers(tmp_path, monkeypatch) -> None:
    """When the caller's own build fails, the compile stops: no worker keeps building after it."""
    hang = tmp_path / "hang.sh"
    hang.write_text("#!/bin/sh\nsleep 120\n")
    hang.chmod(0o755)
    monkeypatch.setattr(workers.sys, "executable", str(hang))
    gm = torch.fx.symbolic_trace(torch.nn.Linear(2, 2))
    jobs = [workers.EngineJob(gm, [torch.randn(1, 2)], [None], False, None, f"job {i}", f"job {i}") for i in range(2)]
    settings = flexrt.settings.build_settings({})
    pool = workers.WorkerPool(settings, workers=3)
    pool.submit(jobs)
    deadline = time.monotonic() + 30
    while len(pool._procs) < 2 and time.monotonic() < deadline:  # both workers started
        time.sleep(0.05)
    procs = list(pool._procs)
    assert len(procs) == 2
    start = time.monotonic()
    pool.close()
    assert time.monotonic() - start < 10
    assert all(p.poll() is not None for p in procs)


def test_a_worker_that_fails_says_why_and_its_job_comes_back(tmp_path, monkeypatch, caplog) -> None:
    """A worker that exits with an error: its stderr's last lines are in the warning, and the job is
    returned unbuilt (None) for the caller to build."""
    failing = tmp_path / "fail.sh"
    failing.write_text("#!/bin/sh\nread job\necho \"RuntimeError: boom in $job\" >&2\nexit 3\n")
    failing.chmod(0o755)
    monkeypatch.setattr(workers.sys, "executable", str(failing))
    gm = torch.fx.symbolic_trace(torch.nn.Linear(2, 2))
    job = workers.EngineJob(gm, [torch.randn(1, 2)], [None], False, None, "job 1", "job 1")
    with caplog.at_level(logging.WARNING, logger="flexrt"):
        pool = workers.WorkerPool(flexrt.settings.build_settings({}), workers=2)
        pool.submit([job])
        assert pool.results() == [None]
    assert "build worker for job 1 failed (exit 3: RuntimeError: boom in " in caplog.text


_READ_JOB = """
import sys, torch
from flexrt.build.worker import read_job
job, settings = read_job(sys.argv[1])
print(job.label, torch._inductor.config.aot_inductor.compile_wrapper_opt_level, torch._inductor.config.max_autotune_gemm)
"""


def test_a_worker_builds_under_the_callers_inductor_config(tmp_path, monkeypatch) -> None:
    """A user's `torch._inductor.config` changes reach the build workers: the job carries the caller's
    settings and the worker takes them before building (one profile or three, the same engine)."""
    import subprocess

    python = sys.executable
    probe = tmp_path / "probe.sh"  # a worker that only says where its job is
    probe.write_text(f"#!/bin/sh\nread job\necho \"$job\" > {tmp_path / 'job.tmp'}\nmv {tmp_path / 'job.tmp'} {tmp_path / 'job'}\n")
    probe.chmod(0o755)
    monkeypatch.setattr(workers.sys, "executable", str(probe))
    gm = torch.fx.symbolic_trace(torch.nn.Linear(2, 2))
    job = workers.EngineJob(gm, [torch.randn(1, 2)], [None], False, None, "job 1", "job 1")
    with torch._inductor.config.patch({"aot_inductor.compile_wrapper_opt_level": "O0", "max_autotune_gemm": True}):
        with workers.WorkerPool(flexrt.settings.build_settings({}), workers=2) as pool:
            pool.submit([job])
            deadline = time.monotonic() + 30
            while not (tmp_path / "job").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            path = (tmp_path / "job").read_text().strip()
            run = subprocess.run([python, "-c", _READ_JOB, path], capture_output=True, text=True, timeout=300)
            pool.results()
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["job", "1", "O0", "True"]


@pytest.mark.parametrize("user_threads", [None, "3"])
def test_each_worker_compiles_with_its_share_of_the_cores(tmp_path, monkeypatch, user_threads) -> None:
    """A worker's Inductor compile pool gets the cores divided among the building processes (not all
    of them in each), unless the user set TORCHINDUCTOR_COMPILE_THREADS."""
    report = tmp_path / "threads"
    probe = tmp_path / "probe.sh"
    probe.write_text(f"#!/bin/sh\necho \"$TORCHINDUCTOR_COMPILE_THREADS\" >> {report}\n")
    probe.chmod(0o755)
    monkeypatch.setattr(workers.sys, "executable", str(probe))
    if user_threads:
        monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", user_threads)
    with workers.WorkerPool(flexrt.settings.build_settings({}), workers=3):
        deadline = time.monotonic() + 30
        while (not report.exists() or len(report.read_text().split()) < 2) and time.monotonic() < deadline:
            time.sleep(0.05)
    want = user_threads or str(max(1, (os.cpu_count() or 1) // 3))
    assert report.read_text().split() == [want, want]


@pytest.mark.slow
def test_failed_workers_then_failed_builds_run_in_pytorch_when_asked(caplog, monkeypatch) -> None:
    """Workers that fail hand their jobs back; with on_build_failure='eager' jobs whose build then
    fails here too run in PyTorch, every profile still answering as eager does."""
    import flexrt.build.program as program
    from flexrt.errors import CompilationError

    def fail(*args, **kwargs):
        raise CompilationError("build: AOTInductor failed: boom")

    _no_python_for_workers(monkeypatch)
    monkeypatch.setattr(program, "compile_engine", fail)
    with caplog.at_level(logging.WARNING, logger="flexrt"):
        compiled, model, specs = _compile(build_workers=2, seed=4, on_build_failure="eager")
    assert "building it here" in caplog.text and "on_build_failure='eager'" in caplog.text
    assert all(s.kind == "torch" for p in compiled.engine.state.programs for s in p.segments)
    assert sweep(compiled, model, specs) >= 5
    with pytest.raises(CompilationError, match="boom"):  # without it, the build's error is the compile's
        _compile(build_workers=2, seed=4)
