"""torch.compile(backend="flexrt"): mark_dynamic ranges, one capture and one build per range."""

from __future__ import annotations

import logging

import pytest
import torch
from helpers import assert_matches
from models import ExpandReshapeModel

import flexrt
import flexrt.backend
import flexrt.build.cache as engine_cache
from flexrt.errors import CompilationError, FlexrtError


class Counter:
    """Counts graphs dynamo hands to the flexrt backend, and engines built or reused."""

    def __init__(self) -> None:
        self.graphs = 0
        self.before = engine_cache.stats()

    def backend(self, gm, example_inputs, **kwargs):
        self.graphs += 1
        return flexrt.backend.flexrt_backend(gm, example_inputs, **kwargs)

    @property
    def built(self) -> int:
        return engine_cache.stats()["misses"] - self.before["misses"]

    @property
    def requested(self) -> int:
        now = engine_cache.stats()
        return now["misses"] + now["hits"] - self.before["misses"] - self.before["hits"]


def _seed_model(seed: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    return ExpandReshapeModel(96).eval()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_one_capture_and_one_build_over_the_marked_range(device, monkeypatch):
    monkeypatch.delenv("FLEXRT_CACHE_DIR", raising=False)  # a build, not an on-disk cache hit
    torch._dynamo.reset()
    model = _seed_model(11).to(device)
    counter = Counter()
    compiled = torch.compile(model, backend=counter.backend)
    x = torch.randn(4, 20, 96, device=device)
    torch._dynamo.mark_dynamic(x, 0, min=1, max=8)
    with torch.no_grad():
        assert_matches(compiled(x), model(x))
        for b in (2, 5, 8, 3, 7):
            xb = torch.randn(b, 20, 96, device=device)
            assert_matches(compiled(xb), model(xb))
    assert counter.graphs == 1
    assert counter.built == 1 and counter.requested == 1
    # outside the range: torch.compile's own rule (a new graph), never the engine built for 1..8
    with torch.no_grad():
        x9 = torch.randn(9, 20, 96, device=device)
        assert_matches(compiled(x9), model(x9))
    assert counter.graphs == 2


def test_registered_name_and_options_pass_through(caplog):
    torch._dynamo.reset()
    model = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(4)], torch.nn.ReLU()).eval()
    compiled = torch.compile(model, backend="flexrt", options={"torch_executed_ops": {"aten.relu.default"}, "min_block_size": 1})
    x = torch.randn(3, 8)
    with caplog.at_level(logging.DEBUG, logger="flexrt.partition"), torch.no_grad():
        assert_matches(compiled(x), model(x))
    assert "aten.relu.default: listed in torch_executed_ops" in caplog.text


def test_graph_breaks_each_graph_compiled():
    class Broken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(8, 8)
            self.b = torch.nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.tanh(self.a(x))
            torch._dynamo.graph_break()
            return self.b(h).sigmoid()

    torch._dynamo.reset()
    model = Broken().eval()
    counter = Counter()
    compiled = torch.compile(model, backend=counter.backend)
    x = torch.randn(5, 8)
    with torch.no_grad():
        assert_matches(compiled(x), model(x))
    assert counter.graphs == 2 and counter.requested == 2


def test_training_and_autograd_run_in_pytorch_with_a_warning(caplog):
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Dropout(0.5)).train()
    counter = Counter()
    compiled = torch.compile(model, backend=counter.backend)
    x = torch.randn(4, 8, requires_grad=True)
    with caplog.at_level(logging.WARNING, logger="flexrt"):
        out = compiled(x)
    out.sum().backward()
    assert x.grad is not None and counter.requested == 0
    assert "running a captured graph in PyTorch" in caplog.text


def test_grad_mode_with_trainable_weights_runs_the_engine_but_refuses_backward():
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)).eval()
    counter = Counter()
    compiled = torch.compile(model, backend=counter.backend)
    x = torch.randn(3, 8)
    out = compiled(x)  # grad mode on, weights require grad, as a user who forgot torch.no_grad()
    assert counter.requested == 1 and out.requires_grad
    with torch.no_grad():
        assert_matches(out.detach(), model(x))
    with pytest.raises(FlexrtError, match=r"cannot backpropagate through a flexrt engine"):
        out.sum().backward()


