"""The console script: inspect (tables and JSON, no native code loaded), compile, demo."""

from __future__ import annotations

import json
import os

import pytest
import torch

import flexrt
from flexrt.cli import main
from flexrt.format import FORMAT_VERSION


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, zoo):
    path = str(tmp_path_factory.mktemp("cli") / "split.ep")
    flexrt.save(zoo("split", min_block_size=3).module, path)
    return path


def test_inspect_tables(artifact, capsys):
    assert main(["inspect", artifact]) == 0
    out = capsys.readouterr().out
    for text in (f"flexrt-artifact v{FORMAT_VERSION}", "torch " + torch.__version__, "Inputs and outputs", "Profiles", "Segments",
                 "PyTorch", "nonzero", "output shape depends on tensor data", "(2, 16)", "(16, 16)"):
        assert text in out, text


def test_inspect_json_matches_the_artifact(artifact, capsys):
    assert main(["inspect", artifact, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["inputs"][0]["name"] == "x" and info["profiles"][0]["inputs"]["x"]["max"] == [16, 16]
    kinds = [s["kind"] for s in info["profiles"][0]["segments"]]
    assert "torch" in kinds and "engine" in kinds
    assert info["file_bytes"] == os.path.getsize(artifact)
    assert info["device"]["type"] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_inspect_bad_file_is_a_message_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.ep"
    bad.write_text("not an archive")
    assert main(["inspect", str(bad)]) == 2
    assert "flexrt: error:" in capsys.readouterr().err


def test_compile_command(tmp_path, capsys, monkeypatch):
    (tmp_path / "tiny_models.py").write_text(
        "import torch\n\ndef make():\n    torch.manual_seed(0)\n    return torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.ReLU())\n"
    )
    monkeypatch.chdir(tmp_path)
    out = str(tmp_path / "tiny.ep")
    assert main(["compile", "tiny_models:make", "--input", "x=1x6/2x6/4x6", "-o", out]) == 0
    m = flexrt.load(out).module()
    import tiny_models

    ref = tiny_models.make().eval()
    x = torch.randn(3, 6)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x))
