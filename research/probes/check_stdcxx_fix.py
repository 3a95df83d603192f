"""Check the fix for the fresh-process AOTInductor crash: put libstdc++ in the global symbol scope.

diagnose_aoti_crash.sh showed the segfault is inside std::regex (parse_device_str) in the AOTI
wrapper .so, and that LD_PRELOAD of libstdc++ avoids it. This script checks the in-process
equivalent (dlopen libstdc++ with RTLD_GLOBAL before the .so is loaded), then CUDA-graph capture
of the loaded runner and its per-call cost, on a package compiled by diagnose_aoti_crash.sh.
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import sys
import tempfile
import time
import zipfile

import torch

sys.path.insert(0, os.path.dirname(__file__))
from probe_artifacts import Probe


def main() -> None:
    pkg = sys.argv[1]
    if "--no-fix" not in sys.argv:
        ctypes.CDLL("libstdc++.so.6", mode=os.RTLD_GLOBAL | os.RTLD_NOLOAD)
    res: dict = {}
    d = tempfile.mkdtemp()
    zipfile.ZipFile(pkg).extractall(d)
    so = glob.glob(os.path.join(d, "**", "*.so"), recursive=True)[0]
    t = time.perf_counter()
    runner = torch._C._aoti.AOTIModelContainerRunnerCuda(so, 1, "cuda", os.path.dirname(so), True)
    res["runner_load_s"] = round(time.perf_counter() - t, 4)
    print("runner constructed", flush=True)
    t = time.perf_counter()
    pkg_model = torch._inductor.aoti_load_package(pkg)
    res["aoti_load_package_s"] = round(time.perf_counter() - t, 4)
    consts = runner.extract_constants_map(False)
    fqns = runner.get_constant_names_to_original_fqns()
    model = Probe().eval().cuda()
    model.load_state_dict({fqns.get(k, k): v for k, v in consts.items()})
    errs = {}
    with torch.no_grad():
        for b in (1, 2, 7, 32):
            x = torch.randn(b, 10, 96, device="cuda")
            ref = model(x)
            for name, fn in (("runner", lambda x: runner.run([x])[0]), ("package", pkg_model)):
                out = fn(x)
                errs[f"{name}_b{b}"] = float((out - ref).norm() / ref.norm())
        res["rel_err"] = errs
        for b in (1, 32):
            x = torch.randn(b, 10, 96, device="cuda")
            for _ in range(3):
                runner.run([x])
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                out = runner.run([x])[0]
            xn = torch.randn_like(x)
            x.copy_(xn)
            g.replay()
            ref = model(xn)
            res[f"graph_rel_err_b{b}"] = float((out - ref).norm() / ref.norm())
            st, en = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            for name, fn in (("eager", lambda x=x: model(x)), ("runner", lambda x=x: runner.run([x])), ("graph", g.replay)):
                ts = []
                for _ in range(200):
                    st.record()
                    fn()
                    en.record()
                    torch.cuda.synchronize()
                    ts.append(st.elapsed_time(en))
                ts.sort()
                res[f"median_ms_{name}_b{b}"] = round(ts[100], 4)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
