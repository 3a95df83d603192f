"""The artifact: one zip file holding an engine (and what a module needs around it).

Layout (FORMAT_VERSION 2; 1 had no engine.json and is read the same way):
  manifest.json           format, versions, device, inputs, outputs, profiles, settings, segment
                          graph per profile, pytree specs, sha256 and size of every other member
  engines/p{k}_s{i}.so    AOTInductor engine (shared object) of segment i at profile k
  engines/p{k}_s{i}/...   its kernel files, where Inductor did not embed them, and engine.json, the
                          ops it calls through the dispatcher (cuDNN's fused convolutions), if any
  torch/p{k}_s{i}.pt2     a PyTorch segment: torch.export serialisation (data, no pickled code)
  constants/p{k}.pt       tensors returned as-is (torch.save, read back with weights_only=True)
  source.pt2              the traced program, kept for on_out_of_range='eager'/'build'

Written to a temporary file in the same folder and renamed, so a failed save never leaves half a
file nor harms the file it replaces. Reading checks everything before any native code is loaded.
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

import flexrt
from flexrt.compiler import union_specs
from flexrt.engine.binary import ArchiveRef, EngineBinary
from flexrt.engine.engine import Engine, EngineState
from flexrt.engine.program import ProgramState, SegmentState
from flexrt.engine.shapes import TensorSpec
from flexrt.errors import ArtifactError, InputSpecError
from flexrt.runtime import CompiledModule, Source
from flexrt.settings import settings_from_description
from flexrt.spec import Input, Profile
from flexrt.trace import bind, normalize_inputs

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: engines may need engine.json beside them; a format-1 reader would fail to load those
MANIFEST = "manifest.json"
MAGIC = "flexrt-artifact"


def _torch_release(version: str) -> str:
    return version.split("+")[0]


def device_info(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return {"type": "cuda", "name": torch.cuda.get_device_name(device), "capability": [major, minor]}
    return {"type": "cpu", "name": platform.processor() or platform.machine(), "arch": platform.machine()}


# ---------------------------------------------------------------------------------------------
# Writing


def _segment_json(seg: SegmentState, member: str, kernels: list[str]) -> dict[str, Any]:
    return {
        "kind": seg.kind, "inputs": seg.inputs, "outputs": seg.outputs, "ops": seg.ops, "reasons": seg.reasons,
        "member": member, "kernels": kernels,
    }


def _outputs_json(program: ProgramState) -> list[list[Any]]:
    out = []
    for kind, value in program.outputs:
        if kind == "const" and not isinstance(value, (int, float, bool, str, type(None))):
            raise ArtifactError(f"cannot save a model that returns a constant of type {type(value).__name__}")
        out.append([kind, value])
    return out


def _build_members(engine: Engine, module: dict[str, Any] | None, source: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    state = engine.state
    members: dict[str, bytes] = {}
    programs = []
    for k, program in enumerate(state.programs):
        segments = []
        for i, seg in enumerate(program.segments):
            kernels: list[str] = []
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
            segments.append(_segment_json(seg, name, kernels))
        constants = None
        if program.constants:
            constants = f"constants/p{k}.pt"
            buf = io.BytesIO()
            torch.save({n: t.detach().cpu() for n, t in program.constants.items()}, buf)
            members[constants] = buf.getvalue()
        programs.append(
            {"inputs": program.inputs, "outputs": _outputs_json(program), "segments": segments, "constants": constants}
        )
    if source is not None:
        buf = io.BytesIO()
        torch.export.save(source, buf)
        members["source.pt2"] = buf.getvalue()
    manifest = {
        "format": MAGIC,
        "format_version": FORMAT_VERSION,
        "flexrt_version": flexrt.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_info(engine.device),
        "inputs": [s.to_json() for s in state.inputs],
        "outputs": [s.to_json() for s in state.outputs],
        "profiles": [p.to_json() for p in state.profiles],
        "settings": state.settings.describe(),
        "in_spec": pytree.treespec_dumps(state.in_spec),
        "out_spec": pytree.treespec_dumps(state.out_spec),
        "programs": programs,
        "module": module,
        "members": {n: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)} for n, b in members.items()},
    }
    return manifest, members


def _write_zip(f: Any, manifest: dict[str, Any], members: Mapping[str, bytes]) -> None:
    with zipfile.ZipFile(f, "w") as z:
        z.writestr(MANIFEST, json.dumps(manifest, indent=1), compress_type=zipfile.ZIP_DEFLATED)
        for name, data in members.items():
            z.writestr(name, data, compress_type=zipfile.ZIP_STORED)


def write_artifact(path: str | os.PathLike[str], engine: Engine, module: dict[str, Any] | None = None, source: Any = None) -> None:
    """Write atomically: a temporary file beside the target, renamed over it when complete."""
    path = os.fspath(path)
    manifest, members = _build_members(engine, module, source)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ArtifactError(f"cannot save to {path!r}: folder {folder!r} does not exist")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".flexrt-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            _write_zip(f, manifest, members)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    total = sum(len(b) for b in members.values())
    logger.info("saved %s (%.1f MB, %d members)", path, total / 1e6, len(members))


# ---------------------------------------------------------------------------------------------
# Reading


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
    if not isinstance(version, int) or version > FORMAT_VERSION:
        z.close()
        raise ArtifactError(
            f"{path!r} was written in artifact format {version} by flexrt {manifest.get('flexrt_version')}; this flexrt "
            f"({flexrt.__version__}) reads format {FORMAT_VERSION} and older: upgrade flexrt"
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
    if _torch_release(built) != _torch_release(torch.__version__):
        raise ArtifactError(
            f"this artifact was built with torch {built}; this is torch {torch.__version__}. Its engines are native code "
            "compiled against that torch: compile the model again with this torch (or load it where that torch is)"
        )


def _engine_from(path: str, manifest: dict[str, Any], members: Mapping[str, bytes], device: torch.device) -> Engine:
    programs = []
    for entry in manifest["programs"]:
        segments = []
        for seg in entry["segments"]:
            state = SegmentState(seg["kind"], seg["inputs"], seg["outputs"], seg["ops"], seg["reasons"])
            if seg["kind"] == "engine":
                kernels = {k.rsplit("/", 1)[1]: members[k] for k in seg.get("kernels", [])}
                origin = ArchiveRef(os.path.abspath(path), seg["member"], manifest["members"][seg["member"]]["sha256"])
                state.engine = EngineBinary(None, kernels, origin)
            else:
                state.program = torch.export.load(io.BytesIO(members[seg["member"]]))
            segments.append(state)
        constants = {}
        if entry.get("constants"):
            constants = {k: v.to(device) for k, v in torch.load(io.BytesIO(members[entry["constants"]]), weights_only=True).items()}
        outputs = [(kind, value) for kind, value in entry["outputs"]]
        programs.append(ProgramState(entry["inputs"], outputs, segments, constants))
    state = EngineState(
        inputs=[TensorSpec.from_json(d) for d in manifest["inputs"]],
        outputs=[TensorSpec.from_json(d) for d in manifest["outputs"]],
        profiles=[Profile.from_json(p) for p in manifest["profiles"]],
        programs=programs,
        settings=settings_from_description(manifest["settings"], device),
        in_spec=pytree.treespec_loads(manifest["in_spec"]),
        out_spec=pytree.treespec_loads(manifest["out_spec"]),
    )
    return Engine(state)


def _open(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, bytes], torch.device]:
    manifest, z = read_manifest(path)
    with z:
        _check_torch(manifest)
        device = _target_device(manifest)
        members = _read_members(os.fspath(path), manifest, z)
    return manifest, members, device


class Artifact:
    """What `flexrt.load` returns: `.module()` runs every shape in the saved ranges; `.engine` too."""

    def __init__(self, manifest: dict[str, Any], engine: Engine, source: Any) -> None:
        self.manifest = manifest
        self.engine = engine
        self._source = source
        self._module: Any = None

    def module(self) -> Any:
        if self._module is None:
            info = self.manifest.get("module") or {}
            self._module = CompiledModule(self.engine, info.get("on_out_of_range", "error"), self._source)
        return self._module

    def __repr__(self) -> str:
        return f"Artifact({self.engine!r})"


def load(path: str | os.PathLike[str]) -> Artifact:
    """Read an artifact written by `flexrt.save` or `Engine.save`. Loading runs its native code:
    load only files you trust."""
    manifest, members, device = _open(path)
    engine = _engine_from(os.fspath(path), manifest, members, device)
    source = None
    if "source.pt2" in members:
        ep = torch.export.load(io.BytesIO(members["source.pt2"]))
        specs = [Input(shape=engine.profiles[0][s.name].opt, dtype=s.dtype, format=s.format, name=s.name) for s in engine.inputs]
        union = union_specs(engine.input_names, specs, engine.profiles)
        source = Source(bind(ep, engine.input_names, union), engine.settings)
    return Artifact(manifest, engine, source)


# ---------------------------------------------------------------------------------------------
# Public save


def _check_save_ranges(module: Any, inputs: Any, arg_inputs: Any, kwarg_inputs: Any, dynamic_shapes: Any) -> None:
    """The shapes given to save must lie in the compiled ranges (flexrt saves the compiled ranges)."""
    engine: Engine = module.engine
    given = arg_inputs if arg_inputs is not None else inputs
    if given is None and not kwarg_inputs:
        return
    flat = normalize_inputs(lambda *a, **k: None, given, None, kwarg_inputs)
    if len(flat.specs) != len(engine.inputs):
        raise InputSpecError(f"save: {len(flat.specs)} inputs given, the compiled model takes {len(engine.inputs)} ({engine.input_names})")
    names = engine.input_names
    for name, spec in zip(names, flat.specs):
        r = spec.range
        lo = [min(p[name].min[d] for p in engine.profiles) for d in range(r.rank)]
        hi = [max(p[name].max[d] for p in engine.profiles) for d in range(r.rank)]
        for d in range(r.rank):
            if r.min[d] < lo[d] or r.max[d] > hi[d]:
                raise InputSpecError(
                    f"save: input {name!r} dim {d}: [{r.min[d]}, {r.max[d]}] is outside the compiled range [{lo[d]}, {hi[d]}]; "
                    "compile with that range first (flexrt saves the ranges it compiled)"
                )
    if dynamic_shapes is None:
        return
    per_input = list(dynamic_shapes.values()) if isinstance(dynamic_shapes, Mapping) else list(dynamic_shapes)
    leaves = pytree.tree_leaves(per_input, is_leaf=lambda x: isinstance(x, Mapping) or x is None)
    for name, spec_map in zip(names, leaves):
        for axis, dim in (spec_map or {}).items():
            lo_d = min(p[name].min[axis] for p in engine.profiles)
            hi_d = max(p[name].max[axis] for p in engine.profiles)
            dmin, dmax = getattr(dim, "min", None), getattr(dim, "max", None)
            if dmax is not None and dmax < 2**31 and (dmax > hi_d or (dmin or 0) < min(lo_d, 2) - 1):
                raise InputSpecError(
                    f"save: dynamic_shapes gives input {name!r} dim {axis} the range [{dmin}, {dmax}], wider than the "
                    f"compiled [{lo_d}, {hi_d}]; compile with that range first"
                )


def save(
    module: Any,
    file_path: str | os.PathLike[str],
    output_format: str = "exported_program",
    inputs: Any = None,
    arg_inputs: Any = None,
    kwarg_inputs: Any = None,
    dynamic_shapes: Any = None,
    retrace: bool = True,
    **kwargs: Any,
) -> None:
    """`flexrt.save`: write a compiled module (or Engine) to one file; arguments as Torch-TensorRT's."""
    if output_format not in ("exported_program", "flexrt"):
        raise InputSpecError(f"save: output_format={output_format!r} is not supported; flexrt writes one archive ('exported_program')")
    if isinstance(module, Engine):
        write_artifact(file_path, module)
        return
    if not isinstance(module, CompiledModule):
        raise InputSpecError(
            f"save expects the module returned by flexrt.compile (or a flexrt.Engine), got {type(module).__name__}"
        )
    _check_save_ranges(module, inputs, arg_inputs, kwarg_inputs, dynamic_shapes)
    keep_source = module.on_out_of_range != "error" and module.source is not None
    info = {"on_out_of_range": module.on_out_of_range}
    write_artifact(file_path, module.engine, info, module.source.traced.exported if keep_source else None)


def save_engine(engine: Engine, path: str | os.PathLike[str]) -> None:
    write_artifact(path, engine)


def load_engine(path: str | os.PathLike[str]) -> Engine:
    return load(path).engine


def engine_to_bytes(engine: Engine) -> bytes:
    manifest, members = _build_members(engine, None, None)
    buf = io.BytesIO()
    _write_zip(buf, manifest, members)
    return buf.getvalue()


def engine_from_bytes(data: bytes) -> Engine:
    with tempfile.NamedTemporaryFile(suffix=".flexrt") as f:
        f.write(data)
        f.flush()
        engine = load(f.name).engine
        for program in engine.state.programs:  # the temporary file goes away: keep the engines' bytes
            for seg in program.segments:
                if seg.engine is not None and seg.engine.so is None:
                    seg.engine = EngineBinary(seg.engine.so_bytes(), seg.engine.kernels)
        return engine
