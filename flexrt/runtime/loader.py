"""Load an AOTInductor engine (.so) straight into a runner, without the .pt2 package loader.

Why not `torch._inductor.aoti_load_package`: on the GPU image it took 46 s (a compiler probe) and,
like every route that constructs the runner in a fresh process, crashed (see `promote_libstdcxx`).
Constructing `AOTIModelContainerRunner{Cpu,Cuda}` on the shared object takes milliseconds. The
shared object is written to an anonymous in-memory file (memfd) and opened through /proc, so a
load costs one copy of the engine and no disk writes.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import torch

from flexrt.errors import ArtifactError
from flexrt.ir.binary import EXTERN_NODES, EngineBinary

logger = logging.getLogger(__name__)


@functools.cache
def promote_libstdcxx() -> None:
    """Put libstdc++ in the global symbol scope before any engine .so is loaded.

    On the GPU image (torch 2.11, g++ 13) the AOTI wrapper .so does not list libstdc++ as NEEDED,
    and its std::regex (parse_device_str, in the model constructor) then resolved locale facets
    inconsistently and segfaulted in std::codecvt<char16_t>::do_unshift in every fresh process
    (cuda-gdb backtrace in research/probes/diagnose_aoti_crash.sh). LD_PRELOAD of libstdc++ fixed
    it; promoting the already-loaded libstdc++ to RTLD_GLOBAL is the in-process equivalent.
    """
    try:
        ctypes.CDLL("libstdc++.so.6", mode=os.RTLD_GLOBAL | getattr(os, "RTLD_NOLOAD", 0))
    except OSError:
        try:
            ctypes.CDLL("libstdc++.so.6", mode=os.RTLD_GLOBAL)
        except OSError as e:  # not glibc/libstdc++ (e.g. macOS): nothing to fix
            logger.debug("libstdc++ not promoted: %s", e)


@contextlib.contextmanager
def _shared_object(binary: EngineBinary) -> Iterator[str]:
    """A path dlopen can read holding the engine's shared object, valid inside the block.

    The bytes go to a memfd; dlopen reaches it through a uniquely named symlink, because the
    dynamic loader returns an already-loaded library whose name matches, and /proc/self/fd/N
    names are reused as soon as a descriptor is closed.
    """
    memfd = getattr(os, "memfd_create", None)
    with tempfile.TemporaryDirectory(prefix="flexrt-engine-") as tmp:
        path = os.path.join(tmp, "engine.so")
        extern = binary.kernels.get(EXTERN_NODES)
        if extern is not None:  # read by the runner's constructor from beside the .so
            with open(os.path.join(tmp, EXTERN_NODES), "wb") as f:
                f.write(extern)
        if memfd is None or not os.path.isdir("/proc/self/fd"):
            with open(path, "wb") as f:
                _fill(binary, f)
            yield path
            return
        fd = memfd("flexrt-engine", getattr(os, "MFD_CLOEXEC", 0))
        try:
            with os.fdopen(fd, "wb", closefd=False) as f:
                _fill(binary, f)
            os.symlink(f"/proc/self/fd/{fd}", path)
            yield path
        finally:
            os.close(fd)


def _fill(binary: EngineBinary, f: Any) -> None:
    if binary.so is not None:
        f.write(binary.so)
    else:
        assert binary.origin is not None
        binary.origin.copy_to(f)


def load_runner(binary: EngineBinary, device: torch.device) -> Any:
    """A runner for one engine; nothing of it stays on disk once loaded."""
    promote_libstdcxx()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ArtifactError("this engine was built for CUDA but CUDA is not available on this machine")
    kernel_dir = ""
    kernels = {n: d for n, d in binary.kernels.items() if n != EXTERN_NODES}
    if kernels:  # kernel files are read lazily at first run: keep them until the process exits
        kernel_dir = tempfile.mkdtemp(prefix="flexrt-kernels-")
        atexit.register(shutil.rmtree, kernel_dir, True)
        for name, data in kernels.items():
            with open(os.path.join(kernel_dir, os.path.basename(name)), "wb") as f:
                f.write(data)
    try:
        with _shared_object(binary) as so_path:
            if device.type == "cuda":
                return torch._C._aoti.AOTIModelContainerRunnerCuda(so_path, 1, str(device), kernel_dir, True)
            return torch._C._aoti.AOTIModelContainerRunnerCpu(so_path, 1)
    except RuntimeError as e:
        raise ArtifactError(f"could not load an engine for {device}: {e}") from e
