"""The benchmark entry points run end to end on a CPU (a stand-in model, tiny shapes): their results
are files the README shows, so a broken check or report should fail here, not on the GPU."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the checkout, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import bench, profiles  # noqa: E402


@pytest.mark.slow
def test_bench_smoke_writes_every_peer_checked_against_eager(tmp_path: Path) -> None:
    result = bench.run("expand_reshape", smoke=True, device="cpu", out_dir=tmp_path)
    for suffix in ("json", "md", "png"):
        assert (tmp_path / f"expand_reshape.{suffix}").stat().st_size > 0
    assert "expand_reshape" in (tmp_path / "README.md").read_text()
    saved = json.loads((tmp_path / "expand_reshape.json").read_text())
    assert saved["peers"].keys() == result["peers"].keys()
    flexrt = saved["peers"]["flexrt"]
    assert flexrt["status"] == "ok"
    assert set(flexrt["shapes"]) == {str(s) for s in saved["shapes"]}
    for peer, entry in saved["peers"].items():
        for size, shape in entry.get("shapes", {}).items():
            assert not shape["rel_err_flag"], (peer, size, shape["rel_err"])
            assert shape["median_ms"] > 0
    assert flexrt["cold_start"]["status"] == "ok", flexrt["cold_start"]


@pytest.mark.slow
def test_profiles_benchmark_checks_each_config_against_eager(tmp_path: Path) -> None:
    result = profiles.run("cpu", str(tmp_path), repeats=2)
    assert set(result["configs"]) == {"one_profile_1_128", "three_profiles_seed"}
    for config in result["configs"].values():
        assert set(config["rel_err"]) == set(profiles.BATCHES)
        assert max(config["rel_err"].values()) < config["tolerance"]
    assert "Largest relative error" in (tmp_path / "profiles_cpu.md").read_text()


def test_time_calls_budgets_warm_up_and_timing_by_time() -> None:
    """A fast call gets more timed calls than the minimum (as many as fill rep_ms, capped), and a
    slow first call (a compile, say) does not shrink that budget."""
    from benchmarks import timing

    calls: list[int] = []

    def fn(inputs: tuple[torch.Tensor, ...]) -> None:
        if not calls:
            time.sleep(0.05)  # the first call is slow, as a compile would be
        calls.append(1)
        time.sleep(0.0002)

    x = (torch.zeros(1),)
    stats = timing.time_calls(fn, [x], torch.device("cpu"), warmup=3, iters=10, warmup_ms=20, rep_ms=100, max_iters=1000)
    assert 40 < stats["timed_calls"] <= 1000  # about 100 ms / 0.25 ms; counting the slow first call gives 10
    assert stats["warmup_calls"] >= 3 + 5
    assert len(calls) == stats["warmup_calls"] + stats["timed_calls"]
    assert stats["median_ms"] >= 0.2
    capped = timing.time_calls(fn, [x], torch.device("cpu"), warmup=1, iters=2, warmup_ms=0, rep_ms=1000, max_iters=7)
    assert capped["timed_calls"] == 7
    plain = timing.time_calls(fn, [x], torch.device("cpu"), warmup=2, iters=4)
    assert (plain["warmup_calls"], plain["timed_calls"]) == (2, 4)
