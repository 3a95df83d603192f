"""What one of flexrt's post-grad passes buys on one model: the engine built with every pass, then
without the named one, in one process, timed alike.

    python -m research.probes.post_grad_ab --model bert --without broadcast_row_masks [--smoke] [--out DIR]

Same inputs, timing and error check as `research.probes.opt_levels` (CUDA events, 10 warm-up
and 50 timed calls rotating 3 inputs). The pass list is part of the passes' cache identity, so
the second build is built, not loaded.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch

import flexrt
from benchmarks.models import Case
from benchmarks.report import save_json
from flexrt.engine import post_grad
from research.probes.opt_levels import time_builds


def _build(passes: list[post_grad.PostGradPass]) -> Callable[[torch.nn.Module, Case], Callable[..., Any]]:
    def build(model: torch.nn.Module, case: Case) -> Callable[..., Any]:
        kept = list(post_grad.POST_GRAD_PASSES)
        post_grad.POST_GRAD_PASSES[:] = passes
        try:
            return flexrt.compile(model, ir="dynamo", inputs=case.flexrt_inputs(), enabled_precisions={case.dtype})
        finally:
            post_grad.POST_GRAD_PASSES[:] = kept

    return build


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--without", required=True, help="a pass's function name, as in POST_GRAD_PASSES")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    every = list(post_grad.POST_GRAD_PASSES)
    rest = [p for p in every if p.__name__ != args.without]
    if len(rest) == len(every):
        parser.error(f"--without {args.without!r}: not one of {[p.__name__ for p in every]}")
    result = time_builds(args.model, args.smoke, {"every pass": _build(every), f"without {args.without}": _build(rest)})
    if args.out:
        save_json(result, args.out, f"post_grad_ab_{args.model}_{args.without}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
