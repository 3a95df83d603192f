"""Where a flexrt cold start goes: a fresh process loads a saved artifact and calls it, phase by phase.

    python -m research.probes.coldstart_phases --models resnet50,bert --out DIR [--smoke]

For each model: compile with flexrt's defaults (engine cache honoured), save, then spawn fresh
processes that time `import flexrt`, `flexrt.load`, `.module()`, the first, second and third call
(each synchronised), and write a cProfile of load + first call. Prints one line per model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import cProfile, io, json, pstats, sys, time
t0 = time.perf_counter()
artifact, ref_path, out_json, out_prof = sys.argv[1:5]
import torch
t_torch = time.perf_counter()
ref = torch.load(ref_path)
inputs = [t.cuda() if torch.cuda.is_available() else t for t in ref["inputs"]]
if torch.cuda.is_available():
    torch.cuda.synchronize()
t_io = time.perf_counter()
import flexrt
t_flexrt = time.perf_counter()
prof = cProfile.Profile()
prof.enable()
art = flexrt.load(artifact)
t_load = time.perf_counter()
mod = art.module()
t_module = time.perf_counter()
times = []
with torch.no_grad():
    for _ in range(3):
        s = time.perf_counter()
        out = mod(*inputs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - s)
        if len(times) == 1:
            prof.disable()
s = io.StringIO()
pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(30)
open(out_prof, "w").write(s.getvalue())
a, b = out.float().cpu(), ref["output"].float()
json.dump({"import_torch_s": t_torch - t0, "import_flexrt_s": t_flexrt - t_io, "load_s": t_load - t_flexrt,
           "module_s": t_module - t_load, "calls_s": times, "cold_start_s": t_module - t_flexrt + times[0],
           "rel_err": float((a - b).norm() / b.norm())}, open(out_json, "w"))
"""


def probe(name: str, smoke: bool, out: Path, repeats: int) -> dict:
    import flexrt
    from benchmarks.models import get_case

    case = get_case(name, smoke)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = case.build().to(case.dtype).eval().to(dev)
    t = time.perf_counter()
    compiled = flexrt.compile(model, ir="dynamo", inputs=case.flexrt_inputs(), enabled_precisions={case.dtype})
    compile_s = time.perf_counter() - t
    inputs = case.make_inputs(case.opt, dev, seed=1)
    with torch.no_grad():
        ref = model(*inputs)
    ref = getattr(ref, "last_hidden_state", ref)
    work = Path(tempfile.mkdtemp(prefix="coldstart-"))
    artifact = work / f"{name}.flexrt"
    flexrt.save(compiled, str(artifact))
    torch.save({"inputs": [x.cpu() for x in inputs], "output": ref.detach().cpu()}, work / "ref.pt")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    runs = []
    for i in range(repeats):
        out_json, out_prof = work / f"r{i}.json", out / f"coldstart_{name}_{i}.prof.txt"
        proc = subprocess.run([sys.executable, "-c", CHILD, str(artifact), str(work / "ref.pt"), str(out_json), str(out_prof)],
                              env=env, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        runs.append(json.loads(out_json.read_text()))
    result = {"model": name, "compile_s": compile_s, "artifact_mb": artifact.stat().st_size / 1e6, "runs": runs}
    print(json.dumps(result), flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet50,bert")
    parser.add_argument("--out", default="/tmp/coldstart")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = [probe(m, args.smoke, out, args.repeats) for m in args.models.split(",")]
    (out / "coldstart_phases.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
