"""Damaged zip structure, unsafe or duplicate member names, permissions, and how files are written:
each is an ArtifactError saying what is wrong (issue #20: 3, 6, 7)."""

from __future__ import annotations

import json
import os
import stat
import struct
import zipfile

import pytest
import torch

import flexrt
from flexrt.errors import ArtifactError


def _members(path: str) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(path) as z:
        return [(info, z.read(info.filename)) for info in z.infolist()]


def _write(dst, entries, manifest_compress=zipfile.ZIP_DEFLATED) -> str:
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in entries:
            method = manifest_compress if name == "manifest.json" else zipfile.ZIP_STORED
            z.writestr(name, data, compress_type=method)
    return str(dst)


def _patch_central(path: str, name: str, offset: int, fmt: str, value: int) -> None:
    """Set one field of `name`'s central-directory record (offset from the record's start)."""
    data = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(path) as z:
        start = z.start_dir
    pos = start
    while data[pos:pos + 4] == b"PK\x01\x02":
        n, m, k = struct.unpack("<HHH", data[pos + 28:pos + 34])
        if data[pos + 46:pos + 46 + n].decode() == name:
            struct.pack_into(fmt, data, pos + offset, value)
        pos += 46 + n + m + k
    open(path, "wb").write(bytes(data))


def _copy(saved, tmp_path, name="x.ep") -> str:
    return _write(tmp_path / name, [(i.filename, d) for i, d in _members(saved)])


@pytest.mark.parametrize(
    ("field", "offset", "fmt", "value", "message"),
    [
        ("method", 10, "<H", 99, r"compression method 99"),
        ("version", 6, "<H", 0xFF, r"truncated or damaged|zip file version|cannot be read"),
        ("strong encryption", 8, "<H", 0x40, r"encrypted"),
        ("encrypted", 8, "<H", 0x01, r"encrypted"),
    ],
)
def test_unsupported_zip_features_are_artifact_errors(saved, tmp_path, field, offset, fmt, value, message):
    path = _copy(saved, tmp_path)
    _patch_central(path, "manifest.json", offset, fmt, value)
    with pytest.raises(ArtifactError, match=message):
        flexrt.load(path)


def test_a_broken_deflate_stream_is_an_artifact_error(saved, tmp_path):
    path = _copy(saved, tmp_path)
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("manifest.json")
    data = bytearray(open(path, "rb").read())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 10, start + 40):
        data[i] ^= 0x5A
    open(path, "wb").write(bytes(data))
    with pytest.raises(ArtifactError, match=r"manifest"):
        flexrt.load(path)


def test_duplicate_members_are_refused(saved, tmp_path):
    entries = [(i.filename, d) for i, d in _members(saved)]
    fake = json.dumps({"format": "flexrt-artifact", "format_version": 3}).encode()
    with pytest.warns(UserWarning, match="Duplicate name"):
        path = _write(tmp_path / "dup.ep", [*entries, ("manifest.json", fake)])
    with pytest.raises(ArtifactError, match=r"member 'manifest.json' appears twice"):
        flexrt.load(path)


@pytest.mark.parametrize("bad", ["engines/p0_s0/..", "engines/p0_s0/", "/etc/passwd", "engines\\p0_s0\\k.cubin", "a/../b"])
def test_unsafe_member_names_are_refused(saved, tmp_path, bad):
    entries = []
    for info, data in _members(saved):
        if info.filename == "manifest.json":
            manifest = json.loads(data)
            manifest["programs"][0]["segments"][0]["kernels"] = [bad]
            manifest["members"][bad] = {"sha256": "0" * 64, "bytes": 1}
            data = json.dumps(manifest).encode()
        entries.append((info.filename, data))
    path = _write(tmp_path / "names.ep", [*entries, (bad, b"x")])
    with pytest.raises(ArtifactError, match=r"unsafe member name|not a member in"):
        flexrt.load(path)


def test_an_unreadable_file_is_an_artifact_error(saved, tmp_path, monkeypatch):
    path = _copy(saved, tmp_path)
    os.chmod(path, 0)
    if os.geteuid() == 0:  # root reads anything: make the file system say no
        real_open = open

        def deny(file, *args, **kwargs):
            if str(file) == path:
                raise PermissionError(13, "Permission denied", path)
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr("builtins.open", deny)
        monkeypatch.setattr("io.open", deny)
    with pytest.raises(ArtifactError, match=r"permission denied"):
        flexrt.load(path)


def test_saving_onto_a_folder_is_an_artifact_error(zoo, tmp_path):
    (tmp_path / "model.ep").mkdir()
    with pytest.raises(ArtifactError, match=r"it is a folder; give the artifact a file name"):
        flexrt.save(zoo("expand_reshape").module, str(tmp_path / "model.ep"))
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_saved_files_get_the_umask_mode_also_when_overwriting(zoo, tmp_path, umask, mode):
    path = tmp_path / "model.ep"
    path.write_bytes(b"old")
    os.chmod(path, 0o600 if mode != 0o600 else 0o644)
    old = os.umask(umask)
    try:
        flexrt.save(zoo("expand_reshape").module, str(path))
        assert stat.S_IMODE(os.stat(path).st_mode) == mode
        os.unlink(path)
        flexrt.save(zoo("expand_reshape").module, str(path))
        assert stat.S_IMODE(os.stat(path).st_mode) == mode
    finally:
        os.umask(old)
    assert flexrt.load(str(path)).module()(torch.randn(2, 20, 96)).shape[0] == 2
