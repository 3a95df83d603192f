"""`emit`: a new node's value computed on its inputs' fake tensors, symbolic sizes and all."""

from __future__ import annotations

import torch

from flexrt.lower.graph_edit import emit, fake_constant

aten = torch.ops.aten


class _Project(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(64, 32, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.relu(x))


def _graph() -> torch.fx.GraphModule:
    dims = {0: torch.export.Dim("b", min=1, max=8), 1: torch.export.Dim("s", min=2, max=256)}
    return torch.export.export(_Project().eval(), (torch.randn(2, 8, 64),), dynamic_shapes=(dims,)).module()


def test_a_composite_op_on_symbolic_sizes_gets_a_symbolic_value():
    """`linear` without a bias is a composite op that calls `matmul`; run as the C++ kernel on fake
    tensors, torch 2.11's `at::native::matmul` reads `numel()` and raises "Cannot call numel() on
    tensor with symbolic sizes/strides" (the zoo's LLaMA, Qwen2, Mistral and T5 on CUDA, through
    fuse_parallel_linear). emit decomposes it in Python, as torch.export does."""
    gm = _graph()
    graph = gm.graph
    relu = next(n for n in graph.nodes if n.target is aten.relu.default)
    linear = next(n for n in graph.nodes if n.target is aten.linear.default)
    val = relu.meta["val"]
    weight = torch.randn(48, 64)
    gm.register_buffer("_w", weight)
    with graph.inserting_after(relu):
        w = graph.get_attr("_w")
    with graph.inserting_after(w):
        node = emit(graph, aten.linear.default, (relu, w), linear, {w: fake_constant(weight, val)})
        wt = emit(graph, aten.t.default, (w,), linear, {w: fake_constant(weight, val)})
        matmul = emit(graph, aten.matmul.default, (relu, wt), linear)
    for n in (node, matmul):
        out = n.meta["val"]
        assert out.shape[:2] == val.shape[:2] and out.shape[2] == 48
        assert all(isinstance(s, torch.SymInt) for s in out.shape[:2])
    assert node.meta["stack_trace"] == linear.meta["stack_trace"]
