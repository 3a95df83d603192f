"""A small grammar of models for property-based tests: a chain of ops on a (batch, seq, features)
input, drawn by hypothesis. Each op is shape-safe for every batch and sequence length."""

from __future__ import annotations

import dataclasses

import torch
from hypothesis import strategies as st

OPS = ("relu", "gelu", "tanh", "sigmoid", "affine", "linear", "softmax", "center", "norm_sum", "transpose_back",
       "reshape_back", "cat", "attention", "max_pool")


@dataclasses.dataclass(frozen=True)
class Recipe:
    ops: tuple[str, ...]
    features: int
    batch: tuple[int, int, int]  # min, opt, max
    seq: tuple[int, int, int]
    seed: int


class GrammarModel(torch.nn.Module):
    def __init__(self, recipe: Recipe) -> None:
        super().__init__()
        torch.manual_seed(recipe.seed)
        self.ops = recipe.ops
        self.layers = torch.nn.ModuleList()
        width = recipe.features
        for op in recipe.ops:
            if op == "linear":
                self.layers.append(torch.nn.Linear(width, 8))
                width = 8
            elif op == "cat":
                width *= 2
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = iter(self.layers)
        for op in self.ops:
            b, s, f = x.shape
            if op == "relu":
                x = torch.relu(x)
            elif op == "gelu":
                x = torch.nn.functional.gelu(x)
            elif op == "tanh":
                x = torch.tanh(x)
            elif op == "sigmoid":
                x = torch.sigmoid(x)
            elif op == "affine":
                x = x * 1.5 - 0.25
            elif op == "linear":
                x = next(layers)(x)
            elif op == "softmax":
                x = torch.softmax(x, dim=-1)
            elif op == "center":
                x = x - x.mean(dim=-1, keepdim=True)
            elif op == "norm_sum":
                x = x / (x.abs().sum(dim=1, keepdim=True) + 1.0)
            elif op == "transpose_back":
                x = (x.permute(0, 2, 1) * 2.0).permute(0, 2, 1)
            elif op == "reshape_back":
                x = (x.reshape(b, s * f) + 1.0).reshape(b, s, f)
            elif op == "cat":
                x = torch.cat([x, torch.relu(x)], dim=-1)
            elif op == "attention":
                scores = torch.softmax(x @ x.transpose(1, 2) / f**0.5, dim=-1)
                x = scores @ x
            elif op == "max_pool":
                x = x + x.amax(dim=1, keepdim=True)
        return x


@st.composite
def recipes(draw: st.DrawFn) -> Recipe:
    def rng(low: int, high: int) -> tuple[int, int, int]:
        lo = draw(st.integers(low, high))
        hi = draw(st.integers(lo, high))
        return lo, draw(st.integers(lo, hi)), hi

    batch = rng(1, 12)
    seq = rng(1, 16) if draw(st.booleans()) else (lambda n: (n, n, n))(draw(st.integers(1, 8)))
    return Recipe(
        ops=tuple(draw(st.lists(st.sampled_from(OPS), min_size=2, max_size=5))),
        features=draw(st.sampled_from([4, 8, 16])),
        batch=batch,
        seq=seq,
        seed=draw(st.integers(0, 2**16)),
    )
