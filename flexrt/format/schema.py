"""The manifest's schema: every field typed, unknown and missing fields refused, the segment graph
checked for consistency — so that a damaged or edited manifest is an `ArtifactError` naming the
field, never a KeyError/TypeError from deep inside loading.

Formats 1-4 are read: 4 adds refitted weights per engine ("weights"); 3 keeps run-time options under
"runtime"; 2 and 1 kept them in "settings" and "module".
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from flexrt.errors import ArtifactError
from flexrt.format.layout import MAGIC, WEIGHTS_FORMAT_VERSION

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# sizes are written by str(sympy expr); only symbols (s0, u3) and these functions may appear, since
# the run time parses them with sympy, whose parser evaluates Python
_SIZE_FUNCTIONS = {"FloorDiv", "CeilDiv", "Mod", "PythonMod", "Max", "Min", "floor", "ceiling", "Abs", "CleanDiv"}
_SYMBOL = re.compile(r"[a-z]+[0-9]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _size_expr(text: str) -> str:
    if not text or len(text) > 200 or not re.fullmatch(r"[A-Za-z0-9_+\-*/%(), ]+", text) or "__" in text:
        raise ValueError(f"{text!r} is not a size expression")
    for name in _IDENT.findall(text):
        if not (_SYMBOL.fullmatch(name) or name in _SIZE_FUNCTIONS or name.isdigit()):
            raise ValueError(f"{text!r} names {name!r}, which is neither a size symbol nor a size function")
    return text


def member_name(name: str) -> str:
    """A zip member name flexrt may read or write to disk: relative, no '..', no backslash, not empty."""
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or "\0" in name or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"unsafe member name {name!r}")
    return name


def _dtype_name(name: str) -> str:
    if not isinstance(getattr(torch, name, None), torch.dtype):
        raise ValueError(f"{name!r} is not a torch dtype")
    return name


def _sha256(text: str) -> str:
    if not _SHA256.fullmatch(text):
        raise ValueError("expected 64 lowercase hex digits")
    return text


Name = Annotated[str, Field(min_length=1, max_length=1000)]
Member = Annotated[str, AfterValidator(member_name)]
Size = Annotated[int, Field(ge=0)]
Scalar = int | float | bool | str | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CpuDevice(_Strict):
    type: Literal["cpu"]
    name: str
    arch: str | None = None


class CudaDevice(_Strict):
    type: Literal["cuda"]
    name: str
    capability: Annotated[list[Size], Field(min_length=2, max_length=2)]


class TensorSpecJson(_Strict):
    name: Name
    dtype: Annotated[str, AfterValidator(_dtype_name)]
    dims: list[Size | Annotated[str, AfterValidator(_size_expr)]]
    format: Literal["contiguous_format", "channels_last"]


class RangeJson(_Strict):
    min: list[Size]
    opt: list[Size]
    max: list[Size]


class SegmentJson(_Strict):
    kind: Literal["engine", "torch"]
    inputs: list[Name]
    outputs: list[Name]
    ops: dict[str, Size]
    reasons: dict[str, str]
    member: Member
    kernels: list[Member] = []
    weights: Member | None = None  # format 4: refitted weights applied over the engine's


class ProgramJson(_Strict):
    inputs: list[Name]
    outputs: list[Annotated[list[Scalar], Field(min_length=2, max_length=2)]]
    segments: Annotated[list[SegmentJson], Field(min_length=1)]
    constants: Member | None = None


class MemberJson(_Strict):
    sha256: Annotated[str, AfterValidator(_sha256)]
    bytes: Size


class Manifest(_Strict):
    format: Literal["flexrt-artifact"]
    format_version: Annotated[int, Field(ge=1, le=WEIGHTS_FORMAT_VERSION)]
    flexrt_version: str
    torch_version: str
    python_version: str | None = None
    created: str | None = None
    device: Annotated[CpuDevice | CudaDevice, Field(discriminator="type")]
    inputs: Annotated[list[TensorSpecJson], Field(min_length=1)]
    outputs: list[TensorSpecJson]
    profiles: Annotated[list[dict[Name, RangeJson]], Field(min_length=1)]
    settings: dict[str, Any]
    in_spec: str
    out_spec: str
    programs: Annotated[list[ProgramJson], Field(min_length=1)]
    runtime: dict[str, Any] | None = None
    module: dict[str, Any] | None = None  # format 2: run-time options of the module
    members: dict[Member, MemberJson]

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        names = [s.name for s in self.inputs]
        _unique(names, "inputs")
        _unique([s.name for s in self.outputs], "outputs")
        if len(self.profiles) != len(self.programs):
            raise ValueError(f"{len(self.profiles)} profiles but {len(self.programs)} programs; there must be one program per profile")
        for k, profile in enumerate(self.profiles):
            _check_profile(k, profile, self.inputs)
        for k, program in enumerate(self.programs):
            _check_program(k, program, names, self.members)
        return self


def _unique(names: list[str], what: str) -> None:
    if len(set(names)) != len(names):
        raise ValueError(f"{what}: names repeat ({names})")


def _check_profile(k: int, profile: dict[str, RangeJson], inputs: list[TensorSpecJson]) -> None:
    if set(profile) != {s.name for s in inputs}:
        raise ValueError(f"profiles.{k}: names {sorted(profile)}, the inputs are {[s.name for s in inputs]}")
    for spec in inputs:
        r = profile[spec.name]
        if not len(r.min) == len(r.opt) == len(r.max) == len(spec.dims):
            raise ValueError(f"profiles.{k}.{spec.name}: min/opt/max must each have {len(spec.dims)} dims, as the input")
        for d, (lo, mid, hi, dim) in enumerate(zip(r.min, r.opt, r.max, spec.dims)):
            if not lo <= mid <= hi:
                raise ValueError(f"profiles.{k}.{spec.name} dim {d}: need min <= opt <= max, got {lo}, {mid}, {hi}")
            if isinstance(dim, int) and not lo == hi == dim:
                raise ValueError(f"profiles.{k}.{spec.name} dim {d}: the input's dim is static ({dim}), the range is [{lo}, {hi}]")


def _check_program(k: int, program: ProgramJson, inputs: list[str], members: dict[str, MemberJson]) -> None:
    where = f"programs.{k}"
    if len(program.inputs) != len(inputs):  # the graph's names for the manifest's inputs, in order
        raise ValueError(f"{where}.inputs: {len(program.inputs)} names for the manifest's {len(inputs)} inputs")
    _unique(program.inputs, f"{where}.inputs")
    # names a segment may read: the inputs, earlier segments' outputs, and (when a constants member
    # is listed, its names are checked once it is read) the program's constants
    known = set(program.inputs)
    for i, seg in enumerate(program.segments):
        missing = [n for n in seg.inputs if n not in known]
        if missing and program.constants is None:
            raise ValueError(f"{where}.segments.{i}.inputs: {missing} are produced by nothing before this segment")
        _unique(seg.outputs, f"{where}.segments.{i}.outputs")
        known.update(seg.outputs)
        if seg.member not in members:
            raise ValueError(f"{where}.segments.{i}.member: {seg.member!r} is not among the members")
        expected = ("engines/", ".so") if seg.kind == "engine" else ("torch/", ".pt2")
        if not (seg.member.startswith(expected[0]) and seg.member.endswith(expected[1])):
            raise ValueError(f"{where}.segments.{i}.member: a {seg.kind} segment's member is {expected[0]}*{expected[1]}, got {seg.member!r}")
        stem = seg.member[: -len(".so")] + "/"
        for name in seg.kernels:
            if seg.kind != "engine" or not name.startswith(stem) or name.count("/") != 2 or name not in members:
                raise ValueError(f"{where}.segments.{i}.kernels: {name!r} is not a member in {stem}")
        _unique([n.rsplit("/", 1)[1] for n in seg.kernels], f"{where}.segments.{i}.kernels")
        if seg.weights is not None and (seg.kind != "engine" or seg.weights not in members):
            raise ValueError(f"{where}.segments.{i}.weights: {seg.weights!r} is not a member, or the segment is not an engine")
    if program.constants is not None and program.constants not in members:
        raise ValueError(f"{where}.constants: {program.constants!r} is not among the members")
    for j, (kind, value) in enumerate(program.outputs):
        if kind == "value" and (not isinstance(value, str) or (value not in known and program.constants is None)):
            raise ValueError(f"{where}.outputs.{j}: {value!r} is produced by no segment")
        if kind not in ("value", "const"):
            raise ValueError(f"{where}.outputs.{j}: kind must be 'value' or 'const', got {kind!r}")


def _location(error: Any) -> str:
    return ".".join(str(p) for p in error["loc"]) or "(top level)"


def validate_manifest(raw: Any, path: str) -> Manifest:
    """The manifest checked against the schema; an ArtifactError names the first fields at fault."""
    try:
        return Manifest.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{_location(err)}: {err['msg']}" for err in e.errors()[:5])
        more = f" (and {e.error_count() - 5} more)" if e.error_count() > 5 else ""
        raise ArtifactError(
            f"{path!r}: its manifest is not a valid flexrt manifest: {problems}{more}. The file was damaged or edited: "
            "save the model again"
        ) from None


__all__ = ["MAGIC", "Manifest", "member_name", "validate_manifest"]
