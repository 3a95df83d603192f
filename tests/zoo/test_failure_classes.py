"""Regression tests for the failure classes of issue #18, one small model per class, each compared
against eager on fresh random inputs across its range (every test here failed before its fix)."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
import torch.nn as nn

import flexrt
from flexrt.errors import CompilationError, DataDependentBranchError

In = flexrt.Input


def _check(model: nn.Module, compiled: nn.Module, shapes: list[tuple[int, ...]], make=torch.randn) -> None:
    for shape in shapes:
        for _ in range(2):
            x = make(shape)
            with torch.no_grad():
                ref = model(x)
            torch.testing.assert_close(compiled(x), ref, rtol=1e-4, atol=1e-4, msg=f"shape {shape}")


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_model_without_ops_compiles_and_runs() -> None:
    """partition: an empty engine segment made `min()` fail on an empty sequence."""
    m = Identity()
    c = flexrt.compile(m, ir="dynamo", inputs=[In((1, 4), (2, 4), (4, 4))])
    _check(m, c, [(1, 4), (3, 4), (4, 4)])


class ScalarBuffer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.register_buffer("scale", torch.tensor(0.5))
        self.register_buffer("steps", torch.tensor(3, dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * self.scale + self.steps


def test_zero_dim_constants_build() -> None:
    """build: a 0-dim buffer could not be viewed as bytes for the engine cache key ("view Long as Byte")."""
    m = ScalarBuffer().eval()
    c = flexrt.compile(m, ir="dynamo", inputs=[In((1, 8), (4, 8), (8, 8))])
    _check(m, c, [(1, 8), (5, 8), (8, 8)])


class TrainModeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.bn(self.conv(x)).relu())


def test_train_mode_model_compiles_with_eval_semantics() -> None:
    """A model left in training mode (BatchNorm's num_batches_tracked crashed the build) compiles as after
    .eval(), with a warning that names the modules; the user's model stays in training mode."""
    m = TrainModeNet()
    m.bn.running_mean.uniform_(-1, 1)
    m.bn.running_var.uniform_(0.5, 2)
    with pytest.warns(UserWarning, match=r"training mode.*bn.*drop"):
        c = flexrt.compile(m, ir="dynamo", inputs=[In((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))])
    assert m.training and m.bn.training
    ref = TrainModeNet()
    ref.load_state_dict(m.state_dict())
    _check(ref.eval(), c, [(1, 3, 8, 8), (3, 3, 8, 8), (4, 3, 8, 8)])


class RareRows(nn.Module):
    """Selects the rows whose first value is above 2.5: usually none in a random example."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = (x[:, 0] > 2.5).nonzero()[:, 0]
        picked = self.lin(x[rows]).relu() * 2 + 1
        return self.lin(x).sum(0) + picked.sum(0)


def test_data_dependent_size_empty_in_example_run() -> None:
    """build: a `nonzero` that selected no rows in the random example failed the build ("was 0 in the example run")."""
    torch.manual_seed(0)
    m = RareRows().eval()
    c = flexrt.compile(m, ir="dynamo", inputs=[In((2, 4), (8, 4), (16, 4))], min_block_size=1)

    def make(shape: tuple[int, ...]) -> torch.Tensor:
        x = torch.randn(shape)
        x[: shape[0] // 2, 0] += 3.0  # half the rows selected
        return x

    _check(m, c, [(2, 4), (9, 4), (16, 4)], make)
    _check(m, c, [(2, 4), (16, 4)], lambda s: torch.randn(s).clamp(max=2.0))  # no rows


class ShrinkingConv(nn.Module):
    """Two stride-2 convolutions: a 4x4 image ends as a 1x1 feature map."""

    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.f(x)
        return y.flatten(2).mean(-1) + y.mean((2, 3))


def test_feature_map_reaching_1x1_at_the_small_end() -> None:
    """trace: 0/1 specialisation of a feature map made export refuse H, W ranges starting at 4."""
    m = ShrinkingConv().eval()
    c = flexrt.compile(m, ir="dynamo", inputs=[In((1, 3, 4, 4), (2, 3, 16, 16), (2, 3, 32, 32))])
    _check(m, c, [(1, 3, 4, 4), (2, 3, 4, 7), (1, 3, 13, 5), (2, 3, 32, 32)])


class TwoPaths(nn.Module):
    """Takes another branch once batch * min(64 * seq, 3000) reaches 4000."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s = x.shape
        if min(64 * s, 3000) * b < 4000:
            return x * 2
        return x + 1


def test_guard_failing_in_part_of_the_range_is_an_error_naming_it() -> None:
    """trace: torch 2.13 dropped a guard it could not express as a Dim range, so the program ran the
    traced branch everywhere (wrong results at the max); now the guard is checked over the range."""
    m = TwoPaths()
    with pytest.raises(CompilationError, match=r"(?s)different path.*Min\(3000, 64\*s\d+\).*test_failure_classes.py:\d+.*fails at"):
        flexrt.compile(m, ir="dynamo", inputs=[In((1, 8), (2, 16), (8, 256))], dryrun=True)


class MaskGuard(nn.Module):
    """A guard that holds over the whole range but is no Dim range (HF masks: min(64*s, ...)). torch 2.11
    refused such a guard ("Constraints violated"); torch 2.13 accepts it, so this guards the range check
    against refusing what holds (it passes without the fix on 2.13)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s = x.shape
        if min(64 * s, b * s * 3) * 2 >= 6 * s:
            return x * 2
        return x + 1


def test_guard_holding_over_the_range_compiles() -> None:
    m = MaskGuard()
    c = flexrt.compile(m, ir="dynamo", inputs=[In((1, 8), (2, 16), (8, 64))])
    _check(m, c, [(1, 8), (3, 20), (8, 64)])


class DataBranch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x > 0).sum() == 1:
            return x * 2
        return x + 1


def test_data_dependent_branch_is_a_typed_error_with_the_source_line() -> None:
    """trace: a Python branch on tensor data surfaced torch.export's raw GuardOnDataDependentSymNode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CompilationError, match=r"(?s)branches on a value computed from tensor data at .*"
                                                   r"test_failure_classes.py:\d+.*ir='torch_compile'"):
            flexrt.compile(DataBranch(), ir="dynamo", inputs=[In((1, 4), (2, 4), (4, 4))], dryrun=True)


