"""Fold inference BatchNorm into convolutions and, on CUDA, fuse the ReLU (and residual add) into them.

Why: Inductor runs a convolution as cuDNN's kernel followed by its own pointwise kernel for the
BN/ReLU/add epilogue, which reads and writes every activation again. On ResNet-50 at batch 128
(H100, fp16) those epilogue kernels were half the GPU time, and cuDNN's fused
`cudnn_convolution_relu` / `cudnn_convolution_add_relu` ran its layers 1.05-2.35x faster than
convolution plus epilogue (research/results/conv_epilogue.json). TensorRT fuses them the
same way.

Rewrites `conv2d -> batch_norm(eval) [-> add(z)] -> relu` (each the only user of the one before,
weights constant, 4-D input, no groups or dilation) into one fused op with the BN folded into its
weight (channels-last, so cuDNN returns channels-last whatever the input's layout) and bias. Any
other conv2d -> batch_norm gets the BN folded in and stays a conv2d. Only for CUDA engines in
float16, bfloat16 or float32.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch

from flexrt.lower.graph_edit import constant, conv2d_args, fake_value, mutation_between, register_constant
from flexrt.settings import CompileSettings

logger = logging.getLogger(__name__)

aten = torch.ops.aten
_RELU = {aten.relu.default, aten.relu_.default}
_ADD = {aten.add.Tensor, aten.add_.Tensor}
_DTYPES = {torch.float16, torch.bfloat16, torch.float32}


def fuse_conv_epilogue(gm: torch.fx.GraphModule, settings: CompileSettings) -> torch.fx.GraphModule:
    if settings.device.type != "cuda":
        return gm
    fused = folded = 0
    for conv in list(gm.graph.nodes):
        match = _match(gm, conv)
        if match is None:
            continue
        bn, add, relu, z = match
        weight, bias = _fold(gm, conv, bn)
        args = conv2d_args(conv)
        stride, padding, dilation, groups = args.stride, args.padding, args.dilation, args.groups
        with gm.graph.inserting_before(relu or conv):  # fused: where the relu was; folded: where the conv was
            w = gm.graph.get_attr(register_constant(gm, weight))
            b = gm.graph.get_attr(register_constant(gm, bias))
            if relu is None:
                new = gm.graph.call_function(aten.conv2d.default, (args.x, w, b, stride, padding, dilation, groups))
                end = bn
                folded += 1
            elif add is None:
                _cudnn_meta_kernels()
                new = gm.graph.call_function(
                    aten.cudnn_convolution_relu.default, (args.x, w, b, stride, padding, dilation, groups)
                )
                end = relu
                fused += 1
            else:
                _cudnn_meta_kernels()
                new = gm.graph.call_function(
                    aten.cudnn_convolution_add_relu.default, (args.x, w, z, 1.0, b, stride, padding, dilation, groups)
                )
                end = relu
                fused += 1
        new.meta = dict(end.meta)
        end.replace_all_uses_with(new)
        for node in (relu, add, bn, conv):
            if node is not None:
                gm.graph.erase_node(node)
    if fused or folded:
        gm.graph.eliminate_dead_code()
        gm.delete_all_unused_submodules()
        gm.recompile()
        logger.info("fuse_conv_epilogue: %d convolutions fused with their ReLU (cuDNN), %d with BN folded", fused, folded)
    return gm


def _only_user(node: torch.fx.Node) -> torch.fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _match(gm: torch.fx.GraphModule, conv: torch.fx.Node) -> tuple[Any, ...] | None:
    """(bn, add or None, relu or None, residual or None) for a fusable conv, else None."""
    if conv.op != "call_function" or conv.target is not aten.conv2d.default or not conv.kwargs == {}:
        return None
    args = conv2d_args(conv)
    if isinstance(args.padding, str):  # padding="same"/"valid"
        return None
    x = fake_value(args.x)
    if x is None or x.dim() != 4:  # unbatched (C, H, W) input
        return None
    bn = _only_user(conv)
    if bn is None or bn.target is not aten.batch_norm.default or bn.kwargs or len(bn.args) < 8 or bn.args[5]:
        return None
    try:
        weight = constant(gm, args.weight)
        for a in (args.bias, *bn.args[1:5]):
            constant(gm, a)
    except LookupError:
        return None
    if bn.args[3] is None or bn.args[4] is None:  # no running statistics: BN uses the batch's
        return None
    if weight is None or weight.dim() != 4 or weight.dtype not in _DTYPES:
        return None
    after = _only_user(bn)
    if args.dilation != [1, 1] or args.groups != 1:
        return bn, None, None, None  # dilated or grouped: fold only (the fused ops were measured without)
    if after is not None and after.target in _RELU and not mutation_between(conv, after, {bn}):
        return bn, None, after, None
    if after is not None and after.target in _ADD and not after.kwargs and len(after.args) == 2:
        z = after.args[1] if after.args[0] is bn else after.args[0]
        relu = _only_user(after)
        val, zval = bn.meta.get("val"), getattr(z, "meta", {}).get("val")
        same = isinstance(val, torch.Tensor) and isinstance(zval, torch.Tensor) and zval.shape == val.shape and zval.dtype == val.dtype
        # add_ writes into its first argument: only the BN output (which nothing else reads) may be it
        writes_z = after.target is aten.add_.Tensor and after.args[0] is not bn
        if relu is not None and relu.target in _RELU and z is not bn and same and not writes_z:
            if not mutation_between(conv, relu, {bn, after}):
                return bn, after, relu, z
    return bn, None, None, None


def _fold(gm: torch.fx.GraphModule, conv: torch.fx.Node, bn: torch.fx.Node) -> tuple[torch.Tensor, torch.Tensor]:
    """The convolution's weight and bias with the BatchNorm folded in (computed in float32)."""
    args = conv2d_args(conv)
    weight = constant(gm, args.weight)
    assert weight is not None
    bias = constant(gm, args.bias)
    gamma, beta, mean, var = (constant(gm, a) for a in bn.args[1:5])
    eps = float(bn.args[7])
    w32 = weight.float()
    out_ch = w32.shape[0]
    scale = torch.rsqrt(var.float() + eps) * (gamma.float() if gamma is not None else 1.0)
    shift = (bias.float() if bias is not None else torch.zeros(out_ch, device=w32.device)) - mean.float()
    new_bias = shift * scale + (beta.float() if beta is not None else 0.0)
    new_weight = (w32 * scale.reshape(-1, 1, 1, 1)).to(weight.dtype).contiguous(memory_format=torch.channels_last)
    return new_weight, new_bias.to(weight.dtype)


