"""Partition: the support table, min_block_size, torch_executed_ops, require_full_compilation."""

from __future__ import annotations

import pytest
import torch
from models import SplitByTorchOp

import flexrt
from flexrt.errors import UnsupportedOpError
from flexrt.lower import lower
from flexrt.partition import classify, partition
from flexrt.partition.partitioner import op_name
from flexrt.settings import build_settings
from flexrt.trace import normalize_inputs, trace


@torch.library.custom_op("flexrt_test::scale", mutates_args=())
def scale(x: torch.Tensor) -> torch.Tensor:
    return x * 3


@scale.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class WithCustomOp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(3)])
        self.post = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(torch.relu(scale(self.pre(x).sigmoid())).tanh())


def _lowered(model, spec, **options):
    settings = build_settings(options, device=torch.device("cpu"))
    traced = trace(model.eval(), normalize_inputs(model.forward, [spec]), settings.device)
    return lower(traced.exported, settings), settings


SPEC8 = flexrt.Input(min_shape=(1, 8), opt_shape=(4, 8), max_shape=(16, 8), name="x")
SPEC16 = flexrt.Input(min_shape=(2, 16), opt_shape=(6, 16), max_shape=(16, 16), name="x")


def test_fully_supported_graph_is_one_engine_whatever_min_block_size():
    gm, settings = _lowered(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()), SPEC8, min_block_size=50)
    plan = partition(gm, settings)
    assert [s.kind for s in plan.segments] == ["engine"]


def test_custom_op_runs_in_pytorch_between_two_engines():
    model = WithCustomOp().eval()
    gm, settings = _lowered(model, SPEC8, min_block_size=2)
    plan = partition(gm, settings)
    assert [s.kind for s in plan.segments] == ["engine", "torch", "engine"]
    assert plan.segments[1].reasons == {"flexrt_test.scale.default": "custom op of namespace 'flexrt_test'"}
    x = torch.randn(3, 8)
    env = dict(zip(plan.inputs, [x]))
    for seg in plan.segments:
        env.update(zip(seg.outputs, seg.module(*[env[n] for n in seg.inputs])))
    with torch.no_grad():
        torch.testing.assert_close(env[plan.outputs[0][1]], model(x))


def test_small_segments_fall_back_below_min_block_size():
    gm, settings = _lowered(WithCustomOp(), SPEC8, min_block_size=50)
    plan = partition(gm, settings)
    assert [s.kind for s in plan.segments] == ["torch"]
    assert any("fewer than min_block_size=50" in why for why in plan.segments[0].reasons.values())


def test_torch_executed_ops_are_honoured():
    gm, settings = _lowered(SplitByTorchOp(), SPEC16, torch_executed_ops={"torch.ops.aten.gelu.default"}, min_block_size=1)
    kinds = classify(gm, settings)
    gelu = [n for n in kinds if "gelu" in str(n.target)]
    assert gelu and all(kinds[n] == ("torch", "listed in torch_executed_ops") for n in gelu)


def test_data_dependent_ops_are_classified_with_a_reason():
    gm, settings = _lowered(SplitByTorchOp(), SPEC16)
    reasons = {str(n.target): why for n, (kind, why) in classify(gm, settings).items() if kind == "torch"}
    assert reasons["aten.nonzero.default"] == "output shape depends on tensor data"


def test_require_full_compilation_raises_naming_the_op():
    gm, settings = _lowered(SplitByTorchOp(), SPEC16, require_full_compilation=True)
    with pytest.raises(UnsupportedOpError, match=r"aten.nonzero.default \(output shape depends on tensor data\)"):
        partition(gm, settings)


def test_dryrun_prints_the_report_and_builds_nothing(capsys):
    model = WithCustomOp().eval()
    out = flexrt.compile(model, inputs=[SPEC8], dryrun=True, min_block_size=2)
    text = capsys.readouterr().out
    assert "2 engine segment(s), 1 PyTorch segment(s)" in text and "custom op of namespace 'flexrt_test'" in text
    x = torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(out(x), model(x))


def test_report_lists_ops_in_graph_order_every_run():
    """Ops are counted in graph order and ties in the report sort by name: the same text every run."""
    model = WithCustomOp().eval()
    gm, settings = _lowered(model, SPEC8, min_block_size=2)
    plan = partition(gm, settings)
    for seg in plan.segments:  # counted in the order the segment's graph runs them
        nodes = [n for n in seg.module.graph.nodes if n.op == "call_function"]
        graph_order = list(dict.fromkeys(op_name(n) for n in nodes))
        assert list(seg.ops) == [k for k in graph_order if k in seg.ops]
    first = str(plan.report)
    assert all(str(partition(gm, settings).report) == first for _ in range(3))
    line = next(line for line in first.splitlines() if "segment 0" in line)
    counted = [part.rsplit(" x", 1) for part in line.split(": ", 1)[1].split(", ")]
    keys = [(-int(c), k) for k, c in counted]
    assert keys == sorted(keys)
