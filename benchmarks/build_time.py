"""Where a first build's time goes: each build variant in a fresh process with cold caches, phase
by phase, with a profile of the whole build.

    python -m benchmarks.build_time --models expand_reshape,resnet50 --out DIR [--smoke] [--device cuda]

Variants, each in its own process (the fixed cost of a first build is the point):
  flexrt        flexrt.compile over the case's range, one profile; cold Inductor and flexrt caches
  flexrt_3p     the same range split into three profiles (min..opt/2, ..opt, ..max), their engines
                built side by side in worker processes (build_workers=0: automatic)
  flexrt_3p_seq the three profiles built one after another in this process (build_workers=1)
  flexrt_warm   flexrt again in a new process, with the engine cache the `flexrt` run left on disk
                (its module-cache entry finds the engines without a trace)
  flexrt_warm_segments  the same without the module-cache entry (removed first): the trace runs and
                each segment finds its engine by its segment key, as a warm compile did before
  torch_compile torch.compile default, first call at opt (the compile a user waits for)
  aoti          one AOTInductor package over the range (torch.export + aoti_compile_and_package + load)
A variant may carry knobs after "+": Inductor settings (`+isa`, `+pch`, `+o0`, see KNOBS) or, for
the workers of `flexrt_3p` only, `+wthreads` (Inductor's compile pool per worker sized to a quarter of
the cores; without it, flexrt gives each building process an equal share of the cores).
`ready_s` is what a user waits for: from the model in hand to the first output at the opt shape
(flexrt's build and first call; torch.compile's first call, which compiles). `total_s` adds the first
two calls at every other measured shape (the second captures a CUDA graph where the variant uses
them), as `benchmarks.bench` counts build time; `--peer-shapes opt` stops the peers after the opt
shape (their later calls are recompiles, not what `ready_s` compares). Phases come from flexrt's own
stage timings (logged with `extra={"stage": ..., "seconds": ...}`) and Inductor's timers; `--profile`
adds a cProfile of the whole build (it slows Python-heavy phases, so headline times are taken without).
`FLEXRT_PROFILE_DIR=DIR` with `--profile` also writes each child's whole profile there (`.prof`).
`--cold-start` then saves what the `flexrt` variant built and times a new process loading it and making
its first call (`cold_start` in the JSON: load + first call, the loader's import beside it).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VARIANTS = ("flexrt", "flexrt_3p", "flexrt_3p_seq", "flexrt_warm", "flexrt_warm_segments", "torch_compile", "aoti")
# Inductor settings tried on top of a flexrt variant, named after a "+" (e.g. flexrt+isa+pch)
KNOBS: dict[str, dict[str, Any]] = {
    "isa": {"cpp.vec_isa_ok": False},  # no CPU vector-ISA probe compiles (a CUDA engine has no CPU kernels)
    "pch": {"aot_inductor.precompile_headers": False},  # no precompiled header built for the wrapper
    "o0": {"aot_inductor.compile_wrapper_opt_level": "O0"},  # the wrapper's host code at -O0
}
# environment set for the build's worker processes only (the caller's Inductor config is already loaded)
WORKER_ENV: dict[str, Any] = {
    "wthreads": lambda: {"TORCHINDUCTOR_COMPILE_THREADS": str(max(1, (os.cpu_count() or 4) // 4))},  # Inductor's
    # compile pool per worker: a quarter of the cores (the run that led to flexrt's own per-worker share)
}
# cProfile entries worth naming in the breakdown (cumulative seconds), by qualified name fragment
WATCH = {
    "torch.export": "export.py:.*\\(export\\)|_trace.py:.*\\(_export\\)",
    "inductor codegen": "compile_fx.py:.*\\(fx_codegen_and_compile\\)",
    "C++ wrapper compile": "cpp_builder.py:.*\\(build\\)",
    "triton kernel compile": "async_compile.py:.*\\(wait\\)|triton_heuristics.py:.*\\(precompile\\)",
    "autotune": "select_algorithm.py:.*\\(__call__\\)|triton_heuristics.py:.*\\(autotune_to_one_config\\)",
    "compile workers start": "async_compile.py:.*\\(warm_pool\\)|compile_worker.*\\(__init__\\)",
    "engine load": "loader.py:.*\\(load_runner\\)",
    "cuda graph capture": "cuda_graphs.py:.*\\(_capture\\)",
}


class _StageLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.stages: list[dict[str, Any]] = []
        self.warnings: list[str] = []  # e.g. a build worker that failed, and why

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.warnings.append(record.getMessage()[:2000])
        if hasattr(record, "stage"):
            row = {"stage": record.stage, "seconds": round(record.seconds, 3)}  # type: ignore[attr-defined]
            if getattr(record, "detail", ""):  # e.g. a worker's own Inductor timers
                row["detail"] = record.detail  # type: ignore[attr-defined]
            self.stages.append(row)


def _profile_rows(prof: cProfile.Profile) -> dict[str, Any]:
    import re

    stats = pstats.Stats(prof)
    rows = {}
    for (file, line, fn), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows[f"{file}:{line}({fn})"] = ct
    watched = {}
    for label, pattern in WATCH.items():
        hits = [ct for key, ct in rows.items() if re.search(pattern, key)]
        watched[label] = round(max(hits), 3) if hits else None  # outermost (largest cumulative) entry
    top = sorted(((k, v) for k, v in rows.items() if "site-packages" in k or "flexrt" in k), key=lambda kv: -kv[1])[:40]
    return {"watched_cumulative_s": watched, "top_cumulative_s": [[k.split("site-packages/")[-1], round(v, 3)] for k, v in top]}


def _cold_start(fn: Any, inputs: tuple[Any, ...], device: Any) -> dict[str, Any]:
    """Save what the `flexrt` variant built and time a new process loading it and making its first call
    (`benchmarks.coldstart`), its output checked against this one's."""
    from benchmarks import coldstart

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.ep")
        coldstart.save_flexrt(fn, path)
        out = fn(*inputs)
        while isinstance(out, (list, tuple)) and len(out) == 1:
            out = out[0]
        return coldstart.run_child("flexrt", path, inputs, out, device, tmp, timeout_s=300)


