"""`torch_tensorrt.dynamo.refit_module_weights`: new weights, nothing built, results as eager's.

The model has what flexrt's lowering rewrites on CUDA (a convolution followed by batch norm, and
linear layers reading one tensor); on the CPU those passes are off, so the test of the rewritten
weights' names lowers with the CUDA-aimed settings (`test_lowered_weights_keep_their_names`).
"""

from __future__ import annotations

import json
import warnings
import zipfile

import pytest
import torch
from helpers import CUDA_SETTINGS, assert_matches

import flexrt as torch_tensorrt
from flexrt.errors import RefitError
from flexrt.lower import lower
from flexrt.partition import partition
from flexrt.serialize.inspect import describe

SPEC = torch_tensorrt.Input(min_shape=(1, 3, 8, 8), opt_shape=(2, 3, 8, 8), max_shape=(4, 3, 8, 8))
BATCHES = (1, 3, 4)


class Net(torch.nn.Module):
    def __init__(self, v_out: int = 4, q_bias: bool = True) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.q = torch.nn.Linear(8, 8, bias=q_bias)
        self.k = torch.nn.Linear(8, 8)
        self.v = torch.nn.Linear(8, v_out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.bn(self.conv(x)).mean((2, 3))
        return self.q(h) * self.k(h), self.v(h)


def make(seed: int, **kw: int) -> Net:
    torch.manual_seed(seed)
    m = Net(**kw)
    m.bn.running_mean.normal_()  # batch-norm statistics that matter once folded
    m.bn.running_var.uniform_(0.5, 2.0)
    return m.eval()


def check(module: torch.nn.Module, model: torch.nn.Module) -> None:
    with torch.no_grad():
        for n in BATCHES:
            x = torch.randn(n, 3, 8, 8)
            assert_matches(module(x), model(x))


@pytest.fixture(scope="module")
def compiled():
    old = make(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = torch_tensorrt.compile(old, ir="dynamo", inputs=[SPEC])
    # the build's FutureWarning about torch's LeafSpec is not shown (flexrt.build.inductor._quiet_leafspec)
    assert not [w for w in caught if "LeafSpec" in str(w.message)]
    return old, module


def test_refit_from_a_module_returns_a_new_one_and_leaves_the_old(compiled):
    old, module = compiled
    new = make(1)
    refitted = torch_tensorrt.dynamo.refit_module_weights(module, new, verify_output=True)
    assert refitted is not module
    check(refitted, new)
    check(module, old)  # in_place=False: unchanged


def test_refit_from_an_exported_program_in_place_after_load_and_save(compiled, tmp_path):
    _, module = compiled
    torch_tensorrt.save(module, str(tmp_path / "a.flexrt"))
    loaded = torch_tensorrt.load(str(tmp_path / "a.flexrt")).module()
    new = make(2)
    ep = torch.export.export(new, (torch.randn(2, 3, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4)},))
    x = torch.randn(2, 3, 8, 8)
    same = torch_tensorrt.dynamo.refit_module_weights(loaded, ep, arg_inputs=(x,), verify_output=True, in_place=True)
    assert same is loaded
    check(loaded, new)
    path = tmp_path / "b.flexrt"
    torch_tensorrt.save(loaded, str(path))
    with zipfile.ZipFile(path) as z:
        manifest = json.loads(z.read("manifest.json"))
        assert manifest["format_version"] == 4 and "engines/p0_s0.weights.pt" in z.namelist()
    assert describe(path)["profiles"][0]["segments"][0]["refitted"]  # shown by `flexrt inspect`
    check(torch_tensorrt.load(str(path)).module(), new)  # the saved artifact carries the new weights
    newer = make(4)
    check(torch_tensorrt.dynamo.refit_module_weights(torch_tensorrt.load(str(path)), newer), newer)  # an Artifact too


def test_another_architecture_or_a_missing_weight_is_a_refit_error(compiled):
    _, module = compiled
    with pytest.raises(RefitError, match=r"\(4, 8\) torch.float32 in the compiled one; refit needs the same architecture"):
        torch_tensorrt.dynamo.refit_module_weights(module, make(3, v_out=5))
    with pytest.raises(RefitError, match=r"has no weight 'w_q_bias' in the new module; is it the same architecture"):
        torch_tensorrt.dynamo.refit_module_weights(module, make(3, q_bias=False))
    with pytest.raises(RefitError, match=r"an ExportedProgram or an nn.Module"):
        torch_tensorrt.dynamo.refit_module_weights(module, make(3).state_dict())


def test_lowered_weights_keep_their_names():
    """With CUDA's passes (batch norm folded into the convolution, q/k/v merged into one linear),
    the lowered graph of new weights names its constants as the compiled one did, holds the new
    folded values, and computes what the new model computes: what refit maps onto the engines."""
    from torch.export import Dim, export

    x = torch.randn(2, 3, 8, 8)

    def lowered(model: Net) -> torch.fx.GraphModule:
        ep = export(model, (x,), dynamic_shapes=({0: Dim("batch", min=1, max=4)},))
        return lower(ep, CUDA_SETTINGS)

    def constants(gm: torch.fx.GraphModule) -> dict[str, torch.Tensor]:
        plan = partition(gm, CUDA_SETTINGS)
        return {
            str(n.target): getattr(seg.module, str(n.target))
            for seg in plan.segments for n in seg.module.graph.nodes if n.op == "get_attr"
        }

    a, b = make(0), make(1)
    ga, gb = lowered(a), lowered(b)
    assert not any(n.target is torch.ops.aten.batch_norm.default for n in gb.graph.nodes if n.op == "call_function")
    merged = [n for n in gb.graph.nodes if n.op == "call_function" and n.target is torch.ops.aten.linear.default]
    assert len(merged) == 1  # q, k and v read one tensor: one linear
    ca, cb = constants(ga), constants(gb)
    assert list(ca) == list(cb) and any("fused" in name for name in cb)
    assert all(not torch.equal(ca[k], cb[k]) for k in ca)
    with torch.no_grad():
        for n in BATCHES:
            y = torch.randn(n, 3, 8, 8)
            assert_matches(gb(y), b(y))


class SplitNet(torch.nn.Module):
    """An engine, a PyTorch segment (mul, by torch_executed_ops) reading a buffer, another engine,
    and the buffer returned as it is: every place a weight can live in a compiled module."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(8, 8)
        self.b = torch.nn.Linear(8, 8)
        self.register_buffer("scale", torch.rand(8))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.b(torch.relu(self.a(x)) * self.scale), self.scale


def test_refit_reaches_pytorch_segments_and_returned_constants(tmp_path):
    def split(seed: int) -> SplitNet:
        torch.manual_seed(seed)
        return SplitNet().eval()

    spec = torch_tensorrt.Input(min_shape=(1, 8), opt_shape=(2, 8), max_shape=(4, 8))
    module = torch_tensorrt.compile(split(0), inputs=[spec], torch_executed_ops={"aten.mul.Tensor"}, min_block_size=1)
    assert [s.kind for s in module.engine.state.programs[0].segments] == ["engine", "torch", "engine"]
    new = split(1)
    refitted = torch_tensorrt.dynamo.refit_module_weights(module, new, verify_output=True)
    torch_tensorrt.save(refitted, str(tmp_path / "split.flexrt"))
    for m in (refitted, torch_tensorrt.load(str(tmp_path / "split.flexrt")).module()):
        with torch.no_grad():
            for n in (1, 4):
                x = torch.randn(n, 8)
                assert_matches(m(x), new(x))
