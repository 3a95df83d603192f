"""Input specs and optimization profiles: what shapes a compiled model accepts.

`Input` follows Torch-TensorRT (one input, static or a min/opt/max range); `Profile` follows
Polygraphy (a min/opt/max shape for every input of an engine). Both validate on construction so
that a bad spec fails where it is written, with a message that names the input and the dim.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from flexrt.errors import InputSpecError

logger = logging.getLogger(__name__)

Shape = tuple[int, ...]
UNBOUNDED = 2**62  # the max of a dim whose exported range has no upper bound

_DTYPE_NAMES: dict[str, torch.dtype] = {
    name: getattr(torch, name)
    for name in (
        "float32", "float", "float16", "half", "bfloat16", "float64", "double", "int8", "uint8",
        "int16", "int32", "int", "int64", "long", "bool",
    )
}


def finite_or(value: Any, default: int) -> int:
    """A sympy/int bound as an int; `default` for +-infinity (sympy.oo, torch's int_oo)."""
    try:
        if getattr(value, "is_finite", True) is False:
            return default
        return int(value)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return default


def _fmt_dim(value: int) -> str:
    return "inf" if value >= UNBOUNDED else str(value)


def as_shape(value: Any, what: str) -> Shape:
    """Validate one shape: a sequence of non-negative ints (torch.Size, tuple, list)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, (Sequence, torch.Size)) or isinstance(value, str):
        raise InputSpecError(f"{what}: expected a shape such as (1, 3, 224, 224), got {value!r}")
    dims = []
    for i, d in enumerate(value):
        if isinstance(d, bool) or not isinstance(d, int):
            if isinstance(d, float) and d.is_integer():
                d = int(d)
            else:
                raise InputSpecError(f"{what}: dim {i} is {d!r}; sizes must be integers")
        if d < 0:
            raise InputSpecError(f"{what}: dim {i} is {d}; sizes must be >= 0")
        dims.append(int(d))
    return tuple(dims)


def as_dtype(value: Any, what: str) -> torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    if isinstance(value, str) and value.replace("torch.", "") in _DTYPE_NAMES:
        return _DTYPE_NAMES[value.replace("torch.", "")]
    to_torch = getattr(value, "to", None)  # torch_tensorrt.dtype-like objects
    if callable(to_torch):
        try:
            converted = to_torch(torch.dtype)
        except Exception:  # noqa: BLE001 - any failure means "not a dtype"
            converted = None
        if isinstance(converted, torch.dtype):
            return converted
    raise InputSpecError(f"{what}: unknown dtype {value!r}; use a torch dtype such as torch.float32")


@dataclasses.dataclass(frozen=True)
class ShapeRange:
    """min <= opt <= max per dim, all of one rank. Static dims have min == opt == max."""

    min: Shape
    opt: Shape
    max: Shape

    @classmethod
    def create(cls, min: Any, opt: Any, max: Any, what: str) -> ShapeRange:
        lo, mid, hi = (as_shape(s, f"{what} {k}") for k, s in (("min_shape", min), ("opt_shape", opt), ("max_shape", max)))
        if not len(lo) == len(mid) == len(hi):
            raise InputSpecError(
                f"{what}: min_shape {lo}, opt_shape {mid} and max_shape {hi} have different ranks "
                f"({len(lo)}, {len(mid)}, {len(hi)}); give all three with the same number of dims"
            )
        for i, (a, b, c) in enumerate(zip(lo, mid, hi)):
            if a > b:
                raise InputSpecError(f"{what}: dim {i}: min {a} > opt {b}; need min <= opt <= max")
            if b > c:
                raise InputSpecError(f"{what}: dim {i}: opt {b} > max {c}; need min <= opt <= max")
        return cls(lo, mid, hi)

    @classmethod
    def static(cls, shape: Any, what: str) -> ShapeRange:
        s = as_shape(shape, what)
        return cls(s, s, s)

    @property
    def rank(self) -> int:
        return len(self.opt)

    @property
    def dynamic_dims(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.rank) if self.min[i] != self.max[i])

    @property
    def is_static(self) -> bool:
        return not self.dynamic_dims

    def contains(self, shape: Sequence[int]) -> bool:
        return len(shape) == self.rank and all(lo <= d <= hi for lo, d, hi in zip(self.min, shape, self.max))

    def width(self) -> int:
        """How wide the range is; the runtime prefers the narrowest profile that fits."""
        return sum(hi - lo for lo, hi in zip(self.min, self.max))

    def describe_dim(self, i: int) -> str:
        return f"[{self.min[i]}, {_fmt_dim(self.max[i])}] (opt {self.opt[i]})"

    def __str__(self) -> str:
        if self.is_static:
            return str(tuple(self.opt))
        hi = "(" + ", ".join(_fmt_dim(d) for d in self.max) + ("," if self.rank == 1 else "") + ")"
        return f"min={self.min} opt={self.opt} max={hi}"


class _ShapeMode(enum.Enum):
    STATIC = "static"
    DYNAMIC = "dynamic"


class Input:
    """One input of a model: a static shape or a (min, opt, max) range, with dtype and name.

    Mirrors `torch_tensorrt.Input`: `Input(shape=...)`, `Input(min_shape=..., opt_shape=...,
    max_shape=...)`, or positionally `Input(shape)` / `Input(min, opt, max)`.
    """

    _ShapeMode = _ShapeMode

    def __init__(
        self,
        *args: Any,
        shape: Any = None,
        min_shape: Any = None,
        opt_shape: Any = None,
        max_shape: Any = None,
        dtype: Any = torch.float32,
        format: torch.memory_format = torch.contiguous_format,
        name: str | None = None,
        tensor_domain: tuple[float, float] | None = None,
        torch_tensor: torch.Tensor | None = None,
        profiles: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        if name is not None and not isinstance(name, str):
            raise InputSpecError(f"Input name must be a string, got {name!r}")
        self.name = name
        what = f"Input {name!r}" if name else "Input"
        if len(args) == 1 and shape is None:
            shape = args[0]
        elif len(args) == 3 and min_shape is None:
            min_shape, opt_shape, max_shape = args
        elif args:
            raise InputSpecError(f"{what}: give one shape or (min_shape, opt_shape, max_shape), got {len(args)} positional args")
        ranged = [s is not None for s in (min_shape, opt_shape, max_shape)]
        self.profiles: list[ShapeRange] | None = None
        if profiles is not None:
            if args or shape is not None or any(ranged):
                raise InputSpecError(f"{what}: profiles= is the only shape argument when given; drop shape/min_shape/opt_shape/max_shape")
            self.profiles = _profile_ranges(profiles, what)
            union = union_range(self.profiles)  # what the model is traced over
            min_shape, opt_shape, max_shape = union.min, union.opt, union.max
            ranged = [True, True, True]
        if shape is not None and any(ranged):
            raise InputSpecError(f"{what}: give either shape= or min_shape/opt_shape/max_shape, not both")
        if shape is not None:
            self.range = ShapeRange.static(shape, what + " shape")
        elif all(ranged):
            self.range = ShapeRange.create(min_shape, opt_shape, max_shape, what)
        elif any(ranged):
            missing = [k for k, r in zip(("min_shape", "opt_shape", "max_shape"), ranged) if not r]
            raise InputSpecError(f"{what}: dynamic inputs need min_shape, opt_shape and max_shape; missing {', '.join(missing)}")
        elif torch_tensor is not None:
            self.range = ShapeRange.static(tuple(torch_tensor.shape), what + " shape")
        else:
            raise InputSpecError(f"{what}: give shape= (static) or min_shape=, opt_shape=, max_shape= (dynamic)")
        self.dtype = as_dtype(torch_tensor.dtype if torch_tensor is not None and dtype is torch.float32 else dtype, what)
        if format not in (torch.contiguous_format, torch.channels_last, torch.channels_last_3d):
            raise InputSpecError(f"{what}: format must be torch.contiguous_format or torch.channels_last, got {format!r}")
        if format == torch.channels_last and self.range.rank != 4:
            raise InputSpecError(f"{what}: channels_last needs a 4-d shape, got rank {self.range.rank}")
        if format == torch.channels_last_3d and self.range.rank != 5:
            raise InputSpecError(f"{what}: channels_last_3d needs a 5-d shape, got rank {self.range.rank}")
        self.format = format
        if tensor_domain is not None:
            lo, hi = tensor_domain
            if not lo < hi:
                raise InputSpecError(f"{what}: tensor_domain must be (low, high) with low < high, got {tensor_domain!r}")
        self.tensor_domain = tensor_domain
        self.torch_tensor = torch_tensor

    @classmethod
    def from_tensor(cls, t: torch.Tensor, disable_memory_format_check: bool = False, name: str | None = None) -> Input:
        """A static Input with the tensor's shape, dtype and memory format."""
        if not isinstance(t, torch.Tensor):
            raise InputSpecError(f"Input.from_tensor expects a torch.Tensor, got {type(t).__name__}")
        fmt = torch.contiguous_format
        if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
            fmt = torch.channels_last
        elif not disable_memory_format_check and not t.is_contiguous() and t.numel() > 1:
            logger.debug("Input.from_tensor: non-contiguous tensor; inputs will be made contiguous at run time")
        return cls(shape=tuple(t.shape), dtype=t.dtype, format=fmt, name=name)

    @property
    def shape_mode(self) -> _ShapeMode:
        return _ShapeMode.STATIC if self.range.is_static else _ShapeMode.DYNAMIC

    @property
    def shape(self) -> Any:
        """Torch-TensorRT's view: the shape when static, else a dict of the three shapes."""
        if self.range.is_static:
            return self.range.opt
        return {"min_shape": self.range.min, "opt_shape": self.range.opt, "max_shape": self.range.max}

    def with_name(self, name: str) -> Input:
        out = Input(
            min_shape=self.range.min, opt_shape=self.range.opt, max_shape=self.range.max, dtype=self.dtype,
            format=self.format, name=name, tensor_domain=self.tensor_domain,
        )
        out.profiles = self.profiles
        return out

    def example_tensor(self, optimization_profile_field: str = "opt_shape", device: Any = "cpu") -> torch.Tensor:
        """A random tensor of this spec (never zeros), at the chosen profile field's shape."""
        field = {"min_shape": self.range.min, "opt_shape": self.range.opt, "max_shape": self.range.max}
        if optimization_profile_field not in field:
            raise InputSpecError(f"optimization_profile_field must be one of {sorted(field)}, got {optimization_profile_field!r}")
        return random_tensor(field[optimization_profile_field], self.dtype, device, self.format, self.tensor_domain)

    def __repr__(self) -> str:
        name = f", name={self.name!r}" if self.name else ""
        fmt = f", format={self.format}" if self.format != torch.contiguous_format else ""
        if self.range.is_static:
            return f"Input(shape={self.range.opt}, dtype={self.dtype}{fmt}{name})"
        r = self.range
        if self.profiles:
            listed = ", ".join(f"{{'min_shape': {p.min}, 'opt_shape': {p.opt}, 'max_shape': {p.max}}}" for p in self.profiles)
            return f"Input(profiles=[{listed}], dtype={self.dtype}{fmt}{name})"
        return f"Input(min_shape={r.min}, opt_shape={r.opt}, max_shape={r.max}, dtype={self.dtype}{fmt}{name})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Input)
            and (self.range, self.dtype, self.format, self.name, self.profiles)
            == (other.range, other.dtype, other.format, other.name, other.profiles)
        )

    def __hash__(self) -> int:
        return hash((self.range, self.dtype, self.name))


