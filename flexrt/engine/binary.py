"""An engine's bytes: the AOTInductor shared object plus any kernel files it reads at run time."""

from __future__ import annotations

import dataclasses
import io
import zipfile

from flexrt.errors import ArtifactError


@dataclasses.dataclass(frozen=True)
class EngineBinary:
    """What one (segment, profile) compiles to. Packed as a stored zip so it can be cached and archived."""

    so: bytes
    kernels: dict[str, bytes] = dataclasses.field(default_factory=dict)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            z.writestr("engine.so", self.so)
            for name, data in sorted(self.kernels.items()):
                z.writestr(f"kernels/{name}", data)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> EngineBinary:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                so = z.read("engine.so")
                kernels = {n.split("/", 1)[1]: z.read(n) for n in z.namelist() if n.startswith("kernels/")}
        except (zipfile.BadZipFile, KeyError) as e:
            raise ArtifactError(f"an engine in this artifact is damaged ({e}); rebuild and save it again") from e
        return cls(so, kernels)

    @property
    def size(self) -> int:
        return len(self.so) + sum(len(k) for k in self.kernels.values())
