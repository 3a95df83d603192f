"""Save and load: one archive, loaded in a fresh process without compiling; every bad file says why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch
from helpers import TF32_TOLERANCE, TOLERANCE, assert_matches, sweep
from models import ExpandReshapeModel

import flexrt
from flexrt.errors import ArtifactError, InputSpecError, ShapeOutOfRangeError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository

CHILD = textwrap.dedent(
    """
    import sys, time, json
    t0 = time.perf_counter()
    import torch
    import torch._inductor
    def no_compiling(*a, **k):
        raise AssertionError("load must not compile")
    torch._inductor.aoti_compile_and_package = no_compiling
    import flexrt
    t1 = time.perf_counter()
    module = flexrt.load(sys.argv[1]).module()
    t2 = time.perf_counter()
    cases = torch.load(sys.argv[2], weights_only=True)
    worst = 0.0
    for args, kwargs, expected in cases:
        with torch.no_grad():
            out = module(*args, **kwargs)
        flat_o = torch.utils._pytree.tree_leaves(out)
        flat_e = torch.utils._pytree.tree_leaves(expected)
        assert len(flat_o) == len(flat_e)
        for o, e in zip(flat_o, flat_e):
            assert o.shape == e.shape and o.dtype == e.dtype
            if e.is_floating_point() and e.numel():
                worst = max(worst, float((o.double() - e.double()).norm() / e.double().norm()))
            else:
                assert torch.equal(o, e)
    print("RESULT " + json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "worst": worst, "n": len(cases)}))
    """
)


def run_fresh(path: str, cases: list, tmp_path) -> dict:
    """Load the artifact in a new Python process, run the cases there, return its timings.

    Float32 cases on CUDA are held to TF32's tolerance: the engines may use it (flexrt's default)."""
    case_file = str(tmp_path / "cases.pt")
    torch.save(cases, case_file)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, str(script), path, case_file], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    line = next(x for x in p.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[7:])
    on_cuda = any(t.is_cuda for _, _, e in cases for t in torch.utils._pytree.tree_leaves(e) if isinstance(t, torch.Tensor))
    tolerance = TF32_TOLERANCE if on_cuda else TOLERANCE[torch.float32]
    assert result["worst"] <= tolerance and result["n"] == len(cases)
    return result


def cases_for(model, shapes_args, kwargs_list=None):
    out = []
    for i, args in enumerate(shapes_args):
        kwargs = kwargs_list[i] if kwargs_list else {}
        with torch.no_grad():
            out.append((args, kwargs, model(*args, **kwargs)))
    return out


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_round_trip_in_a_fresh_process_without_compiling(zoo, tmp_path, device):
    c = zoo("expand_reshape", device=device)
    path = str(tmp_path / "model.ep")
    flexrt.save(c.module, path, arg_inputs=c.inputs)  # Method 1: from the Input objects
    cases = cases_for(c.model, [(torch.randn(b, 20, 96, device=device),) for b in (1, 4, 17, 32)])
    timing = run_fresh(path, cases, tmp_path)
    print(f"fresh-process load on {device}: {timing}")
    assert timing["load_s"] < 5
    loaded = flexrt.load(path).module()
    sweep(loaded, c.model, c.inputs, device=device)
    with pytest.raises(ShapeOutOfRangeError) as after:
        loaded(torch.randn(33, 20, 96, device=device))
    with pytest.raises(ShapeOutOfRangeError) as before:
        c.module(torch.randn(33, 20, 96, device=device))
    assert str(after.value) == str(before.value)


def test_several_dynamic_dims_and_kwargs(zoo, tmp_path):
    conv = zoo("convnet")
    path = str(tmp_path / "conv.ep")
    flexrt.save(conv.module, path, arg_inputs=conv.inputs)
    cases = cases_for(conv.model, [(torch.randn(4, 3, 24, 40),), (torch.randn(7, 3, 48, 16),)])
    run_fresh(path, cases, tmp_path)
    mlp = zoo("masked_mlp")
    path = str(tmp_path / "mlp.ep")
    flexrt.save(mlp.module, path, arg_inputs=mlp.inputs, kwarg_inputs=mlp.kwarg_inputs)
    loaded = flexrt.load(path).module()
    sweep(loaded, mlp.model, mlp.inputs, kwarg_specs=mlp.kwarg_inputs)


def test_method_two_explicit_dims_with_dynamo_compile(tmp_path):
    torch.manual_seed(0)
    model = ExpandReshapeModel(96).eval()
    example = torch.randn(2, 20, 96)
    dynamic_shapes = {"x": {0: torch.export.Dim("batch", min=1, max=32)}}
    ep = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes, strict=False)
    compiled = flexrt.dynamo.compile(
        ep, arg_inputs=[flexrt.Input(min_shape=(1, 20, 96), opt_shape=(8, 20, 96), max_shape=(32, 20, 96))]
    )
    path = str(tmp_path / "m2.ep")
    flexrt.save(compiled, path, arg_inputs=[example], dynamic_shapes=dynamic_shapes)
    loaded = flexrt.load(path).module()
    for b in (1, 5, 32):
        x = torch.randn(b, 20, 96)
        with torch.no_grad():
            assert_matches(loaded(x), model(x))
    too_wide = {"x": {0: torch.export.Dim("batch", min=1, max=64)}}
    with pytest.raises(InputSpecError, match=r"input 'x' dim 0 the range \[1, 64\], wider than the compiled \[1, 32\]"):
        flexrt.save(compiled, str(tmp_path / "bad.ep"), arg_inputs=[example], dynamic_shapes=too_wide)


def test_pytorch_segments_and_tuple_outputs_survive(zoo, tmp_path):
    c = zoo("split", min_block_size=3)
    path = str(tmp_path / "split.ep")
    flexrt.save(c.module, path)
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    assert any(n.startswith("torch/") for n in names) and not any(n.endswith(".pkl") for n in names)
    loaded = flexrt.load(path).module()
    sweep(loaded, c.model, c.inputs)


def test_mixed_static_and_dynamic_inputs(tmp_path):
    class Mixed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(8, 8)

        def forward(self, x: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.proj(x) @ table, table.sum(0)

    model = Mixed().eval()
    specs = [flexrt.Input(min_shape=(1, 8), opt_shape=(3, 8), max_shape=(6, 8), name="x"), flexrt.Input(shape=(8, 4), name="table")]
    m = flexrt.compile(model, arg_inputs=specs)
    path = str(tmp_path / "mixed.ep")
    flexrt.save(m, path, arg_inputs=specs)
    sweep(flexrt.load(path).module(), model, specs)


# -- bad files -----------------------------------------------------------------------------------


def _rewrite(src: str, dst: str, edit_manifest=None, corrupt: str | None = None) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "manifest.json" and edit_manifest:
                manifest = json.loads(data)
                edit_manifest(manifest)
                data = json.dumps(manifest).encode()
            if corrupt and info.filename.startswith(corrupt):
                data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
            zout.writestr(info, data)


def test_missing_empty_truncated_and_foreign_files(saved, tmp_path):
    with pytest.raises(ArtifactError, match=r"no such file"):
        flexrt.load(str(tmp_path / "nope.ep"))
    empty = tmp_path / "empty.ep"
    empty.write_bytes(b"")
    with pytest.raises(ArtifactError, match=r"is empty \(0 bytes\)"):
        flexrt.load(str(empty))
    data = open(saved, "rb").read()
    trunc = tmp_path / "trunc.ep"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"truncated or damaged"):
        flexrt.load(str(trunc))
    text = tmp_path / "notes.ep"
    text.write_text("hello")
    with pytest.raises(ArtifactError, match=r"not a flexrt artifact \(not a zip archive\)"):
        flexrt.load(str(text))
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("a.txt", "x")
    with pytest.raises(ArtifactError, match=r"no manifest.json"):
        flexrt.load(str(foreign))


def test_checksum_future_format_other_torch_and_cuda_artifacts(saved, tmp_path):
    bad = str(tmp_path / "corrupt.ep")
    _rewrite(saved, bad, corrupt="engines/")
    with pytest.raises(ArtifactError, match=r"member 'engines/p0_s0.so' does not match its checksum"):
        flexrt.load(bad)
    older = str(tmp_path / "format1.ep")  # format 1 differs only by never having engine.json
    _rewrite(saved, older, edit_manifest=lambda m: m.update(format_version=1))
    assert flexrt.load(older).manifest["format_version"] == 1
    future = str(tmp_path / "future.ep")
    _rewrite(saved, future, edit_manifest=lambda m: m.update(format_version=99))
    with pytest.raises(ArtifactError, match=r"format 99 .* upgrade flexrt"):
        flexrt.load(future)
    other = str(tmp_path / "other.ep")
    _rewrite(saved, other, edit_manifest=lambda m: m.update(torch_version="2.9.1+cu128"))
    with pytest.raises(ArtifactError, match=r"built with torch 2.9.1\+cu128; this is torch"):
        flexrt.load(other)
    if not torch.cuda.is_available():
        gpu = str(tmp_path / "gpu.ep")
        _rewrite(saved, gpu, edit_manifest=lambda m: m.update(device={"type": "cuda", "name": "NVIDIA H100", "capability": [9, 0]}))
        with pytest.raises(ArtifactError, match=r"built for CUDA \(NVIDIA H100, sm_90\) and this machine has no CUDA device"):
            flexrt.load(gpu)


def test_failed_save_leaves_the_old_file_intact(zoo, saved, tmp_path, monkeypatch):
    import flexrt.format.write as writer

    target = str(tmp_path / "keep.ep")
    with open(saved, "rb") as f:
        original = f.read()
    with open(target, "wb") as f:
        f.write(original)

    def explode(f, manifest, members):
        f.write(b"PK partial")
        raise OSError("disk full")

    monkeypatch.setattr(writer, "write_zip", explode)
    with pytest.raises(OSError, match="disk full"):
        flexrt.save(zoo("expand_reshape").module, target)
    assert open(target, "rb").read() == original
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []
    flexrt.load(target)


def test_save_rejects_what_it_cannot_save(zoo, tmp_path):
    with pytest.raises(InputSpecError, match=r"save expects the module returned by flexrt.compile"):
        flexrt.save(torch.nn.Linear(2, 2), str(tmp_path / "x.ep"))
    c = zoo("expand_reshape")
    wide = flexrt.Input(min_shape=(1, 20, 96), opt_shape=(4, 20, 96), max_shape=(64, 20, 96))
    with pytest.raises(InputSpecError, match=r"input 'x' dim 0: \[1, 64\] is outside the compiled range \[1, 32\]"):
        flexrt.save(c.module, str(tmp_path / "x.ep"), arg_inputs=[wide])
    with pytest.raises(ArtifactError, match=r"folder .* does not exist"):
        flexrt.save(c.module, str(tmp_path / "no" / "such" / "x.ep"))
