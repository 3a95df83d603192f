"""What flexrt's optimization levels buy on one model: build time and latency per level.

    python -m research.probes.opt_levels --model bert --levels 3,4 [--smoke] [--out DIR]

Level 3 is the default; 4 turns on Inductor's max_autotune (GEMM, convolution and pointwise
tactics timed at build, at opt), 5 adds coordinate-descent tuning. Same inputs, timing and error
check as `benchmarks.bench` (CUDA events, 10 warm-up and 50 timed calls rotating 3 inputs).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch

import flexrt
from benchmarks import measure, timing
from benchmarks.models import Case, get_case
from benchmarks.report import save_json


def run(model_name: str, levels: list[int], smoke: bool) -> dict[str, Any]:
    def build(level: int) -> Callable[[torch.nn.Module, Case], Callable[..., Any]]:
        return lambda model, case: flexrt.compile(model, ir="dynamo", inputs=case.flexrt_inputs(),
                                                  enabled_precisions={case.dtype}, optimization_level=level)

    result = time_builds(model_name, smoke, {f"level {level}": build(level) for level in levels})
    result["levels"] = {name.removeprefix("level "): row for name, row in result.pop("variants").items()}
    return result


def time_builds(model_name: str, smoke: bool, variants: dict[str, Callable[[torch.nn.Module, Case], Callable[..., Any]]]
                ) -> dict[str, Any]:
    """Build the model once per variant and time each build at the case's shapes."""
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    case = get_case(model_name, smoke)
    if dev.type == "cpu":
        case = dataclasses.replace(case, dtype=torch.float32)  # CPU float16 kernels are not representative
    torch.manual_seed(0)
    model = case.build().eval().to(device=dev, dtype=case.dtype)
    sizes = case.shapes()
    rotations, refs = measure.make_plan_data(case, model, sizes, dev, 3)
    result: dict[str, Any] = {"model": model_name, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                              "torch": torch.__version__, "dtype": str(case.dtype), "variants": {}}
    for name, build in variants.items():
        start = time.perf_counter()
        with torch.no_grad():
            fn = build(model, case)
        build_s = time.perf_counter() - start
        rows = {}
        with torch.no_grad():
            for s in sizes:
                stats = timing.time_calls(lambda inputs, fn=fn: fn(*inputs), rotations[s], dev, 10, 50)
                rows[str(s)] = {**stats, "rel_err": timing.rel_error(fn(*rotations[s][0]), refs[s])}
        result["variants"][name] = {"build_s": build_s, "shapes": rows}
        print(f"{name}: built in {build_s:.1f} s; " + ", ".join(
            f"{s}: {r['median_ms']:.3f} ms (err {r['rel_err']:.1e})" for s, r in rows.items()), flush=True)
        del fn
        timing.free_memory(dev)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--levels", default="3,4")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result = run(args.model, [int(x) for x in args.levels.split(",")], args.smoke)
    if args.out:
        save_json(result, args.out, f"opt_levels_{args.model}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
