"""Benchmark one model: flexrt against eager, eager in CUDA graphs, torch.compile (default and
reduce-overhead) and one AOTInductor package, on the same shapes, in one process.

    python -m benchmarks.bench --model resnet50            # on the GPU, < 10 minutes
    python -m benchmarks.bench --model bert --smoke --device cpu

Why a time budget and --peers: a run must fit in one 10-minute device command, and
torch.compile(mode="reduce-overhead") compiles once per shape. Work past the budget is skipped
and recorded as such; `--peers torch_compile_ro` in a second run fills it in, merged into the
same <model>.json. Results are written after every peer, so a killed run keeps what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from benchmarks import measure, report, timing
from benchmarks.models import MODEL_NAMES, get_case
from benchmarks.peers import PEER_NAMES, PEERS

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
OUTPUTS_NOTE = (
    "Outputs: eager_cudagraph returns its graph's static output and torch_compile_ro its CUDA-graph-tree output, "
    "both overwritten by the next call; flexrt hands out its graphs' static output tensors (copied out of the "
    "shared memory pool inside the graph where they landed on memory an earlier graph may use) and never replays "
    "a graph while anything of its outputs (the tensor or a view of it) is still referenced (two graphs per shape, "
    "else a plain run)."
)


TF32_NOTE = (
    "float32: flexrt's engines use TF32 for matrix products and convolutions unless compiled with "
    "disable_tf32=True (its default, as TensorRT's; PyTorch's default is strict float32 matmuls), so its "
    "error against eager is flagged above 2e-3 rather than 1e-4. flexrt_no_tf32 is flexrt with "
    "disable_tf32=True; it is not counted as a peer in flexrt ÷ best peer."
)


@dataclasses.dataclass(frozen=True)
class Knobs:
    """Counts and limits; smoke runs use small ones."""

    warmup: int
    iters: int
    warmup_ms: float  # warm-up lasts at least this long, and timing at least rep_ms (timing.time_calls)
    rep_ms: float
    rotate: int
    stream_calls: int
    stream_budget_s: float
    budget_s: float


FULL = Knobs(warmup=10, iters=50, warmup_ms=25, rep_ms=100, rotate=3, stream_calls=200, stream_budget_s=45, budget_s=420)
SMOKE = Knobs(warmup=3, iters=10, warmup_ms=0, rep_ms=0, rotate=2, stream_calls=40, stream_budget_s=10, budget_s=600)


def _previous(path: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Peers from an earlier run of the same model, shapes and device kind (for --peers runs)."""
    old = report.load(path) if path.exists() else None
    if not old or old.get("shapes") != result["shapes"] or old.get("device") != result["device"] or old.get("smoke") != result["smoke"]:
        return {}
    return old.get("peers", {})


def _summary(console: Console, result: dict[str, Any]) -> None:
    peers = report.ok_peers(result)
    table = Table(title=f"{result['model']}: median ms ({result['device_name']})")
    table.add_column(result["dim"], justify="right")
    for p in peers:
        table.add_column(p, justify="right", style="bold" if p == "flexrt" else None)
    for size in map(str, result["shapes"]):
        row = [size]
        for p in peers:
            v = result["peers"][p]["shapes"].get(size, {}).get("median_ms")
            row.append("—" if v is None else f"{v:.3f}")
        table.add_row(*row)
    console.print(table)
    redo = []
    for name, e in result["peers"].items():
        if e.get("status") != "ok":
            why = e.get("reason") or e.get("error") or "; ".join(f"{k}: {v}" for k, v in e.get("shape_errors", {}).items())
            console.print(escape(f"  {name}: {e.get('status')}: {why}"[:400]))
        if "time budget" in json.dumps(e, default=str):
            redo.append(name)
    if redo:
        console.print(f"  out of time for {', '.join(redo)}: rerun with --model {result['model']} --peers {','.join(redo)}"
                      f"{' --smoke' if result['smoke'] else ''} (merged into the same results)")


