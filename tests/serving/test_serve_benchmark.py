"""`python -m benchmarks.serve --smoke` runs end to end on a CPU and writes a sound report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("ray")
pytest.importorskip("aiohttp")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.serve
@pytest.mark.slow
@pytest.mark.parametrize(("via", "clients"), [("http", 1), ("handle", 1), ("handle", 2), ("direct", 2)])
def test_serve_benchmark_smoke(tmp_path, via, clients) -> None:
    """Over HTTP (the v2 protocol through Ray's proxy), through a DeploymentHandle (no proxy) and over
    HTTP straight to the replicas' own ports (direct ingress), from this process or from client
    processes (Ray tasks through a handle, plain processes over HTTP) sharing the load."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-m", "benchmarks.serve", "--smoke", "--via", via, "--clients", str(clients), "--out", str(tmp_path)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    stem = {"http": "tiny_smoke", "handle": "tiny_handle_smoke", "direct": "tiny_direct_smoke"}[via]
    result = json.loads((tmp_path / f"{stem}.json").read_text())
    assert result["via"] == via and result["clients"] == clients
    assert [v["variant"] for v in result["variants"]] == ["flexrt", "flexrt_nobatch", "eager"]
    for v in result["variants"]:
        assert v["check"].startswith("ok"), v
        (rate,) = v["rates"]
        assert rate["sent"] > 0 and rate["ok"] == rate["sent"], rate  # every request answered
        assert 0 < rate["p50_ms"] <= rate["p99_ms"]
    nobatch = result["variants"][1]["rates"][0]
    assert nobatch["calls_per_request"] == 1.0
    assert all(v["rates"][0]["replica_ms_per_request"] > 0 for v in result["variants"])  # accounted on both paths
    table = (tmp_path / f"{stem}.md").read_text()
    assert table.count("| flexrt | 40 |") == 1 and table.count("| flexrt_nobatch | 40 |") == 1  # one row per rate
    assert len(result["variants"][0]["replicas"]) == 1 and result["variants"][0]["replicas"][0]["startup_s"] > 0
    assert (tmp_path / f"{stem}.png").stat().st_size > 0


@pytest.mark.serve
@pytest.mark.slow
def test_serve_benchmark_searches_the_rate_within_a_p99_bound(tmp_path) -> None:
    """`--p99-ms`: each variant's rates are searched (doubling from the first while the bound holds),
    the highest that held is reported, and the table says it; `--warmup-s` load comes first, apart."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-m", "benchmarks.serve", "--smoke", "--variants", "flexrt", "--rates", "10",
                        "--p99-ms", "5000", "--search-steps", "3", "--warmup-s", "1", "--out", str(tmp_path)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    result = json.loads((tmp_path / "tiny_p99_smoke.json").read_text())
    (v,) = result["variants"]
    offered = [r["offered_rps"] for r in v["rates"]]
    assert offered == [10, 20, 40], offered  # a tiny model on CPU meets a 5 s bound at each: it doubles
    assert v["warmup"]["offered_rps"] == 10 and v["warmup"]["ok"] > 0  # the warm-up, not among the rates
    assert v["warmup_rounds"] == 1  # within the p99 bound at once: not repeated
    assert v["max_rps_at_p99"] == 40 and all(r["ok"] == r["sent"] for r in v["rates"])
    assert "| flexrt | 40 | 1.00x |" in (tmp_path / "tiny_p99_smoke.md").read_text()
