"""Run a linear layer and the GELU after it as one cuBLASLt GEMM (float16/bfloat16 CUDA engines).

Why: Inductor runs `gelu(linear(x))` as a cuBLAS GEMM (bias in its epilogue) and then a Triton
kernel that reads and writes the whole activation again. In a transformer's MLP that activation is
4x the hidden width, and the GELU kernel was 10% of BERT's GPU time at sequence 512 and 16% of
ViT-B/16's at batch 64 (H100, fp16; `research/results/kernel_diff_vit.json`).
cuBLASLt applies bias and GELU in the GEMM's epilogue (`aten._addmm_activation`): 4096x768x3072
took 38.9 us against 52.7 us (`research/results/gelu_epilogue.json`). TensorRT fuses
GEMM and activation the same way.

The epilogue computes GELU's tanh form on the float32 accumulator, rounding once. Against GELU
computed exactly in float32 its error was lower than eager float16's own (relative 2.9e-4 against
3.2e-4 at every measured shape): the tanh form differs from the exact GELU by at most 4.7e-4, less
than the rounding it saves. So the rewrite is made only where the weights are float16 or bfloat16;
float32 engines keep the exact GELU.

Rewrites `gelu(linear(x, W, b))` (the GELU the linear's only user; W a constant 2-D weight)
into `_addmm_activation(b, x.reshape(-1, K), W.t(), use_gelu=True)` reshaped back to x's
leading dims.
"""

from __future__ import annotations

import logging

import torch

from flexrt.lower.graph_edit import constant, emit, fake_constant, fake_value, linear_args, register_constant
from flexrt.settings import CompileSettings

logger = logging.getLogger(__name__)

aten = torch.ops.aten
_DTYPES = {torch.float16, torch.bfloat16}


def fuse_linear_gelu(gm: torch.fx.GraphModule, settings: CompileSettings) -> torch.fx.GraphModule:
    if settings.device.type != "cuda":
        return gm
    fused = 0
    for gelu in list(gm.graph.nodes):
        linear = _match(gm, gelu)
        if linear is not None:
            _rewrite(gm, linear, gelu)
            fused += 1
    if fused:
        gm.graph.eliminate_dead_code()
        gm.recompile()
        logger.info("fuse_linear_gelu: %d linear layers run with their GELU in the GEMM epilogue", fused)
    return gm


def _match(gm: torch.fx.GraphModule, gelu: torch.fx.Node) -> torch.fx.Node | None:
    """The linear feeding `gelu`, if the pair can run as one GEMM."""
    if gelu.op != "call_function" or gelu.target is not aten.gelu.default or len(gelu.args) != 1:
        return None
    if gelu.kwargs.get("approximate", "none") not in ("none", "tanh"):
        return None
    linear = gelu.args[0]
    if not isinstance(linear, torch.fx.Node) or linear.target is not aten.linear.default or linear.kwargs:
        return None
    if len(linear.users) != 1:  # the pre-GELU activation is read elsewhere: it must be written anyway
        return None
    args = linear_args(linear)
    x = fake_value(args.x)
    if x is None or x.dim() < 2:
        return None
    try:
        weight = constant(gm, args.weight)
        bias = constant(gm, args.bias)
    except LookupError:
        return None
    if weight is None or weight.dim() != 2 or weight.dtype not in _DTYPES:
        return None
    if bias is not None and (bias.shape != weight.shape[:1] or bias.dtype != weight.dtype):
        return None
    return linear


def _rewrite(gm: torch.fx.GraphModule, linear: torch.fx.Node, gelu: torch.fx.Node) -> None:
    graph = gm.graph
    x, w, bias_node = linear_args(linear)
    val = x.meta["val"]
    weight = constant(gm, w)
    assert weight is not None
    n, k = weight.shape
    with graph.inserting_before(gelu):
        bias = constant(gm, bias_node)
        if bias is None:  # the epilogue wants a bias vector: zeros add nothing
            bias = torch.zeros(n, dtype=weight.dtype, device=weight.device)
            bias_node = graph.get_attr(register_constant(gm, bias))
        # constants as fakes in the graph's (maybe pre-cast) dtype, like the rest of its metadata
        fakes = {w: fake_constant(weight, val), bias_node: fake_constant(bias, val)}
        # Leading dims as the graph knows them: sizes, or sym_size nodes for the dynamic ones.
        lead = [
            d if isinstance(d, int) else emit(graph, aten.sym_size.int, (x, i), linear)
            for i, d in enumerate(val.shape[:-1])
        ]
        rows = emit(graph, aten.reshape.default, (x, [-1, k]), linear)
        wt = emit(graph, aten.t.default, (w,), linear, fakes)
        out = emit(graph, aten._addmm_activation.default, (bias_node, rows, wt), linear, fakes, {"use_gelu": True})
        back = emit(graph, aten.reshape.default, (out, [*lead, n]), gelu)
    gelu.replace_all_uses_with(back)
    graph.erase_node(gelu)
    graph.erase_node(linear)
