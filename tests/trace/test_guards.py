"""Guards from tracing: a meta function's needless guard is not traced (torch 2.11's pooling sizes)."""

from __future__ import annotations

import torch

import flexrt
from flexrt.trace import normalize_inputs, trace
from flexrt.trace.guards import exact_meta_shapes, runtime_guards


class Stem(torch.nn.Module):
    """ResNet's stem: conv 7x7 stride 2 pad 3, then a 3x3 stride-2 max-pool."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 7, 2, 3, bias=False)
        self.pool = torch.nn.MaxPool2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.conv(x)))


def test_div_rtn_stays_floor_division() -> None:
    """The replacement gives torch's own `div_rtn` result for every sign of both operands."""
    meta = torch._meta_registrations
    original = meta.div_rtn
    with exact_meta_shapes():
        assert meta.div_rtn is not original
        for x in range(-9, 10):
            for y in (-3, -2, 2, 3):
                assert meta.div_rtn(x, y) == original(x, y) == x // y
    assert meta.div_rtn is original


def test_max_pool_over_height_and_width_traces_without_a_parity_guard() -> None:
    """torch 2.11's pooling meta guarded `Ne(Mod(((s - 1)//2), 2), 0)` after the stem (false at
    height 129): the trace failed with 'the model takes a different path in part of the range'."""
    spec = flexrt.Input(min_shape=(1, 3, 128, 128), opt_shape=(2, 3, 224, 224), max_shape=(4, 3, 384, 384), name="x")
    model = Stem().eval()
    traced = trace(model, normalize_inputs(model.forward, [spec]), torch.device("cpu"))
    assert not [g for g in runtime_guards(traced.exported) if "Mod" in str(g.expr)]


def test_a_guard_undefined_at_a_point_does_not_hold_there() -> None:
    """Evaluating a run-time guard that divides by a size raised ZeroDivisionError out of the range
    check (Faster R-CNN's pieces); at such a point the program is not known to be valid."""
    import sympy

    from flexrt.trace.guards import RuntimeGuard, counterexample

    s = sympy.Symbol("s0", integer=True, positive=True)
    guard = RuntimeGuard(sympy.Eq(sympy.Mod(12, s - 3), 0), "model.py:1")
    assert guard.holds({s: 4}) and guard.holds({s: 6}) and not guard.holds({s: 3})
    assert counterexample(guard, {s: (3, 6)}) == {s: 3}
