"""Seed 004's serving scenario: one wide profile against three narrow ones, on a mixed request stream.

    python -m benchmarks.profiles [--device cuda|cpu] [--out benchmarks/results]

A small conv net (3x28x28 images) answers requests of batch 1, 4, 16 and 128, interleaved.
(a) one profile 1..128 (opt 16); (b) the seed's three profiles: 1 | 1..32 (opt 4) | 128.
Reported per batch size: median per-request latency in each configuration, and the cost of a
profile switch: requests alternating 1 and 128 (a switch every call in (b), a shape change in (a))
against the same requests in runs of one batch size.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import flexrt
from benchmarks.models import SmallConvNet
from benchmarks.report import save_json
from flexrt.tf32 import TF32_TOLERANCE

RESULTS = Path(__file__).resolve().parent / "results"
BATCHES = (1, 4, 16, 128)


def _profile(lo: int, opt: int, hi: int) -> flexrt.Profile:
    return flexrt.Profile().add("x", min=(lo, 3, 28, 28), opt=(opt, 3, 28, 28), max=(hi, 3, 28, 28))


def _time_call(fn: Any, x: torch.Tensor, device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(x)
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t = time.perf_counter()
    fn(x)
    return (time.perf_counter() - t) * 1e3


def _stream(fn: Any, batches: list[int], inputs: dict[int, torch.Tensor], device: torch.device) -> dict[int, list[float]]:
    times: dict[int, list[float]] = {b: [] for b in set(batches)}
    for b in batches:
        times[b].append(_time_call(fn, inputs[b], device))
    return times


def run(device: str | None = None, out_dir: str | None = None, repeats: int = 40) -> dict[str, Any]:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    model = SmallConvNet().eval().to(dev)
    inputs = {b: torch.randn(b, 3, 28, 28, device=dev) for b in BATCHES}
    configs = {
        "one_profile_1_128": [_profile(1, 16, 128)],
        "three_profiles_seed": [_profile(1, 1, 1), _profile(1, 4, 32), _profile(128, 128, 128)],
    }
    result: dict[str, Any] = {
        "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.machine() + " CPU",
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "configs": {},
    }
    mixed = [b for _ in range(repeats) for b in (1, 4, 16, 128, 4, 1)]
    alternating = [b for _ in range(repeats) for b in (1, 128)]
    runs = [b for b in (1, 128) for _ in range(repeats)]
    # float32 engines use TF32 on CUDA (as TensorRT's do); eager keeps strict float32 matmuls
    tolerance = TF32_TOLERANCE if dev.type == "cuda" else 1e-4
    with torch.no_grad():
        for name, profiles in configs.items():
            start = time.perf_counter()
            m = flexrt.compile(model, inputs=[flexrt.Input(shape=(1, 3, 28, 28), name="x")], profiles=profiles)
            build_s = time.perf_counter() - start
            errors = {}
            for b in BATCHES:  # correctness and warm-up (first call of a shape captures its CUDA graph)
                for _ in range(3):
                    out = m(inputs[b])
                ref = model(inputs[b])
                errors[b] = float((out - ref).norm() / ref.norm())
                if not errors[b] < tolerance:
                    raise RuntimeError(f"{name} at batch {b}: relative error {errors[b]:.1e} against eager, above {tolerance:.0e}")
            mixed_t = _stream(m, mixed, inputs, dev)
            alt_t = _stream(m, alternating, inputs, dev)
            runs_t = _stream(m, runs, inputs, dev)
            result["configs"][name] = {
                "build_s": round(build_s, 1),
                "rel_err": errors,
                "tolerance": tolerance,
                "profiles": [repr(p) for p in profiles],
                "mixed_median_ms": {b: statistics.median(v) for b, v in mixed_t.items()},
                "alternating_median_ms": {b: statistics.median(v) for b, v in alt_t.items()},
                "same_batch_runs_median_ms": {b: statistics.median(v) for b, v in runs_t.items()},
            }
    stem = f"profiles_{dev.type}"
    path = save_json(result, out_dir or RESULTS, f"{stem}.json")
    path.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [f"### Profiles on a mixed request stream ({result['device_name']}, torch {result['torch']}, {result['date']})", ""]
    lines.append("Median per-request latency (ms) in the mixed stream 1,4,16,128,4,1,...:")
    lines.append("")
    lines.append("| batch | " + " | ".join(result["configs"]) + " |")
    lines.append("| --- |" + " --- |" * len(result["configs"]))
    for b in BATCHES:
        row = [f"{c['mixed_median_ms'][b]:.3f}" for c in result["configs"].values()]
        lines.append(f"| {b} | " + " | ".join(row) + " |")
    lines.append("")
    lines.append("Switching cost: requests alternating batch 1 and 128 against runs of one batch size (ms):")
    lines.append("")
    lines.append("| config | batch | alternating | same-batch runs | difference |")
    lines.append("| --- | --- | --- | --- | --- |")
    for name, c in result["configs"].items():
        for b in (1, 128):
            a, s = c["alternating_median_ms"][b], c["same_batch_runs_median_ms"][b]
            lines.append(f"| {name} | {b} | {a:.3f} | {s:.3f} | {a - s:+.3f} |")
    lines.append("")
    lines.append("Build times (s): " + ", ".join(f"{k} {v['build_s']}" for k, v in result["configs"].items()))
    lines.append("")
    lines.append("Largest relative error against eager: " + ", ".join(
        f"{k} {max(v['rel_err'].values()):.1e}" for k, v in result["configs"].items() if "rel_err" in v)
        + (" (float32 engines use TF32 on CUDA)" if result["device"].startswith("cuda") else ""))
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    run(args.device, args.out, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
