"""Load an AOTInductor engine (.so) straight into a runner, without the .pt2 package loader.

Why not `torch._inductor.aoti_load_package`: on the GPU image it took 46 s (a compiler probe) and,
like every route that constructs the runner in a fresh process, crashed (see `_global_libstdcxx`).
Constructing `AOTIModelContainerRunner{Cpu,Cuda}` on the extracted .so takes milliseconds.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import torch

from flexrt.errors import ArtifactError

logger = logging.getLogger(__name__)


@functools.cache
def _global_libstdcxx() -> None:
    """Put libstdc++ in the global symbol scope before any engine .so is loaded.

    On the GPU image (torch 2.11, g++ 13) the AOTI wrapper .so does not list libstdc++ as NEEDED,
    and its std::regex (parse_device_str, in the model constructor) then resolved locale facets
    inconsistently and segfaulted in std::codecvt<char16_t>::do_unshift in every fresh process
    (cuda-gdb backtrace in benchmarks/probes/diagnose_aoti_crash.sh). LD_PRELOAD of libstdc++ fixed
    it; promoting the already-loaded libstdc++ to RTLD_GLOBAL is the in-process equivalent.
    """
    try:
        ctypes.CDLL("libstdc++.so.6", mode=os.RTLD_GLOBAL | getattr(os, "RTLD_NOLOAD", 0))
    except OSError:
        try:
            ctypes.CDLL("libstdc++.so.6", mode=os.RTLD_GLOBAL)
        except OSError as e:  # not glibc/libstdc++ (e.g. macOS): nothing to fix
            logger.debug("libstdc++ not promoted: %s", e)


def load_runner(so: bytes, kernels: Mapping[str, bytes], device: torch.device) -> Any:
    """A runner for one engine. Files are written to a private temp dir and removed once loaded."""
    _global_libstdcxx()
    workdir = tempfile.mkdtemp(prefix="flexrt-engine-")
    try:
        so_path = os.path.join(workdir, "engine.so")
        with open(so_path, "wb") as f:
            f.write(so)
        for name, data in kernels.items():
            with open(os.path.join(workdir, os.path.basename(name)), "wb") as f:
                f.write(data)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise ArtifactError("this engine was built for CUDA but CUDA is not available on this machine")
            runner = torch._C._aoti.AOTIModelContainerRunnerCuda(so_path, 1, str(device), workdir, True)
        else:
            runner = torch._C._aoti.AOTIModelContainerRunnerCpu(so_path, 1)
    except RuntimeError as e:
        raise ArtifactError(f"could not load an engine for {device}: {e}") from e
    finally:
        if kernels:  # kernel files are read lazily at first run: keep them until the process exits
            atexit.register(shutil.rmtree, workdir, True)
        else:  # kernels embedded in the .so: nothing is read from disk after loading
            shutil.rmtree(workdir, ignore_errors=True)
    return runner
