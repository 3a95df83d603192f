"""Run in a child process by test_fuzz_damage.py, so that a crash fails the test instead of killing
it: damage a good artifact at random (bytes flipped, cut or inserted; manifest fields edited, with
the member checksums recomputed or not) and load each result. Every outcome must be an
ArtifactError or a load whose results equal the undamaged artifact's. Prints the tally as JSON.

usage: damage_child.py ARTIFACT SEED EXAMPLES
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import sys
import tempfile
import zipfile
from typing import Any

import torch
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import flexrt
from flexrt.errors import ArtifactError, InputSpecError

PATH, SEED, EXAMPLES = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
GOOD = open(PATH, "rb").read()
torch.manual_seed(SEED)
X = torch.randn(3, 20, 96) + 0.1
with torch.no_grad():
    REFERENCE = flexrt.load(PATH).module()(X)
TALLY: collections.Counter[str] = collections.Counter()
WORK = tempfile.mkdtemp(prefix="flexrt-damage-")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**40) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _members() -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(PATH) as z:
        return [(info, z.read(info.filename)) for info in z.infolist()]


def _edit(manifest: Any, draw: st.DrawFn) -> None:
    """Walk to a random node and replace, delete or add one field."""
    node = manifest
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node))) if isinstance(node, list) else []
        if not keys:
            return
        key = draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, (dict, list)) and child and draw(st.booleans()):
            node = child
            continue
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            node[key] = draw(json_values)
        elif action == "delete" and isinstance(node, dict):
            del node[key]
        elif isinstance(node, dict):
            node[draw(st.text(max_size=8))] = draw(json_values)
        else:
            node.append(draw(json_values))
        return


@st.composite
def damaged(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "manifest", "manifest+checksums"]))
    if kind == "flip":
        data = bytearray(GOOD)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        return kind, bytes(data)
    if kind == "truncate":
        return kind, GOOD[: draw(st.integers(0, len(GOOD) - 1))]
    if kind == "insert":
        at = draw(st.integers(0, len(GOOD)))
        return kind, GOOD[:at] + draw(st.binary(min_size=1, max_size=64)) + GOOD[at:]
    members = _members()
    out = tempfile.SpooledTemporaryFile()
    with zipfile.ZipFile(out, "w") as z:
        for info, data in members:
            if info.filename == "manifest.json":
                manifest = json.loads(data)
                for _ in range(draw(st.integers(1, 3))):
                    _edit(manifest, draw)
                if kind == "manifest+checksums" and isinstance(manifest.get("members"), dict):
                    manifest["members"] = {
                        n: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)} for i, d in members
                        for n in [i.filename] if n != "manifest.json"
                    }
                data = json.dumps(manifest).encode()
            z.writestr(info, data)
    out.seek(0)
    return kind, out.read()


@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@seed(SEED)
@given(damaged())
def test_damage(case: tuple[str, bytes]) -> None:
    kind, data = case
    path = os.path.join(WORK, "damaged.ep")
    with open(path, "wb") as f:
        f.write(data)
    try:
        module = flexrt.load(path).module()
    except ArtifactError:
        TALLY[f"{kind}: ArtifactError"] += 1
        return
    try:
        with torch.no_grad():
            out = module(X)
    except InputSpecError:  # the edit changed what the model accepts (a profile narrowed): refused, not wrong
        TALLY[f"{kind}: loaded, call refused (InputSpecError)"] += 1
        return
    torch.testing.assert_close(out, REFERENCE, rtol=1e-6, atol=1e-6)
    TALLY[f"{kind}: loaded, results equal"] += 1


if __name__ == "__main__":
    test_damage()
    print("TALLY " + json.dumps({"examples": sum(TALLY.values()), **dict(sorted(TALLY.items()))}))
