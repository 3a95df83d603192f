"""Which captured CUDA graphs of the seed model copy their outputs out of the shared pool, and what a
call costs at each batch, called as a benchmark loop calls it (`out = fn(x)`: the last outputs are
still held while the next call runs, so each shape gets a second slot).

    python -m research.probes.graph_slots [--out DIR]
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

import flexrt
from benchmarks.models import get_case
from benchmarks.report import save_json


def _median_us(fn: Any, x: torch.Tensor, iters: int = 300) -> float:
    times = []
    out = fn(x)
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn(x)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000)
    del out
    return round(statistics.median(times), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    case = get_case("expand_reshape", False)
    torch.manual_seed(0)
    model = case.build().eval().cuda()
    result: dict[str, Any] = {}
    with torch.no_grad():
        compiled = flexrt.compile(model, ir="dynamo", arg_inputs=case.flexrt_inputs(), enabled_precisions={torch.float32})
        for b in (1, 3, 8, 16, 32):
            x = case.make_inputs(b, torch.device("cuda"), seed=b)[0]
            us = _median_us(compiled, x)
            torch.testing.assert_close(compiled(x), model(x), rtol=2e-3, atol=2e-3)
            result[str(b)] = {"median_us": us}
        cache = compiled.contexts[0].graphs
        for key, slots in cache.entries.items():
            b = str(key[0][0])
            result[b]["slots_copy_out"] = [s.copies_out for s in slots]
            result[b]["pool_growth_mb"] = round(cache.growth.get(key, 0) / 2**20, 1)
    for b, row in result.items():
        print(b, row, flush=True)
    print("memory", compiled.cuda_graph_memory(), flush=True)
    if args.out:
        save_json(result, args.out, "graph_slots.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
