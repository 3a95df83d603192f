"""The layout's promises, checked on the source: no stage imports a later one or the package root,
and a loaded artifact runs without any compile-time code (checked in a fresh process)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "flexrt"

# The pipeline's stages in order, then what may import them all. Foundations (errors, _version,
# settings, spec's data, ir, format, tf32, console) sit below every stage.
STAGES = ["spec", "trace", "lower", "partition", "build", "runtime", "serialize"]
FOUNDATIONS = {"errors", "_version", "settings", "ir", "format", "tf32", "console", "stage_log"}
COMPILE_TIME = {"trace", "lower", "partition", "build", "compiler", "backend", "refit"}


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "flexrt" and len(parts) > 1 else ("<root>" if module == "flexrt" else None)


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every flexrt module a file imports, at any depth (lazy imports inside functions count too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("flexrt")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flexrt") and node.level == 0:
            found.append((node.module, node.lineno))
    return found


def _stage_files() -> list[tuple[str, Path]]:
    out = []
    for stage in STAGES + sorted(FOUNDATIONS):
        target = ROOT / stage
        files = sorted(target.rglob("*.py")) if target.is_dir() else [ROOT / f"{stage}.py"]
        out += [(stage, f) for f in files if f.exists()]
    return out


def _allowed(owner: str, imported: str | None, path: Path) -> bool:
    if imported is None or imported == owner:
        return True
    if imported == "<root>":
        return False
    if owner in FOUNDATIONS:
        return imported in FOUNDATIONS or imported == "spec"
    if imported in FOUNDATIONS:
        return True
    if imported not in STAGES:  # compiler, backend, cli, dynamo: drivers above every stage
        # the one narrow door: load rebuilds the compiler's fallback for artifacts that kept their source
        return owner == "serialize" and path.name == "load.py" and imported == "compiler"
    return STAGES.index(imported) < STAGES.index(owner)


def test_no_stage_imports_a_later_stage_or_the_package_root():
    bad = []
    for owner, path in _stage_files():
        for module, line in _imports(path):
            if module.startswith("flexrt._version") or module == "flexrt.errors":
                continue
            imported = _package(module)
            if not _allowed(owner, imported, path):
                bad.append(f"{path.relative_to(ROOT.parent)}:{line} ({owner}) imports {module}")
    assert not bad, "\n".join(bad)


def test_the_runtime_imports_no_compile_time_code():
    bad = [
        f"{path.relative_to(ROOT.parent)}:{line} imports {module}"
        for path in sorted((ROOT / "runtime").rglob("*.py"))
        for module, line in _imports(path)
        if _package(module) in COMPILE_TIME | {"<root>", "serialize", "refit", "interop", "serving", "cli"}
    ]
    assert not bad, "\n".join(bad)


_LOAD_AND_CALL = """
import sys
import torch
import flexrt
module = flexrt.load(sys.argv[1]).module()
x = torch.randn(3, 20, 96)
out = module(x)
assert out.shape[0] == 3 and torch.isfinite(out).all()
print(",".join(sorted(m for m in sys.modules if m.startswith(("flexrt.", "torch._inductor", "torch._dynamo", "sympy")))))
"""


@pytest.mark.slow
def test_a_loaded_artifact_runs_without_compile_time_code(tmp_path, zoo):
    import flexrt

    path = str(tmp_path / "expand_reshape.ep")
    flexrt.save(zoo("expand_reshape").module, path)
    env = {**os.environ, "PYTHONPATH": str(ROOT.parent)}
    proc = subprocess.run([sys.executable, "-c", _LOAD_AND_CALL, path], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = set(proc.stdout.strip().splitlines()[-1].split(","))
    compile_time = sorted(m for m in loaded if _package(m) in COMPILE_TIME)
    assert not compile_time, f"loading and calling imported compile-time modules: {compile_time}"
    # nor sympy (hundreds of modules, most of a cold start's import time on the GPU host): the run
    # time evaluates size expressions itself (runtime/size_expr.py)
    assert "sympy" not in loaded
    assert {"flexrt.runtime.module", "flexrt.serialize.load"} <= loaded
