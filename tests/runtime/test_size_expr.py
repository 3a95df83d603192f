"""Size expressions evaluated without sympy agree with sympy on what the build writes (`str(expr)`)
and refuse anything else (that a loading process imports no sympy: tests/architecture)."""

from __future__ import annotations

import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._sympy.functions import CeilDiv, FloorDiv, PythonMod

from flexrt.runtime.size_expr import SizeExpr

S0, S1 = sympy.symbols("s0 s1", integer=True, positive=True)
LEAVES = st.sampled_from([S0, S1]) | st.integers(1, 9).map(sympy.Integer)


def _nodes(children: st.SearchStrategy) -> st.SearchStrategy:
    pair = st.tuples(children, children)
    positive = st.integers(1, 7).map(sympy.Integer)  # divisors and moduli: nonzero, as sizes are
    return st.one_of(
        pair.map(lambda p: p[0] + p[1]),
        pair.map(lambda p: p[0] - p[1]),
        pair.map(lambda p: p[0] * p[1]),
        st.tuples(children, positive).map(lambda p: FloorDiv(p[0], p[1])),
        st.tuples(children, positive).map(lambda p: CeilDiv(p[0], p[1])),
        st.tuples(children, positive).map(lambda p: PythonMod(p[0], p[1])),
        st.tuples(children, positive).map(lambda p: sympy.floor(p[0] / p[1])),
        st.tuples(children, positive).map(lambda p: sympy.ceiling(p[0] / p[1])),
        pair.map(lambda p: sympy.Max(p[0], p[1])),
        pair.map(lambda p: sympy.Min(p[0], p[1])),
        children.map(lambda c: c**2),
    )


EXPRS = st.recursive(LEAVES, _nodes, max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(EXPRS, st.integers(1, 600), st.integers(1, 600))
def test_value_matches_sympy(expr: sympy.Expr, a: int, b: int) -> None:
    want = expr.subs({S0: a, S1: b})
    parsed = SizeExpr(str(expr))
    assert parsed.symbols == {str(s) for s in expr.free_symbols}
    assert parsed.value({"s0": a, "s1": b}) == int(want), str(expr)


@pytest.mark.parametrize("text,value", [("CeilDiv(s0, 3)", 3), ("FloorDiv(s0, 3)", 2), ("CleanDiv(s0 - 1, 3)", 2),
                                        ("Mod(s0, 4)", 3), ("PythonMod(s0, 4)", 3), ("Abs(3 - s0)", 4),
                                        ("Max(1, s0 - 9)", 1), ("Min(s0, 5)", 5), ("-s0 + 10", 3)])
def test_named_size_functions(text: str, value: int) -> None:
    """The schema's size functions, some of which sympy prints in Python's operators instead."""
    assert SizeExpr(text).value({"s0": 7}) == value


def test_a_missing_symbol_is_unknown() -> None:
    assert SizeExpr("u0 + 1").value({"s0": 3}) is None
    assert SizeExpr("s0").is_symbol and not SizeExpr("2*s0").is_symbol


@pytest.mark.parametrize("text", ["__import__('os').system('true')", "s0.real", "9**9**9", "s0**s0", "s0[0]",
                                  "lambda: 1", "open(s0)", "Max(s0, key=1)", "1.5*s0", "s0 if s0 else 1", "", "s0 +"])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="size expression"):
        SizeExpr(text)
