"""Input and Profile: construction, validation messages, and the Torch-TensorRT / Polygraphy forms."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import flexrt
from flexrt.errors import InputSpecError
from flexrt.spec import Profile, ShapeRange, random_tensor


def test_static_and_dynamic_forms():
    s = flexrt.Input(shape=[1, 3, 224, 224], dtype=torch.float32)
    assert s.shape == (1, 3, 224, 224) and s.shape_mode == flexrt.Input._ShapeMode.STATIC
    d = flexrt.Input(min_shape=[1, 3, 224, 224], opt_shape=[4, 3, 224, 224], max_shape=[8, 3, 224, 224], dtype=torch.half)
    assert d.shape_mode == flexrt.Input._ShapeMode.DYNAMIC
    assert d.shape["max_shape"] == (8, 3, 224, 224) and d.dtype == torch.float16
    assert d.range.dynamic_dims == (0,)
    assert flexrt.Input((2, 3)).range.is_static
    assert flexrt.Input((1, 3), (2, 3), (4, 3)).range.dynamic_dims == (0,)


def test_from_tensor_keeps_shape_dtype_and_layout():
    t = torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last)
    spec = flexrt.Input.from_tensor(t)
    assert spec.range.opt == (2, 3, 8, 8) and spec.format == torch.channels_last
    assert flexrt.Input.from_tensor(torch.ones(3, dtype=torch.int64)).dtype == torch.int64


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_shape": (1, 3), "opt_shape": (2, 3, 4), "max_shape": (4, 3)}, r"different ranks"),
        ({"min_shape": (4, 3), "opt_shape": (2, 3), "max_shape": (8, 3)}, r"Input 'x': dim 0: min 4 > opt 2"),
        ({"min_shape": (1, 3), "opt_shape": (9, 3), "max_shape": (8, 3)}, r"dim 0: opt 9 > max 8"),
        ({"min_shape": (1, 3), "opt_shape": (2, 3)}, r"missing max_shape"),
        ({"shape": (1, -3)}, r"dim 1 is -3; sizes must be >= 0"),
        ({"shape": (1, 2.5)}, r"dim 1 is 2.5; sizes must be integers"),
        ({"shape": "abc"}, r"expected a shape"),
        ({"shape": (1, 3), "dtype": "complex-ish"}, r"unknown dtype"),
        ({"shape": (1, 3), "min_shape": (1, 3)}, r"not both"),
        ({}, r"give shape="),
        ({"shape": (1, 3), "format": torch.channels_last}, r"channels_last needs a 4-d shape"),
    ],
)
def test_bad_specs_fail_at_construction_naming_input_and_dim(kwargs, match):
    with pytest.raises(InputSpecError, match=match):
        flexrt.Input(name="x", **kwargs)


def test_example_tensor_is_random_and_never_zero():
    spec = flexrt.Input(min_shape=(1, 4), opt_shape=(3, 4), max_shape=(5, 4))
    a, b = spec.example_tensor(), spec.example_tensor()
    assert a.shape == (3, 4) and not torch.equal(a, b) and a.abs().sum() > 0
    assert spec.example_tensor("max_shape").shape == (5, 4)
    ints = random_tensor((100,), torch.int64)
    assert ints.min() >= 0 and ints.max() <= 1


def test_profile_chain_repr_is_pasteable_code():
    p = Profile().add("x", min=(1, 3), opt=(4, 3), max=(8, 3)).add("y", min=(2,), opt=(2,), max=(2,))
    again = eval(repr(p), {"Profile": Profile})
    assert again == p and list(again) == ["x", "y"]
    assert p["x"].opt == (4, 3)
    assert Profile.from_json(p.to_json()) == p


def test_profile_validation_and_fill_defaults():
    with pytest.raises(InputSpecError, match=r"Profile input 'x': dim 0: min 5 > opt 4"):
        Profile().add("x", min=(5, 3), opt=(4, 3), max=(8, 3))
    p = Profile().add("x", min=(1,), opt=(2,), max=(3,))
    p.fill_defaults([flexrt.Input(shape=(7,), name="y"), flexrt.Input(shape=(9,), name="x")])
    assert p["y"].min == (7,) and p["x"].max == (3,)


dims = st.lists(st.tuples(st.integers(0, 64), st.integers(0, 64), st.integers(0, 64)), min_size=1, max_size=5)


@given(dims)
def test_shape_range_accepts_exactly_ordered_triples(triples):
    lo, opt, hi = (tuple(t[i] for t in triples) for i in range(3))
    ordered = all(a <= b <= c for a, b, c in triples)
    if ordered:
        r = ShapeRange.create(lo, opt, hi, "x")
        assert r.contains(opt) and r.contains(lo) and r.contains(hi)
        assert set(r.dynamic_dims) == {i for i, (a, _, c) in enumerate(triples) if a != c}
    else:
        with pytest.raises(InputSpecError, match=r"dim \d+: (min|opt) \d+ > (opt|max) \d+"):
            ShapeRange.create(lo, opt, hi, "x")
