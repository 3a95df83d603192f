"""Trace: Input ranges become Dims; export's complaints become errors naming the input and dim."""

from __future__ import annotations

import re

import pytest
import sympy
import torch
from models import ExpandReshapeModel, MatMul

import flexrt
from flexrt.errors import CompilationError, InputSpecError
from flexrt.trace import bind, normalize_inputs, specs_from_exported, trace


class Add(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y


class FixedBatch(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(4, -1)


class Branchy(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: not exportable
            return x * 2
        return x


def _placeholder_dims(ep):
    return [n.meta["val"].shape for n in ep.graph.nodes if n.op == "placeholder" and n.name in ep.graph_signature.user_inputs]


def test_seed_model_traces_with_a_dynamic_batch():
    spec = flexrt.Input(min_shape=[1, 196, 96], opt_shape=[4, 196, 96], max_shape=[32, 196, 96])
    ep = flexrt.dynamo.trace(ExpandReshapeModel(96).eval(), [spec])
    (shape,) = _placeholder_dims(ep)
    assert isinstance(shape[0], torch.SymInt) and shape[1:] == (196, 96)
    (vr,) = ep.range_constraints.values()
    assert int(vr.upper) == 32 and int(vr.lower) <= 2


def test_opt_of_one_does_not_specialise():
    spec = flexrt.Input(min_shape=[1, 8], opt_shape=[1, 8], max_shape=[16, 8])
    ep = flexrt.dynamo.trace(torch.nn.Linear(8, 4), inputs=[spec])
    assert isinstance(_placeholder_dims(ep)[0][0], torch.SymInt)


def test_dims_the_model_ties_are_merged():
    specs = [flexrt.Input(min_shape=(1, 3), opt_shape=(2, 3), max_shape=(8, 3), name=n) for n in "xy"]
    flat = normalize_inputs(Add().forward, specs)
    traced = trace(Add(), flat, torch.device("cpu"))
    (x0, _), (y0, _) = (b.dims for b in traced.inputs)
    assert isinstance(x0, sympy.Symbol) and x0 == y0


def test_tied_dims_are_found_in_one_export(monkeypatch):
    """A padding mask ties its dims to the ids': torch.export finds the tie in the first export
    (Dim.DYNAMIC per axis) instead of failing once and being exported again with merged Dims."""
    calls = []
    export = torch.export.export

    def counting(*args, **kwargs):
        calls.append(kwargs.get("dynamic_shapes"))
        return export(*args, **kwargs)

    monkeypatch.setattr(torch.export, "export", counting)
    specs = [flexrt.Input(min_shape=(1, 2, 3), opt_shape=(2, 5, 3), max_shape=(8, 9, 3), name=n) for n in "xy"]
    traced = trace(Add(), normalize_inputs(Add().forward, specs), torch.device("cpu"))
    assert len(calls) == 1
    (x0, x1, _), (y0, y1, _) = (b.dims for b in traced.inputs)
    assert (x0, x1) == (y0, y1) and traced.symbol_ranges[x0] == (1, 8) and traced.symbol_ranges[x1] == (2, 9)


def test_tied_dims_with_different_ranges_are_an_error():
    specs = [
        flexrt.Input(min_shape=(1, 3), opt_shape=(2, 3), max_shape=(8, 3), name="x"),
        flexrt.Input(min_shape=(1, 3), opt_shape=(2, 3), max_shape=(16, 3), name="y"),
    ]
    with pytest.raises(InputSpecError, match=r"input 'y' dim 0 must equal input 'x' dim 0.*\[1, 16\] vs \[1, 8\]"):
        trace(Add(), normalize_inputs(Add().forward, specs), torch.device("cpu"))


def test_dim_the_model_fixes_is_an_error_naming_it():
    spec = flexrt.Input(min_shape=(1, 6), opt_shape=(4, 6), max_shape=(8, 6), name="x")
    with pytest.raises(InputSpecError, match=r"input 'x' dim 0 is declared dynamic but the model only works when it is 4"):
        trace(FixedBatch(), normalize_inputs(FixedBatch().forward, [spec]), torch.device("cpu"))


def test_unexportable_model_says_trace_failed():
    spec = flexrt.Input(shape=(2, 2), name="x")
    with pytest.raises(CompilationError, match=r"^trace: the model branches on a value computed from tensor data at .*test_trace.py:\d+"):
        trace(Branchy(), normalize_inputs(Branchy().forward, [spec]), torch.device("cpu"))


def _seq_len_program():
    q, k = torch.randn(1, 12, 7, 64), torch.randn(1, 12, 7, 64)
    seq_len = torch.export.Dim("seq_len", min=1, max=10)
    ep = torch.export.export(MatMul().eval(), (q, k), dynamic_shapes=({2: seq_len}, {2: seq_len}))
    return ep, q, k


def test_ranges_from_the_programs_own_constraints():
    ep, q, k = _seq_len_program()
    specs = specs_from_exported(ep, [q, k], ["query", "key"])
    assert [s.range.min[2] for s in specs] == [1, 1] and [s.range.max[2] for s in specs] == [10, 10]
    assert specs[0].range.opt == (1, 12, 7, 64)
    traced = bind(ep, ["query", "key"], specs)
    assert traced.inputs[0].dims[2] == traced.inputs[1].dims[2]


def test_range_wider_than_the_program_says_which_bound_and_how_to_re_export():
    ep, _, _ = _seq_len_program()
    specs = [flexrt.Input(min_shape=(1, 12, 1, 64), opt_shape=(1, 12, 7, 64), max_shape=(1, 12, 20, 64), name=n) for n in ("query", "key")]
    with pytest.raises(InputSpecError, match=r"input 'query' dim 2: the spec's range \[1, 20\] is wider than .*\[1, 10\].*torch.export.Dim"):
        bind(ep, ["query", "key"], specs)


def test_dynamic_range_on_a_static_program_dim():
    ep, _, _ = _seq_len_program()
    specs = [flexrt.Input(min_shape=(1, 12, 7, 64), opt_shape=(2, 12, 7, 64), max_shape=(4, 12, 7, 64), name=n) for n in ("query", "key")]
    with pytest.raises(InputSpecError, match=r"input 'query' dim 0: the program is static there \(size 1\)"):
        bind(ep, ["query", "key"], specs)


def test_inputs_forms_and_names():
    m = ExpandReshapeModel(96)
    one = flexrt.Input(shape=(1, 2, 96))
    assert normalize_inputs(m.forward, one).names == ["x"]
    assert normalize_inputs(m.forward, [torch.randn(1, 2, 96)]).specs[0].range.opt == (1, 2, 96)
    named = normalize_inputs(m.forward, arg_inputs=[flexrt.Input(shape=(1, 2, 96), name="image")])
    assert named.names == ["image"]
    with pytest.raises(InputSpecError, match=r"inputs= or arg_inputs=, not both"):
        normalize_inputs(m.forward, [one], arg_inputs=[one])
    with pytest.raises(InputSpecError, match=r"no inputs given"):
        normalize_inputs(m.forward)
    with pytest.raises(InputSpecError, match=r"input 'x': expected a flexrt.Input or a torch.Tensor, got int"):
        normalize_inputs(m.forward, [3])


def test_export_error_names_the_innermost_frame_outside_torch():
    """A failure whose message has no user frame (torchvision's `if boxes.numel() == 0:` in Faster
    R-CNN) is located from the traceback: the innermost frame outside torch, flexrt and the stdlib."""
    from flexrt.trace import guards

    def library_check(t):
        raise RuntimeError("Could not guard on data-dependent expression Eq(u0, 0) (unhinted: ...)")

    try:
        torch.utils._pytree.tree_map(library_check, [torch.ones(1)])  # a torch frame between us and it
    except RuntimeError as e:
        message = guards.describe_export_error(e)
    assert re.search(r"tensor data at .*test_trace.py:\d+ in library_check: raise RuntimeError", message), message
