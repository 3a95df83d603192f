"""Where a small flexrt call's time goes on the host, and whether the post-grad passes change it.

    python -m research.probes.host_path [--sizes 1,3,8] [--rounds 5] [--out DIR]

The seed model in float32 (CUDA, TF32) is host-bound at small batches: the GPU finishes before
Python has launched the next call, so the benchmark's figure is host time. This probe builds two
engines in one process, flexrt's default and one without the Inductor post-grad passes
(`flexrt.lower.post_grad.pipeline`), and times them interleaved, round by round, as `benchmarks.timing`
does (back-to-back calls, CUDA events, 3 rotating inputs), so that drift of the host between
rounds hits both alike. For the default engine it also times the layers of a call: the execution
context alone, feeding the graph its input (re-pointing its input copy, see
`flexrt.runtime.graph_inputs`) plus the replay, and the replay alone.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

import flexrt
from benchmarks import timing
from benchmarks.models import ExpandReshapeModel
from benchmarks.report import save_json
from flexrt.lower.post_grad.pipeline import POST_GRAD_PASSES


def _compile(model: torch.nn.Module, disabled: frozenset[str] = frozenset()) -> Any:
    spec = flexrt.Input(min_shape=(1, 196, 768), opt_shape=(8, 196, 768), max_shape=(32, 196, 768), name="x")
    return flexrt.compile(model, ir="dynamo", inputs=[spec], cache_built_engines=False, reuse_cached_engines=False,
                          _disabled_passes=disabled)


def _calls(default: Any, plain: Any, ctx: Any, slot: Any) -> dict[str, Any]:
    """The call and its layers, outermost first."""
    return {
        "flexrt": lambda i: default(*i),
        "flexrt_without_post_grad_passes": lambda i: plain(*i),
        "context_execute": lambda i: ctx.execute(list(i)),
        "feed_and_replay": lambda i: (slot.feed(i), slot.graph.replay()),
        "replay_only": lambda i: slot.graph.replay(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,3,8")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = ExpandReshapeModel(768).eval().to(dev)
    default = _compile(model)
    plain = _compile(model, frozenset(p.__name__ for p in POST_GRAD_PASSES))
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(dev), "torch": torch.__version__, "sizes": {}}
    with torch.no_grad():
        for size in (int(s) for s in args.sizes.split(",")):
            rotation = [(torch.randn(size, 196, 768, device=dev),) for _ in range(3)]
            ctx = default.contexts[0]
            for inputs in rotation[:2]:
                default(*inputs)  # first sight, then capture
                plain(*inputs)
            slot = ctx.graphs.entries[(rotation[0][0].shape,)][0]
            calls = _calls(default, plain, ctx, slot)
            rounds: dict[str, list[float]] = {name: [] for name in calls}
            for _ in range(args.rounds):
                for name, fn in calls.items():
                    rounds[name].append(timing.time_calls(fn, rotation, dev, 10, 200)["median_ms"] * 1e3)
            report["sizes"][str(size)] = {
                name: {"median_us": statistics.median(v), "rounds_us": v} for name, v in rounds.items()
            }
            print(
                f"batch {size}: "
                + "; ".join(
                    f"{k} {statistics.median(v):.1f} us ({min(v):.1f}-{max(v):.1f})" for k, v in rounds.items()
                ),
                flush=True,
            )
    if args.out:
        save_json(report, args.out, "host_path.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
