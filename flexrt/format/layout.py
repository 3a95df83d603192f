"""The artifact's layout: one zip file holding an engine (and what a module needs around it).

Layout (FORMAT_VERSION 3, or 4 when an engine carries refitted weights; 2 kept
run-time options among the settings, 1 had no engine.json; all are read):
  manifest.json           format, versions, device, inputs, outputs, profiles, settings, run-time options, segment
                          graph per profile, pytree specs, sha256 and size of every other member
  engines/p{k}_s{i}.so    AOTInductor engine (shared object) of segment i at profile k
  engines/p{k}_s{i}/...   its kernel files, where Inductor did not embed them, and engine.json, the
                          ops it calls through the dispatcher (cuDNN's fused convolutions), if any
  engines/p{k}_s{i}.weights.pt  refitted weights of that engine, by constant name (torch.save, read back with
                          weights_only=True), applied over the ones in its shared object when it is loaded
  torch/p{k}_s{i}.pt2     a PyTorch segment: torch.export serialisation (data, no pickled code)
  constants/p{k}.pt       tensors returned as-is (torch.save, read back with weights_only=True)
  source.pt2              the traced program, kept for on_out_of_range='eager'/'build'

Written to a temporary file in the same folder and renamed, so a failed save never leaves half a
file nor harms the file it replaces. Reading checks everything before any native code is loaded.
"""

from __future__ import annotations

import platform
from typing import Any

import torch

# 3: run-time options under "runtime"; 2: engines may need engine.json beside them
FORMAT_VERSION = 3
# written instead when engines carry refitted weights, which an older reader would silently ignore
WEIGHTS_FORMAT_VERSION = 4
MANIFEST = "manifest.json"
MAGIC = "flexrt-artifact"


def torch_release(version: str) -> str:
    return version.split("+")[0]


def device_info(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return {"type": "cuda", "name": torch.cuda.get_device_name(device), "capability": [major, minor]}
    return {"type": "cpu", "name": platform.processor() or platform.machine(), "arch": platform.machine()}
