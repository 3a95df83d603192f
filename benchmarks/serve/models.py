"""The served models. Each factory is a zero-argument MODULE:CALLABLE that replicas import to build
the eager / torch.compile peers: seeded, so the driver's reference has the very same weights.
Real models come from torchvision/transformers, imported only when built; nothing is downloaded."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn as nn


class TinyMLP(nn.Module):
    """Smoke model: rows independent along dim 0, a dynamic sequence dim."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(16, 64)
        self.b = nn.Linear(64, 8)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.b(torch.nn.functional.gelu(self.a(x)))
        return {"pooled": h.mean(dim=1)}


class BertPooled(nn.Module):
    """BertModel returning only its pooled output: (B, 768) keeps JSON responses small."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pooled": self.bert(input_ids=input_ids, attention_mask=attention_mask).pooler_output}


class Logits(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.net(x)}


class TinyImage(nn.Module):
    """ResNet-50's request path (3x224x224 in, 1000 logits out) with almost no model: on a CPU it
    measures what a replica's HTTP, decoding and encoding cost per image request."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 16, stride=16)
        self.head = nn.Linear(8, 1000)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.head(self.patch(x).mean(dim=(2, 3)))}


def image_tiny() -> nn.Module:
    torch.manual_seed(0)
    return TinyImage().eval()


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return TinyMLP().eval()


def _bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertPooled(BertModel(BertConfig(), add_pooling_layer=True)).eval()


def _resnet50() -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return Logits(torchvision.models.resnet50(weights=None)).eval()


def bert_tiny() -> nn.Module:
    """The bert case's code path at toy size (1 layer, dim 64), to check the harness on a CPU."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128)
    return BertPooled(BertModel(config, add_pooling_layer=True)).eval()


def bert_fp32() -> nn.Module:
    return _bert()


def bert_fp16() -> nn.Module:
    return _bert().half()


def resnet50_fp32() -> nn.Module:
    return _resnet50()


def resnet50_fp16() -> nn.Module:
    return _resnet50().half()


@dataclasses.dataclass(frozen=True)
class ServeCase:
    """One model to serve: its factory, compiled ranges, batch dims, and the requests clients send."""

    name: str
    factory: str  # MODULE:CALLABLE
    inputs: list[dict[str, Any]]  # flexrt.Input kwargs
    batch_dims: tuple[str, ...]
    request: Callable[[random.Random], dict[str, np.ndarray]]
    rates: tuple[float, ...]
    max_batch_size: int
    tolerance: float
    description: str
    binary: bool = False  # inputs and outputs as raw bytes (v2 binary tensor extension) instead of JSON numbers
    # the sizes the requests give a dynamic dim (flexrt serve --warm-up-sizes): replicas warm them all
    warm_up_sizes: tuple[str, ...] = ()

    def build(self) -> nn.Module:
        module, _, attr = self.factory.partition(":")
        import importlib

        return getattr(importlib.import_module(module), attr)()


def _tiny_request(rng: random.Random) -> dict[str, np.ndarray]:
    s = rng.choice([4, 8, 12])
    return {"x": np.random.default_rng(rng.randrange(2**31)).random((1, s, 16), dtype=np.float32) + 0.1}


def _bert_request(rng: random.Random) -> dict[str, np.ndarray]:
    s = rng.choice([32, 64, 128, 256])
    g = np.random.default_rng(rng.randrange(2**31))
    return {"input_ids": g.integers(1, 30000, (1, s), dtype=np.int64), "attention_mask": np.ones((1, s), np.int64)}


def _resnet_request(dtype: Any) -> Callable[[random.Random], dict[str, np.ndarray]]:
    def make(rng: random.Random) -> dict[str, np.ndarray]:
        g = np.random.default_rng(rng.randrange(2**31))
        return {"x": g.standard_normal((1, 3, 224, 224), dtype=np.float32).astype(dtype)}

    return make


def get_case(name: str, device: str) -> ServeCase:
    half = device.startswith("cuda")
    if name == "tiny":
        return ServeCase(
            "tiny", "benchmarks.serve.models:tiny",
            [{"name": "x", "min_shape": (1, 2, 16), "opt_shape": (4, 8, 16), "max_shape": (8, 16, 16), "dtype": torch.float32}],
            ("x:0",), _tiny_request, (20.0, 60.0), 8, 1e-4, "2-layer MLP, x (B 1..8, S 2..16, 16), S in {4, 8, 12}",
        )
    if name in ("bert", "bert_tiny"):
        return ServeCase(
            name, "benchmarks.serve.models:bert_tiny" if name == "bert_tiny" else f"benchmarks.serve.models:bert_{'fp16' if half else 'fp32'}",
            [{"name": n, "min_shape": (1, 16), "opt_shape": (8, 128), "max_shape": (16, 256), "dtype": torch.int64}
             for n in ("input_ids", "attention_mask")],
            ("input_ids:0", "attention_mask:0"), _bert_request, (50.0, 100.0, 200.0, 400.0) if half else (2.0, 4.0), 16,
            5e-2 if half else 1e-3, "BertModel(BertConfig()) random weights, pooled output; B 1..16, S 16..256, S in {32,64,128,256}",
            warm_up_sizes=("input_ids:1=32,64,128,256",),  # attention_mask's dim 1 is the same dim of the program
        )
    if name in ("resnet50", "image_tiny"):
        dtype = np.float16 if half else np.float32
        return ServeCase(
            name, "benchmarks.serve.models:image_tiny" if name == "image_tiny" else f"benchmarks.serve.models:resnet50_{'fp16' if half else 'fp32'}",
            [{"name": "x", "min_shape": (1, 3, 224, 224), "opt_shape": (8, 3, 224, 224), "max_shape": (32, 3, 224, 224),
              "dtype": torch.float16 if half else torch.float32}],
            ("x:0",), _resnet_request(dtype), (50.0, 100.0, 200.0, 400.0) if half else (2.0, 4.0), 32,
            5e-2 if half else 1e-3,
            ("a 16x16-patch conv and a linear layer: ResNet-50's requests and outputs at toy cost" if name == "image_tiny"
             else "torchvision resnet50 random weights") + ", batch-1 requests of 3x224x224 (binary tensors)",
            binary=True,
        )
    raise SystemExit(f"unknown model {name!r}: tiny, bert_tiny, bert, image_tiny or resnet50")
