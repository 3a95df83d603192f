"""Graphs captured and compiles over one batch sequence: torch.compile's default backend against flexrt.

    python -m benchmarks.recompiles [--device cpu|cuda]

The seed model, `mark_dynamic(x, 0, min=1, max=8)` on the first input (batch 4), then batches
2, 5, 8, 3, 7; and the same without mark_dynamic (torch.compile's automatic dynamic shapes).
For the default backend: graphs dynamo captured and Inductor compiles; for flexrt: graphs and
engines built. (Counts, not timings: this is the issue's "measured, not assumed".)
"""

from __future__ import annotations

import argparse
import json

import torch
from torch._dynamo.utils import counters

import flexrt
import flexrt.build.cache as engine_cache
from benchmarks.models import ExpandReshapeModel

SEQUENCE = (2, 5, 8, 3, 7)


def count(backend: str, device: torch.device, mark: bool = True) -> dict[str, int]:
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = ExpandReshapeModel(96).eval().to(device)
    graphs = {"n": 0}

    def counting(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs["n"] += 1
        if backend == "flexrt":
            return flexrt.backend.flexrt_backend(gm, example_inputs)
        from torch._inductor import compile_fx

        return compile_fx.compile_fx(gm, example_inputs)

    before = engine_cache.stats()["misses"]
    compiled = torch.compile(model, backend=counting)
    x = torch.randn(4, 20, 96, device=device)
    if mark:
        torch._dynamo.mark_dynamic(x, 0, min=1, max=8)
    with torch.no_grad():
        compiled(x)
        for b in SEQUENCE:
            compiled(torch.randn(b, 20, 96, device=device))
    result = {"graphs_captured": graphs["n"], "dynamo_unique_graphs": int(counters["stats"]["unique_graphs"])}
    if backend == "flexrt":
        result["engines_built"] = engine_cache.stats()["misses"] - before
    else:
        result["inductor_compiles"] = graphs["n"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    dev = torch.device(args.device)
    out = {
        "sequence": [4, *SEQUENCE],
        "with mark_dynamic": {"default_backend": count("inductor", dev), "flexrt": count("flexrt", dev)},
        "without mark_dynamic": {"default_backend": count("inductor", dev, False), "flexrt": count("flexrt", dev, False)},
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
