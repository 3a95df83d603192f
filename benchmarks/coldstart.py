"""Cold start: a fresh process loads a saved artifact and makes its first call.

`cold_start_s` is loading the artifact plus the first (synchronised) call, in a process that has
imported torch and the loader; the interpreter start and those imports are reported beside it
(`process_to_first_output_s` counts everything, as a user's server process sees it).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, os, sys, time
kind, artifact, ref_path, device, out_path = sys.argv[1:6]
import torch
t_import = time.time()
ref = torch.load(ref_path)
inputs = [t.to(device) for t in ref["inputs"]]
if device.startswith("cuda"):
    torch.cuda.synchronize()
io_s = time.time() - t_import
if kind == "aoti":
    import ctypes
    try:
        ctypes.CDLL("libstdc++.so.6", mode=os.RTLD_GLOBAL | getattr(os, "RTLD_NOLOAD", 0))
    except OSError:
        pass
    from torch.export.pt2_archive._package import AOTICompiledModel
    t_lib = time.time()
    model = AOTICompiledModel(torch._C._aoti.AOTIModelPackageLoader(artifact, "model", False, 1, -1))
else:
    from flexrt.serialize.load import load  # the loader's imports, as `import flexrt` made them before it went lazy
    t_lib = time.time()
    model = load(artifact).module()
t_load = time.time()
with torch.no_grad():
    out = model(*inputs)
if device.startswith("cuda"):
    torch.cuda.synchronize()
t_first = time.time()
while isinstance(out, (list, tuple)) and len(out) == 1:
    out = out[0]
a, b = out.detach().float().cpu(), ref["output"].float()
rel = float((a - b).norm() / b.norm().clamp_min(1e-30)) if a.shape == b.shape else float("inf")
json.dump({"t_import": t_import, "io_s": io_s, "t_lib": t_lib, "t_load": t_load, "t_first": t_first, "rel_err": rel},
          open(out_path, "w"))
"""


def save_flexrt(module: Any, path: str) -> None:
    """flexrt.save if this flexrt has it (AttributeError otherwise: the caller reports n/a)."""
    import flexrt

    flexrt.save(module, path)


def run_child(kind: str, artifact: str, inputs: tuple[torch.Tensor, ...], output: torch.Tensor, device: torch.device,
              workdir: str, timeout_s: float) -> dict[str, Any]:
    """Spawn the loader; seconds from spawn to first output, with its parts."""
    ref_path = os.path.join(workdir, f"coldstart_{kind}_ref.pt")
    out_path = os.path.join(workdir, f"coldstart_{kind}.json")
    torch.save({"inputs": [t.cpu() for t in inputs], "output": output.detach().cpu()}, ref_path)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    spawn = time.time()
    proc = subprocess.run([sys.executable, "-c", CHILD, kind, artifact, ref_path, str(device), out_path], env=env,
                          capture_output=True, text=True, timeout=timeout_s)
    wall = time.time() - spawn
    if proc.returncode != 0 or not os.path.exists(out_path):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        raise RuntimeError(f"cold-start child exited {proc.returncode}: " + " | ".join(tail))
    with open(out_path) as f:
        r = json.load(f)
    return {
        "cold_start_s": r["t_first"] - r["t_lib"],  # load the artifact + first call
        "process_to_first_output_s": r["t_first"] - spawn - r["io_s"],
        "import_torch_s": r["t_import"] - spawn,
        "import_loader_s": r["t_lib"] - r["t_import"] - r["io_s"],
        "load_s": r["t_load"] - r["t_lib"],
        "first_call_s": r["t_first"] - r["t_load"],
        "process_wall_s": wall,
        "rel_err": r["rel_err"],
        "artifact_bytes": path_bytes(artifact),
    }


def path_bytes(path: str) -> int:
    """Size of a file, or of everything under a directory."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
