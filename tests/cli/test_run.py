"""`flexrt run` and `flexrt export-onnx`: flexrt against eager and ONNX Runtime from the command line (CPU)."""

from __future__ import annotations

import re

import pytest
import torch

import flexrt
from flexrt.cli import main

MODELS = '''
import torch


class Heads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(6, 6)
        self.head = torch.nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.body(x))
        return {"logits": self.head(h), "hidden": h}


def make():
    torch.manual_seed(0)
    return Heads()


def make_other():
    torch.manual_seed(1)
    return Heads()
'''

RANGE = "x=1x6/2x6/5x6"


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    (tmp_path / "run_models.py").write_text(MODELS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_run_a_model_against_eager_and_onnxruntime(models_dir, capsys):
    assert main(["run", "run_models:make", "--input", RANGE, "--random-shapes", "2", "--onnxrt"]) == 0
    out = capsys.readouterr().out
    for text in ("pytorch", "onnxrt", "logits", "hidden", "p0 max: x=5x6", "PASSED"):
        assert text in out, text
    assert out.count("PASS") >= 5  # 2 references x 2 outputs, and the summary


def test_run_an_artifact_against_its_source_and_another_model(models_dir, capsys):
    import run_models

    model = run_models.make().eval()
    spec = flexrt.Input(min_shape=(1, 6), opt_shape=(2, 6), max_shape=(5, 6), name="x")
    with_source, without = str(models_dir / "with_source.ep"), str(models_dir / "plain.ep")
    flexrt.save(flexrt.compile(model, inputs=[spec], on_out_of_range="eager"), with_source)
    flexrt.save(flexrt.compile(model, inputs=[spec]), without)
    assert main(["run", with_source, "--random-shapes", "1"]) == 0
    assert "PASSED" in capsys.readouterr().out
    assert main(["run", without]) == 2
    assert "saved without its source program" in capsys.readouterr().err
    assert main(["run", without, "--model", "run_models:make", "--random-shapes", "1"]) == 0
    capsys.readouterr()
    # another model's weights: every output differs, so the run fails with exit code 1
    assert main(["run", without, "--model", "run_models:make_other", "--onnxrt", "--random-shapes", "1"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and re.search(r"onnxrt\s+│\s+logits.*FAIL", out)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "run_models:make"], "give its input ranges with --input"),
        (["run", "run_models:make", "--input", RANGE, "--random-shapes", "-1"], "--random-shapes must be >= 0"),
        (["run", "run_models:make", "--input", RANGE, "--atol", "-1"], "--atol must be >= 0"),
        (["run", "missing.ep"], "does not exist"),
        (["run", "run_models:make", "--input", RANGE, "--model", "run_models:make"], "--model is for an artifact"),
        (["run", "run_models:nothing", "--input", RANGE], "has no callable 'nothing'"),
        (["export-onnx", "run_models:make", "--input", "x=1x6/2x6/5x6", "--input", "x=1x6", "-o", "m.onnx"], "repeated: x"),
    ],
)
def test_usage_mistakes_exit_2(models_dir, capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_export_onnx_prints_tensorrt_command_lines(models_dir, capsys):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    path = str(models_dir / "heads.onnx")
    assert main(["export-onnx", "run_models:make", "--input", RANGE, "-o", path]) == 0
    out = capsys.readouterr().out
    assert f"trtexec --onnx={path} --minShapes=x:1x6 --optShapes=x:2x6 --maxShapes=x:5x6" in out
    assert f"polygraphy run {path} --trt --onnxrt --trt-min-shapes x:[1,6] --trt-opt-shapes x:[2,6] --trt-max-shapes x:[5,6]" in out
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "hidden"]
    import run_models

    model = run_models.make().eval()
    for batch in (1, 3, 5):
        x = torch.randn(batch, 6)
        logits, hidden = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            ref = model(x)
        torch.testing.assert_close(torch.from_numpy(logits), ref["logits"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.from_numpy(hidden), ref["hidden"], rtol=1e-5, atol=1e-5)
