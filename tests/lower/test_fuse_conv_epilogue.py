"""The conv epilogue pass: BN folded into convolutions, ReLU and residual add fused into cuDNN's
fused convolutions on CUDA; results against eager over the range."""

from __future__ import annotations

import zipfile

import pytest
import torch
from helpers import CUDA_SETTINGS, sweep
from models import ResidualNet

import flexrt
from flexrt.lower.fuse_conv_epilogue import _fold, _match, fuse_conv_epilogue
from flexrt.settings import build_settings

aten = torch.ops.aten


def _graph(model: torch.nn.Module) -> torch.fx.GraphModule:
    x = torch.randn(2, 3, 8, 8)
    return torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("b", min=1, max=8)},)).module()


def test_the_rewrite_fuses_relu_and_residual_add_and_folds_the_rest():
    """The rewrite itself (it needs no GPU to run; the fused ops do): settings aimed at CUDA."""
    gm = fuse_conv_epilogue(_graph(ResidualNet().eval()), CUDA_SETTINGS)
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    # stem and a: conv-bn-relu; b: conv-bn + x, relu; c: conv-bn + shortcut, relu; the shortcut
    # (conv-bn, then that add) keeps a conv2d with its BN folded in
    assert targets.count(aten.cudnn_convolution_relu.default) == 2
    assert targets.count(aten.cudnn_convolution_add_relu.default) == 2
    assert targets.count(aten.conv2d.default) == 1
    for gone in (aten.batch_norm.default, aten.relu_.default, aten.relu.default, aten.add_.Tensor, aten.add.Tensor):
        assert gone not in targets


def test_grouped_and_dilated_convolutions_are_only_folded():
    """The fused ops were measured for plain convolutions only; others keep Inductor's conv."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=4), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=2, dilation=2), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
    ).eval()
    gm = fuse_conv_epilogue(_graph(model), CUDA_SETTINGS)
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert targets.count(aten.cudnn_convolution_relu.default) == 1
    assert targets.count(aten.conv2d.default) == 2
    assert targets.count(aten.relu.default) == 2
    assert aten.batch_norm.default not in targets


class _InPlace(torch.nn.Module):
    """Two in-place writes the fused ops must not reorder: the residual updated in place by the
    add (`x += bn(conv(x))`), and a tensor the convolution read modified before the ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.pre = torch.nn.Conv2d(3, 8, 1)
        self.conv1, self.bn1 = torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
        self.conv2, self.bn2 = torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre(x)
        h += self.bn1(self.conv1(h))
        h = torch.relu(h)
        y = self.bn2(self.conv2(h))
        h.mul_(2.0)
        return torch.relu(y) + h


def test_in_place_writes_around_the_pattern_keep_it_unfused():
    torch.manual_seed(0)
    model = _InPlace().eval()
    gm = fuse_conv_epilogue(_graph(model), CUDA_SETTINGS)
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert aten.cudnn_convolution_relu.default not in targets
    assert aten.cudnn_convolution_add_relu.default not in targets
    assert aten.batch_norm.default not in targets  # still folded
    x = torch.randn(2, 3, 8, 8)  # what is left runs anywhere: compare with eager
    torch.testing.assert_close(gm(x), model(x), rtol=1e-4, atol=1e-5)


def test_nothing_changes_for_cpu_engines():
    gm = _graph(ResidualNet().eval())
    before = [n.target for n in gm.graph.nodes]
    fuse_conv_epilogue(gm, build_settings({}))
    assert [n.target for n in gm.graph.nodes] == before


def test_folded_weights_reproduce_conv_and_batch_norm():
    torch.manual_seed(0)
    model = ResidualNet().eval()
    gm = _graph(model)
    x = torch.randn(3, 16, 8, 8)
    for conv, block in zip([n for n in gm.graph.nodes if n.target is aten.conv2d.default][1:3], (model.a, model.b)):
        bn = _match(gm, conv)[0]
        weight, bias = _fold(gm, conv, bn)
        assert weight.is_contiguous(memory_format=torch.channels_last)
        ref = block[1](block[0](x))
        out = torch.nn.functional.conv2d(x, weight, bias, block[0].stride, block[0].padding)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_fused_engine_matches_eager_on_the_gpu(dtype, tmp_path):
    torch.manual_seed(0)
    model = ResidualNet().eval().to("cuda", dtype)
    spec = flexrt.Input(min_shape=(1, 3, 16, 16), opt_shape=(4, 3, 24, 24), max_shape=(8, 3, 32, 32), dtype=dtype, name="x")
    compiled = flexrt.compile(model, inputs=[spec], enabled_precisions={dtype})
    lowered = compiled.fallback.graph_module
    targets = [n.target for n in lowered.graph.nodes]
    assert targets.count(aten.cudnn_convolution_relu.default) == 2
    assert targets.count(aten.cudnn_convolution_add_relu.default) == 2
    assert aten.batch_norm.default not in targets
    for _ in range(2):  # plain runs, then CUDA-graph replays
        sweep(compiled, model, [spec], device="cuda", precision=dtype)
    # the engine calls the fused ops through AOTInductor's proxy executor: its description must
    # travel with the artifact and sit beside the engine when it is loaded again
    path = str(tmp_path / "fused.ep")
    flexrt.save(compiled, path)
    assert "engines/p0_s0/engine.json" in zipfile.ZipFile(path).namelist()
    sweep(flexrt.load(path).module(), model, [spec], device="cuda", precision=dtype)
