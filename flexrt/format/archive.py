"""Opening an artifact's zip archive: every way a file can be unreadable or damaged becomes an
`ArtifactError`, and member names are checked before anything is read.

Refused: duplicate names (flexrt and `unzip` would read different members), unsafe names
(absolute, '..', empty, backslashes: kernel files are written to disk under their names),
encryption, and compression methods other than stored and deflated.
"""

from __future__ import annotations

import os
import zipfile

from flexrt.errors import ArtifactError
from flexrt.format.schema import member_name
from flexrt.ir.binary import ARCHIVE_ERRORS

_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}


def open_zip(path: str) -> zipfile.ZipFile:
    """The archive at `path`, its member names checked; ArtifactError for anything else."""
    if not os.path.exists(path):
        raise ArtifactError(f"no such file: {path!r}")
    if os.path.isdir(path):
        raise ArtifactError(f"{path!r} is a folder, not a flexrt artifact")
    head = b""
    try:
        if os.path.getsize(path) == 0:
            raise ArtifactError(f"{path!r} is empty (0 bytes): not a flexrt artifact; was its save interrupted?")
        with open(path, "rb") as f:
            head = f.read(4)
        z = zipfile.ZipFile(path)
    except PermissionError:
        raise ArtifactError(f"cannot read {path!r}: permission denied; check the file's permissions") from None
    except ARCHIVE_ERRORS as e:
        what = "is truncated or damaged" if head[:4] == b"PK\x03\x04" else "is not a flexrt artifact (not a zip archive)"
        raise ArtifactError(f"{path!r} {what} ({type(e).__name__}); save the model again") from None
    try:
        check_entries(z, path)
    except BaseException:
        z.close()
        raise
    return z


def check_entries(z: zipfile.ZipFile, path: str) -> None:
    seen: set[str] = set()
    for info in z.infolist():
        name = info.filename
        try:
            member_name(name)
        except ValueError as e:
            raise ArtifactError(f"{path!r}: {e}; the file is damaged or was not written by flexrt") from None
        if name in seen:
            raise ArtifactError(f"{path!r}: member {name!r} appears twice; the file is damaged or was edited, save it again")
        seen.add(name)
        if info.flag_bits & 0x41:  # bit 0: encrypted; bit 6: strong encryption
            raise ArtifactError(f"{path!r}: member {name!r} is encrypted; flexrt artifacts are never encrypted")
        if info.compress_type not in _METHODS:
            raise ArtifactError(
                f"{path!r}: member {name!r} uses compression method {info.compress_type}; flexrt writes only "
                "stored and deflated members: save the model again"
            )


def read_member(z: zipfile.ZipFile, path: str, name: str) -> bytes:
    try:
        return z.read(name)
    except KeyError:
        raise ArtifactError(f"{path!r} is missing member {name!r}; the file is damaged, save it again") from None
    except ARCHIVE_ERRORS as e:
        raise ArtifactError(f"{path!r}: member {name!r} cannot be read ({type(e).__name__}: {e}); the file is damaged") from None
