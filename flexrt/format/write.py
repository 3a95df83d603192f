"""Writing an artifact: an `EngineState` (and run-time options, and a source program) -> one zip.

Written to a temporary file in the same folder and renamed, so a failed save never leaves half a
file nor harms the file it replaces.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import logging
import os
import platform
import tempfile
import zipfile
from collections.abc import Mapping
from typing import Any

import torch
import torch.utils._pytree as pytree

from flexrt._version import __version__
from flexrt.errors import ArtifactError
from flexrt.format.layout import FORMAT_VERSION, MAGIC, MANIFEST, WEIGHTS_FORMAT_VERSION, device_info
from flexrt.ir import EngineState, ProgramState, SegmentState
from flexrt.settings import RuntimeOptions

logger = logging.getLogger(__name__)


def _segment_json(seg: SegmentState, member: str, kernels: list[str], weights: str | None) -> dict[str, Any]:
    out = {
        "kind": seg.kind, "inputs": seg.inputs, "outputs": seg.outputs, "ops": seg.ops, "reasons": seg.reasons,
        "member": member, "kernels": kernels,
    }
    if weights is not None:
        out["weights"] = weights
    return out


def _tensors_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save({n: t.detach().cpu() for n, t in tensors.items()}, buf)
    return buf.getvalue()


def _outputs_json(program: ProgramState) -> list[list[Any]]:
    out = []
    for kind, value in program.outputs:
        if kind == "const" and not isinstance(value, (int, float, bool, str, type(None))):
            raise ArtifactError(f"cannot save a model that returns a constant of type {type(value).__name__}")
        out.append([kind, value])
    return out


def build_members(
    state: EngineState, runtime: RuntimeOptions | None = None, source: Any = None
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and every member of an artifact holding `state` (and `source`, if given)."""
    members: dict[str, bytes] = {}
    programs = []
    for k, program in enumerate(state.programs):
        segments = []
        for i, seg in enumerate(program.segments):
            kernels: list[str] = []
            weights = None
            if seg.kind == "engine" and seg.weights:
                weights = f"engines/p{k}_s{i}.weights.pt"
                members[weights] = _tensors_bytes(seg.weights)
            if seg.kind == "engine":
                assert seg.engine is not None
                name = f"engines/p{k}_s{i}.so"
                members[name] = seg.engine.so_bytes()
                for kname, data in sorted(seg.engine.kernels.items()):
                    kernels.append(f"engines/p{k}_s{i}/{kname}")
                    members[kernels[-1]] = data
            else:
                if seg.program is None:
                    raise ArtifactError(f"PyTorch segment {i} of profile {k} could not be exported; this model cannot be saved")
                name = f"torch/p{k}_s{i}.pt2"
                buf = io.BytesIO()
                torch.export.save(seg.program, buf)
                members[name] = buf.getvalue()
            segments.append(_segment_json(seg, name, kernels, weights))
        constants = None
        if program.constants:
            constants = f"constants/p{k}.pt"
            members[constants] = _tensors_bytes(program.constants)
        programs.append(
            {"inputs": program.inputs, "outputs": _outputs_json(program), "segments": segments, "constants": constants}
        )
    if source is not None:
        buf = io.BytesIO()
        torch.export.save(source, buf)
        members["source.pt2"] = buf.getvalue()
    manifest = {
        "format": MAGIC,
        # refitted weights need a reader that applies them; other artifacts stay readable by older flexrt
        "format_version": WEIGHTS_FORMAT_VERSION if any(s.weights for p in state.programs for s in p.segments) else FORMAT_VERSION,
        "flexrt_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_info(state.settings.device),
        "inputs": [s.to_json() for s in state.inputs],
        "outputs": [s.to_json() for s in state.outputs],
        "profiles": [p.to_json() for p in state.profiles],
        "settings": state.settings.describe(),
        "in_spec": pytree.treespec_dumps(state.in_spec),
        "out_spec": pytree.treespec_dumps(state.out_spec),
        "programs": programs,
        "runtime": (runtime or RuntimeOptions()).describe(),
        "members": {n: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)} for n, b in members.items()},
    }
    return manifest, members


def write_zip(f: Any, manifest: dict[str, Any], members: Mapping[str, bytes]) -> None:
    with zipfile.ZipFile(f, "w") as z:
        z.writestr(MANIFEST, json.dumps(manifest, indent=1), compress_type=zipfile.ZIP_DEFLATED)
        for name, data in members.items():
            z.writestr(name, data, compress_type=zipfile.ZIP_STORED)


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask sets it, racing other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_artifact(
    path: str | os.PathLike[str], state: EngineState, runtime: RuntimeOptions | None = None, source: Any = None
) -> None:
    """Write atomically: a temporary file beside the target, renamed over it when complete."""
    path = os.fspath(path)
    manifest, members = build_members(state, runtime, source)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ArtifactError(f"cannot save to {path!r}: folder {folder!r} does not exist")
    if os.path.isdir(path):
        raise ArtifactError(f"cannot save to {path!r}: it is a folder; give the artifact a file name (e.g. {os.path.join(path, 'model.ep')!r})")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".flexrt-", suffix=".tmp")
    except PermissionError:
        raise ArtifactError(f"cannot save to {path!r}: no permission to write in {folder!r}") from None
    try:
        # mkstemp creates the file 0600 and the rename keeps that: give it a normal file's mode
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write_zip(f, manifest, members)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    total = sum(len(b) for b in members.values())
    logger.info("saved %s (%.1f MB, %d members)", path, total / 1e6, len(members))