class OverflowClamp(nn.Module):
    """BART's float16 guard: a Python branch on the values of an intermediate tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(16, 16), nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        if not torch.isfinite(h).all():
            h = torch.nan_to_num(h, posinf=100.0, neginf=-100.0)
        return self.b(torch.relu(h))


def test_data_dependent_branch_compiles_in_pieces(caplog: pytest.LogCaptureFixture) -> None:
    """trace: one branch on tensor data failed the whole model (hf_bart in float16); now dynamo splits
    the model at the branch, which runs in PyTorch, and both sides of it are engines. Full compilation
    required keeps the typed error."""
    model = OverflowClamp().eval()
    spec = In((1, 16), (4, 16), (8, 16))
    with caplog.at_level("WARNING", logger="flexrt"):
        compiled = flexrt.compile(model, inputs=[spec])
    assert "compiling the model in pieces" in caplog.text and "test_failure_classes.py" in caplog.text
    for batch in (1, 2, 4, 6, 8):
        for overflow in (False, True):  # both sides of the branch, at fresh inputs every time
            x = torch.randn(batch, 16)
            if overflow:
                x[batch - 1] = 1e38  # the first linear overflows to inf in this row
            with torch.no_grad():
                torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4, msg=f"batch {batch}")
    with pytest.raises(flexrt.errors.InputSpecError, match=r"compiled in pieces at a branch on tensor data"):
        flexrt.save(compiled, "never-written.ep", arg_inputs=[spec])
    with pytest.raises(DataDependentBranchError, match="tensor data at .*test_failure_classes.py"):
        flexrt.compile(model, inputs=[spec], require_full_compilation=True)


def test_pieces_failing_too_name_flexrt_s_own_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the pieces fail as well, the error said only "BackendCompilerFailed: backend='flexrt'
    raised:" (Faster R-CNN on the H200); it now carries the error flexrt raised inside dynamo."""
    import flexrt.backend

    def refuse(*args: object, **kwargs: object) -> None:
        raise flexrt.errors.InputSpecError("input 'l_x_' dim 0: a reason only the piece knows")

    monkeypatch.setattr(flexrt.backend, "trace", refuse)
    torch._dynamo.reset()
    with pytest.raises(DataDependentBranchError, match=r"failed too: InputSpecError: input 'l_x_' dim 0: a reason only"):
        flexrt.compile(OverflowClamp().eval(), inputs=[In((1, 16), (4, 16), (8, 16))])


