"""Property: a damaged artifact loads correctly or raises ArtifactError — never another exception,
never a crash. The damage runs in a child process (damage_child.py) so that a segfault fails here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import flexrt

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "damage_child.py")


def test_damaged_artifacts_load_correctly_or_raise_artifact_error(zoo, tmp_path):
    path = str(tmp_path / "good.ep")
    flexrt.save(zoo("expand_reshape").module, path)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, CHILD, path, "20", "300"], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    tally = json.loads(next(line for line in p.stdout.splitlines() if line.startswith("TALLY "))[6:])
    print(f"damaged artifacts tried: {tally}")
    assert tally["examples"] == 300
