"""What a compiled module runs for a shape that no profile covers (`on_out_of_range`).

The run time never imports the compiler: whoever makes a module hands it a `Fallback` — the
compiler (`flexrt.compiler.fallback.CompilerFallback`), or `load` for an artifact that kept its
source program. Without one, an out-of-range shape is an error whatever the option says.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch.export import ExportedProgram

from flexrt.ir import ProgramState
from flexrt.spec import Profile


class Fallback(Protocol):
    @property
    def exported(self) -> ExportedProgram:
        """The traced program, which `save` keeps so that a loaded module can fall back too."""
        ...

    def eager(self, *args: Any, **kwargs: Any) -> Any:
        """Run the model in PyTorch (on_out_of_range='eager')."""
        ...

    def build_profile(self, profile: Profile, index: int) -> ProgramState:
        """Build one more profile's program (on_out_of_range='build')."""
        ...