class BranchBetweenSizes(nn.Module):
    """BART's encoder layer in small: lengths read before a branch on tensor data and used after it,
    a mask with a broadcast dim of 1, and a length returned beside the tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, int]:
        batch, n = x.shape[:2]
        keep = mask[:, None, :, None].to(x.dtype)  # (batch, 1, n, 1)
        h = self.a(x)
        if not torch.isfinite(h).all():
            h = torch.nan_to_num(h, posinf=100.0, neginf=-100.0)
        h = self.b(h).reshape(batch, 1, n, 8) * keep
        return h.sum(1), n * 2


def test_pieces_pass_sizes_across_the_branch_and_build_every_graph_at_compile() -> None:
    """In pieces (hf_bart in float16), a piece took a length whose tensor it does not receive ("a Python
    number that is not a size of a tensor input"), returned one (KeyError 'sym_size_int'), a broadcast
    dim of 1 was made symbolic (fake-tensor error in attention), and batch 1 recompiled at the user's call.
    Now every graph for the range is built by flexrt.compile; no call in the range compiles again."""
    from torch._dynamo.utils import counters

    model = BranchBetweenSizes().eval()
    specs = [In((1, 2, 8), (3, 6, 8), (4, 9, 8)), In((1, 2), (3, 6), (4, 9), dtype=torch.int64)]
    compiled = flexrt.compile(model, inputs=specs)
    graphs = counters["stats"]["unique_graphs"]
    for batch, n in ((1, 2), (1, 7), (2, 5), (3, 6), (4, 9), (2, 2)):
        for overflow in (False, True):
            x, mask = torch.randn(batch, n, 8), torch.randint(0, 2, (batch, n))
            if overflow:
                x[0, 0] = 1e38
            with torch.no_grad():
                out, length = compiled(x, mask)
                ref, ref_length = model(x, mask)
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4, msg=f"batch {batch} n {n}")
            assert length == ref_length and type(length) is int
    assert counters["stats"]["unique_graphs"] == graphs, "a call inside the compiled range compiled a new graph"


class SqueezeBatch(nn.Module):
    """Drops the batch dim when it is 1: really different at the small end."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x + y).squeeze(0)


class SharedBatch(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x.unsqueeze(1) * y.unsqueeze(2)).sum(1) + x


def test_shared_dim_from_1_compiles_and_a_real_size_1_path_is_refused() -> None:
    """A dim shared by two inputs over [1, 2] is traced for the general case; where the model really
    differs at 1 (squeeze), the check at the min shapes refuses it instead of returning wrong shapes."""
    specs = [In((1, 4), (2, 4), (2, 4)), In((1, 4), (2, 4), (2, 4))]
    m = SharedBatch()
    c = flexrt.compile(m, ir="dynamo", inputs=specs)
    for b in (1, 2):
        x, y = torch.randn(b, 4), torch.randn(b, 4)
        torch.testing.assert_close(c(x, y), m(x, y))
    with pytest.raises(CompilationError, match="behaves differently when a size is 1"):
        flexrt.compile(SqueezeBatch(), ir="dynamo", inputs=specs, dryrun=True)


class LongInputPath(nn.Module):
    """A different computation once min(64 * seq, 3000) reaches 2000 (seq >= 32): a chunked path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(64 * x.shape[1], 3000) < 2000:
            return x * 2
        return x.cumsum(1)


class ShortInputPath(nn.Module):
    """A plain range guard (seq < 40) that torch.export reports as a narrower Dim."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] < 40:
            return x * 2
        return x + 1


@pytest.mark.parametrize("model", [LongInputPath(), ShortInputPath()], ids=["runtime_assert", "dim_fix"])
def test_range_split_where_the_model_takes_another_path(model: nn.Module) -> None:
    """trace: a one-size guard that holds on part of the range splits it; each part is compiled at its own sizes."""
    c = flexrt.compile(model, ir="dynamo", inputs=[In((1, 8), (2, 16), (2, 64))])
    assert "Range split" in c.report and len(c.parts) == 2, c.report
    _check(model, c, [(1, 8), (2, 31), (1, 32), (2, 39), (2, 40), (1, 64)])


def test_build_failure_names_the_op_its_source_line_and_the_workaround() -> None:
    """build: an AOTInductor failure was the raw exception text; now it names the model's op and line."""
    from flexrt.build.failure import describe_build_failure

    ep = torch.export.export(TrainModeNet().eval(), (torch.randn(1, 3, 8, 8),))
    err = RuntimeError("LoweringException: NotImplementedError: no lowering\n  target: aten.relu.default")
    text = describe_build_failure("AOTInductor", err, ep.graph, "segment 0 profile 0")
    assert "at op aten.relu.default" in text
    assert re.search(r"test_failure_classes.py:\d+ in forward", text), text
    assert "torch_executed_ops={'aten.relu.default'}" in text


class ResNetStem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 7, 2, 3, bias=False)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.down = nn.Conv2d(4, 8, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.pool(torch.relu(self.conv(x))))


def test_max_pool_over_dynamic_height_and_width() -> None:
    """trace and build (torch 2.11): the pooling meta's floor division guarded the parity of the
    stem's output size (`Ne(Mod(((s - 1)//2), 2), 0)`), so ResNet-50 over 128..384 failed to trace,
    and the engine asserted it at odd sizes; the size is the same either way."""
    m = ResNetStem().eval()
    c = flexrt.compile(m, ir="dynamo", inputs=[In((1, 3, 128, 128), (2, 3, 224, 224), (4, 3, 384, 384))])
    _check(m, c, [(1, 3, 128, 128), (1, 3, 129, 130), (2, 3, 131, 257), (4, 3, 383, 384)])
