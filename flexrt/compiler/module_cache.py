"""The module cache: compiling an unchanged nn.Module again, in a new process, skips the trace, the
lowering, the partition and every export, and takes its engines from the engine cache.

Used with an on-disk engine cache (`cache_dir` / FLEXRT_CACHE_DIR) only. An entry, stored under
`fingerprint.module_key` after a compile that traced, holds the compiled module without its engines
(the artifact's manifest and small members: PyTorch segments, constants), the engine-cache key of
each engine, and the Python files loaded when the model was traced: path, size and modification
time of each, and the content hash of those that define the model's classes. A lookup uses the entry
only if every one of those files is unchanged (and no module loaded now comes from another file) and
every engine is still in the cache; anything else is a miss, and the compile traces as before.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sys
import time
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from flexrt.build import cache
from flexrt.errors import FlexrtError
from flexrt.format import MANIFEST, build_members, state_from, write_zip
from flexrt.ir import EngineBinary, EngineState, SegmentState
from flexrt.settings import CompileSettings
from flexrt.stage_log import stage_done

logger = logging.getLogger(__name__)

_ENTRY = "entry.json"
_ERRORS = (FlexrtError, OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile, ValidationError)


class SourceFile(BaseModel):
    """A Python module's file as it was when the model was traced."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    module: str
    path: str
    size: int
    mtime_ns: int
    sha256: str | None = None  # for the files that define the model's classes


class ModuleEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: Literal[1]
    engines: dict[str, str]  # the artifact member of each engine -> its engine-cache key
    files: list[SourceFile]


def source_files(model: torch.nn.Module) -> list[SourceFile]:
    """Every loaded module's source file (taken right after the trace, so the model's lazily imported
    code is in and Inductor's generated modules are not); the classes' own files hashed too."""
    own = {getattr(sys.modules.get(type(m).__module__), "__file__", None) for m in model.modules()}
    generated = _generated_dirs()
    out = []
    for name, mod in list(sys.modules.items()):
        path = getattr(mod, "__file__", None)
        if not isinstance(path, str) or path.startswith(generated):
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue  # not a file (a zip import, a frozen module): nothing to compare later
        out.append(SourceFile(module=name, path=path, size=st.st_size, mtime_ns=st.st_mtime_ns,
                              sha256=_file_sha256(path) if path in own else None))
    return out


def _generated_dirs() -> tuple[str, ...]:
    """Where Inductor and Triton write the modules they generate (not the model's code), as they
    say themselves; neither is imported here: one not loaded has generated nothing."""
    dirs = []
    inductor = sys.modules.get("torch._inductor.runtime.cache_dir_utils")
    if inductor is not None:
        # Inductor's cache_dir() without its side effects (it creates the folder, sets the variable);
        # its Triton caches live beneath it
        dirs.append(os.path.abspath(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or inductor.default_cache_dir()))
    knobs = getattr(sys.modules.get("triton"), "knobs", None)
    if knobs is not None:
        dirs.append(knobs.cache.dir)
    if os.environ.get("TRITON_CACHE_DIR"):
        dirs.append(os.environ["TRITON_CACHE_DIR"])
    return tuple(os.path.join(d, "") for d in dirs if d)


def _file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _changed(files: Sequence[SourceFile]) -> str | None:
    """The first file that is not as it was (or a module now loaded from elsewhere), or None."""
    for f in files:
        loaded = sys.modules.get(f.module)
        if loaded is not None and getattr(loaded, "__file__", None) != f.path:
            return f"module {f.module} now comes from {getattr(loaded, '__file__', None)}, not {f.path}"
        try:
            st = os.stat(f.path)
        except OSError:
            return f"{f.path} is gone"
        if (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns):
            return f"{f.path} changed"
        if f.sha256 is not None and _file_sha256(f.path) != f.sha256:
            return f"{f.path} changed"
    return None


def _engine_segments(state: EngineState, manifest: dict[str, Any]) -> Iterator[tuple[SegmentState, dict[str, Any]]]:
    """Each engine segment of `state` with its entry in the artifact manifest written for it."""
    for program, program_json in zip(state.programs, manifest["programs"]):
        for seg, seg_json in zip(program.segments, program_json["segments"]):
            if seg.kind == "engine":
                yield seg, seg_json


def store(key: str, state: EngineState, files: list[SourceFile], settings: CompileSettings) -> None:
    """Write the entry for a compiled module whose engines are all in the engine cache."""
    start = time.perf_counter()
    detail = _store(key, state, files, settings)
    stage_done(logger, "module cache store", time.perf_counter() - start, detail)


def _store(key: str, state: EngineState, files: list[SourceFile], settings: CompileSettings) -> str:
    """Store the entry; what was done, for the stage record."""
    try:
        manifest, members = build_members(state)
    except _ERRORS as e:
        logger.debug("module cache: not stored (%s)", e)
        return f"not stored: {e}"
    engines: dict[str, str] = {}
    for seg, seg_json in _engine_segments(state, manifest):
        if seg.engine is None or seg.engine.key is None:
            logger.debug("module cache: not stored, engine %s has no engine-cache key", seg_json["member"])
            return f"not stored: engine {seg_json['member']} has no engine-cache key"
        engines[seg_json["member"]] = seg.engine.key
        for name in [seg_json["member"], *seg_json["kernels"]]:
            members.pop(name, None)  # in the engine cache already
        seg_json["kernels"] = []
    members[_ENTRY] = ModuleEntry(version=1, engines=engines, files=files).model_dump_json().encode()
    buf = io.BytesIO()
    write_zip(buf, manifest, members)
    cache.put(key, buf.getvalue(), settings.cache_dir, keep=False)
    logger.debug("module cache: stored %s (%d engines, %d source files)", key[:19], len(engines), len(files))
    return f"stored: {len(engines)} engine(s), {len(files)} source files"


def lookup(key: str, settings: CompileSettings) -> EngineState | None:
    """The compiled module's engine state from its entry, or None (a miss); either way a stage record
    says which, and why."""
    start = time.perf_counter()
    state, detail = _read(key, settings)
    stage_done(logger, "module cache", time.perf_counter() - start, detail)
    return state


def _read(key: str, settings: CompileSettings) -> tuple[EngineState | None, str]:
    blob = cache.get(key, settings.cache_dir, count=False, keep=False)
    if blob is None:
        return None, "miss: no entry"
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            entry = ModuleEntry.model_validate_json(z.read(_ENTRY))
            changed = _changed(entry.files)
            if changed is not None:
                return None, f"miss: {changed} since this model was compiled; tracing it again"
            manifest = json.loads(z.read(MANIFEST))
            members = {n: z.read(n) for n in z.namelist() if n not in (_ENTRY, MANIFEST)}
        engines = {}
        for member, engine_key in entry.engines.items():
            data = cache.get(engine_key, settings.cache_dir)
            if data is None:
                return None, f"miss: engine {engine_key[:12]} is no longer cached; tracing again"
            engines[member] = EngineBinary.from_bytes(data, key=engine_key)
        state = state_from(os.path.join(settings.cache_dir or "", key), manifest, members, settings.device)
        for seg, seg_json in _engine_segments(state, manifest):
            seg.engine = engines[seg_json["member"]]
    except _ERRORS as e:
        logger.warning("module cache: entry %s cannot be used (%s: %s); compiling as usual", key[:19], type(e).__name__, e)
        return None, "miss: entry unusable"
    return state, f"hit: {key[:19]} reused from the module cache, no trace, no export, no build ({len(engines)} engines)"
