"""flexrt under Polygraphy: FlexrtRunner against Polygraphy's ONNX-Runtime runner, on a model exported
with torch.onnx's dynamo exporter over the same Input ranges (CPU)."""

from __future__ import annotations

import copy

import pytest
import torch

import flexrt

pytest.importorskip("polygraphy")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
from polygraphy.comparator import Comparator, SimpleCompareFunc

from flexrt.interop.compare import compare, eager_reference, profile_cases
from flexrt.interop.onnx import engine_inputs, export_onnx, onnxrt_reference
from flexrt.interop.polygraphy import FlexrtRunner, profile_data_loader

pytestmark = pytest.mark.onnx


class TwoHeads(torch.nn.Module):
    """Two inputs tied on the batch dim, a dict of two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.relu(self.proj(x) + bias[:, None, :])
        return {"logits": self.head(h).mean(1), "hidden": h}


def profiles() -> list[flexrt.Profile]:
    return [
        flexrt.Profile().add("x", min=(1, 4, 8), opt=(1, 4, 8), max=(1, 4, 8)).add("bias", min=(1, 8), opt=(1, 8), max=(1, 8)),
        flexrt.Profile().add("x", min=(1, 2, 8), opt=(2, 4, 8), max=(4, 8, 8)).add("bias", min=(1, 8), opt=(2, 8), max=(4, 8)),
    ]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TwoHeads().eval()


@pytest.fixture(scope="module")
def engine(model):
    return flexrt.build_engine(model, profiles=profiles())


@pytest.fixture(scope="module")
def onnx_path(model, engine, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("onnx") / "two_heads.onnx")
    args, kwargs = engine_inputs(engine)
    assert export_onnx(model, path, args, kwargs, names=engine.input_names) == ["logits", "hidden"]
    return path


@pytest.fixture(scope="module")
def wrong_onnx_path(model, engine, tmp_path_factory):
    """The same model with one weight nudged by 1e-2: every comparison with it must fail."""
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        wrong.head.weight[0, 0] += 1e-2
    path = str(tmp_path_factory.mktemp("onnx") / "wrong.onnx")
    args, kwargs = engine_inputs(engine)
    export_onnx(wrong, path, args, kwargs, names=engine.input_names)
    return path


def run_both(engine, path, profile):
    runners = [FlexrtRunner(engine, optimization_profile=profile), OnnxrtRunner(SessionFromOnnx(path))]
    return Comparator.run(runners, data_loader=profile_data_loader(engine, profile, random_shapes=2, seed=profile))


def test_comparator_flexrt_against_onnxruntime_per_profile(engine, onnx_path):
    for profile in range(len(engine.profiles)):
        results = run_both(engine, onnx_path, profile)
        flexrt_iters = results[0][1]
        assert len(flexrt_iters) == 5  # min, opt, max and 2 random shapes
        assert list(flexrt_iters[0].keys()) == ["logits", "hidden"]
        if profile == 1:
            assert {tuple(it["hidden"].shape) for it in flexrt_iters} >= {(1, 2, 8), (4, 8, 8)}
        assert bool(Comparator.compare_accuracy(results, compare_func=SimpleCompareFunc(atol=1e-5, rtol=1e-4)))


def test_comparator_catches_a_wrong_model(engine, wrong_onnx_path):
    results = run_both(engine, wrong_onnx_path, 1)
    assert not bool(Comparator.compare_accuracy(results, compare_func=SimpleCompareFunc(atol=1e-5, rtol=1e-4)))


def test_runner_metadata_names_and_lazy_engine(engine, tmp_path):
    path = str(tmp_path / "two_heads.ep")
    engine.save(path)
    with FlexrtRunner(path, optimization_profile=1, output_names=["Y", "H"]) as runner:
        meta = runner.get_input_metadata(use_numpy_dtypes=False)
        assert list(meta) == ["x", "bias"] and list(meta["x"].shape) == [None, None, 8]
        assert meta["x"].shape.min == [1, 2, 8] and meta["x"].shape.max == [4, 8, 8]
        out = runner.infer({"x": torch.randn(3, 5, 8), "bias": torch.randn(3, 8)})
        assert list(out) == ["Y", "H"] and isinstance(out["Y"], torch.Tensor) and runner.last_inference_time() > 0
    # Polygraphy's own default data loader reads the profile's min shapes from the metadata
    results = Comparator.run([FlexrtRunner(engine, optimization_profile=1)])
    assert tuple(results[0][1][0]["hidden"].shape) == (1, 2, 8)
    with pytest.raises(flexrt.errors.InputSpecError, match="output_names has 1 names for 2 outputs"):
        FlexrtRunner(lambda: engine, output_names=["Y"]).activate()


def test_compare_module_against_eager_and_onnxruntime(engine, model, onnx_path, wrong_onnx_path):
    cases = profile_cases(engine, random_shapes=2)
    references = {
        "eager": eager_reference(model, engine),
        "onnxrt": onnxrt_reference(onnx_path, engine.output_names),
        "wrong": onnxrt_reference(wrong_onnx_path, engine.output_names),
    }
    eager, ort, wrong = compare(engine, references, cases, atol=1e-5, rtol=1e-4)
    assert eager.passed and ort.passed and eager.cases == len(cases) == 10
    assert not wrong.passed and wrong.outputs["logits"].failed and wrong.outputs["logits"].max_abs > 1e-4
    assert wrong.outputs["hidden"].passed  # the nudged weight is in the head only


@pytest.mark.cuda
def test_comparator_on_cuda_against_onnxruntime(model, onnx_path):
    """The same Comparator run with the engine built for the GPU: Polygraphy's NumPy feeds are moved to
    the engine's device and the outputs come back as NumPy, as TrtRunner's do. TF32 is off, as a user
    comparing float32 engines at these tolerances turns it off in TensorRT (it is on by default in both)."""
    engine = flexrt.build_engine(copy.deepcopy(model).cuda(), profiles=profiles(), device="cuda", disable_tf32=True)
    for profile in range(len(engine.profiles)):
        results = run_both(engine, onnx_path, profile)
        assert len(results[0][1]) == 5
        assert bool(Comparator.compare_accuracy(results, compare_func=SimpleCompareFunc(atol=1e-4, rtol=1e-3)))
