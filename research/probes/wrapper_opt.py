"""What the AOTInductor wrapper's optimisation level costs at run time: -O1 (Inductor's default)
against -O0, which took about 4 s off BERT's build on the H200 (benchmarks/results/build).

    python -m research.probes.wrapper_opt --model bert [--smoke] [--out DIR]

The wrapper is the engine's C++ host code: it computes sizes and launches kernels. A replayed CUDA
graph skips it, so its speed shows where shapes are not captured: both levels are timed with CUDA
graphs off (each call runs the wrapper) and on. Same inputs, timing and error check as
`benchmarks.bench`. Build times here are in one process, in turn (the first pays the warm-ups);
`python -m benchmarks.build_time --variants flexrt,flexrt+o0` times them fairly, each in a new process.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch

import flexrt
from benchmarks.models import Case
from benchmarks.report import save_json
from research.probes.opt_levels import time_builds


def _build(level: str, graphs: bool) -> Callable[[torch.nn.Module, Case], Callable[..., Any]]:
    def build(model: torch.nn.Module, case: Case) -> Callable[..., Any]:
        with torch._inductor.config.patch({"aot_inductor.compile_wrapper_opt_level": level}):
            return flexrt.compile(model, ir="dynamo", inputs=case.flexrt_inputs(), enabled_precisions={case.dtype},
                                  cuda_graphs=graphs)
    return build


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    variants = {f"{level}{'' if graphs else ' no graphs'}": _build(level, graphs)
                for graphs in (False, True) for level in ("O1", "O0")}
    result = time_builds(args.model, args.smoke, variants)
    if args.out:
        save_json(result, args.out, f"wrapper_opt_{args.model}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
