"""How a zoo model is described: its dims (each a range), its inputs as shapes over those dims, and
how to make valid random inputs (ids inside the vocabulary, padding masks with at least one token)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch


class MissingLibrary(Exception):
    """The model's library is not installed here (torchvision/timm exist only on the GPU machine)."""


def need(module: str) -> Any:
    """Import a third-party library or raise MissingLibrary (a 'skipped' status, not a crash)."""
    import importlib

    try:
        return importlib.import_module(module)
    except Exception as e:  # torchvision on a CPU-only torch fails with RuntimeError, not ImportError
        raise MissingLibrary(f"needs {module.split('.')[0]}") from e


@dataclasses.dataclass(frozen=True)
class Dim:
    """One dynamic size: its range, the size to tune at, and a step sizes must be multiples of."""

    name: str
    lo: int
    opt: int
    hi: int
    step: int = 1

    def points(self) -> list[int]:
        """min, the geometric midpoint of min/opt, opt, that of opt/max, max (multiples of step)."""
        def snap(v: float) -> int:
            return min(self.hi, max(self.lo, int(round(v / self.step)) * self.step))

        return [self.lo, snap(math.sqrt(self.lo * self.opt)), self.opt, snap(math.sqrt(self.opt * self.hi)), self.hi]


Size = int | str  # a static size, or the name of a Dim


@dataclasses.dataclass(frozen=True)
class Arg:
    """One model input: keyword name, shape over dims, and its values' kind."""

    name: str
    shape: tuple[Size, ...]
    kind: str = "float"  # float | ids (int64 in [0, high)) | mask (int64 padding mask over the last dim)
    high: int = 0
    positional: bool = False
    in_list: bool = False  # passed as a one-element list (torchvision detection takes list[Tensor])

    def resolve(self, sizes: dict[str, int]) -> tuple[int, ...]:
        return tuple(sizes[s] if isinstance(s, str) else s for s in self.shape)


@dataclasses.dataclass(frozen=True)
class ZooModel:
    """A zoo entry: `build(smoke)` returns the model (random weights); dims and args differ in smoke mode."""

    name: str
    family: str  # cnn | vit | segmentation | detection | encoder | decoder | encoder-decoder | speech | clip
    library: str  # torchvision | timm | transformers
    build: Callable[[bool], torch.nn.Module]
    dims: tuple[Dim, ...]
    args: tuple[Arg, ...]
    smoke_dims: tuple[Dim, ...] | None = None  # ranges for the tiny smoke config (None: no smoke variant)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    smoke_vocab: int = 128  # ids in smoke mode stay below the tiny configs' vocabulary
    rtol: float = 2e-2  # fp16 against fp32 eager... (relative L2 error of each output)

    def dims_for(self, smoke: bool) -> tuple[Dim, ...]:
        return self.smoke_dims if smoke and self.smoke_dims is not None else self.dims

    def points(self, smoke: bool) -> list[dict[str, int]]:
        """The five checked shapes: every dim at its min, min-opt midpoint, opt, opt-max midpoint, max."""
        dims = self.dims_for(smoke)
        cols = [d.points() for d in dims]
        return [{d.name: col[k] for d, col in zip(dims, cols)} for k in range(5)]

    def opt(self, smoke: bool) -> dict[str, int]:
        return {d.name: d.opt for d in self.dims_for(smoke)}

    def flexrt_inputs(self, dtype: torch.dtype, smoke: bool) -> tuple[list[Any], dict[str, Any]]:
        """arg_inputs and kwarg_inputs of flexrt.compile (shape ranges from the dims)."""
        import flexrt

        dims = self.dims_for(smoke)
        lo = {d.name: d.lo for d in dims}
        opt = {d.name: d.opt for d in dims}
        hi = {d.name: d.hi for d in dims}
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for a in self.args:
            spec = flexrt.Input(min_shape=a.resolve(lo), opt_shape=a.resolve(opt), max_shape=a.resolve(hi),
                                dtype=dtype if a.kind == "float" else torch.int64, name=a.name,
                                tensor_domain=(0, self.high(a, smoke)) if a.kind == "ids" else None)
            spec = [spec] if a.in_list else spec
            (args.append(spec) if a.positional else kwargs.__setitem__(a.name, spec))
        return args, kwargs

    def high(self, a: Arg, smoke: bool) -> int:
        return min(a.high, self.smoke_vocab) if smoke else a.high

    def make_inputs(self, sizes: dict[str, int], dtype: torch.dtype, device: torch.device,
                    seed: int, smoke: bool = False) -> tuple[list[Any], dict[str, Any]]:
        """Fresh random inputs at one shape: normal floats, ids in [0, high), masks with >= 1 real token."""
        g = torch.Generator(device="cpu").manual_seed(seed)
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for a in self.args:
            shape = a.resolve(sizes)
            if a.kind == "ids":
                t = torch.randint(0, self.high(a, smoke), shape, generator=g, dtype=torch.int64)
            elif a.kind == "mask":
                lengths = torch.randint(max(1, shape[-1] // 2), shape[-1] + 1, (*shape[:-1], 1), generator=g)
                t = (torch.arange(shape[-1]) < lengths).to(torch.int64)
            else:
                t = torch.randn(shape, generator=g, dtype=torch.float32)
                t = t.to(dtype)
            t = t.to(device)
            value = [t] if a.in_list else t
            (args.append(value) if a.positional else kwargs.__setitem__(a.name, value))
        return args, kwargs