def _out_size(x: torch.Tensor, w: torch.Tensor, stride: Any, padding: Any, dilation: Any) -> list[Any]:
    size = [x.shape[0], w.shape[0]]
    for d in range(2):
        size.append((x.shape[d + 2] + 2 * padding[d] - dilation[d] * (w.shape[d + 2] - 1) - 1) // stride[d] + 1)
    return size


def _meta_conv_relu(x: torch.Tensor, w: torch.Tensor, bias: Any, stride: Any, padding: Any, dilation: Any, groups: Any) -> torch.Tensor:
    # the weight is channels-last (the pass makes it so), hence so is cuDNN's output
    size = _out_size(x, w, stride, padding, dilation)
    return torch.empty(size, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)


def _meta_conv_add_relu(
    x: torch.Tensor, w: torch.Tensor, z: torch.Tensor, alpha: Any, bias: Any, stride: Any, padding: Any, dilation: Any, groups: Any
) -> torch.Tensor:
    return _meta_conv_relu(x, w, bias, stride, padding, dilation, groups)


def register_shape_functions(graph: torch.fx.Graph) -> None:
    """Register the fused ops' shape functions if `graph` calls them: a process that did not run this
    pass (a build worker, `flexrt.build.workers`) must do so before it exports the graph."""
    fused = (aten.cudnn_convolution_relu.default, aten.cudnn_convolution_add_relu.default)
    if any(n.op == "call_function" and n.target in fused for n in graph.nodes):
        _cudnn_meta_kernels()


@functools.cache
def _cudnn_meta_kernels() -> torch.library.Library:
    """Shape functions for the two fused ops (ATen has only their CUDA kernels), so that export
    and Inductor can trace them; registered the first time the pass fuses anything."""
    lib = torch.library.Library("aten", "IMPL")
    lib.impl("cudnn_convolution_relu", _meta_conv_relu, "Meta")
    lib.impl("cudnn_convolution_add_relu", _meta_conv_add_relu, "Meta")
    return lib
