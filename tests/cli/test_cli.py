"""The console script: inspect (tables and JSON, no native code loaded), compile, demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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


def test_help_imports_no_torch_and_is_quick():
    code = "import sys, time; t = time.perf_counter(); from flexrt.cli import main\n" \
           "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n" \
           "print('torch' in sys.modules, time.perf_counter() - t)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    torch_loaded, seconds = proc.stdout.strip().splitlines()[-1].split()
    assert torch_loaded == "False" and float(seconds) < 1.0, proc.stdout


@pytest.mark.parametrize("argv", [
    ["compile", "no_such_module:make", "--input", "x=1x3", "-o", "out.ep"],  # a wrong module:factory
    ["compile", "no_colon_here", "--input", "x=1x3", "-o", "out.ep"],
    ["compile", "m:f", "--input", "x=1,3,224,224", "-o", "out.ep"],  # a comma-separated shape
    ["compile", "m:f", "--input", "x=1x3/2x3", "-o", "out.ep"],  # two shapes
    ["compile", "m:f", "--input", "x=1x3:float12", "-o", "out.ep"],  # an unknown dtype
    ["compile", "m:f", "--input", "x=1x3", "--precision", "fp64", "-o", "out.ep"],
    ["bench", "nosuchmodel"],  # gone from the CLI: benchmarks run from a checkout
    ["inspect", "/no/such/file.ep"],
    ["demo", "--embed-dim", "100"],  # not a multiple of 12
    ["nosuchcommand"],
])
def test_user_mistakes_are_one_line_and_exit_2(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own checks exit from the parser
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error:" in err and "Traceback" not in err, err


def test_demo_on_cuda_without_a_gpu_is_a_one_line_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["demo", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_demo_defaults_are_valid_and_a_small_demo_runs(capsys):
    from flexrt.cli.main import build_parser

    args = build_parser().parse_args(["demo"])  # the README's main job, as typed
    assert (args.max_batch, args.embed_dim) == (32, 768)
    assert main(["demo", "--device", "cpu", "--max-batch", "4", "--embed-dim", "96"]) == 0
    assert "every output matched eager" in capsys.readouterr().out
