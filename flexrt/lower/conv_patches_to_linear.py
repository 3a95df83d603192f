"""Run a patch-embedding convolution (kernel == stride, few input channels) as one matrix product
over the patches (CUDA engines).

Why: a convolution whose windows tile the input without overlap is a GEMM after a pure
rearrangement of the input. cuDNN's tensor-core kernels want input channels in multiples of 8; with
an image's 3 channels it pads the input and picks a slow kernel: ViT-B/16's 16x16 stride-16 patch
embedding took 64 us at batch 1 and 405 us plus 58 us of padding at batch 64 (H100, fp16;
`research/results/kernel_diff_vit.json`), for a product of K = 3*16*16 = 768, which cuBLAS
runs in a few microseconds. TensorRT picks its convolution tactics by timing them; flexrt, which
cannot, rewrites the case measured to be slow.

Rewrites `conv2d(x, W, b, stride=(kh, kw), padding=0, dilation=1, groups=1)` with W a constant of
kernel (kh, kw) > (1, 1), input channels C not a multiple of 8 while C*kh*kw is, and x's channels
and spatial sizes static, into: crop x to whole patches, rearrange it into (patches, C*kh*kw),
`linear` with W reshaped to (O, C*kh*kw), and rearrange back to (N, O, H/kh, W/kw), contiguous as
the convolution's output is (Inductor fuses that copy into what reads it).
"""

from __future__ import annotations

import logging

import torch

from flexrt.lower.graph_edit import constant, conv2d_args, emit, fake_constant, fake_value
from flexrt.settings import CompileSettings

logger = logging.getLogger(__name__)

aten = torch.ops.aten


def conv_patches_to_linear(gm: torch.fx.GraphModule, settings: CompileSettings) -> torch.fx.GraphModule:
    if settings.device.type != "cuda":
        return gm
    rewritten = 0
    for conv in list(gm.graph.nodes):
        if _matches(gm, conv):
            _rewrite(gm, conv)
            rewritten += 1
    if rewritten:
        gm.graph.eliminate_dead_code()
        gm.recompile()
        logger.info("conv_patches_to_linear: %d patch convolutions run as matrix products", rewritten)
    return gm


def _matches(gm: torch.fx.GraphModule, conv: torch.fx.Node) -> bool:
    if conv.op != "call_function" or conv.target is not aten.conv2d.default or conv.kwargs:
        return False
    x = fake_value(conv.args[0])
    if x is None or x.dim() != 4:
        return False
    if not all(isinstance(d, int) for d in x.shape[1:]):  # channels and spatial sizes must be static
        return False
    args = conv2d_args(conv)
    try:
        weight = constant(gm, args.weight)
        constant(gm, args.bias)
    except LookupError:
        return False
    if weight is None or weight.dim() != 4:
        return False
    out_ch, in_ch, kh, kw = weight.shape
    if args.stride != [kh, kw] or kh * kw == 1 or args.padding not in ([0, 0], "valid"):
        return False
    if args.dilation != [1, 1] or args.groups != 1:
        return False
    _, c, h, w = x.shape
    return c == in_ch and c % 8 != 0 and (c * kh * kw) % 8 == 0 and h >= kh and w >= kw


def _rewrite(gm: torch.fx.GraphModule, conv: torch.fx.Node) -> None:
    graph = gm.graph
    x, w_node, b_node = conv2d_args(conv)[:3]
    weight = constant(gm, w_node)
    assert weight is not None
    out_ch, c, kh, kw = weight.shape
    val = x.meta["val"]
    hp, wp = val.shape[2] // kh, val.shape[3] // kw
    bias = constant(gm, b_node)
    fakes = {w_node: fake_constant(weight, val)} | ({b_node: fake_constant(bias, val)} if bias is not None else {})
    with graph.inserting_before(conv):
        if (hp * kh, wp * kw) != tuple(val.shape[2:]):  # the convolution drops the rows and columns past the last whole patch
            x = emit(graph, aten.slice.Tensor, (x, 2, 0, hp * kh), conv)
            x = emit(graph, aten.slice.Tensor, (x, 3, 0, wp * kw), conv)
        tiles = emit(graph, aten.reshape.default, (x, [-1, c, hp, kh, wp, kw]), conv)
        tiles = emit(graph, aten.permute.default, (tiles, [0, 2, 4, 1, 3, 5]), conv)
        patches = emit(graph, aten.reshape.default, (tiles, [-1, c * kh * kw]), conv)
        w2 = emit(graph, aten.reshape.default, (w_node, [out_ch, c * kh * kw]), conv, fakes)
        y = emit(graph, aten.linear.default, (patches, w2, b_node), conv, fakes)
        y = emit(graph, aten.reshape.default, (y, [-1, hp, wp, out_ch]), conv)
        y = emit(graph, aten.permute.default, (y, [0, 3, 1, 2]), conv)
        y = emit(graph, aten.clone.default, (y,), conv, kwargs={"memory_format": torch.contiguous_format})
    conv.replace_all_uses_with(y)
    graph.erase_node(conv)