def test_build_failure_names_the_stage_or_falls_back_when_asked(monkeypatch, caplog):
    import flexrt.build.program as program

    def fail(*args, **kwargs):
        raise CompilationError("build: AOTInductor failed on segment 0 profile 0: boom")

    monkeypatch.setattr(program, "compile_engine", fail)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU()).eval()
    torch._dynamo.reset()
    with pytest.raises(Exception, match=r"build: AOTInductor failed on segment 0 profile 0: boom"), torch.no_grad():
        torch.compile(model, backend="flexrt")(torch.randn(2, 8))
    torch._dynamo.reset()
    x = torch.randn(2, 8)
    with caplog.at_level(logging.WARNING, logger="flexrt"), torch.no_grad():
        out = torch.compile(model, backend="flexrt", options={"on_build_failure": "eager"})(x)
        assert_matches(out, model(x))
    assert "on_build_failure='eager'" in caplog.text


def test_ir_torch_compile_applies_input_ranges_and_freezes_weights():
    torch._dynamo.reset()
    model = _seed_model(12)
    counter_before = engine_cache.stats()
    spec = flexrt.Input(min_shape=(1, 20, 96), opt_shape=(4, 20, 96), max_shape=(8, 20, 96))
    compiled = flexrt.compile(model, ir="torch_compile", inputs=[spec])
    with torch.no_grad():
        for b in (4, 2, 8, 6):
            xb = torch.randn(b, 20, 96)
            assert_matches(compiled(xb), model(xb))
    after = engine_cache.stats()
    assert after["misses"] - counter_before["misses"] == 1
    with torch.no_grad():
        model.qkv_proj.weight.mul_(2)
        with pytest.raises(Exception, match=r"weight changed after torch.compile built"):
            compiled(torch.randn(3, 20, 96))


def test_import_is_light_and_torch_compile_finds_the_backend_by_name():
    """`import flexrt` does not load dynamo (1.3 s on a 2-core CPU); an installed flexrt is still
    found by name through its torch_dynamo_backends entry point, in a process that never asked."""
    from importlib.metadata import entry_points

    if "flexrt" not in entry_points(group="torch_dynamo_backends").names:
        pytest.skip("flexrt is not installed (pip install -e .): no entry point to find")
    code = (
        "import sys, torch, flexrt\n"
        "assert 'torch._dynamo' not in sys.modules, 'import flexrt loaded dynamo'\n"
        "from torch._dynamo.backends.registry import lookup_backend\n"
        "assert lookup_backend('flexrt') is flexrt.backend.flexrt_backend\n"
    )
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


class _BreakingLayer(torch.nn.Module):
    """A layer with a graph break inside: dynamo compiles its code once and runs every layer through it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(16, 16), torch.nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        if not torch.isfinite(h).all():  # a branch on tensor data: a graph break
            h = torch.nan_to_num(h)
        return self.b(h) + x


class _Stack(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList([_BreakingLayer() for _ in range(4)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def test_one_graph_run_by_several_modules_gets_each_ones_weights(caplog):
    """Dynamo passes each layer's weights to the graph it compiled for the first layer; that raised
    'a weight changed'. Each layer now gets a refitted copy of the engine: the layer's two pieces are
    built once for batches 2..8 and once for batch 1 (sizes 1 get their own graphs in pieces), no more."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _Stack().eval()
    before = engine_cache.stats()
    with caplog.at_level(logging.INFO, logger="flexrt"):
        compiled = flexrt.compile(model, inputs=[flexrt.Input(min_shape=(1, 16), opt_shape=(4, 16), max_shape=(8, 16))])
    assert engine_cache.stats()["misses"] - before["misses"] == 4  # two pieces x (batch 1, batches 2..8)
    assert "refitted copy 4" in caplog.text
    with torch.no_grad():
        for b in (1, 3, 8):
            x = torch.randn(b, 16)
            assert_matches(compiled(x), model(x))
        assert engine_cache.stats()["misses"] - before["misses"] == 4  # no call in the range built again
        model.layers[2].a.weight.mul_(2)  # a weight changed in place is still an error
        with pytest.raises(FlexrtError, match=r"weight changed after torch.compile built"):
            compiled(torch.randn(2, 16))
