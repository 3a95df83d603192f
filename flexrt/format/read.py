"""Reading an artifact: open, validate the manifest and versions, check members, rebuild the
`EngineState`. Nothing here loads native code: engines stay referenced in the archive.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import platform
import zipfile
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
import torch.utils._pytree as pytree

from flexrt._version import __version__
from flexrt.errors import ArtifactError
from flexrt.format.archive import open_zip, read_member
from flexrt.format.layout import MAGIC, MANIFEST, WEIGHTS_FORMAT_VERSION, torch_release
from flexrt.format.schema import validate_manifest
from flexrt.ir import ArchiveRef, EngineBinary, EngineState, ProgramState, SegmentState, TensorSpec
from flexrt.settings import CompileSettings, RuntimeOptions
from flexrt.spec import Profile

logger = logging.getLogger(__name__)

T = TypeVar("T")


def read_manifest(path: str | os.PathLike[str]) -> tuple[dict[str, Any], zipfile.ZipFile]:
    """Open an artifact and validate its structure, manifest and versions. Loads no native code."""
    path = os.fspath(path)
    z = open_zip(path)
    try:
        manifest = _parse_manifest(z, path)
    except BaseException:
        z.close()
        raise
    return manifest, z


def _parse_manifest(z: zipfile.ZipFile, path: str) -> dict[str, Any]:
    if MANIFEST not in z.NameToInfo:
        raise ArtifactError(f"{path!r} is a zip archive but not a flexrt artifact (no {MANIFEST})")
    try:
        manifest = json.loads(read_member(z, path, MANIFEST))
    except (ValueError, RecursionError) as e:
        raise ArtifactError(f"{path!r}: its manifest is damaged ({type(e).__name__}: {e}); save the model again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MAGIC:
        raise ArtifactError(f"{path!r} is not a flexrt artifact (unknown manifest)")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > WEIGHTS_FORMAT_VERSION:
        raise ArtifactError(
            f"{path!r} was written in artifact format {version!r} by flexrt {manifest.get('flexrt_version')!r}; this flexrt "
            f"({__version__}) reads format {WEIGHTS_FORMAT_VERSION} and older: upgrade flexrt"
        )
    validate_manifest(manifest, path)
    listed = set(manifest["members"])
    present = set(z.NameToInfo) - {MANIFEST}
    if listed != present:
        missing, extra = sorted(listed - present), sorted(present - listed)
        raise ArtifactError(
            f"{path!r}: the archive's members differ from its manifest (missing {missing}, unlisted {extra}); the file "
            "is damaged or was edited: save the model again"
        )
    for name, info in manifest["members"].items():
        if z.NameToInfo[name].file_size != info["bytes"]:
            raise ArtifactError(f"{path!r}: member {name!r} has {z.NameToInfo[name].file_size} bytes, its manifest says {info['bytes']}; the file is damaged")
    return manifest


def _engine_members(manifest: dict[str, Any]) -> set[str]:
    return {seg["member"] for p in manifest["programs"] for seg in p["segments"] if seg["kind"] == "engine"}


def _read_members(path: str, manifest: dict[str, Any], z: zipfile.ZipFile) -> dict[str, bytes]:
    """Every member but the engines' shared objects, checked; those are streamed (and checked) when loaded."""
    members = {}
    engines = _engine_members(manifest)
    for name, info in manifest["members"].items():
        if name in engines:  # present: read_manifest checked
            continue
        members[name] = ArchiveRef(path, name, info["sha256"]).read(z)
    return members


def _target_device(manifest: dict[str, Any]) -> torch.device:
    built = manifest["device"]
    if built["type"] == "cpu":
        if built.get("arch") and built["arch"] != platform.machine():
            raise ArtifactError(f"this artifact was built for {built['arch']} CPUs; this machine is {platform.machine()}")
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ArtifactError(
            f"this artifact was built for CUDA ({built['name']}, sm_{''.join(map(str, built['capability']))}) and this "
            "machine has no CUDA device; load it on a GPU machine, or compile the model again with device='cpu'"
        )
    device = torch.device("cuda", torch.cuda.current_device())
    have = list(torch.cuda.get_device_capability(device))
    if have != list(built["capability"]):
        raise ArtifactError(
            f"this artifact was built for sm_{''.join(map(str, built['capability']))} ({built['name']}); this GPU is "
            f"sm_{''.join(map(str, have))} ({torch.cuda.get_device_name(device)}): compile the model again on it"
        )
    return device


def _check_torch(manifest: dict[str, Any]) -> None:
    built = manifest.get("torch_version", "?")
    if torch_release(built) != torch_release(torch.__version__):
        raise ArtifactError(
            f"this artifact was built with torch {built}; this is torch {torch.__version__}. Its engines are native code "
            "compiled against that torch: compile the model again with this torch (or load it where that torch is)"
        )


def _decode(path: str, what: str, fn: Callable[[], T]) -> T:
    """Run one deserialiser on checked bytes; whatever it raises on bad data (they raise many kinds)
    becomes an ArtifactError naming the part of the file."""
    try:
        return fn()
    except ArtifactError:
        raise
    except Exception as e:  # noqa: BLE001 - deserialisers of bad data raise anything; each is reported
        raise ArtifactError(f"{path!r}: {what} cannot be read ({type(e).__name__}: {str(e)[:300]}); save the model again") from None


