"""Memory of captured CUDA graphs: reported per shape, shared within a profile, capped on request."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_matches

import flexrt
from flexrt.runtime import CompiledModule

BATCHES = (1, 16, 64, 256)
SPEC = flexrt.Input(min_shape=(1, 1024), opt_shape=(64, 1024), max_shape=(256, 1024), name="x")


@pytest.fixture(scope="module")
def model_and_compiled():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.GELU(), torch.nn.Linear(4096, 4096), torch.nn.GELU(),
                                torch.nn.Linear(4096, 1024)).eval().cuda()
    return model, flexrt.compile(model, inputs=[SPEC])


def _replays_match(m: CompiledModule, model: torch.nn.Module, batches) -> None:
    with torch.no_grad():
        for b in batches:
            for _ in range(2):  # captured: replays, fresh data each time
                x = torch.randn(b, 1024, device="cuda")
                assert_matches(m(x), model(x))


@pytest.mark.cuda
def test_largest_first_capture_takes_about_the_largest_alone(model_and_compiled) -> None:
    model, compiled = model_and_compiled
    every = CompiledModule(compiled.engine)  # fresh contexts and pools over the one engine
    report = every.capture_cuda_graphs([[(b, 1024)] for b in BATCHES])
    largest = CompiledModule(compiled.engine).capture_cuda_graphs([[(BATCHES[-1], 1024)]])
    (profile,) = report["profiles"]
    assert sorted(c["shapes"][0][0] for c in profile["captured"]) == sorted(BATCHES)
    assert largest["total_bytes"] > 0
    assert report["total_bytes"] <= 1.25 * largest["total_bytes"], (report, largest)
    _replays_match(every, model, BATCHES)
    assert every.contexts[0].graphs.captures == len(BATCHES)  # the checks replayed, captured nothing more


@pytest.mark.cuda
def test_capture_report_names_each_shape(model_and_compiled) -> None:
    model, compiled = model_and_compiled
    m = CompiledModule(compiled.engine)
    _replays_match(m, model, (8, 32))  # captured on demand, smaller first
    report = m.cuda_graph_memory()
    captured = report["profiles"][0]["captured"]
    assert [c["shapes"] for c in captured] == [[[8, 1024]], [[32, 1024]]]
    assert captured[0]["pool_growth_bytes"] > 0 and all(c["buffer_bytes"] > 0 for c in captured)
    assert report["total_bytes"] == report["profiles"][0]["total_bytes"] > 0


@pytest.mark.cuda
def test_memory_cap_keeps_the_cache_bounded(model_and_compiled) -> None:
    """A cap below what two shapes take together (1 MiB): each new shape's capture drops the others and
    is captured alone, so the cache holds one shape; answers stay right through drops and recaptures."""
    model, _ = model_and_compiled
    capped = flexrt.compile(model, inputs=[SPEC], cuda_graph_memory_mb=1)
    graphs = capped.contexts[0].graphs
    with torch.no_grad():
        for b in (256, 1, 200, 3, 256):
            for _ in range(3):  # plain run, capture, replay
                x = torch.randn(b, 1024, device="cuda")
                assert_matches(capped(x), model(x))
            assert len(graphs.entries) == 1 and next(iter(graphs.entries))[0][0] == b
            alone = CompiledModule(capped.engine).capture_cuda_graphs([[(b, 1024)]])["total_bytes"]
            assert graphs.memory()["total_bytes"] <= 1.1 * alone
    assert graphs.captures >= 5  # 256 was dropped and captured again


def test_memory_cap_must_be_a_size() -> None:
    with pytest.raises(flexrt.errors.InputSpecError, match="cuda_graph_memory_mb"):
        flexrt.compile(torch.nn.Linear(4, 4), inputs=[flexrt.Input(shape=(1, 4))], cuda_graph_memory_mb=-1)
