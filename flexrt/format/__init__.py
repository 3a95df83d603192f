"""The artifact file format: an `EngineState` <-> one zip archive (bytes on disk, manifest, members).

Apart from the user's `save`/`load` (`flexrt.serialize`), so that the run time can serialize an
engine (`Engine.serialize`, Polygraphy's `EngineFromBytes`) without importing anything after it.
"""

from __future__ import annotations

import io
import tempfile

from flexrt.format.layout import FORMAT_VERSION, MAGIC, MANIFEST, device_info
from flexrt.format.read import io_specs, open_artifact, read_manifest, runtime_options, state_from
from flexrt.format.write import build_members, write_artifact, write_zip
from flexrt.ir import EngineBinary, EngineState
from flexrt.settings import RuntimeOptions


def state_to_bytes(state: EngineState, runtime: RuntimeOptions | None = None) -> bytes:
    manifest, members = build_members(state, runtime)
    buf = io.BytesIO()
    write_zip(buf, manifest, members)
    return buf.getvalue()


def state_from_bytes(data: bytes) -> tuple[EngineState, RuntimeOptions]:
    """Read an artifact held in memory; its engines' bytes are kept, since the file they came from is gone."""
    with tempfile.NamedTemporaryFile(suffix=".flexrt") as f:
        f.write(data)
        f.flush()
        manifest, members, device = open_artifact(f.name)
        state = state_from(f.name, manifest, members, device)
        for program in state.programs:
            for seg in program.segments:
                if seg.engine is not None and seg.engine.so is None:
                    seg.engine = EngineBinary(seg.engine.so_bytes(), seg.engine.kernels)
    return state, runtime_options(manifest)


__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MANIFEST",
    "build_members",
    "device_info",
    "io_specs",
    "open_artifact",
    "read_manifest",
    "runtime_options",
    "state_from",
    "state_from_bytes",
    "state_to_bytes",
    "write_artifact",
    "write_zip",
]
