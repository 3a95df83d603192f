"""Where one engine build's seconds went, from Inductor's own phase timers.

A first build is dominated by a few phases that torch.compile does not all pay (the C++ compile of
AOTInductor's wrapper above all), so the stage log and `--verbose` name them per engine rather than
leaving the user one opaque "engine: 17 s".
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

# (what the log calls it, Inductor's timer): AOTAutograd's graph capture, Inductor's lowering and code
# generation, the wait for Triton kernels compiled in the pool (inside codegen's timer: subtracted from
# it below), and every C++ compiler run (the precompiled header, the wrapper, the link)
PHASES = (
    ("AOT autograd", "create_aot_dispatcher_function"),
    ("lowering", "GraphLowering.run"),
    ("codegen", "GraphLowering.codegen"),
    ("kernels", "async_compile.wait"),
    ("C++ compile", "compile_file"),
)


def _totals() -> dict[str, float]:
    from torch._dynamo.utils import compilation_time_metrics  # Inductor is loaded by a build already

    return {timer: sum(compilation_time_metrics.get(timer, ())) for _, timer in PHASES}


@contextlib.contextmanager
def inductor_phases() -> Iterator[dict[str, float]]:
    """Seconds per phase (see PHASES) spent inside the block; filled when the block ends."""
    before = _totals()
    phases: dict[str, float] = {}
    try:
        yield phases
    finally:
        after = _totals()
        for label, timer in PHASES:
            if after[timer] > before[timer]:
                phases[label] = round(after[timer] - before[timer], 3)
        if "kernels" in phases and "codegen" in phases:
            # AOTInductor waits for its kernels inside codegen (its autotune-at-compile-time block): the
            # two are shown apart, so codegen here is without the wait
            phases["codegen"] = round(max(0.0, phases["codegen"] - phases["kernels"]), 3)


@dataclasses.dataclass
class BuildTimes:
    """One engine build: the cache key (hashing graph and weights), AOTInductor with its phases, and
    the package read back into memory and written to the engine cache."""

    key_s: float = 0.0
    inductor_s: float = 0.0
    package_s: float = 0.0
    phases: dict[str, float] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        """'AOTInductor 11.9 s (C++ compile 6.0 s, AOT autograd 2.5 s, ...); key 0.4 s; package 0.8 s'."""
        inner = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(self.phases.items(), key=lambda kv: -kv[1]) if v >= 0.05)
        return (f"AOTInductor {self.inductor_s:.1f} s" + (f" ({inner})" if inner else "")
                + f"; key {self.key_s:.1f} s; package {self.package_s:.1f} s")
