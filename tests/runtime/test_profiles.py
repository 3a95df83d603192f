"""Several optimization profiles in one engine, a runner per profile (the Polygraphy scenario)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_matches, in_threads

import flexrt
from flexrt.errors import FlexrtError, InputSpecError, ShapeOutOfRangeError


class SmallConv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, stride=2, padding=1),
            torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def seed_profiles() -> list[flexrt.Profile]:
    """Low latency at batch 1; dynamic batching 1..32 at 4; offline batches of 128 (seed 004)."""
    return [
        flexrt.Profile().add("x", min=(1, 3, 28, 28), opt=(1, 3, 28, 28), max=(1, 3, 28, 28)),
        flexrt.Profile().add("x", min=(1, 3, 28, 28), opt=(4, 3, 28, 28), max=(32, 3, 28, 28)),
        flexrt.Profile().add("x", min=(128, 3, 28, 28), opt=(128, 3, 28, 28), max=(128, 3, 28, 28)),
    ]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SmallConv().eval()


@pytest.fixture(scope="module")
def engine(model):
    return flexrt.build_engine(model, profiles=seed_profiles())


def test_engine_holds_every_profile(engine):
    assert len(engine.profiles) == 3 and engine.input_names == ["x"] and engine.output_names == ["output"]
    assert engine.get_tensor_profile_shape("x", 1) == ((1, 3, 28, 28), (4, 3, 28, 28), (32, 3, 28, 28))
    ctx = engine.create_execution_context(profile=1)
    ctx.set_input_shape("x", (7, 3, 28, 28))
    assert ctx.infer_output_shapes() == {"output": (7, 10)}
    with pytest.raises(ShapeOutOfRangeError, match=r"dim 0 = 40 .*profile 1 allows \[1, 32\]"):
        ctx.set_input_shape("x", (40, 3, 28, 28))


def test_a_runner_per_profile_matches_eager(engine, model):
    runners = [flexrt.Runner(engine, profile=i) for i in range(3)]
    with runners[0] as low, runners[1] as dyn, runners[2] as offline:
        for runner, batch in ((low, 1), (dyn, 4), (dyn, 17), (dyn, 32), (offline, 128), (low, 1)):
            x = torch.randn(batch, 3, 28, 28)
            out = runner.infer({"x": x})
            with torch.no_grad():
                assert_matches(out["output"], model(x))
    assert not low.is_active


def test_runner_shape_updates_and_outputs_not_overwritten(engine):
    with flexrt.Runner(engine, profile=1) as runner:
        a = runner.infer({"x": torch.randn(4, 3, 28, 28)})["output"]
        kept = a.clone()
        runner.infer({"x": torch.randn(4, 3, 28, 28)})
        b = runner.infer({"x": torch.randn(9, 3, 28, 28)})["output"]
        assert torch.equal(a, kept) and b.shape == (9, 10)
        assert runner.shape_updates == 2  # 4 -> 4 kept the shapes; 4 -> 9 changed them


def test_runner_errors(engine):
    runner = flexrt.Runner(engine, profile=0)
    with pytest.raises(FlexrtError, match=r"not active"):
        runner.infer({"x": torch.randn(1, 3, 28, 28)})
    with runner:
        with pytest.raises(ShapeOutOfRangeError, match=r"dim 0 = 4 .*profile 0 allows \[1, 1\].*Profiles that fit these inputs: \[1\]"):
            runner.infer({"x": torch.randn(4, 3, 28, 28)})
        with pytest.raises(InputSpecError, match=r"missing \['x'\]; unexpected \['y'\]"):
            runner.infer({"y": torch.randn(1, 3, 28, 28)})
    with pytest.raises(InputSpecError, match=r"profile 3 does not exist"):
        flexrt.Runner(engine, profile=3)


def test_compiled_module_keeps_the_current_profile_while_it_fits(model):
    m = flexrt.compile(model, inputs=[flexrt.Input(shape=(1, 3, 28, 28), name="x")], profiles=seed_profiles())
    picks = []
    for batch in (1, 4, 1, 128, 1, 32):
        x = torch.randn(batch, 3, 28, 28)
        with torch.no_grad():
            assert_matches(m(x), model(x))
        picks.append(m.current)
    # 1 -> profile 0 (narrowest); 4 -> 1; 1 again: profile 1 still fits, keep it; 128 -> 2; 1 -> 0; 32 -> 1
    assert picks == [0, 1, 1, 2, 0, 1]
    with pytest.raises(ShapeOutOfRangeError, match=r"dim 0 = 64 .*profile 0 allows \[1, 1\].*profile 1 allows \[1, 32\].*profile 2 allows \[128, 128\]"):
        m(torch.randn(64, 3, 28, 28))


def test_engine_save_load_and_serialize(engine, model, tmp_path):
    path = str(tmp_path / "engine.flexrt")
    engine.save(path)
    again = flexrt.Engine.load(path)
    assert [p.to_json() for p in again.profiles] == [p.to_json() for p in engine.profiles]
    clone = flexrt.Engine.deserialize(engine.serialize())
    with flexrt.Runner(again, profile=2) as r, flexrt.Runner(clone, profile=1) as r2:
        x = torch.randn(128, 3, 28, 28)
        with torch.no_grad():
            assert_matches(r.infer({"x": x})["output"], model(x))
            assert_matches(r2.infer({"x": x[:5]})["output"], model(x[:5]))


def test_runner_takes_polygraphys_keyword_and_numpy(engine, model):
    """TrtRunner(engine, optimization_profile=1) ports as is; NumPy in gives NumPy out, tensors in give tensors."""
    runner = flexrt.Runner(engine, optimization_profile=1)
    assert runner.profile == runner.optimization_profile == 1
    with runner:
        x = np.random.default_rng(0).standard_normal((6, 3, 28, 28), dtype=np.float32)
        out = runner.infer({"x": x})["output"]
        assert isinstance(out, np.ndarray) and out.shape == (6, 10)
        with torch.no_grad():
            ref = model(torch.from_numpy(x))
        assert_matches(torch.from_numpy(out), ref)
        assert isinstance(runner.infer({"x": torch.from_numpy(x)})["output"], torch.Tensor)
        runner.set_profile(2)
        x = torch.randn(128, 3, 28, 28)
        with torch.no_grad():
            assert_matches(runner.infer({"x": x})["output"], model(x))
        with pytest.raises(InputSpecError, match=r"dtype|float64"):
            runner.infer({"x": np.zeros((128, 3, 28, 28))})
    with pytest.raises(InputSpecError, match=r"profile=0 and optimization_profile=2 disagree"):
        flexrt.Runner(engine, profile=0, optimization_profile=2)
    with pytest.raises(InputSpecError, match=r"profile 5 does not exist"):
        runner.set_profile(5)


def test_fill_defaults_from_an_engine_or_compiled_module(engine):
    """Polygraphy's fill_defaults(network): missing inputs get the range the engine accepts."""
    p = flexrt.Profile().fill_defaults(engine)
    assert (p["x"].min, p["x"].opt, p["x"].max) == ((1, 3, 28, 28), (1, 3, 28, 28), (128, 3, 28, 28))
    fixed = flexrt.Profile().fill_defaults(flexrt.CompiledModule(engine), default_shape_value=4)
    assert fixed["x"].min == fixed["x"].max == (4, 3, 28, 28)
    kept = flexrt.Profile().add("x", min=(2, 3, 28, 28), opt=(2, 3, 28, 28), max=(3, 3, 28, 28)).fill_defaults(engine)
    assert kept["x"].max == (3, 3, 28, 28)
    with pytest.raises(InputSpecError, match=r"fill_defaults expects a flexrt Engine"):
        flexrt.Profile().fill_defaults(42)


