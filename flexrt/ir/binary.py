"""An engine's bytes: the AOTInductor shared object plus any kernel files it reads at run time.

A freshly built engine holds its bytes in memory. An engine read from an artifact does not: it
knows where its shared object lies in the archive, so loading streams it straight into memory
that `dlopen` can read (no second copy in Python), and the bytes are read again only if the
engine is saved elsewhere.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import io
import struct
import zipfile
import zlib
from concurrent.futures import Future, ThreadPoolExecutor

from flexrt.errors import ArtifactError

# What zipfile raises on a damaged or unusual archive, besides BadZipFile: a bad deflate stream
# (zlib.error), an unsupported compression method, zip version or encryption (NotImplementedError),
# an encrypted member (RuntimeError), a short read (EOFError), bad header fields (struct.error,
# ValueError, OverflowError) and the file system's own errors (OSError).
ARCHIVE_ERRORS = (
    zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError, struct.error, ValueError,
    OverflowError, OSError,
)


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)


@dataclasses.dataclass(frozen=True)
class ArchiveRef:
    """Where an engine's shared object lives inside a saved artifact."""

    path: str
    member: str
    sha256: str

    def copy_to(self, out: io.BufferedIOBase, archive: zipfile.ZipFile | None = None, chunk: int = 1 << 22) -> None:
        """Stream the member into `out`, checking its sha256 on the way (one pass, no full copy).
        `archive`: the artifact already open, if the caller has it."""
        digest = hashlib.sha256()
        try:
            with (
                contextlib.nullcontext(archive) if archive is not None else zipfile.ZipFile(self.path) as z,
                z.open(self.member) as src,
                ThreadPoolExecutor(1, thread_name_prefix="flexrt-sha256") as hasher,
            ):
                # hashing (a GB/s or so) runs beside reading, CRC-checking and writing, all of which
                # release the GIL: loading a 220 MB engine spent half its 0.4 s in sha256 (H100 host)
                pending: collections.deque[Future[None]] = collections.deque()
                while block := src.read(chunk):
                    pending.append(hasher.submit(digest.update, block))
                    out.write(block)
                    while len(pending) > 2:  # bounded read-ahead
                        pending.popleft().result()
                for job in pending:
                    job.result()
        except KeyError:
            raise ArtifactError(f"{self.path!r} is missing member {self.member!r}; the file is damaged, save it again") from None
        except ARCHIVE_ERRORS as e:
            raise ArtifactError(
                f"{self.path!r}: member {self.member!r} cannot be read ({type(e).__name__}: {e}); the file is damaged, save it again"
            ) from None
        if digest.hexdigest() != self.sha256:
            raise ArtifactError(
                f"{self.path!r}: member {self.member!r} does not match its checksum; the file is corrupt, save it again"
            )

    def verify(self) -> None:
        """Read the member through its checksum without keeping it (an engine already loaded from
        an equal copy is reused, but a damaged file is still refused)."""
        self.copy_to(_Discard())  # type: ignore[arg-type]

    def read(self, archive: zipfile.ZipFile | None = None) -> bytes:
        buf = io.BytesIO()
        self.copy_to(buf, archive)
        return buf.getvalue()


# Among an engine's files: the AOTInductor proxy executor's description of the ops it calls through
# the dispatcher (ops without a C shim, such as cuDNN's fused convolutions). The runner reads it
# from beside the shared object, with the same stem, when it is constructed.
EXTERN_NODES = "engine.json"


@dataclasses.dataclass(frozen=True)
class EngineBinary:
    """What one (segment, profile) compiles to: the shared object (in memory or in an archive) and kernels."""

    so: bytes | None
    kernels: dict[str, bytes] = dataclasses.field(default_factory=dict)
    origin: ArchiveRef | None = None
    key: str | None = dataclasses.field(default=None, compare=False)  # its engine-cache key, if it has one

    def so_bytes(self) -> bytes:
        if self.so is not None:
            return self.so
        assert self.origin is not None
        return self.origin.read()

    def to_bytes(self) -> bytes:
        """A stored zip of the shared object and kernels: the engine cache's entry format."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            z.writestr("engine.so", self.so_bytes())
            for name, data in sorted(self.kernels.items()):
                z.writestr(f"kernels/{name}", data)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, key: str | None = None) -> EngineBinary:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                so = z.read("engine.so")
                kernels = {n.split("/", 1)[1]: z.read(n) for n in z.namelist() if n.startswith("kernels/")}
        except (zipfile.BadZipFile, KeyError) as e:
            raise ArtifactError(f"a cached engine is damaged ({e}); it will be rebuilt") from e
        return cls(so, kernels, key=key)

    @property
    def size(self) -> int:
        return (len(self.so) if self.so is not None else 0) + sum(len(k) for k in self.kernels.values())
