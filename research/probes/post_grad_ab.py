"""What one of flexrt's graph passes buys on one model: the engine built with every pass, then
without the named one (ATen or post-grad), in one process, timed alike.

    python -m research.probes.post_grad_ab --model bert --without broadcast_row_masks [--smoke] [--out DIR]

Same inputs, timing and error check as `research.probes.opt_levels` (CUDA events, 10 warm-up
and 50 timed calls rotating 3 inputs). The pass is left out through the private setting
`_disabled_passes`, which is part of every engine's cache key, so the second build is built, not loaded.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch

import flexrt
from benchmarks.models import Case
from benchmarks.report import save_json
from flexrt.lower.pipeline import PASSES
from flexrt.lower.post_grad.pipeline import POST_GRAD_PASSES
from research.probes.opt_levels import time_builds


def _build(disabled: frozenset[str]) -> Callable[[torch.nn.Module, Case], Callable[..., Any]]:
    def build(model: torch.nn.Module, case: Case) -> Callable[..., Any]:
        return flexrt.compile(model, ir="dynamo", inputs=case.flexrt_inputs(), enabled_precisions={case.dtype},
                              _disabled_passes=disabled)

    return build


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--without", required=True, help="a pass's function name, as in PASSES or POST_GRAD_PASSES")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    names = [p.__name__ for p in [*PASSES, *POST_GRAD_PASSES]]
    if args.without not in names:
        parser.error(f"--without {args.without!r}: not one of {names}")
    result = time_builds(args.model, args.smoke, {"every pass": _build(frozenset()),
                                                  f"without {args.without}": _build(frozenset({args.without}))})
    if args.out:
        save_json(result, args.out, f"post_grad_ab_{args.model}_{args.without}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