def _child(variant: str, model_name: str, smoke: bool, device_name: str, cache_dir: str, profile: bool,
           peer_shapes: str, cold_start: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    import torch

    import flexrt
    from benchmarks.models import get_case

    import_s = time.perf_counter() - t0
    handler = _StageLog()
    logging.getLogger("flexrt").addHandler(handler)
    logging.getLogger("flexrt").setLevel(logging.DEBUG)
    dev = torch.device(device_name)
    case = get_case(model_name, smoke)
    dtype = case.dtype if dev.type == "cuda" else torch.float32
    torch.manual_seed(0)
    model = case.build().eval().to(device=dev, dtype=dtype)
    sizes = case.shapes()
    inputs = {s: case.make_inputs(s, dev, seed=s) for s in sizes}
    if dtype != case.dtype:
        inputs = {s: tuple(t.to(dtype) if t.is_floating_point() else t for t in v) for s, v in inputs.items()}
    base, *knobs = variant.split("+")
    for knob in [k for k in knobs if k in WORKER_ENV]:
        os.environ.update(WORKER_ENV[knob]())
    for knob in [k for k in knobs if k not in WORKER_ENV]:
        for key, value in KNOBS[knob].items():
            section, _, name = key.rpartition(".")
            setattr(getattr(torch._inductor.config, section) if section else torch._inductor.config, name, value)
    variant = base
    prof = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if prof is not None:
        prof.enable()
    with torch.no_grad():
        if variant.startswith("flexrt"):
            options: dict[str, Any] = {"enabled_precisions": {dtype}, "cache_dir": cache_dir}
            if variant == "flexrt_3p_seq":
                options["build_workers"] = 1
            if variant.startswith("flexrt_3p"):
                mid = max(case.lo + 1, case.opt // 2)
                bounds = [(case.lo, mid), (mid + 1, case.opt), (case.opt + 1, case.hi)]
                profiles = []
                for lo, hi in bounds:
                    p = flexrt.Profile()
                    for d in case.inputs:
                        p.add(d.name, min=d.shape(lo), opt=d.shape(hi), max=d.shape(hi))
                    profiles.append(p)
                options["profiles"] = profiles
            fn = flexrt.compile(model, ir="dynamo", arg_inputs=case.flexrt_inputs(), **options)
        elif variant == "torch_compile":
            fn = torch.compile(model)
        else:
            ep = torch.export.export(model, inputs[case.opt], dynamic_shapes=case.export_dims())
            from flexrt.runtime.loader import promote_libstdcxx

            promote_libstdcxx()  # without it, a fresh process crashed loading a package on the GPU image
            with tempfile.TemporaryDirectory() as tmp:
                path = torch._inductor.aoti_compile_and_package(ep, package_path=os.path.join(tmp, "m.pt2"))
                fn = torch._inductor.aoti_load_package(path)
        compile_s = time.perf_counter() - start
        fn(*inputs[case.opt])  # the first output: what a user waits for
        if dev.type == "cuda":
            torch.cuda.synchronize()
        ready_s = time.perf_counter() - start
        first_calls = {}
        shapes = [case.opt] + [s for s in sizes if s != case.opt]
        if peer_shapes == "opt" and not variant.startswith("flexrt"):
            shapes = [case.opt]
        for s in shapes:
            t = time.perf_counter()
            for _ in range(1 if s == case.opt else 2):  # the second call captures a CUDA graph where the variant uses them
                fn(*inputs[s])
            if dev.type == "cuda":
                torch.cuda.synchronize()
            first_calls[str(s)] = round(time.perf_counter() - t, 3)
    if prof is not None:
        prof.disable()
        if dump := os.environ.get("FLEXRT_PROFILE_DIR"):  # the whole profile, for pstats/snakeviz
            prof.dump_stats(os.path.join(dump, f"{model_name}_{'+'.join([variant, *knobs])}.prof"))
    total = time.perf_counter() - start
    from benchmarks.timing import as_tensor, rel_error

    with torch.no_grad():  # every build is checked against eager at each shape it ran (after the clock)
        errors = {str(s): rel_error(fn(*inputs[s]), as_tensor(model(*inputs[s]))) for s in shapes}
    cold = _cold_start(fn, inputs[case.opt], dev) if cold_start and variant == "flexrt" else None
    from torch._dynamo.utils import compilation_time_metrics

    inductor = {k: round(sum(v), 3) for k, v in compilation_time_metrics.items() if sum(v) >= 0.05}
    return {
        "inductor_timed_s": dict(sorted(inductor.items(), key=lambda kv: -kv[1])[:40]),
        "variant": "+".join([variant, *knobs]), "model": model_name, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__, "flexrt": flexrt.__version__, "import_s": round(import_s, 3),
        "compile_s": round(compile_s, 3), "ready_s": round(ready_s, 3), "first_calls_s": first_calls,
        "total_s": round(total, 3), "shapes_timed": [str(s) for s in shapes], "rel_err_vs_eager": errors,
        "stages": handler.stages, "warnings": handler.warnings, **(_profile_rows(prof) if prof is not None else {}),
        **({"cold_start": cold} if cold is not None else {}),
    }


def run(models: list[str], variants: list[str], smoke: bool, device: str, out: Path, profile: bool = False,
        peer_shapes: str = "all", cold_start: bool = False) -> list[dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for model in models:
        caches: dict[str, str] = {}
        for variant in variants:
            # each variant builds with an empty engine cache; flexrt_warm reuses the one flexrt filled
            owner = "flexrt" if variant.startswith("flexrt_warm") else variant
            cache = caches.setdefault(owner, tempfile.mkdtemp(prefix="flexrt-build-cache-"))
            if variant.startswith("flexrt_warm_segments"):
                for entry in Path(cache).glob("module-*.engine"):
                    entry.unlink()
            inductor = tempfile.mkdtemp(prefix="inductor-")  # cold Inductor cache for every variant alike
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": inductor, "PYTHONUNBUFFERED": "1"}
            cmd = [sys.executable, "-m", "benchmarks.build_time", "--child", variant, "--models", model,
                   "--device", device, "--cache", cache, "--peer-shapes", peer_shapes] + (["--smoke"] if smoke else []) \
                + (["--profile"] if profile else []) + (["--cold-start"] if cold_start else [])
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                row = {"variant": variant, "model": model, "error": proc.stderr[-3000:], "process_s": round(wall, 1)}
            else:
                row = {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_s": round(wall, 1)}
            results.append(row)
            cold = row.get("cold_start", {})
            print(f"{model:16s} {variant:14s} process {wall:6.1f} s  compile {row.get('compile_s', '-')} s  "
                  f"ready {row.get('ready_s', '-')} s  total {row.get('total_s', '-')} s  "
                  f"max rel err {max(row.get('rel_err_vs_eager', {}).values(), default=float('nan')):.1e}"
                  + (f"  cold start {cold['cold_start_s']:.2f} s (loader import {cold['import_loader_s']:.2f} s)" if cold else ""),
                  flush=True)
            (out / f"build_time_{model}.json").write_text(json.dumps([r for r in results if r["model"] == model], indent=1))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="expand_reshape")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/build")
    parser.add_argument("--profile", action="store_true", help="cProfile each build (slower; for the breakdown)")
    parser.add_argument("--peer-shapes", default="all", choices=("all", "opt"),
                        help="time the peers' first calls at every shape (their recompiles) or only at opt")
    parser.add_argument("--cold-start", action="store_true",
                        help="after the flexrt variant's build: save it, load it in a new process, time load + first call")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.models, args.smoke, args.device, args.cache, args.profile, args.peer_shapes,
                                args.cold_start)))
        return 0
    run(args.models.split(","), args.variants.split(","), args.smoke, args.device, Path(args.out), args.profile, args.peer_shapes,
        args.cold_start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
