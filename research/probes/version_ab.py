"""The same model and timing with two flexrt trees, on one device: per-call latency of the seed
model at small batches (host-bound: what a per-call regression shows in) and cold start.

    python -m research.probes.version_ab --tree OLD_PARENT --label old --out DIR   # one tree per process

Each run compiles the seed model for batch 1..32, times 200 calls per batch with CUDA events after
warm-up (3 rotating inputs), saves the artifact, then times a fresh process's load + first call.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

COLD = """
import sys, time
t = time.perf_counter()
import torch, flexrt
m = flexrt.load(sys.argv[1]).module()
x = torch.randn(8, 196, 768, device="cuda")
y = m(x)
torch.cuda.synchronize()
print(time.perf_counter() - t)
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", required=True, help="folder holding the flexrt package to measure")
    parser.add_argument("--label", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    sys.path.insert(0, args.tree)
    import torch

    import flexrt
    from benchmarks.models import ExpandReshapeModel

    torch._inductor.config.cpp.vec_isa_ok = False  # both trees alike: no ISA probes (time, not result)
    assert flexrt.__file__.startswith(os.path.abspath(args.tree)), flexrt.__file__
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = ExpandReshapeModel(768).eval().to(dev)
    spec = flexrt.Input(min_shape=(1, 196, 768), opt_shape=(8, 196, 768), max_shape=(32, 196, 768), name="x")
    start = time.perf_counter()
    m = flexrt.compile(model, ir="dynamo", inputs=[spec])
    build_s = time.perf_counter() - start
    result = {"label": args.label, "tree": args.tree, "build_s": build_s, "median_ms": {}}
    with torch.no_grad():
        for b in (1, 3, 8, 32):
            xs = [torch.randn(b, 196, 768, device=dev) for _ in range(3)]
            for i in range(30):
                m(xs[i % 3])
            times = []
            for i in range(200):
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                m(xs[i % 3])
                e.record()
                e.synchronize()
                times.append(s.elapsed_time(e))
            result["median_ms"][b] = statistics.median(times)
        # host time per call (no sync: the host-bound part a per-call difference lives in), and where it goes
        x = torch.randn(1, 196, 768, device=dev)
        for _ in range(50):
            m(x)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(1000):
            m(x)
        result["host_us_per_call_b1"] = (time.perf_counter() - t) * 1000
        torch.cuda.synchronize()
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for _ in range(300):
            m(x)
        prof.disable()
        torch.cuda.synchronize()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
        result["profile_b1_300_calls"] = text.getvalue().splitlines()[:60]
    path = os.path.join(tempfile.mkdtemp(), "m.ep")
    flexrt.save(m, path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([args.tree, os.environ.get("PYTHONPATH", "")])}
    colds = []
    for _ in range(2):
        p = subprocess.run([sys.executable, "-c", COLD, path], capture_output=True, text=True, env=env, timeout=120)
        colds.append(float(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else p.stderr[-500:])
    result["cold_start_s"] = colds
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"version_ab_{args.label}.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
