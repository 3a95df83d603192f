"""Refit on CUDA, where flexrt's lowering rewrites the weights it refits (batch norm folded into the
convolution, linear layers reading one tensor merged, channels-last convolutions): new weights reach
the engine and its captured CUDA graphs, after save/load too."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_matches

import flexrt as torch_tensorrt

pytestmark = pytest.mark.cuda

BATCHES = (1, 3, 4, 2)


class ConvNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(16)
        self.conv2 = torch.nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.q = torch.nn.Linear(16, 16)
        self.k = torch.nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.relu(self.bn(self.conv(x))))).mean((2, 3))
        return self.q(h) * self.k(h)


def make(seed: int) -> ConvNet:
    torch.manual_seed(seed)
    m = ConvNet()
    m.bn.running_mean.normal_()
    m.bn.running_var.uniform_(0.5, 2.0)
    return m.eval().cuda()


def check(module: torch.nn.Module, model: torch.nn.Module) -> None:
    """Each batch three times: the first call, the CUDA graph's capture, a replay on fresh inputs."""
    with torch.no_grad():
        for n in BATCHES:
            for _ in range(3):
                x = torch.randn(n, 3, 16, 16, device="cuda")
                assert_matches(module(x), model(x))


def test_refit_on_cuda_reaches_folded_and_merged_weights_and_captured_graphs(tmp_path):
    spec = torch_tensorrt.Input(min_shape=(1, 3, 16, 16), opt_shape=(2, 3, 16, 16), max_shape=(4, 3, 16, 16))
    old = make(0)
    module = torch_tensorrt.compile(old, ir="dynamo", inputs=[spec])
    check(module, old)  # graphs captured with the old weights
    new = make(1)
    same = torch_tensorrt.dynamo.refit_module_weights(module, new, verify_output=True, in_place=True)
    assert same is module
    check(module, new)  # the captured graphs read the new weights
    path = str(tmp_path / "net.flexrt")
    torch_tensorrt.save(module, path)
    check(torch_tensorrt.load(path).module(), new)
    newer = make(2)
    check(torch_tensorrt.dynamo.refit_module_weights(torch_tensorrt.load(path), newer), newer)
