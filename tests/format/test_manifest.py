"""A missing, mistyped, unknown or inconsistent manifest field is an ArtifactError naming the field
(issue #20, 4); formats 2 and 3 are both read."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
import torch

import flexrt
from flexrt.errors import ArtifactError


def rewrite(src: str, dst: str, edit: Callable[[dict[str, Any]], Any] | None = None, raw: bytes | None = None) -> str:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "manifest.json":
                if raw is not None:
                    data = raw
                else:
                    manifest = json.loads(data)
                    edit(manifest)
                    data = json.dumps(manifest).encode()
            zout.writestr(info, data)
    return dst


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(m: dict[str, Any]) -> None:
        node = m
        for key in path[:-1]:
            node = node[key]
        if value is KeyError:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return edit


CASES = [
    (["programs"], KeyError, r"programs: Field required"),
    (["inputs", 0, "dtype"], 7, r"inputs.0.dtype: Input should be a valid string"),
    (["inputs", 0, "dtype"], "tensor", r"inputs.0.dtype.*'tensor' is not a torch dtype"),
    (["inputs", 0, "dims", 0], "__import__('os')", r"inputs.0.dims.0"),
    (["profiles", 0, "x", "max"], [32, 20], r"must each have 3 dims"),
    (["profiles", 0, "x", "min"], [1, 20, "96"], r"profiles.0.x.min.2"),
    (["programs", 0, "segments", 0, "inputs"], ["y"], r"produced by nothing before this segment"),
    (["programs", 0, "outputs", 0], ["value", "nope"], r"produced by no segment"),
    (["programs", 0, "segments", 0, "member"], "engines/missing.so", r"is not among the members"),
    (["members", "engines/p0_s0.so", "sha256"], "xyz", r"64 lowercase hex"),
    (["surprise"], 1, r"surprise: Extra inputs are not permitted"),
    (["device", "type"], "tpu", r"device"),
    (["in_spec"], "[1, {\"type\": \"os.system\"}]", r"in_spec cannot be read"),
    (["settings", "min_block_size"], "five", r"settings cannot be read"),
    (["runtime", "on_out_of_range"], "explode", r"run-time options cannot be read"),
]


@pytest.mark.parametrize(("path", "value", "message"), CASES, ids=[".".join(map(str, c[0])) for c in CASES])
def test_bad_fields_are_artifact_errors_naming_the_field(saved, tmp_path, path, value, message):
    bad = rewrite(saved, str(tmp_path / "bad.ep"), _set(path, value))
    with pytest.raises(ArtifactError, match=message):
        flexrt.load(bad)


def test_profiles_and_programs_must_pair_up(saved, tmp_path):
    bad = rewrite(saved, str(tmp_path / "bad.ep"), lambda m: m["profiles"].append(m["profiles"][0]))
    with pytest.raises(ArtifactError, match=r"2 profiles but 1 programs"):
        flexrt.load(bad)


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b'{"format": "flexrt-artifact", "format_version": "3"}'])
def test_unparseable_manifests_are_artifact_errors(saved, tmp_path, raw):
    with pytest.raises(ArtifactError):
        flexrt.load(rewrite(saved, str(tmp_path / "bad.ep"), raw=raw))


def test_format_2_keeps_run_time_options_in_settings_and_module(saved, tmp_path):
    def to_v2(m: dict[str, Any]) -> None:
        runtime = m.pop("runtime")
        m["format_version"] = 2
        m["settings"].update(cuda_graphs=runtime["cuda_graphs"], cuda_graph_cache_size=7)
        m["module"] = {"on_out_of_range": "error"}

    old = flexrt.load(rewrite(saved, str(tmp_path / "v2.ep"), to_v2))
    assert old.engine.options.cuda_graph_cache_size == 7
    assert old.module()(torch.randn(3, 20, 96)).shape[0] == 3
