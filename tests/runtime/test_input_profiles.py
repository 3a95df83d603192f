"""Torch-TensorRT's per-Input `profiles=` and `torch_tensorrt.runtime.optimization_profile`.

The seed's decode/prefill pair: profile 0 takes one token, profile 1 takes 1..256 tokens.
"""

from __future__ import annotations

import pytest
import torch
from helpers import assert_matches

import flexrt as torch_tensorrt
from flexrt.errors import InputSpecError, ShapeOutOfRangeError
from flexrt.runtime import optimization_profile
from flexrt.serialize.inspect import describe
from flexrt.spec import resolve_profiles

DECODE = {"min_shape": (1, 1), "opt_shape": (1, 1), "max_shape": (1, 1)}
PREFILL = {"min_shape": (1, 1), "opt_shape": (1, 128), "max_shape": (1, 256)}


class TinyLM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(32, 16)
        self.head = torch.nn.Linear(16, 32)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.embed(ids)))


def _ids(n: int) -> torch.Tensor:
    return torch.randint(0, 32, (1, n))


@pytest.fixture(scope="module")
def lm():
    model = TinyLM().eval()
    spec = torch_tensorrt.Input(dtype=torch.int64, profiles=[DECODE, PREFILL])
    return model, torch_tensorrt.compile(model, ir="dynamo", inputs=[spec])


def test_input_profiles_make_one_module_with_every_profile(lm):
    model, m = lm
    assert len(m.engine.profiles) == 2
    (name,) = m.engine.input_names
    assert m.engine.get_tensor_profile_shape(name, 0) == ((1, 1), (1, 1), (1, 1))
    assert m.engine.get_tensor_profile_shape(name, 1) == ((1, 1), (1, 128), (1, 256))
    with torch.no_grad():
        for n in (1, 7, 256, 1):
            ids = _ids(n)
            assert_matches(m(ids), model(ids))


def test_pinned_profile_runs_only_that_profile_and_restores_state(lm):
    model, m = lm
    with torch.no_grad():
        m(_ids(7))
        m(_ids(1))
        assert m.current == 1  # sticky: profile 1 still fits one token (Torch-TensorRT's rule keeps it too)
        with optimization_profile(m, 0):
            ids = _ids(1)
            assert_matches(m(ids), model(ids))
            assert m.current == 0
        assert (m.pinned, m.current) == (None, 1)  # the state before the block
        with optimization_profile(m, 0):
            with pytest.raises(ShapeOutOfRangeError, match=r"dim 1 = 5 .*profile 0 allows \[1, 1\].*pinned"):
                m(_ids(5))
            with optimization_profile(m, "auto"):  # nested: choose by shape again
                ids = _ids(5)
                assert_matches(m(ids), model(ids))
            assert m.pinned == 0
    with pytest.raises(InputSpecError, match=r"profile 2 does not exist"), optimization_profile(m, 2):
        pass
    assert m.pinned is None


def test_profiles_survive_save_load_and_show_in_inspect(lm, tmp_path):
    model, m = lm
    path = tmp_path / "lm.flexrt"
    torch_tensorrt.save(m, str(path))
    loaded = torch_tensorrt.load(str(path)).module()
    assert loaded.engine.profiles == m.engine.profiles
    with torch.no_grad(), optimization_profile(loaded, 1):
        ids = _ids(1)
        assert_matches(loaded(ids), model(ids))
    shown = [p["inputs"] for p in describe(path)["profiles"]]
    assert [next(iter(p.values()))["max"] for p in shown] == [[1, 1], [1, 256]]


def test_dynamo_compile_takes_input_profiles(lm):
    model, _ = lm
    ep = torch.export.export(model, (_ids(4),), dynamic_shapes=({1: torch.export.Dim("seq", min=1, max=256)},))
    m = torch_tensorrt.dynamo.compile(ep, inputs=[torch_tensorrt.Input(dtype=torch.int64, profiles=[DECODE, PREFILL])])
    assert len(m.engine.profiles) == 2
    with torch.no_grad():
        for n in (1, 100):
            ids = _ids(n)
            assert_matches(m(ids), model(ids))


def test_profile_count_and_shape_errors():
    two = torch_tensorrt.Input(dtype=torch.int64, profiles=[DECODE, PREFILL], name="a")
    three = torch_tensorrt.Input(dtype=torch.int64, profiles=[DECODE, PREFILL, PREFILL], name="b")
    with pytest.raises(InputSpecError, match=r"different numbers of profiles \('a': 2, 'b': 3\)"):
        resolve_profiles(["a", "b"], [two, three], None)
    one_range = torch_tensorrt.Input(shape=(1, 4), name="c")  # takes its one range in every profile
    resolved = resolve_profiles(["a", "c"], [two, one_range], None)
    assert [p["c"].max for p in resolved] == [(1, 4), (1, 4)] and resolved[1]["a"].max == (1, 256)
    with pytest.raises(InputSpecError, match=r"profiles= is the only shape argument"):
        torch_tensorrt.Input(shape=(1, 1), profiles=[DECODE])
    with pytest.raises(InputSpecError, match=r"profile 1 must be a dict with exactly the keys"):
        torch_tensorrt.Input(profiles=[DECODE, {"min_shape": (1, 1)}])
    with pytest.raises(InputSpecError, match=r"profile 0: dim 1: min 4 > opt 2"):
        torch_tensorrt.Input(profiles=[{"min_shape": (1, 4), "opt_shape": (1, 2), "max_shape": (1, 8)}])
    with pytest.raises(InputSpecError, match=r"not both"):
        resolve_profiles(["a"], [two], [torch_tensorrt.Profile().add("a", (1, 1), (1, 1), (1, 1))])
