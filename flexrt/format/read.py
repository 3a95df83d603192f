"""Reading an artifact: open, validate the manifest and versions, check members, rebuild the
`EngineState`. Nothing here loads native code: engines stay referenced in the archive.
"""

from __future__ import annotations

import io
import json
import logging
import os
import platform
import zipfile
from collections.abc import Mapping
from typing import Any

import torch
import torch.utils._pytree as pytree

from flexrt._version import __version__
from flexrt.errors import ArtifactError
from flexrt.format.layout import MAGIC, MANIFEST, WEIGHTS_FORMAT_VERSION, torch_release
from flexrt.ir import ArchiveRef, EngineBinary, EngineState, ProgramState, SegmentState, TensorSpec
from flexrt.settings import CompileSettings, RuntimeOptions
from flexrt.spec import Profile

logger = logging.getLogger(__name__)


def read_manifest(path: str | os.PathLike[str]) -> tuple[dict[str, Any], zipfile.ZipFile]:
    """Open an artifact and validate its manifest and versions. Loads no native code."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ArtifactError(f"no such file: {path!r}")
    if os.path.isdir(path):
        raise ArtifactError(f"{path!r} is a folder, not a flexrt artifact")
    size = os.path.getsize(path)
    if size == 0:
        raise ArtifactError(f"{path!r} is empty (0 bytes): not a flexrt artifact; was its save interrupted?")
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            head = f.read(4)
        what = "is truncated or damaged" if head == b"PK\x03\x04" else "is not a flexrt artifact (not a zip archive)"
        raise ArtifactError(f"{path!r} {what}; save the model again") from None
    try:
        manifest = json.loads(z.read(MANIFEST))
    except KeyError:
        z.close()
        raise ArtifactError(f"{path!r} is a zip archive but not a flexrt artifact (no {MANIFEST})") from None
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        z.close()
        raise ArtifactError(f"{path!r}: its manifest is damaged ({e}); save the model again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MAGIC:
        z.close()
        raise ArtifactError(f"{path!r} is not a flexrt artifact (unknown manifest)")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > WEIGHTS_FORMAT_VERSION:
        z.close()
        raise ArtifactError(
            f"{path!r} was written in artifact format {version} by flexrt {manifest.get('flexrt_version')}; this flexrt "
            f"({__version__}) reads format {WEIGHTS_FORMAT_VERSION} and older: upgrade flexrt"
        )
    return manifest, z


def _engine_members(manifest: dict[str, Any]) -> set[str]:
    return {seg["member"] for p in manifest["programs"] for seg in p["segments"] if seg["kind"] == "engine"}


def _read_members(path: str, manifest: dict[str, Any], z: zipfile.ZipFile) -> dict[str, bytes]:
    """Every member but the engines' shared objects, checked; those are streamed (and checked) when loaded."""
    members = {}
    engines = _engine_members(manifest)
    for name, info in manifest["members"].items():
        if name in engines:
            if name not in z.NameToInfo:
                raise ArtifactError(f"{path!r} is missing member {name!r}; the file is damaged, save it again")
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


def _tensors(data: bytes, device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in torch.load(io.BytesIO(data), weights_only=True).items()}


def state_from(path: str, manifest: dict[str, Any], members: Mapping[str, bytes], device: torch.device) -> EngineState:
    """The engine as data; engines stay in the archive, referenced, until a run time loads them."""
    programs = []
    for entry in manifest["programs"]:
        segments = []
        for seg in entry["segments"]:
            state = SegmentState(seg["kind"], seg["inputs"], seg["outputs"], seg["ops"], seg["reasons"])
            if seg["kind"] == "engine":
                kernels = {k.rsplit("/", 1)[1]: members[k] for k in seg.get("kernels", [])}
                origin = ArchiveRef(os.path.abspath(path), seg["member"], manifest["members"][seg["member"]]["sha256"])
                state.engine = EngineBinary(None, kernels, origin)
                if seg.get("weights"):
                    state.weights = _tensors(members[seg["weights"]], device)
            else:
                state.program = torch.export.load(io.BytesIO(members[seg["member"]]))
            segments.append(state)
        constants = _tensors(members[entry["constants"]], device) if entry.get("constants") else {}
        outputs = [(kind, value) for kind, value in entry["outputs"]]
        programs.append(ProgramState(entry["inputs"], outputs, segments, constants))
    state = EngineState(
        inputs=[TensorSpec.from_json(d) for d in manifest["inputs"]],
        outputs=[TensorSpec.from_json(d) for d in manifest["outputs"]],
        profiles=[Profile.from_json(p) for p in manifest["profiles"]],
        programs=programs,
        settings=CompileSettings.from_description(manifest["settings"], device),
        in_spec=pytree.treespec_loads(manifest["in_spec"]),
        out_spec=pytree.treespec_loads(manifest["out_spec"]),
    )
    return state


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
    return RuntimeOptions.from_description(stored)
