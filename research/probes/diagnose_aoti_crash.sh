#!/usr/bin/env bash
# Diagnose the fresh-process AOTInductor load crash on the GPU image (DESIGN §5): backtrace,
# linked libraries, and which workaround (if any) lets a fresh process construct the runner.
set -u
OUT=${OUT:-/tmp/diag}; mkdir -p "$OUT"; W=$(mktemp -d)
cd "$(dirname "$0")"
python3 - "$W" <<'PY'
import sys, torch, zipfile
sys.path.insert(0, ".")
from probe_artifacts import Probe
m = Probe().eval().cuda(); x = torch.randn(4, 10, 96, device="cuda")
ep = torch.export.export(m, (x,), dynamic_shapes=({0: torch.export.Dim("b", min=1, max=32)},))
p = torch._inductor.aoti_compile_and_package(ep, package_path=sys.argv[1] + "/tiny.pt2")
zipfile.ZipFile(p).extractall(sys.argv[1] + "/x")
PY
cp "$W/tiny.pt2" "$OUT/"
SO=$(find "$W/x" -name '*.so' | head -1); echo "SO=$SO"
readelf -d "$SO" | grep -E "NEEDED|RPATH|RUNPATH"; ldd "$SO" | grep -E "stdc|cuda|gcc|torch" ; g++ --version | head -1
cat > "$W/child.py" <<'PY'
import sys, os, ctypes
import torch
so = sys.argv[1]; mode = sys.argv[2]
maps = open("/proc/self/maps").read()
libs = sorted({l.split()[-1] for l in maps.splitlines() if "stdc++" in l or "libgcc_s" in l})
print("loaded:", libs, flush=True)
if mode == "cuda_init": torch.zeros(1, device="cuda"); torch.cuda.synchronize()
if mode == "regex_probe":
    pass
r = torch._C._aoti.AOTIModelContainerRunnerCuda(so, 1, "cuda", os.path.dirname(so), True)
print("CONSTRUCTED", flush=True)
y = r.run([torch.randn(3, 10, 96, device="cuda")])[0]; torch.cuda.synchronize(); print("RAN", tuple(y.shape), flush=True)
PY
for mode in plain cuda_init; do echo "== $mode"; python3 -X faulthandler "$W/child.py" "$SO" $mode 2>&1 | tail -4; echo "rc=$?"; done
echo "== LC_ALL=C"; LC_ALL=C python3 "$W/child.py" "$SO" plain 2>&1 | tail -2
SYSCXX=$(g++ -print-file-name=libstdc++.so.6); echo "== LD_PRELOAD=$SYSCXX"; LD_PRELOAD=$SYSCXX python3 "$W/child.py" "$SO" plain 2>&1 | tail -3
env | grep -E "^(LANG|LC_|LD_)" 
timeout 300 cuda-gdb -batch -ex "set pagination off" -ex run -ex "bt 30" -ex "x/6i \$pc" -ex "info sharedlibrary" --args python3 "$W/child.py" "$SO" plain > "$OUT/gdb.txt" 2>&1
grep -n -E "^#|=>" "$OUT/gdb.txt" | head -40 | cut -c1-300
grep -E "stdc|cudart|libcuda" "$OUT/gdb.txt" | cut -c1-200
