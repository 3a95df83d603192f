"""A small model zoo for tests: each model with the specs it is compiled for and shapes to check.

Built from plain torch.nn (torchvision does not import beside the CPU torch build).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

import flexrt
from benchmarks.models import ExpandReshapeModel  # the seed's model, a fixture shared with the benchmarks


class ConvNet(nn.Module):
    """'MyModel' of the seeds: conv, batch norm, pooling and a classifier; any batch, height, width."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class SelfAttention(nn.Module):
    """Attention as BERT writes it: query, key and value as three linear layers on one input."""

    def __init__(self, dim: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = (p(x).view(b, s, self.heads, -1).transpose(1, 2) for p in (self.query, self.key, self.value))
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.out(a.transpose(1, 2).reshape(b, s, d)) + x


class PatchMlp(nn.Module):
    """A vision transformer's patterns without attention: a patch-embedding convolution (kernel ==
    stride, 3 input channels; the input is cropped to whole patches), then an MLP block with
    exact GELU and one with tanh GELU on a bias-free layer."""

    def __init__(self, dim: int = 32, patch: int = 8) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.fc3, self.fc4 = nn.Linear(dim, 2 * dim, bias=False), nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = t + self.fc2(nn.functional.gelu(self.fc1(t)))
        return t + self.fc4(nn.functional.gelu(self.fc3(t), approximate="tanh"))


class ResidualNet(nn.Module):
    """A ResNet bottleneck's patterns: conv-bn-relu, conv-bn + residual add + relu (in place, as
    torchvision writes them), and a strided conv-bn shortcut with no relu after it."""

    def __init__(self, ch: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(inplace=True))
        self.a = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(inplace=True))
        self.b = nn.Sequential(nn.Conv2d(ch, ch, 1, bias=False), nn.BatchNorm2d(ch))
        self.down = nn.Sequential(nn.Conv2d(ch, 2 * ch, 1, stride=2, bias=False), nn.BatchNorm2d(2 * ch))
        self.c = nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1)
        self.bn_c = nn.BatchNorm2d(2 * ch)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(2 * ch, 10)
        for bn in (m for m in self.modules() if isinstance(m, nn.BatchNorm2d)):  # non-trivial statistics
            nn.init.uniform_(bn.weight, 0.5, 1.5)
            nn.init.uniform_(bn.bias, -0.2, 0.2)
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.b(self.a(x))
        y += x
        x = self.relu(y)
        y = self.bn_c(self.c(x)) + self.down(x)
        x = self.relu(y)
        return self.head(x.mean((2, 3)))


class MatMul(nn.Module):
    """The seed's custom-constraints example: attention scores of query and key."""

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        return torch.matmul(query, key.transpose(-1, -2))


class MaskedMLP(nn.Module):
    """Positional and keyword inputs, a dict of outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(10, 32)
        self.fc2 = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        h = torch.relu(self.fc1(x))
        logits = self.fc2(h)
        if mask is not None:
            logits = logits * mask
        return {"logits": logits, "hidden": h.mean(dim=-1)}


class SplitByTorchOp(nn.Module):
    """Two blocks of ops with a data-dependent op between them, and a data-dependent output."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16), nn.LayerNorm(16))
        self.b = nn.Sequential(nn.Linear(16, 32), nn.SiLU(), nn.Linear(32, 8), nn.Tanh())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.a(x)
        positive = torch.nonzero(h[:, 0] > 0)  # data-dependent: runs in PyTorch
        scale = torch.sigmoid(h.sum(dim=-1, keepdim=True))
        return self.b(h) * scale, positive


class MaskedAttentionLayers(nn.Module):
    """Two attention layers reading one boolean padding mask, as BERT's layers do (heads of 64, as
    BERT's; the first key always kept, so no row is fully masked whatever the random mask). With
    `square`, the mask is built as HF's encoders build it, [batch, 1, seq, seq] from a query term
    that is true everywhere; without, it is [batch, 1, 1, seq]."""

    def __init__(self, square: bool) -> None:
        super().__init__()
        self.square = square
        self.a, self.b = nn.Linear(128, 384), nn.Linear(128, 384)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(mask.shape[1], device=mask.device)
        keep = (mask.bool() | (pos == 0))[:, None, None, :]
        if self.square:
            keep = (pos[None, None, :, None] >= 0) & keep
        out = x
        for proj in (self.a, self.b):
            q, k, v = proj(out).view(x.shape[0], x.shape[1], 3, 2, 64).permute(2, 0, 3, 1, 4)
            out = out + nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(1, 2).reshape(x.shape)
        return out

    @staticmethod
    def specs(dtype: torch.dtype, max_seq: int) -> list[flexrt.Input]:
        """Batch 1..4, sequence 2..max_seq, hidden 128."""
        return [
            flexrt.Input(min_shape=(1, 2, 128), opt_shape=(2, 8, 128), max_shape=(4, max_seq, 128), dtype=dtype, name="x"),
            flexrt.Input(min_shape=(1, 2), opt_shape=(2, 8), max_shape=(4, max_seq), dtype=torch.int64, name="mask"),
        ]


@dataclasses.dataclass
class ZooEntry:
    make: Callable[[], nn.Module]
    inputs: Callable[[], list[flexrt.Input]]
    kwarg_inputs: Callable[[], dict[str, flexrt.Input]] = dict
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


def _make(cls: Callable[..., nn.Module], *args: Any) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        torch.manual_seed(0)
        return cls(*args).eval()

    return make


ZOO: dict[str, ZooEntry] = {
    "expand_reshape": ZooEntry(
        _make(ExpandReshapeModel, 96),
        lambda: [flexrt.Input(min_shape=(1, 20, 96), opt_shape=(4, 20, 96), max_shape=(32, 20, 96), name="x")],
    ),
    "convnet": ZooEntry(
        _make(ConvNet),
        lambda: [flexrt.Input(min_shape=(1, 3, 16, 16), opt_shape=(4, 3, 32, 32), max_shape=(8, 3, 48, 48), name="image")],
    ),
    "masked_mlp": ZooEntry(
        _make(MaskedMLP),
        lambda: [flexrt.Input(min_shape=(1, 10), opt_shape=(4, 10), max_shape=(8, 10), name="x")],
        lambda: {"mask": flexrt.Input(min_shape=(1, 5), opt_shape=(4, 5), max_shape=(8, 5), name="mask")},
    ),
    "split": ZooEntry(
        _make(SplitByTorchOp),
        lambda: [flexrt.Input(min_shape=(2, 16), opt_shape=(6, 16), max_shape=(16, 16), name="x")],
    ),
}
