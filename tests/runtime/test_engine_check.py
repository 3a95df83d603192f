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
    ],
)
def test_manifest_edits_the_engine_disagrees_with_are_refused(zoo, tmp_path, edit, message):
    good = str(tmp_path / "good.ep")
    flexrt.save(zoo("expand_reshape").module, good)
    with pytest.raises(ArtifactError, match=message):
        flexrt.load(_rewrite(good, str(tmp_path / "edited.ep"), edit))


def test_a_range_wider_than_the_engine_checks_is_served_without_them_and_logged(zoo, tmp_path, caplog):
    """Inductor may narrow a range while compiling (an engine exported for batch 1..32 checked <= 15
    and served 32 correctly), so a wider range is not proof of an edit: warned, served unchecked."""
    c = zoo("expand_reshape")
    good = str(tmp_path / "good.ep")
    flexrt.save(c.module, good)
    with caplog.at_level("WARNING", logger="flexrt.runtime.engine_check"):
        module = flexrt.load(_rewrite(good, str(tmp_path / "edited.ep"), _wider_range)).module()
    assert "allow less than the profile for input 'x'" in caplog.text
    assert module.engine.programs[0].segments[0].library.variant == "unchecked"
    x = torch.randn(32, 20, 96)
    with torch.no_grad():
        assert_matches(module(x), c.model(x))


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
