"""`mark_dynamic(x, 0, min=1, max=8)` and batch 1: torch.compile specialises sizes 0 and 1.

flexrt's ir="torch_compile" runs dynamo with `backed_size_oblivious`, so batch 1 runs in the graph
captured at batch 2 (no recompile) and a batch-1 first call works too. Plain
`torch.compile(backend="flexrt")` leaves dynamo's settings to the caller: a batch-1 example marked
dynamic fails at once with flexrt's message, before any engine is built.
"""

from __future__ import annotations

import time

import pytest
import torch
from helpers import assert_matches
from torch._dynamo.utils import counters

import flexrt
from flexrt.backend import register, size_oblivious

SPEC = flexrt.Input(min_shape=(1, 16), opt_shape=(2, 16), max_shape=(8, 16))
MESSAGE = r"dim 0 has size 1 and is marked dynamic, but torch.compile specialises sizes 0 and 1"


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()


def _graphs() -> int:
    return counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("first", [2, 1])
def test_torch_compile_ir_runs_batch_one_without_a_recompile(first):
    torch._dynamo.reset()
    model = _model()
    m = flexrt.compile(model, ir="torch_compile", inputs=[SPEC])
    before = _graphs()
    with torch.no_grad():
        for n in (first, 1, 5, 8, 2):
            x = torch.randn(n, 16)
            assert_matches(m(x), model(x))
    assert _graphs() - before == 1  # one graph for every batch in 1..8


def test_plain_torch_compile_with_a_batch_one_mark_fails_fast_with_flexrts_message():
    register()
    torch._dynamo.reset()
    compiled = torch.compile(_model(), backend="flexrt")
    x = torch.randn(1, 16)
    torch._dynamo.mark_dynamic(x, 0, min=1, max=8)
    start = time.perf_counter()
    with pytest.raises(Exception, match=MESSAGE):  # dynamo wraps a backend's error in BackendCompilerFailed
        compiled(x)
    assert time.perf_counter() - start < 15  # no engine was built (a build takes ~20 s on a 2-core CPU)


def test_plain_torch_compile_under_backed_size_oblivious_runs_batch_one():
    register()
    torch._dynamo.reset()
    model = _model()
    compiled = torch.compile(model, backend="flexrt")
    before = _graphs()
    with size_oblivious(), torch.no_grad():  # torch.fx.experimental._config.patch(backed_size_oblivious=True)
        x = torch.randn(2, 16)
        torch._dynamo.mark_dynamic(x, 0, min=1, max=8)
        assert_matches(compiled(x), model(x))
        for n in (1, 7):
            y = torch.randn(n, 16)
            assert_matches(compiled(y), model(y))
    assert _graphs() - before == 1