def _profile_ranges(profiles: Any, what: str) -> list[ShapeRange]:
    """Torch-TensorRT's `Input(profiles=[{"min_shape":..., "opt_shape":..., "max_shape":...}, ...])`:
    the list index is the optimization-profile index."""
    if isinstance(profiles, (str, Mapping)) or not isinstance(profiles, Sequence) or not profiles:
        raise InputSpecError(
            f"{what}: profiles must be a non-empty list of dicts with keys 'min_shape', 'opt_shape', 'max_shape'; "
            f"got {profiles!r}"
        )
    ranges = []
    for i, prof in enumerate(profiles):
        keys = ("min_shape", "opt_shape", "max_shape")
        if not isinstance(prof, Mapping) or set(prof) != set(keys):
            raise InputSpecError(f"{what}: profile {i} must be a dict with exactly the keys {list(keys)}, got {prof!r}")
        ranges.append(ShapeRange.create(*(prof[k] for k in keys), f"{what} profile {i}"))
        if ranges[-1].rank != ranges[0].rank:
            raise InputSpecError(f"{what}: profile {i} has rank {ranges[-1].rank}, profile 0 has {ranges[0].rank}; all must match")
    return ranges


def union_range(ranges: Sequence[ShapeRange]) -> ShapeRange:
    """The smallest range holding every given one (one rank); opt is the first's, clamped into it."""
    rank = ranges[0].rank
    lo = tuple(min(r.min[d] for r in ranges) for d in range(rank))
    hi = tuple(max(r.max[d] for r in ranges) for d in range(rank))
    opt = tuple(min(max(o, a), b) for o, a, b in zip(ranges[0].opt, lo, hi))
    return ShapeRange(lo, opt, hi)


def random_tensor(
    shape: Sequence[int],
    dtype: torch.dtype,
    device: Any = "cpu",
    memory_format: torch.memory_format = torch.contiguous_format,
    domain: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Random data of a spec: normal floats, small non-negative ints (safe as indices), random bools."""
    if dtype == torch.bool:
        t = torch.rand(tuple(shape), device=device) > 0.5
    elif dtype.is_floating_point or dtype.is_complex:
        if domain is None:
            t = torch.randn(tuple(shape), device=device, dtype=torch.float32).to(dtype)
        else:
            lo, hi = domain
            t = (torch.rand(tuple(shape), device=device) * (hi - lo) + lo).to(dtype)
    else:
        lo, hi = (0, 2) if domain is None else (int(domain[0]), max(int(domain[1]), int(domain[0]) + 1))
        t = torch.randint(lo, hi, tuple(shape), device=device, dtype=dtype)
    if memory_format != torch.contiguous_format:
        t = t.contiguous(memory_format=memory_format)
    return t
