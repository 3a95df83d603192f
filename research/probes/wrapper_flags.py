"""Where AOTInductor's C++ compile time goes in a first flexrt build, and what compiler flags change it.

    python -m research.probes.wrapper_flags --models expand_reshape,resnet50,bert [--smoke] [--device cuda] --out DIR

Each model is built once by flexrt (one profile, as `benchmarks.build_time`'s `flexrt` variant: a new
process, a cold Inductor cache) with every subprocess the build starts timed (the header's preprocessing
and its checksum, the precompiled header, the wrapper, the kernels, the constants, the link). Then the
same process recompiles the wrapper's C++ source with variants of Inductor's own command line (no line
tables, no variable tracking, no precompiled header, -O0, clang where installed, GCC's -ftime-report),
each timed alone. `--clear-pch` empties Inductor's global precompiled-header directory first, so the
first model pays for the header as on a fresh machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks.report import save_json


def _kind(argv: list[str]) -> str:
    """What one subprocess of a build is, from its command line."""
    exe = os.path.basename(argv[0]) if argv else "?"
    if exe in ("openssl", "ld", "objcopy", "nvcc", "fatbinary", "ptxas"):
        return exe
    if "-E" in argv:
        return "preprocess header"
    if any(a.endswith(".gch") or a.endswith(".pch") for a in argv) and "-include" not in argv:
        return "precompiled header"
    if "-shared" in argv:
        return "link"
    text = " ".join(argv)
    if "wrapper.cpp" in text:
        return "wrapper compile"
    if "kernel.cpp" in text:
        return "kernel compile"
    if re.search(r"\.S\b|consts", text):
        return "constants"
    return f"other ({exe})"


def _record_subprocesses(records: list[dict[str, Any]]) -> None:
    """Time every subprocess.run of this process (the build's compiler calls go through it)."""
    orig = subprocess.run

    def timed(*args: Any, **kwargs: Any) -> Any:
        cmd = args[0] if args else kwargs.get("args")
        argv = shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in (cmd or [])]
        start = time.perf_counter()
        try:
            return orig(*args, **kwargs)
        finally:
            records.append({"kind": _kind(argv), "seconds": round(time.perf_counter() - start, 3),
                            "argv": argv, "cwd": str(kwargs.get("cwd") or "")})

    subprocess.run = timed  # type: ignore[assignment]


def _variants(argv: list[str]) -> dict[str, list[str]]:
    """Command lines to time against Inductor's own (`base`)."""
    out = {"base": list(argv)}
    no_g = [a for a in argv if a not in ("-g1", "-gline-tables-only")]
    out["no line tables (-g1 off)"] = no_g
    out["no var-tracking"] = argv + ["-fno-var-tracking-assignments", "-fno-var-tracking"]
    out["no line tables, no var-tracking"] = no_g + ["-fno-var-tracking-assignments", "-fno-var-tracking"]
    no_pch = list(argv)
    if "-include" in no_pch:
        i = no_pch.index("-include")
        del no_pch[i:i + 2]
    out["no precompiled header"] = no_pch
    out["-O0"] = ["-O0" if a == "-O1" else a for a in argv]
    out["-O1 -fno-inline"] = argv + ["-fno-inline"]
    clang = shutil.which("clang++")
    if clang:
        flags = [("-gline-tables-only" if a == "-g1" else a) for a in no_pch[1:] if a != "-fno-tree-loop-vectorize"]
        out["clang++ (no precompiled header)"] = [clang, *flags]
    return out


def _with_output(argv: list[str], path: str) -> list[str]:
    out = list(argv)
    out[out.index("-o") + 1] = path
    return out


def _replay(wrapper: dict[str, Any], tmp: str) -> dict[str, Any]:
    argv = wrapper["argv"]
    source = next((a for a in argv if a.endswith(".cpp")), "")
    result: dict[str, Any] = {"source_bytes": os.path.getsize(source) if source else None,
                              "source_lines": sum(1 for _ in open(source)) if source else None,
                              "clang++": shutil.which("clang++"), "cxx_version": subprocess.run(
                                  [argv[0], "--version"], capture_output=True, text=True).stdout.splitlines()[:1],
                              "argv": argv, "variants": {}}
    for name, variant in _variants(argv).items():
        start = time.perf_counter()
        proc = subprocess.run(_with_output(variant, os.path.join(tmp, "w.o")), cwd=tmp, capture_output=True, text=True)
        result["variants"][name] = {"seconds": round(time.perf_counter() - start, 3), "rc": proc.returncode,
                                    **({"stderr": proc.stderr[-1500:]} if proc.returncode else {})}
        print(f"  {name:36s} {result['variants'][name]['seconds']:7.2f} s rc {proc.returncode}", flush=True)
    proc = subprocess.run(_with_output(argv + ["-ftime-report"], os.path.join(tmp, "w.o")), cwd=tmp,
                          capture_output=True, text=True)
    result["time_report"] = _time_report(proc.stderr)
    return result


def _time_report(text: str) -> dict[str, float]:
    """GCC's -ftime-report as {pass: wall seconds}: its phases and the 15 slowest passes."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\s*(.+?)\s*:\s*([\d.]+)\s*\(\s*\d+%\)\s*([\d.]+)\s*\(\s*\d+%\)\s*([\d.]+)", line)
        if m:
            rows[m.group(1)] = float(m.group(4))
    phases = {k: v for k, v in rows.items() if k.startswith("phase") or k == "TOTAL"}
    passes = sorted(((k, v) for k, v in rows.items() if k not in phases), key=lambda kv: -kv[1])[:15]
    return {**phases, **dict(passes)}


def _child(model: str, smoke: bool, device: str, cache: str) -> dict[str, Any]:
    records: list[dict[str, Any]] = []
    _record_subprocesses(records)
    from benchmarks import build_time

    row = build_time._child("flexrt", model, smoke, device, cache, False, "opt")
    by_kind: dict[str, float] = {}
    for r in records:
        by_kind[r["kind"]] = round(by_kind.get(r["kind"], 0.0) + r["seconds"], 3)
    row["subprocess_s"] = by_kind
    row["subprocesses"] = [{k: v for k, v in r.items() if k != "argv"} | {"exe": r["argv"][0] if r["argv"] else ""}
                           for r in records]
    wrappers = [r for r in records if r["kind"] == "wrapper compile"]
    print(f"{model}: ready {row['ready_s']} s; subprocesses {by_kind}", flush=True)
    if wrappers:
        with tempfile.TemporaryDirectory() as tmp:
            row["wrapper_replay"] = _replay(wrappers[-1], tmp)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="expand_reshape")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--clear-pch", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(_child(args.child, args.smoke, args.device, args.cache)))
        return 0
    if args.clear_pch:
        from torch._inductor.codecache import _HEADER_DIR

        shutil.rmtree(_HEADER_DIR, ignore_errors=True)
    rows = []
    for model in args.models.split(","):
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="inductor-"), "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "research.probes.wrapper_flags", "--child", model, "--device", args.device,
               "--cache", tempfile.mkdtemp(prefix="flexrt-cache-")] + (["--smoke"] if args.smoke else [])
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        lines = proc.stdout.splitlines()
        print("\n".join(ln for ln in lines if not ln.startswith("RESULT ")), flush=True)
        result = [ln for ln in lines if ln.startswith("RESULT ")]
        rows.append(json.loads(result[-1][7:]) if result else {"model": model, "error": proc.stderr[-3000:]})
        if args.out:
            save_json(rows, args.out, "wrapper_flags.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
