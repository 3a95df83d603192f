"""Probe which Inductor engine artifact survives save, fresh-process load and CUDA-graph capture.

DESIGN §5 records a segfault when an AOTInductor package was loaded in a fresh process on the
GPU image. This script answers, on whatever machine runs it, for each load route: does it load
in a fresh process, how long does it take, are the results right, and can a CUDA graph capture
it. It writes one JSON file (``--out``) and prints a short table. Run it on CPU and on the GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import zipfile

import torch

CHILD = r"""
import json, sys, time, glob, os, zipfile
t0 = time.perf_counter()
import torch
route, pkg, ref, device, workdir = sys.argv[1:6]
t_import = time.perf_counter() - t0
data = torch.load(ref)
res = {"route": route, "import_s": round(t_import, 3)}
t = time.perf_counter()
if route == "aoti_load_package":
    m = torch._inductor.aoti_load_package(pkg)
    call = lambda x: m(x)
elif route.startswith("package_loader"):
    single = route.endswith("single_threaded")
    ld = torch._C._aoti.AOTIModelPackageLoader(pkg, "model", single, 1, -1)
    call = lambda x: ld.boxed_run([x])[0]
elif route.startswith("runner_so"):
    d = os.path.join(workdir, "x_" + route)
    zipfile.ZipFile(pkg).extractall(d)
    so = glob.glob(os.path.join(d, "**", "*.so"), recursive=True)[0]
    if device == "cpu":
        r = torch._C._aoti.AOTIModelContainerRunnerCpu(so, 1)
    else:
        r = torch._C._aoti.AOTIModelContainerRunnerCuda(so, 1, device, os.path.dirname(so), True)
    call = lambda x: r.run([x])[0]
res["load_s"] = round(time.perf_counter() - t, 4)
errs = []
t = time.perf_counter()
for x, y in zip(data["xs"], data["ys"]):
    out = call(x.to(device))
    errs.append(float(((out.float().cpu() - y).norm() / y.norm())))
if device != "cpu":
    torch.cuda.synchronize()
res["first_calls_s"] = round(time.perf_counter() - t, 4)
res["rel_err_max"] = max(errs)
if device != "cpu":
    x0 = data["xs"][0].to(device).clone()
    try:
        for _ in range(3):
            call(x0)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            static_out = call(x0)
        errs = []
        for _ in range(3):
            xn = torch.randn_like(x0)
            x0.copy_(xn)
            g.replay()
            torch.cuda.synchronize()
            y = data["fn_ref"](xn) if "fn_ref" in data else None
        res["cuda_graph_capture"] = "ok"
        x0.copy_(data["xs"][0].to(device))
        g.replay(); torch.cuda.synchronize()
        y = data["ys"][0]
        res["cuda_graph_rel_err"] = float(((static_out.float().cpu() - y).norm() / y.norm()))
        st, en = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for name, fn in (("plain", lambda: call(x0)), ("graph", g.replay)):
            ts = []
            for _ in range(50):
                st.record(); fn(); en.record(); torch.cuda.synchronize(); ts.append(st.elapsed_time(en))
            ts.sort()
            res[f"median_ms_{name}"] = round(ts[len(ts) // 2], 4)
    except Exception as e:  # noqa: BLE001 - a probe reports every failure
        res["cuda_graph_capture"] = f"{type(e).__name__}: {e}"[:400]
print("RESULT " + json.dumps(res))
"""


class Probe(torch.nn.Module):
    """The seed's expand/cat/linear/reshape pattern, small enough to compile quickly."""

    def __init__(self, dim: int = 96) -> None:
        super().__init__()
        self.cls = torch.nn.Parameter(torch.randn(1, 1, dim))
        self.proj = torch.nn.Linear(dim, dim * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = torch.cat([self.cls.expand(b, -1, -1), x], dim=1)
        return self.proj(x).reshape(b, x.size(1), 3, 4, -1).relu()


def run_child(route: str, pkg: str, ref: str, device: str, workdir: str, gdb: bool) -> dict:
    script = os.path.join(workdir, "child.py")
    with open(script, "w") as f:
        f.write(CHILD)
    cmd = [sys.executable, "-X", "faulthandler", script, route, pkg, ref, device, workdir]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t
    out = {"route": route, "rc": p.returncode, "wall_s": round(wall, 2)}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            out.update(json.loads(line[7:]))
    if p.returncode != 0:
        out["stderr_tail"] = p.stderr[-3000:]
        if gdb and p.returncode < 0:
            g = subprocess.run(
                ["cuda-gdb", "-batch", "-ex", "run", "-ex", "bt 40", "--args", *cmd],
                capture_output=True, text=True, timeout=400,
            )
            out["gdb_tail"] = g.stdout[-6000:]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="probe_artifacts.json")
    ap.add_argument("--gdb", action="store_true", help="re-run a crashing child under cuda-gdb")
    args = ap.parse_args()
    torch.manual_seed(0)
    report: dict = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name() if args.device != "cpu" else platform.processor(),
        "results": [],
    }
    work = tempfile.mkdtemp(prefix="probe_")
    model = Probe().eval().to(args.device)
    batch = torch.export.Dim("batch", min=1, max=32)
    x = torch.randn(4, 10, 96, device=args.device)
    t = time.perf_counter()
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    report["export_s"] = round(time.perf_counter() - t, 2)
    for variant, cfg in (("default", {}), ("embed_kernels", {"aot_inductor.embed_kernel_binary": True})):
        if variant != "default" and args.device == "cpu":
            continue
        pkg = os.path.join(work, f"{variant}.pt2")
        t = time.perf_counter()
        torch._inductor.aoti_compile_and_package(ep, package_path=pkg, inductor_configs=cfg)
        report[f"compile_s_{variant}"] = round(time.perf_counter() - t, 2)
        report[f"members_{variant}"] = zipfile.ZipFile(pkg).namelist()
        xs = [torch.randn(b, 10, 96) for b in (1, 4, 7, 32)]
        with torch.no_grad():
            ys = [model(xi.to(args.device)).float().cpu() for xi in xs]
        ref = os.path.join(work, "ref.pt")
        torch.save({"xs": xs, "ys": ys}, ref)
        for route in ("aoti_load_package", "package_loader", "package_loader_single_threaded", "runner_so"):
            r = run_child(route, pkg, ref, args.device, work, args.gdb)
            r["variant"] = variant
            report["results"].append(r)
            print(json.dumps({k: v for k, v in r.items() if k not in ("stderr_tail", "gdb_tail")}), flush=True)
    report["cache_route"] = probe_cache_route(args.device, work)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report["cache_route"]))


