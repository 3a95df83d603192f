"""Merge linear layers that read the same tensor into one wider matrix product (CUDA engines).

Why: attention projects one hidden state three times (query, key, value). Run separately, each
product is a GEMM launch of its own, and at small token counts each is latency-bound: the three
cost nearly three times what one GEMM with the three weights stacked costs. TensorRT merges such
layers the same way ("horizontal" GEMM fusion); Inductor does only under `freezing`.

Rewrites `linear(x, W_i, b_i)` for i = 1..n (n >= 2, same x, constant weights of one dtype and
width, biases all present or all absent) into `y = linear(x, cat(W), cat(b))` and gives each old
user its slice of `y` along the last dim. The merged product runs where the first of them was, so
a group is cut wherever something writes in place in between.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from flexrt.lower.graph_edit import (
    constant,
    emit,
    fake_constant,
    fake_value,
    linear_args,
    mutation_between,
    register_constant,
)
from flexrt.settings import CompileSettings

logger = logging.getLogger(__name__)

aten = torch.ops.aten


def fuse_parallel_linear(gm: torch.fx.GraphModule, settings: CompileSettings) -> torch.fx.GraphModule:
    if settings.device.type != "cuda":
        return gm
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    merged = 0
    for x in list(gm.graph.nodes):
        groups: dict[tuple[Any, ...], list[torch.fx.Node]] = {}
        for user in x.users:
            key = _key(gm, user, x)
            if key is not None:
                groups.setdefault(key, []).append(user)
        for group in groups.values():
            for run in _runs(sorted(group, key=order.__getitem__)):
                if len(run) >= 2:
                    _merge(gm, x, run)
                    merged += len(run)
    if merged:
        gm.graph.eliminate_dead_code()
        gm.recompile()
        logger.info("fuse_parallel_linear: %d linear layers merged into wider ones", merged)
    return gm


def _runs(group: list[torch.fx.Node]) -> list[list[torch.fx.Node]]:
    """The group (in graph order) cut wherever an in-place write falls between a run's first
    member and the next: the merged product runs at the first member's place."""
    runs = [[group[0]]]
    for node in group[1:]:
        if mutation_between(runs[-1][0], node, {*runs[-1], node}):
            runs.append([node])
        else:
            runs[-1].append(node)
    return runs


def _key(gm: torch.fx.GraphModule, node: torch.fx.Node, x: torch.fx.Node) -> tuple[Any, ...] | None:
    """What must agree for `node` to merge with its siblings on `x`; None if it cannot merge."""
    if node.op != "call_function" or node.target is not aten.linear.default or node.kwargs or node.args[0] is not x:
        return None
    val = fake_value(x)
    if val is None or val.dim() < 1:
        return None
    args = linear_args(node)
    try:
        weight = constant(gm, args.weight)
        bias = constant(gm, args.bias)
    except LookupError:
        return None
    if weight is None or weight.dim() != 2 or weight.dtype != val.dtype:
        return None
    if bias is not None and (bias.dim() != 1 or bias.dtype != weight.dtype):
        return None
    return weight.dtype, weight.device, weight.shape[1], bias is not None


def _merge(gm: torch.fx.GraphModule, x: torch.fx.Node, group: list[torch.fx.Node]) -> None:
    args = [linear_args(n) for n in group]
    weights = [constant(gm, a.weight) for a in args]
    biases = [constant(gm, a.bias) for a in args]
    weight = torch.cat([w.detach() for w in weights if w is not None])
    bias = torch.cat([b.detach() for b in biases if b is not None]) if biases[0] is not None else None
    val = x.meta["val"]
    graph = gm.graph
    with graph.inserting_before(group[0]):
        w = graph.get_attr(register_constant(gm, weight))
        b = graph.get_attr(register_constant(gm, bias)) if bias is not None else None
        fakes = {w: fake_constant(weight, val)} | ({b: fake_constant(bias, val)} if b is not None else {})
        fused = emit(graph, aten.linear.default, (x, w, b), group[0], fakes)
        start, last = 0, val.dim() - 1
        for node, wt in zip(group, weights):
            assert wt is not None
            part = emit(graph, aten.slice.Tensor, (fused, last, start, start + wt.shape[0]), node)
            start += wt.shape[0]
            node.replace_all_uses_with(part)
    for node in group:
        graph.erase_node(node)