def _tensors(path: str, what: str, blob: bytes, device: torch.device) -> dict[str, torch.Tensor]:
    loaded = _decode(path, what, functools.partial(torch.load, io.BytesIO(blob), weights_only=True))
    if not isinstance(loaded, dict) or not all(isinstance(n, str) and isinstance(t, torch.Tensor) for n, t in loaded.items()):
        raise ArtifactError(f"{path!r}: {what} are not a dict of tensors; save the model again")
    return {n: t.to(device) for n, t in loaded.items()}


def _load_program(data: bytes) -> Any:
    return torch.export.load(io.BytesIO(data))


def _program(path: str, k: int, entry: dict[str, Any], manifest: dict[str, Any], members: Mapping[str, bytes],
             device: torch.device) -> ProgramState:
    segments = []
    for i, seg in enumerate(entry["segments"]):
        state = SegmentState(seg["kind"], seg["inputs"], seg["outputs"], seg["ops"], seg["reasons"])
        if seg["kind"] == "engine":
            kernels = {name.rsplit("/", 1)[1]: members[name] for name in seg.get("kernels", [])}
            origin = ArchiveRef(os.path.abspath(path), seg["member"], manifest["members"][seg["member"]]["sha256"])
            state.engine = EngineBinary(None, kernels, origin)
            if seg.get("weights"):
                state.weights = _tensors(path, f"the refitted weights of segment {i} of profile {k}", members[seg["weights"]], device)
        else:
            data = members[seg["member"]]
            state.program = _decode(path, f"PyTorch segment {i} of profile {k}", functools.partial(_load_program, data))
        segments.append(state)
    constants = _tensors(path, f"the constants of profile {k}", members[entry["constants"]], device) if entry.get("constants") else {}
    known = set(entry["inputs"]) | set(constants)
    for i, seg in enumerate(entry["segments"]):
        missing = [n for n in seg["inputs"] if n not in known]
        if missing:
            raise ArtifactError(f"{path!r}: segment {i} of profile {k} reads {missing}, which nothing before it produces")
        known.update(seg["outputs"])
    for kind, value in entry["outputs"]:
        if kind == "value" and value not in known:
            raise ArtifactError(f"{path!r}: profile {k} returns {value!r}, which no segment produces")
    return ProgramState(entry["inputs"], [(kind, value) for kind, value in entry["outputs"]], segments, constants)


def io_specs(path: str, manifest: dict[str, Any]) -> tuple[list[TensorSpec], list[TensorSpec], list[Profile]]:
    """The inputs, outputs and profiles a validated manifest describes: what a caller that loads no
    engine needs (a serving front end's checks)."""
    return (
        [TensorSpec.from_json(d) for d in manifest["inputs"]],
        [TensorSpec.from_json(d) for d in manifest["outputs"]],
        _decode(path, "the profiles", lambda: [Profile.from_json(p) for p in manifest["profiles"]]),
    )


def state_from(path: str, manifest: dict[str, Any], members: Mapping[str, bytes], device: torch.device) -> EngineState:
    """The engine as data; engines stay in the archive, referenced, until a run time loads them.
    `manifest` was validated by `read_manifest`; what the schema cannot see is checked here."""
    programs = [_program(path, k, entry, manifest, members, device) for k, entry in enumerate(manifest["programs"])]
    in_spec = _decode(path, "in_spec", lambda: pytree.treespec_loads(manifest["in_spec"]))
    out_spec = _decode(path, "out_spec", lambda: pytree.treespec_loads(manifest["out_spec"]))
    if in_spec.num_leaves != len(manifest["inputs"]):
        raise ArtifactError(f"{path!r}: in_spec has {in_spec.num_leaves} leaves for {len(manifest['inputs'])} inputs; save the model again")
    for k, program in enumerate(programs):
        if out_spec.num_leaves != len(program.outputs):
            raise ArtifactError(
                f"{path!r}: out_spec has {out_spec.num_leaves} leaves, profile {k} returns {len(program.outputs)} values; save the model again"
            )
    inputs, outputs, profiles = io_specs(path, manifest)
    return EngineState(
        inputs=inputs,
        outputs=outputs,
        profiles=profiles,
        programs=programs,
        settings=_decode(path, "the settings", lambda: CompileSettings.from_description(manifest["settings"], device)),
        in_spec=in_spec,
        out_spec=out_spec,
    )


def open_artifact(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, bytes], torch.device]:
    manifest, z = read_manifest(path)
    with z:
        _check_torch(manifest)
        device = _target_device(manifest)
        members = _read_members(os.fspath(path), manifest, z)
    return manifest, members, device


def runtime_options(manifest: dict[str, Any]) -> RuntimeOptions:
    """The run-time options stored with the artifact (format 2 kept them among the settings)."""
    stored = manifest.get("runtime")
    if stored is None:
        stored = {**manifest["settings"], **(manifest.get("module") or {})}
    return _decode("manifest", "the run-time options", lambda: RuntimeOptions.from_description(stored))
