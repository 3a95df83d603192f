"""The benchmark's models: each with its one dynamic dim, its range, and how to make inputs.

Real models come from torchvision/timm/transformers, imported only when built, so that the
smoke stand-ins (plain torch.nn, tiny shapes) run on a CPU machine that has none of them.
Weights are random: nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

MODEL_NAMES = ("expand_reshape", "resnet50", "bert", "vit")


# ---------------------------------------------------------------------------------------------
# Model code


class ExpandReshapeModel(nn.Module):
    """The model of seed 002 (Torch-TensorRT's compile_with_dynamic_inputs example)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim))
        self.embed_dim = embed_dim
        self.qkv_proj = nn.Linear(self.embed_dim, self.embed_dim * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_size = x.shape[0]
        cls_token = self.cls_token.expand(batch_size, -1, -1)
        x = torch.cat([cls_token, x], dim=1)
        x = self.qkv_proj(x)
        return x.reshape(batch_size, x.size(1), 3, 12, -1)


class SmallConvNet(nn.Module):
    """A small conv net (conv/bn/relu stages, pooling, a classifier): the resnet50 smoke stand-in,
    and the model of the profiles benchmark."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Block(nn.Module):
    """A pre-norm transformer block; `bias` is an additive attention mask or None."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 4), nn.GELU(), nn.Linear(dim * 4, dim))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class TinyEncoder(nn.Module):
    """Smoke stand-in for BERT: token + position embeddings, masked attention blocks."""

    def __init__(self, vocab: int = 1000, dim: int = 64, heads: int = 4, layers: int = 2, max_len: int = 64) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.tok(input_ids) + self.pos(positions)[None]
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min  # BERT's extended mask
        for blk in self.blocks:
            x = blk(x, bias)
        return self.norm(x)


class TinyViT(nn.Module):
    """Smoke stand-in for ViT-B/16: patch conv, class token, position embedding, blocks, head."""

    def __init__(self, image: int = 32, patch: int = 8, dim: int = 64, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads) for _ in range(layers)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


class BertLastHidden(nn.Module):
    """BertModel called as a user would, returning a tensor (last_hidden_state), not a ModelOutput."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _resnet50() -> nn.Module:
    import torchvision

    return torchvision.models.resnet50(weights=None)


def _bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    return BertLastHidden(BertModel(BertConfig()))


def _vit() -> nn.Module:
    try:
        import timm

        return timm.create_model("vit_base_patch16_224", pretrained=False)
    except ImportError as e:
        logger.info("timm unavailable (%s); using torchvision's vit_b_16", e)
        import torchvision

        return torchvision.models.vit_b_16(weights=None)


# ---------------------------------------------------------------------------------------------
# Cases


@dataclasses.dataclass(frozen=True)
class InputDesc:
    """One model input: its full shape for a size of the dynamic dim, and what its values are."""

    name: str
    shape: Callable[[int], tuple[int, ...]]
    axis: int  # which dim is dynamic
    kind: str = "float"  # "float" (the model dtype) | "ids" (int64 in [0, high)) | "mask" (int64 padding mask)
    high: int = 0


@dataclasses.dataclass(frozen=True)
class Case:
    """A model to benchmark: how to build it, its dtype, and its dynamic range."""

    name: str
    build: Callable[[], nn.Module]
    dtype: torch.dtype
    dim: str
    lo: int
    opt: int
    hi: int
    inputs: tuple[InputDesc, ...]
    floor: bool  # report FLOPs/bytes and the physical floor
    smoke: bool
    description: str

    def shapes(self) -> list[int]:
        """min, opt, max and the geometric midpoints between them (deduplicated, sorted)."""
        mids = [round(math.sqrt(self.lo * self.opt)), round(math.sqrt(self.opt * self.hi))]
        return sorted({self.lo, self.opt, self.hi, *mids})

    def input_dtype(self, desc: InputDesc) -> torch.dtype:
        return self.dtype if desc.kind == "float" else torch.int64

    def make_inputs(self, size: int, device: torch.device, seed: int) -> tuple[torch.Tensor, ...]:
        """Random inputs at one size of the dynamic dim; the same seed gives the same tensors."""
        g = torch.Generator(device=device).manual_seed(seed)
        out = []
        for d in self.inputs:
            shape = d.shape(size)
            if d.kind == "ids":
                t = torch.randint(0, d.high, shape, generator=g, device=device, dtype=torch.int64)
            elif d.kind == "mask":  # each row: a random number (>= 1) of real tokens, then padding
                lengths = torch.randint(1, shape[1] + 1, (shape[0], 1), generator=g, device=device)
                t = (torch.arange(shape[1], device=device)[None] < lengths).to(torch.int64)
            else:
                t = torch.randn(shape, generator=g, device=device, dtype=torch.float32).to(self.dtype)
            out.append(t)
        return tuple(out)

    def flexrt_inputs(self) -> list[Any]:
        import flexrt

        return [
            flexrt.Input(min_shape=d.shape(self.lo), opt_shape=d.shape(self.opt), max_shape=d.shape(self.hi),
                         dtype=self.input_dtype(d), name=d.name)
            for d in self.inputs
        ]

    def export_dims(self) -> tuple[dict[int, Any], ...]:
        """dynamic_shapes for torch.export: one Dim over the range, shared by every input."""
        dim = torch.export.Dim(self.dim, min=self.lo, max=self.hi)
        return tuple({d.axis: dim} for d in self.inputs)


def _batch(name: str, rest: tuple[int, ...]) -> InputDesc:
    return InputDesc(name, lambda b: (b, *rest), 0)


def _seq(batch: int, vocab: int) -> tuple[InputDesc, ...]:
    return (
        InputDesc("input_ids", lambda s: (batch, s), 1, "ids", vocab),
        InputDesc("attention_mask", lambda s: (batch, s), 1, "mask"),
    )


def get_case(name: str, smoke: bool) -> Case:
    """The case for a model name; `smoke` gives the tiny stand-in that runs on a CPU in a minute."""
    f16 = torch.float16
    if name == "expand_reshape":
        if smoke:
            return Case(name, lambda: ExpandReshapeModel(96), torch.float32, "batch", 1, 2, 4,
                        (_batch("x", (20, 96)),), True, True, "seed model, embed 96, 20 tokens")
        return Case(name, lambda: ExpandReshapeModel(768), torch.float32, "batch", 1, 8, 32,
                    (_batch("x", (196, 768)),), True, False, "seed model, embed 768, 196 tokens")
    if name == "resnet50":
        if smoke:
            return Case(name, SmallConvNet, f16, "batch", 1, 4, 8, (_batch("x", (3, 32, 32)),), True, True,
                        "2-stage convnet at 3x32x32 (smoke stand-in for resnet50)")
        return Case(name, _resnet50, f16, "batch", 1, 32, 128, (_batch("x", (3, 224, 224)),), True, False,
                    "torchvision resnet50, random weights, 3x224x224")
    if name == "bert":
        if smoke:
            return Case(name, lambda: TinyEncoder(layers=1, max_len=32), f16, "seq", 4, 16, 32, _seq(2, 1000), True, True,
                        "1-layer encoder, dim 64, batch 2 (smoke stand-in for bert-base)")
        return Case(name, _bert, f16, "seq", 8, 128, 512, _seq(8, 30522), True, False,
                    "transformers BertModel(BertConfig()) (bert-base), random weights, batch 8")
    if name == "vit":
        if smoke:
            return Case(name, lambda: TinyViT(layers=1), f16, "batch", 1, 4, 8, (_batch("x", (3, 32, 32)),), False, True,
                        "1-layer ViT at 3x32x32, patch 8 (smoke stand-in for ViT-B/16)")
        return Case(name, _vit, f16, "batch", 1, 16, 64, (_batch("x", (3, 224, 224)),), False, False,
                    "ViT-B/16 (timm vit_base_patch16_224, else torchvision vit_b_16), random weights")
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
