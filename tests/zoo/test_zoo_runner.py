"""The zoo's runner and report on a CPU without compiling: missing libraries are a status, shards
cover the zoo exactly once, and the merge writes the table, the chart and the geomean."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.zoo.models import ZOO  # noqa: E402
from benchmarks.zoo.report import merge  # noqa: E402
from benchmarks.zoo.runner import shard_models  # noqa: E402


def test_zoo_covers_the_issue_families() -> None:
    assert len(ZOO) >= 40
    families = {m.family for m in ZOO.values()}
    assert {"cnn", "vit", "segmentation", "detection", "encoder", "decoder", "encoder-decoder", "speech",
            "clip"} <= families
    assert {m.library for m in ZOO.values()} == {"torchvision", "timm", "transformers"}


def test_shards_partition_the_zoo() -> None:
    shards = [shard_models(f"{k}/7") for k in range(1, 8)]
    flat = [m for s in shards for m in s]
    assert sorted(flat) == sorted(ZOO) and len(flat) == len(set(flat))


def test_missing_library_is_a_status_and_merge_writes_the_report(tmp_path: Path) -> None:
    try:
        import torchvision  # noqa: F401
        pytest.skip("torchvision is installed here")
    except Exception:  # noqa: BLE001 - on the CPU image torchvision is absent or fails to import
        pass
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.zoo", "--shard", "1/1", "--out", str(out), "--models", "tv_resnet18"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((out / "shard-1-of-1.json").read_text())
    assert rows[0]["status"] == "skipped: needs torchvision", rows
    timed = {"model": "hf_bert", "family": "encoder", "library": "transformers", "status": "ok", "build_seconds": 30.0,
             "segments": {"engine": 1, "torch": 0}, "max_error": 1e-3,
             "latency_ms": {"opt": {"flexrt": 1.0, "eager": 2.0, "compile_dynamic": 1.5},
                            "max": {"flexrt": 4.0, "eager": 4.0, "compile_dynamic": 5.0}},
             "ratio": {"opt": {"ratio": 1.0 / 1.5, "best_peer": "compile_dynamic"},
                       "max": {"ratio": 1.0, "best_peer": "eager"}}}
    (out / "extra.json").write_text(json.dumps([timed]))
    results = tmp_path / "results"
    merge([str(out / "shard-1-of-1.json"), str(out / "extra.json")], str(results))
    data = json.loads((results / "zoo.json").read_text())
    assert data["summary"]["models"] == 2
    assert abs(data["summary"]["geomean_flexrt_over_best_peer"] - (1.0 / 1.5) ** 0.5) < 1e-9
    md = (results / "zoo.md").read_text()
    assert "skipped: needs torchvision" in md and "| hf_bert |" in md
    assert (results / "zoo.png").stat().st_size > 1000


def test_a_check_that_could_not_fail_is_not_called_ok() -> None:
    """A model whose eager float16 is itself far from float32 passes the bound whatever flexrt gives:
    that is 'unverified', not 'ok'; a shape over its bound is a mismatch."""
    from benchmarks.zoo.report import check_status

    good = {"ok": True, "max_error": 1e-3, "eager_error": 1e-3}
    assert check_status([good, good]) == "ok"
    assert check_status([good, {"ok": True, "max_error": 1.0, "eager_error": 1.0}]).startswith("unverified")
    assert check_status([good, {"ok": True, "max_error": 0.05, "eager_error": 0.5}]) == "ok"  # flexrt itself close
    assert check_status([good, {"ok": False, "max_error": 0.5, "eager_error": 1e-3}]) == "mismatch"


def test_a_failure_records_its_python_frames_and_first_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """A torch error raised in C++ carries its C++ frames in its message, so the tail of format_exc
    was all C++ frames: the result keeps the Python frames and the message's head apart."""
    pytest.importorskip("transformers")
    import torch

    from benchmarks.zoo import check, worker

    def stage_that_fails(*args: object, **kwargs: object) -> None:
        a = torch.empty(2, 3)
        torch.ops.aten.mm.default(a, a)  # raised in C++

    monkeypatch.setattr(check, "compile_flexrt", stage_that_fails)
    result = worker.run_model("hf_bert", torch.device("cpu"), smoke=True, peers=None)
    assert result["status"] == "failed"
    assert result["error_head"].startswith("RuntimeError: mat1 and mat2 shapes cannot be multiplied")
    assert "frame #" not in result["error_head"] and "frame #" not in result["traceback"]
    assert "in run_model" in result["traceback"] and "in stage_that_fails" in result["traceback"]
    assert "torch.ops.aten.mm.default(a, a)" in result["traceback"]


def test_whisper_full_config_builds_and_runs() -> None:
    """The full (non-smoke) Whisper config: WhisperConfig's default 6 decoder heads do not divide
    d_model 512, and the decoder is built too, so construction failed on the GPU run."""
    pytest.importorskip("transformers")
    import torch

    entry = ZOO["hf_whisper_encoder"]
    model = entry.build(False).eval()
    (features,) = entry.make_inputs({"batch": 1, "mels": 80, "frames": 3000}, torch.float32, torch.device("cpu"), 0,
                                    False)[1].values()
    with torch.no_grad():
        out = model(input_features=features)
    assert out.last_hidden_state.shape == (1, 1500, 512)


def test_a_model_that_cannot_be_built_is_a_status(monkeypatch: pytest.MonkeyPatch) -> None:
    """A config the library rejects (as Whisper's was) was raised out of the worker: 'crashed'."""
    import dataclasses

    import torch

    from benchmarks.zoo import worker

    def reject(smoke: bool) -> torch.nn.Module:
        raise ValueError("embed_dim must be divisible by num_heads")

    monkeypatch.setitem(worker.ZOO, "hf_bert", dataclasses.replace(ZOO["hf_bert"], build=reject))
    result = worker.run_model("hf_bert", torch.device("cpu"), smoke=False, peers=None)
    assert result["status"] == "failed at build"
    assert result["error_head"] == "ValueError: embed_dim must be divisible by num_heads"
    assert "in reject" in result["traceback"]


def test_an_unverifiable_float16_check_is_redone_in_float32() -> None:
    """The float32 recheck compiles the model in float32 and checks the five shapes against eager;
    its outcome, not the float16 bound, gives the status."""
    import torch

    from benchmarks.zoo import check
    from benchmarks.zoo.models import ZOO
    from benchmarks.zoo.report import float32_status

    entry = ZOO["hf_bert"]
    torch.manual_seed(0)
    reference = check.fp32_reference(entry.build(True).eval())
    rows = check.recheck_float32(entry, reference, True, torch.device("cpu"))
    assert len(rows) == 5 and all(r["ok"] and r["max_error"] < 1e-3 for r in rows), rows
    assert float32_status(rows).startswith("ok: checked in float32")
    assert float32_status([*rows[:4], {**rows[4], "ok": False}]) == "mismatch: in float32"
