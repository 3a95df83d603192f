"""Every example (the seeds, rewritten with `import flexrt as torch_tensorrt`) runs to its OK line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = {
    "dynamic_shapes.py": "dynamic_shapes: OK",
    "custom_constraints.py": "custom_constraints: OK",
    "save_load.py": "save_load: OK",
    "compile_with_dynamic_inputs.py": "All three approaches produced identical results!",
    "dynamo_export.py": "dynamo_export: OK",
    "dynamic_batching_profiles.py": "dynamic_batching_profiles: OK",
}


def test_every_example_is_listed():
    present = {f for f in os.listdir(os.path.join(ROOT, "examples")) if f.endswith(".py")}
    assert present == set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_runs(name):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, os.path.join(ROOT, "examples", name)], capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    assert EXAMPLES[name] in p.stdout
