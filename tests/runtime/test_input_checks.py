"""Every tensor a caller can pass gets a correct result or an InputSpecError naming the input, the
problem and what is allowed; nothing unchecked reaches an engine (issue #20, 2)."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_matches

from flexrt.errors import InputSpecError
from flexrt.runtime import Runner


class _Dispatching(torch.Tensor):
    """A wrapper subclass with its own dispatch: it has no memory an engine could read."""

    @staticmethod
    def __new__(cls, inner: torch.Tensor):
        return torch.Tensor._make_wrapper_subclass(cls, inner.shape, dtype=inner.dtype, device=inner.device)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise AssertionError("never dispatched")


class _Plain(torch.Tensor):
    """A subclass without its own dispatch: real memory, so it runs."""


def _bad_inputs() -> list[tuple[str, torch.Tensor, str]]:
    x = torch.randn(4, 20, 96)
    return [
        ("meta", torch.empty(4, 20, 96, device="meta"), r"meta tensors hold no data"),
        ("sparse_coo", x.to_sparse(), r"layout torch.sparse_coo is not supported.*to_dense"),
        ("sparse_csr", torch.randn(4, 96).to_sparse_csr(), r"layout torch.sparse_csr is not supported|expected 3 dims"),
        ("nested", torch.nested.nested_tensor([torch.randn(20, 96), torch.randn(20, 96)]), r"nested tensors are not supported"),
        ("subclass", _Dispatching(x), r"tensor subclass _Dispatching is not supported"),
        ("dtype", x.double(), r"expected dtype torch.float32, got torch.float64"),
        ("rank", torch.randn(4, 96), r"expected 3 dims"),
        ("not a tensor", [[1.0]], r"expected a torch.Tensor \(a dense \(strided\)"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_inputs())), ids=[c[0] for c in _bad_inputs()])
def test_unusable_tensors_raise_input_spec_errors_on_every_path(zoo, case):
    c = zoo("expand_reshape")
    _, bad, message = _bad_inputs()[case]
    with pytest.raises(InputSpecError, match=r"input 'x'.*(" + message + ")"):
        c.module(bad)
    with pytest.raises(InputSpecError, match=r"input 'x'.*(" + message + ")"):
        c.module.engine.create_execution_context(0).execute([bad])
    with Runner(c.module.engine) as runner, pytest.raises(InputSpecError, match=r"input 'x'.*(" + message + ")"):
        runner.infer({"x": bad}, check_inputs=False)


def test_unusual_but_valid_tensors_give_correct_results(zoo):
    c = zoo("expand_reshape")
    base = torch.randn(4, 20, 96)
    cases = [
        torch.randn(96, 20, 4).permute(2, 1, 0),  # non-contiguous
        torch.randn(4, 20, 192)[..., ::2],  # strided view
        torch.randn(1, 20, 96).expand(4, 20, 96),  # stride 0
        torch.nn.Parameter(base.clone()),  # a Parameter, requires_grad
        base.clone().as_subclass(_Plain),  # a subclass without its own dispatch
        torch.randn(4, 20, 96, dtype=torch.complex64).real,  # a view into complex memory
        -base,
    ]
    for x in cases:
        with torch.no_grad():
            ref = c.model(x.detach().as_subclass(torch.Tensor).clone())
            out = c.module(x)
        assert_matches(out.as_subclass(torch.Tensor), ref)