@pytest.mark.parametrize(
    ("profiles", "match"),
    [
        ([flexrt.Profile().add("y", min=(1, 3, 28, 28), opt=(1, 3, 28, 28), max=(1, 3, 28, 28))], r"profile 0 names input\(s\) \['y'\]"),
        ([flexrt.Profile().add("x", min=(1, 28, 28), opt=(1, 28, 28), max=(2, 28, 28))], r"profile 0 input 'x': rank 3"),
        ([seed_profiles()[0], flexrt.Profile()], r"profile 1 leaves dynamic input 'x' unset"),
    ],
)
def test_bad_profiles_fail_before_building(model, profiles, match):
    spec = flexrt.Input(min_shape=(1, 3, 28, 28), opt_shape=(2, 3, 28, 28), max_shape=(4, 3, 28, 28), name="x")
    with pytest.raises(InputSpecError, match=match):
        flexrt.build_engine(model, profiles=profiles, inputs=[spec])


def test_threads_sharing_a_module_over_several_profiles_each_get_their_own_results(engine, model):
    """The documented contract on the CPU too: threads calling one module with shapes of different
    profiles (each call picks its own; the module's current profile moves under them)."""
    m = flexrt.CompiledModule(engine)

    def work(i: int) -> None:
        gen = torch.Generator().manual_seed(i)
        for k in range(12):
            x = torch.randn((1, 4, 17, 128)[(i + k) % 4], 3, 28, 28, generator=gen)
            with torch.no_grad():
                assert_matches(m(x), model(x))

    errors = in_threads(work, 4)
    assert not errors, errors[:1]
