"""The Torch-TensorRT entry points: ExportedPrograms, ir names, out-of-range policies, logging."""

from __future__ import annotations

import logging
import re

import pytest
import torch
from helpers import assert_matches, sweep
from models import MatMul

import flexrt
from flexrt.errors import InputSpecError, ShapeOutOfRangeError


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2)).eval()


TINY = flexrt.Input(min_shape=(1, 6), opt_shape=(2, 6), max_shape=(4, 6), name="x")


@pytest.fixture(scope="module")
def seq_len_program():
    """The seed's custom-constraints example: query and key share the Dim seq_len."""
    inputs = [torch.randn(1, 12, 7, 64), torch.randn(1, 12, 7, 64)]
    seq_len = torch.export.Dim("seq_len", min=1, max=10)
    ep = torch.export.export(MatMul().eval(), tuple(inputs), dynamic_shapes=({2: seq_len}, {2: seq_len}))
    return ep, inputs


def test_dynamo_compile_with_tensors_uses_the_programs_ranges(seq_len_program):
    ep, inputs = seq_len_program
    m = flexrt.dynamo.compile(ep, inputs)
    assert m.engine.profiles[0]["query"].max[2] == 10 and m.engine.profiles[0]["query"].opt[2] == 7
    for n in (1, 4, 7, 10):
        q, k = torch.randn(1, 12, n, 64), torch.randn(1, 12, n, 64)
        assert_matches(m(q, k), MatMul()(q, k))
    with pytest.raises(InputSpecError, match=r"input 'key' dim 2 = 5 must equal input 'query' dim 2 = 7"):
        m(torch.randn(1, 12, 7, 64), torch.randn(1, 12, 5, 64))
    with pytest.raises(ShapeOutOfRangeError, match=r"input 'query' dim 2 = 11"):
        m(torch.randn(1, 12, 11, 64), torch.randn(1, 12, 11, 64))
    # an ExportedProgram given to flexrt.compile goes to dynamo.compile
    m2 = flexrt.compile(ep, inputs=inputs)
    q = torch.randn(1, 12, 3, 64)
    assert_matches(m2(q, q), MatMul()(q, q))


def test_ir_names():
    with pytest.raises(InputSpecError, match=r"ir='ts'.*use ir='dynamo'"):
        flexrt.compile(_tiny(), ir="ts", inputs=[TINY])
    with pytest.raises(InputSpecError, match=r"ir='torchscript' \(TorchScript\)"):  # names what the user wrote
        flexrt.compile(_tiny(), ir="torchscript", inputs=[TINY])
    with pytest.raises(InputSpecError, match=r"unknown ir='fx'"):
        flexrt.compile(_tiny(), ir="fx", inputs=[TINY])


def test_default_ir_logging_and_eager_fallback(caplog, monkeypatch):
    monkeypatch.delenv("FLEXRT_CACHE_DIR", raising=False)  # the default: no on-disk cache, no module-cache step
    model = _tiny()
    with torch.no_grad():  # weights no other test compiles: the engine is built here, not found in the cache
        model[0].bias.add_(torch.arange(6) * 1e-3)
    with caplog.at_level(logging.DEBUG, logger="flexrt"):
        m = flexrt.compile(model, inputs=[TINY], on_out_of_range="eager")
    stages = caplog.text
    for stage in ("trace:", "lower:", "partition:", "export segment 0 profile 0:", "engine segment 0 profile 0:",
                  "build profile 0:"):
        assert stage in stages, stage
    info = [r for r in caplog.records if r.levelno == logging.INFO and r.name.startswith("flexrt")]
    steps = [r.stage for r in info if hasattr(r, "stage")]
    assert steps == ["trace", "lower", "partition", "export segment 0 profile 0", "engine segment 0 profile 0",
                     "build profile 0", "load"], steps
    assert all(r.seconds >= 0 for r in info if hasattr(r, "stage"))
    # the engine's step says where its time went: AOTInductor's phases (the C++ compile among them)
    (engine,) = [r for r in info if getattr(r, "stage", "") == "engine segment 0 profile 0"]
    assert re.search(r"AOTInductor [\d.]+ s \(.*C\+\+ compile [\d.]+ s.*\); key [\d.]+ s; package [\d.]+ s", engine.detail), \
        engine.detail
    assert sum("built in" in r.getMessage() for r in info) == 1
    sweep(m, model, [TINY])
    x = torch.randn(9, 6)  # outside [1, 4]: runs the PyTorch graph with a warning
    with caplog.at_level(logging.WARNING, logger="flexrt"):
        with torch.no_grad():
            assert_matches(m(x), model(x))
    assert "as on_out_of_range='eager' asks" in caplog.text
    assert "or pass on_out_of_range" not in caplog.text  # no advice to pass the option already passed


def test_build_policy_adds_a_profile_for_the_new_shape(caplog):
    model = _tiny()
    m = flexrt.compile(model, inputs=[TINY], on_out_of_range="build")
    x = torch.randn(7, 6)
    with torch.no_grad():
        assert_matches(m(x), model(x))
        assert len(m.engine.profiles) == 2 and m.engine.profiles[1]["x"].min == (7, 6)
        assert_matches(m(x), model(x))  # reused, not rebuilt
        assert len(m.engine.profiles) == 2
        sweep(m, model, [TINY])


def test_model_on_another_device_than_requested():
    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only path")
    with pytest.raises(InputSpecError):
        flexrt.compile(_tiny(), inputs=[TINY], device="cuda")
