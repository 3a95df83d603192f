"""An edited manifest that disagrees with its engine is refused at load (issue #20, 5): the engine's
own input checks are switched on and probed (runtime/engine_check.py)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
import torch
from helpers import assert_matches

import flexrt
from flexrt.errors import ArtifactError


def _rewrite(src: str, dst: str, edit: Callable[[dict[str, Any]], None]) -> str:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "manifest.json":
                manifest = json.loads(data)
                edit(manifest)
                data = json.dumps(manifest).encode()
            zout.writestr(info, data)
    return dst


def _widen_static(m: dict[str, Any]) -> None:
    m["inputs"][0]["dims"][2] = 192
    for key in ("min", "opt", "max"):
        m["profiles"][0]["x"][key][2] = 192


def _float64(m: dict[str, Any]) -> None:
    m["inputs"][0]["dtype"] = "float64"


def _wider_range(m: dict[str, Any]) -> None:
    m["profiles"][0]["x"]["max"][0] = 64


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_widen_static, r"unmatched dim value at 2, expected: 96"),
        (_float64, r"input 'x' as the manifest describes it \(float64.*unmatched dtype"),
        (_wider_range, r"dim value is too large at 0, expected to be <= 32"),
    ],
)
def test_manifest_edits_the_engine_disagrees_with_are_refused(zoo, tmp_path, edit, message):
    good = str(tmp_path / "good.ep")
    flexrt.save(zoo("expand_reshape").module, good)
    with pytest.raises(ArtifactError, match=message):
        flexrt.load(_rewrite(good, str(tmp_path / "edited.ep"), edit))


def test_engine_checks_stay_on_without_refusing_sizes_the_profile_allows(zoo, tmp_path):
    c = zoo("expand_reshape")
    good = str(tmp_path / "good.ep")
    flexrt.save(c.module, good)
    module = flexrt.load(good).module()
    assert module.engine.programs[0].segments[0].library.runtime_checks
    odd = torch.randn(96, 20).t().unsqueeze(0)  # batch 1, size-1 dim with a non-canonical stride
    for x in (torch.randn(1, 20, 96), torch.randn(32, 20, 96), odd):
        with torch.no_grad():
            assert_matches(module(x), c.model(x))