CACHE_CHILD = r"""
import sys, time, json
t0 = time.perf_counter()
import torch
sys.path.insert(0, sys.argv[3])
from probe_artifacts import Probe
device = sys.argv[2]
with open(sys.argv[1], "rb") as f:
    blob = f.read()
t = time.perf_counter()
torch.compiler.load_cache_artifacts(blob)
torch.manual_seed(0)
m = torch.compile(Probe().eval().to(device), dynamic=True)
x = torch.randn(5, 10, 96, device=device)
torch._dynamo.mark_dynamic(x, 0, min=1, max=32)
with torch.no_grad():
    m(x)
if device != "cpu":
    torch.cuda.synchronize()
print("RESULT " + json.dumps({"warm_cache_first_call_s": round(time.perf_counter() - t, 3), "total_s": round(time.perf_counter() - t0, 3)}))
"""


def probe_cache_route(device: str, work: str) -> dict:
    """Compile with torch.compile, save the portable caches, and time a fresh process that reuses them."""
    torch.manual_seed(0)
    m = torch.compile(Probe().eval().to(device), dynamic=True)
    x = torch.randn(5, 10, 96, device=device)
    torch._dynamo.mark_dynamic(x, 0, min=1, max=32)
    t = time.perf_counter()
    with torch.no_grad():
        m(x)
    cold = time.perf_counter() - t
    saved = torch.compiler.save_cache_artifacts()
    if saved is None:
        return {"error": "save_cache_artifacts returned None"}
    blob = saved[0]
    path = os.path.join(work, "cache.bin")
    with open(path, "wb") as f:
        f.write(blob)
    script = os.path.join(work, "cache_child.py")
    with open(script, "w") as f:
        f.write(CACHE_CHILD)
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=os.path.join(work, "fresh_cache"))
    p = subprocess.run(
        [sys.executable, script, path, device, os.path.dirname(os.path.abspath(__file__))],
        capture_output=True, text=True, timeout=300, env=env,
    )
    res = {"cold_compile_s": round(cold, 2), "blob_bytes": len(blob), "rc": p.returncode}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            res.update(json.loads(line[7:]))
    if p.returncode != 0:
        res["stderr_tail"] = p.stderr[-2000:]
    return res


if __name__ == "__main__":
    main()
