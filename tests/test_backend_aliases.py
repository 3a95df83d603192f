"""`torch.compile(model, backend="tensorrt")` and `backend="torch_tensorrt"`, as the seeds write them,
run flexrt while the real torch_tensorrt is not installed, and are its names when it is."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import assert_matches

import flexrt.build.cache as engine_cache
from flexrt.backend import flexrt_backend, register
from flexrt.backend_alias import ALIASES, real_torch_tensorrt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUP = "torch_dynamo_backends"


def _entry_points() -> dict[str, str]:
    """The pyproject's torch_dynamo_backends table (no tomllib on Python 3.10)."""
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        table = f.read().split(f"[project.entry-points.{GROUP}]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^(\w+) = "([^"]+)"', table, re.M))


@pytest.mark.skipif(real_torch_tensorrt(), reason="the real torch_tensorrt owns these names")
@pytest.mark.parametrize("name", ALIASES)
def test_torch_compile_with_torch_tensorrt_names_runs_flexrt(name):
    register()
    torch._dynamo.reset()  # a graph compiled for another model of this code would be reused
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 12), torch.nn.GELU(), torch.nn.Linear(12, 3)).eval()
    compiled = torch.compile(model, backend=name)
    before = engine_cache.stats()
    with torch.no_grad():
        for _ in range(2):
            x = torch.randn(4, 12)
            assert_matches(compiled(x), model(x))
    now = engine_cache.stats()
    assert now["misses"] + now["hits"] > before["misses"] + before["hits"]  # a flexrt engine ran


def test_entry_points_name_the_aliases_and_resolve_to_flexrt():
    eps = _entry_points()
    assert eps["tensorrt"] == "flexrt.backend_alias:tensorrt"
    assert eps["torch_tensorrt"] == "flexrt.backend_alias:torch_tensorrt"
    if not real_torch_tensorrt():
        for name in ALIASES:  # what dynamo's lookup_backend does with an entry point: load it
            assert importlib.metadata.EntryPoint(name, eps[name], GROUP).load() is flexrt_backend


FAKE_TORCH_TENSORRT = '''
from torch._dynamo import register_backend

@register_backend(name="tensorrt")
@register_backend(name="torch_tensorrt")
def real_backend(gm, example_inputs, **kwargs):
    return gm.forward
'''

PROBE = '''
import importlib.metadata, torch, torch._dynamo
from torch._dynamo.backends.registry import _COMPILER_FNS, lookup_backend, register_backend
from flexrt.backend import register
register()
# registered, not merely declared: list_backends also names installed entry points it has not loaded
assert "tensorrt" not in _COMPILER_FNS, "flexrt took a name torch_tensorrt owns"
for name in ("tensorrt", "torch_tensorrt"):
    # dynamo's lookup of an entry point it has not loaded: load, then register_backend under the name
    fn = importlib.metadata.EntryPoint(name, "flexrt.backend_alias:" + name, "torch_dynamo_backends").load()
    register_backend(compiler_fn=fn, name=name)
    assert lookup_backend(name).__module__ == "torch_tensorrt", lookup_backend(name)
print("ok")
'''


def test_an_installed_torch_tensorrt_keeps_its_names(tmp_path):
    """A stand-in torch_tensorrt that registers both names on import, as the real one does."""
    (tmp_path / "torch_tensorrt").mkdir()
    (tmp_path / "torch_tensorrt" / "__init__.py").write_text(textwrap.dedent(FAKE_TORCH_TENSORRT))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), ROOT, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")
