"""Load an AOTInductor engine (.so) straight into a runner, without the .pt2 package loader.

Why not `torch._inductor.aoti_load_package`: on the GPU image it took 46 s (a compiler probe) and,
like every route that constructs the runner in a fresh process, crashed (see `promote_libstdcxx`).
Constructing `AOTIModelContainerRunner{Cpu,Cuda}` on the shared object takes milliseconds. The
shared object is written to an anonymous in-memory file (memfd) and opened through /proc, so a
load costs one copy of the engine and no disk writes.
"""

from __future__ import annotations

import _ctypes
import atexit
import contextlib
import ctypes
import functools
import hashlib
import logging
import mmap
import os
import shutil
import tempfile
import threading
import weakref
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


# An engine may be loaded twice: once as CHECKED, the copy flexrt switches AOTInductor's input checks
# on in (runtime/engine_check.py), and once as UNCHECKED, where those checks would refuse sizes the
# profile serves (Inductor narrowed a range while compiling) and so are left off.
CHECKED, UNCHECKED = "checked", "unchecked"


class Library:
    """One engine shared object as loaded in this process, shared by every runner of the same bytes.

    AOTInductor engines hold STB_GNU_UNIQUE symbols, so glibc marks them NODELETE: `dlclose` (the
    runner's destructor) never unmaps them, and a uniquely named copy per load leaked the engine's
    size each time. So each distinct engine (sha256 of its shared object and kernel files) gets one
    stable name in this process: `dlopen` of that name hands back the copy already loaded. The
    folder (symlink to a memfd, engine.json, kernel files) lives while any runner holds this
    object; what the runners allocate (the model's weights) is freed with each runner.
    """

    def __init__(self, key: str, binary: EngineBinary, variant: str = CHECKED) -> None:
        self.key = key
        self.variant = variant
        self.folder = os.path.join(_root(), key, variant)
        self.path = os.path.join(self.folder, "engine.so")
        os.makedirs(self.folder, exist_ok=True)
        self.fd = -1
        self.wrote_bytes = False  # whether this object wrote (and so checked) the engine's bytes
        self.kernel_dir = ""
        self._finalizer = weakref.finalize(self, _remove, self.folder, [])
        extern = binary.kernels.get(EXTERN_NODES)
        if extern is not None:  # read by each runner's constructor from beside the .so
            _write_file(os.path.join(self.folder, EXTERN_NODES), extern)
        kernels = {n: d for n, d in binary.kernels.items() if n != EXTERN_NODES}
        if kernels:  # read lazily at a runner's first run: kept while the library is held
            self.kernel_dir = os.path.join(self.folder, "kernels")
            os.makedirs(self.kernel_dir, exist_ok=True)
            for name, data in kernels.items():
                _write_file(os.path.join(self.kernel_dir, os.path.basename(name)), data)
        self.runtime_checks: bool | None = _LATCHED.get((key, variant)) if _is_loaded(self.path) else None
        if self.runtime_checks is None:  # not loaded in this process yet: its bytes are needed
            self._write_so(binary)

    def _write_so(self, binary: EngineBinary) -> None:
        self.wrote_bytes = True
        memfd = getattr(os, "memfd_create", None)
        if memfd is None or not os.path.isdir("/proc/self/fd"):
            with open(self.path, "wb") as f:
                _fill(binary, f)
            return
        self.fd = memfd("flexrt-engine", getattr(os, "MFD_CLOEXEC", 0))
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _remove, self.folder, [self.fd])
        with os.fdopen(self.fd, "wb", closefd=False) as f:
            _fill(binary, f)
        os.symlink(f"/proc/self/fd/{self.fd}", self.path)

    def contains(self, text: bytes) -> bool:
        """Whether the shared object holds `text` (read from its file: what the engine was compiled with)."""
        try:
            with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                return m.find(text) >= 0
        except (OSError, ValueError):
            return False

    def record_runtime_checks(self, on: bool) -> None:
        """AOTInductor reads AOTI_RUNTIME_CHECK_INPUTS once per library, at its first run; remembered
        for the life of the process, since the library stays loaded."""
        self.runtime_checks = on
        _LATCHED[(self.key, self.variant)] = on


_LIBRARIES: weakref.WeakValueDictionary[tuple[str, str], Library] = weakref.WeakValueDictionary()
_LATCHED: dict[tuple[str, str], bool] = {}
_LOCK = threading.Lock()


@functools.cache
def _root() -> str:
    root = tempfile.mkdtemp(prefix="flexrt-engines-")
    atexit.register(shutil.rmtree, root, True)
    return root


def _remove(folder: str, fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    shutil.rmtree(folder, ignore_errors=True)


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _is_loaded(path: str) -> bool:
    """Whether the dynamic loader already holds a library by this name (it would hand that one back)."""
    try:
        lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | os.RTLD_LAZY)
    except OSError:
        return False
    _ctypes.dlclose(lib._handle)  # undo the reference RTLD_NOLOAD took
    return True


def engine_key(binary: EngineBinary) -> str:
    """sha256 over the shared object's sha256 and every kernel file: equal keys, equal engines."""
    h = hashlib.sha256()
    h.update((binary.origin.sha256 if binary.so is None and binary.origin is not None else hashlib.sha256(binary.so_bytes()).hexdigest()).encode())
    for name, data in sorted(binary.kernels.items()):
        h.update(b"\0" + name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def library_for(binary: EngineBinary, variant: str = CHECKED) -> Library:
    """The process's one loaded copy of this engine, loaded if it is not held already."""
    key = engine_key(binary)
    with _LOCK:
        library = _LIBRARIES.get((key, variant))
        fresh = library is None
        if library is None:
            library = Library(key, binary, variant)
            _LIBRARIES[(key, variant)] = library
    if binary.so is None and binary.origin is not None and not (fresh and library.wrote_bytes):
        binary.origin.verify()  # reused: the copy in this file is still read through its checksum
    return library


def _fill(binary: EngineBinary, f: Any) -> None:
    if binary.so is not None:
        f.write(binary.so)
    else:
        assert binary.origin is not None
        binary.origin.copy_to(f)


def load_runner(binary: EngineBinary, device: torch.device, variant: str = CHECKED) -> tuple[Any, Library]:
    """A runner for one engine, and the library it runs from (hold both: the runner needs it)."""
    promote_libstdcxx()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ArtifactError("this engine was built for CUDA but CUDA is not available on this machine")
    library = library_for(binary, variant)
    try:
        if device.type == "cuda":
            runner = torch._C._aoti.AOTIModelContainerRunnerCuda(library.path, 1, str(device), library.kernel_dir, True)
        else:
            runner = torch._C._aoti.AOTIModelContainerRunnerCpu(library.path, 1)
    except RuntimeError as e:
        raise ArtifactError(f"could not load an engine for {device}: {e}") from e
    return runner, library