def run(
    model_name: str,
    smoke: bool = False,
    device: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    peers: Sequence[str] | None = None,
    budget_s: float | None = None,
    keep_inductor_cache: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Benchmark one model; writes <model>.json/.md/.png and README.md in out_dir; returns the result."""
    console = console or Console()
    started = time.perf_counter()
    knobs = SMOKE if smoke else FULL
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    out = Path(out_dir) if out_dir is not None else (RESULTS / "smoke" if smoke else RESULTS)
    names = list(PEER_NAMES if not peers else peers)
    unknown = [p for p in names if p not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer(s) {unknown}; choose from {', '.join(PEER_NAMES)}")
    case = get_case(model_name, smoke)
    notes = [f"{'Smoke stand-in: ' if smoke else ''}{case.description}."]
    if dev.type == "cpu" and case.dtype == torch.float16:
        case = dataclasses.replace(case, dtype=torch.float32)
        notes.append("float16 model run in float32 on CPU (CPU float16 kernels are not representative).")
    threads = torch.get_num_threads()
    if smoke and dev.type == "cpu":  # on a small shared CPU, intra-op threads stalled calls by ~8 ms at random
        torch.set_num_threads(1)
        notes.append("Smoke on CPU: one intra-op thread, for stable timings on small shared machines.")
    workdir = tempfile.mkdtemp(prefix="flexrt-bench-")
    try:
        console.rule(f"{model_name}{' (smoke)' if smoke else ''} on {dev}")
        torch.manual_seed(0)
        model = case.build().eval().to(device=dev, dtype=case.dtype)
        sizes = case.shapes()
        rotations, refs = measure.make_plan_data(case, model, sizes, dev, knobs.rotate)
        result: dict[str, Any] = {
            "model": model_name, "smoke": smoke, "description": case.description, "device": dev.type,
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine()) + " CPU",
            "torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "dtype": str(case.dtype).replace("torch.", ""),
            "dim": case.dim, "range": {"min": case.lo, "opt": case.opt, "max": case.hi}, "shapes": sizes,
            "input_shapes": {str(s): [list(t.shape) for t in rotations[s][0]] for s in sizes},
            "settings": {**dataclasses.asdict(knobs), "budget_s": budget_s or knobs.budget_s, "peers": names,
                         "inductor_cache": "default" if keep_inductor_cache else "fresh per peer"},
            "notes": notes, "peers": {},
        }
        tf32 = case.dtype == torch.float32 and dev.type == "cuda"  # flexrt's float32 engines use TF32 there
        if case.floor:
            console.log("measuring the device's matrix rate and copy bandwidth")
            result["device_rates"] = rates = timing.device_rates(dev, [case.dtype])
            weights = timing.model_bytes(model)
            result["floor"] = {}
            for s in sizes:
                w = timing.work(model, rotations[s][0], weights)
                result["floor"][str(s)] = {**w, "floor_ms": timing.floor_ms(w, rates, case.dtype)}
            notes.append("Floor = max(FLOPs / matmul rate, bytes / copy bandwidth); FLOPs from FlopCounterMode on eager, "
                         "bytes = weights + inputs + output (activations assumed to stay on chip)."
                         + (" float32: at the TF32 matmul rate (flexrt's default)." if tf32 else ""))
        if not keep_inductor_cache:
            notes.append("Each peer compiles with its own fresh Inductor and Triton caches: build times are cold.")
        notes.append(OUTPUTS_NOTE)
        if tf32:
            notes.append(TF32_NOTE)
        prior = _previous(out / f"{model_name}.json", result) if peers else {}
        plan = measure.Plan(case, dev, sizes, rotations, refs, knobs.warmup, knobs.iters, knobs.warmup_ms, knobs.rep_ms,
                            knobs.stream_calls,
                            knobs.stream_budget_s, started + (budget_s or knobs.budget_s), workdir,
                            lambda msg, style=None: console.log(escape(msg), style=style))
        measured: dict[str, Any] = {}
        for name in names:
            cls = PEERS[name]
            skip = cls.skip_reason(case, dev)
            if skip is not None:
                measured[name] = {"status": "skipped", "reason": skip}
            elif plan.remaining() < 0:
                measured[name] = {"status": "skipped", "reason": "time budget (run it alone with --peers)"}
            else:
                console.rule(name)
                with measure.inductor_cache(not keep_inductor_cache, workdir):
                    measured[name] = measure.measure(cls, model, plan)
            result["peers"] = {p: measured.get(p, prior.get(p)) for p in PEER_NAMES if p in measured or p in prior}
            result["elapsed_s"] = time.perf_counter() - started
            report.write(result, out)
        paths = report.write(result, out)
        readme = report.merge_readme(out)
        _summary(console, result)
        console.log(f"wrote {', '.join(str(p) for p in paths.values())} and {readme} in {result['elapsed_s']:.0f} s")
        return result
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, choices=MODEL_NAMES)
    parser.add_argument("--smoke", action="store_true", help="tiny stand-in model and shapes (runs on a CPU)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results, smoke: benchmarks/results/smoke)")
    parser.add_argument("--peers", default=None, help=f"comma-separated subset of {','.join(PEER_NAMES)}; merged into an existing <model>.json")
    parser.add_argument("--budget-s", type=float, default=None, help="skip work past this many seconds (default 420, smoke 600)")
    parser.add_argument("--keep-inductor-cache", action="store_true",
                        help="use Inductor's usual cache, shared by peers and runs (warm compile times); default: fresh per peer")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(name)s: %(message)s",
                        handlers=[RichHandler(show_time=False, show_path=False)])
    if not args.verbose:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    peers = [p.strip() for p in args.peers.split(",") if p.strip()] if args.peers else None
    run(args.model, smoke=args.smoke, device=args.device, out_dir=args.out, peers=peers, budget_s=args.budget_s,
        keep_inductor_cache=args.keep_inductor_cache)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
