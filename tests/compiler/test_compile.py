"""End to end on CPU: compile zoo models, compare with eager at min, opt, max and between."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_matches, sweep

import flexrt
from flexrt.errors import InputSpecError, ShapeOutOfRangeError

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.mark.parametrize("device", DEVICES)
def test_seed_expand_reshape_matches_eager_over_range(zoo, device):
    c = zoo("expand_reshape", device=device)
    assert sweep(c.module, c.model, c.inputs, device=device) == 5
    assert len(c.module.engine.programs[0].segments) == 1


@pytest.mark.parametrize("device", DEVICES)
def test_several_dynamic_dims_batch_height_width(zoo, device):
    c = zoo("convnet", device=device)
    sweep(c.module, c.model, c.inputs, device=device)


def test_kwargs_inputs_and_dict_outputs(zoo):
    c = zoo("masked_mlp")
    sweep(c.module, c.model, c.inputs, kwarg_specs=c.kwarg_inputs)
    out = c.module(torch.randn(3, 10), mask=torch.randn(3, 5))
    assert set(out) == {"logits", "hidden"}


@pytest.mark.parametrize("device", DEVICES)
def test_data_dependent_op_runs_in_pytorch_between_engines(zoo, device):
    c = zoo("split", device=device, min_block_size=3)
    kinds = [s.kind for s in c.module.engine.programs[0].state.segments]
    assert kinds.count("torch") >= 1 and kinds.count("engine") >= 1
    sweep(c.module, c.model, c.inputs, device=device)


def test_out_of_range_error_names_input_dim_value_and_range(zoo):
    c = zoo("expand_reshape")
    with pytest.raises(ShapeOutOfRangeError, match=r"input 'x' dim 0 = 33 .*\[1, 32\]"):
        c.module(torch.randn(33, 20, 96))
    with pytest.raises(ShapeOutOfRangeError, match=r"input 'x' dim 1 = 21"):
        c.module(torch.randn(4, 21, 96))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: (torch.randn(4, 20, 96, dtype=torch.float64),), r"input 'x': expected dtype torch.float32"),
        (lambda: (torch.randn(20, 96),), r"input 'x': expected 3 dims"),
        (lambda: (torch.randn(4, 20, 96), torch.randn(1)), r"takes 1 positional input"),
        (lambda: (), r"takes 1 positional input"),
        (lambda: ([1, 2, 3],), r"expected a torch.Tensor|structure"),
    ],
)
def test_malformed_calls_fail_before_running(zoo, make, match):
    c = zoo("expand_reshape")
    with pytest.raises(InputSpecError, match=match):
        c.module(*make())


def test_unexpected_and_missing_keywords(zoo):
    c = zoo("masked_mlp")
    with pytest.raises(InputSpecError, match=r"missing \['mask'\]"):
        c.module(torch.randn(2, 10))
    with pytest.raises(InputSpecError, match=r"unexpected \['bias'\]"):
        c.module(torch.randn(2, 10), mask=torch.randn(2, 5), bias=torch.randn(2))


def test_tied_dims_checked(zoo):
    c = zoo("masked_mlp")
    with pytest.raises(InputSpecError, match=r"must equal input 'x' dim 0"):
        c.module(torch.randn(3, 10), mask=torch.randn(4, 5))


@pytest.mark.cuda
def test_wrong_device_is_an_error(zoo):
    c = zoo("expand_reshape", device="cuda")
    with pytest.raises(InputSpecError, match=r"input 'x' is on cpu but the model was compiled for cuda:0"):
        c.module(torch.randn(4, 20, 96))


def test_non_contiguous_input_is_handled(zoo):
    c = zoo("expand_reshape")
    x = torch.randn(96, 20, 5).permute(2, 1, 0)
    assert not x.is_contiguous()
    with torch.no_grad():
        assert_matches(c.module(x), c.model(x))


def test_static_compile_from_tensors():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    x = torch.randn(2, 8)
    m = flexrt.compile(model, inputs=[x])
    with torch.no_grad():
        assert_matches(m(x), model(x))
    with pytest.raises(ShapeOutOfRangeError):
        m(torch.randn(3, 8))
