"""Writing results: <model>.json (everything), <model>.md (tables), <model>.png (latency vs
shape), and README.md (one latency table per model, merged from every JSON in the folder)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

Result = dict[str, Any]


def _ms(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "—"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def _num(v: Any, fmt: str = "{:.1f}") -> str:
    return "—" if v is None else fmt.format(v) if isinstance(v, (int, float)) else str(v)


def _median(result: Result, peer: str, size: str, key: str = "median_ms") -> float | None:
    entry = result["peers"].get(peer) or {}
    shape = entry.get("shapes", {}).get(size, {})
    return shape.get(key)


def ok_peers(result: Result) -> list[str]:
    return [p for p, e in result["peers"].items() if e and e.get("shapes")]


def latency_table(result: Result) -> str:
    """Rows: shapes; columns: each peer's median ms, then flexrt / the fastest other peer."""
    peers = ok_peers(result)
    head = [result["dim"], "input shapes", *[f"{p} ms" for p in peers], "flexrt ÷ best peer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for size in map(str, result["shapes"]):
        cells = [size, " ".join("x".join(map(str, s)) for s in result["input_shapes"][size])]
        cells += [_ms(_median(result, p, size)) for p in peers]
        mine = _median(result, "flexrt", size)
        others = {p: _median(result, p, size) for p in peers if not p.startswith("flexrt")}  # flexrt's variants are not peers
        others = {p: v for p, v in others.items() if v is not None}
        if mine is not None and others:
            best = min(others, key=lambda p: others[p])
            cells.append(f"{mine / others[best]:.2f} (vs {best})")
        else:
            cells.append("—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def shape_table(result: Result, key: str, fmt: Any = _ms) -> str:
    """Rows: shapes; columns: one figure (p90_ms, first_call_s...) per peer."""
    peers = ok_peers(result)
    lines = ["| " + " | ".join([result["dim"], *peers]) + " |", "|" + "---|" * (len(peers) + 1)]
    for size in map(str, result["shapes"]):
        lines.append("| " + " | ".join([size, *[fmt(_median(result, p, size, key)) for p in peers]]) + " |")
    return "\n".join(lines)


def peer_table(result: Result) -> str:
    """One row per peer: status, build time, compiles over the random stream, memory, cold start, error."""
    head = ["peer", "status", "build s", "compiles in stream", "peak mem MB (over baseline)", "cold start s", "max rel err"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in result["peers"].items():
        e = e or {}
        status = e.get("status", "?")
        if e.get("error"):
            status += ": " + e["error"][:120].replace("|", "/").replace("\n", " ")
        elif e.get("reason"):
            status += ": " + e["reason"]
        elif e.get("shape_errors"):
            status += ": " + "; ".join(f"{k}: {v}" for k, v in e["shape_errors"].items())[:160].replace("|", "/").replace("\n", " ")
        stream = e.get("stream", {})
        compiles = stream.get("compiles_text", "—")
        mem = e.get("memory", {})
        peak = mem.get("peak_over_baseline_bytes")
        cold = e.get("cold_start", {})
        cold_text = _num(cold.get("cold_start_s"), "{:.2f}") if "cold_start_s" in cold else cold.get("status", "—")
        errs = [s.get("rel_err") for s in e.get("shapes", {}).values() if s.get("rel_err") is not None]
        err = f"{max(errs):.1e}" + (" ⚠" if any(s.get("rel_err_flag") for s in e.get("shapes", {}).values()) else "") if errs else "—"
        lines.append("| " + " | ".join([name, status, _num(e.get("build_s")), compiles,
                                         _num(None if peak is None else peak / 2**20, "{:.0f}"), cold_text, err]) + " |")
    return "\n".join(lines)


def floor_table(result: Result) -> str:
    floor = result.get("floor")
    if not floor:
        return ""
    head = [result["dim"], "GFLOP", "MB moved (min)", "floor ms", "flexrt ms", "floor ÷ flexrt"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for size in map(str, result["shapes"]):
        f = floor.get(size)
        if not f:
            continue
        mine = _median(result, "flexrt", size)
        ratio = f"{f['floor_ms'] / mine:.2f}" if mine else "—"
        lines.append(f"| {size} | {f['flops'] / 1e9:.3g} | {f['bytes'] / 2**20:.1f} | {_ms(f['floor_ms'])} | {_ms(mine)} | {ratio} |")
    rates = result.get("device_rates", {})
    mm = ", ".join(f"{k} {v / 1e12:.1f} TFLOP/s" for k, v in rates.get("matmul_flops_per_s", {}).items())
    bw = rates.get("copy_bytes_per_s", 0) / 1e9
    return "\n".join(lines) + f"\n\nMeasured on this device: matmul {mm}; copy {bw:.0f} GB/s (read + write)."


def markdown(result: Result) -> str:
    title = f"# {result['model']}{' (smoke)' if result['smoke'] else ''}"
    meta = (f"{result['description']}; {result['dtype']}; {result['dim']} {result['range']['min']}..{result['range']['max']} "
            f"(opt {result['range']['opt']}). Device: {result['device_name']}; torch {result['torch']}; {result['date']}.")
    s = result["settings"]
    if s.get("rep_ms"):
        counts = (f"Median of at least {s['iters']} timed calls, as many as fill {s['rep_ms']:g} ms (up to 2000), after "
                  f"at least {s['warmup']} warm-up calls and {s['warmup_ms']:g} ms")
    else:
        counts = f"Median of {s['iters']} timed calls after {s['warmup']} warm-up calls"
    how = (f"{counts}, rotating {s['rotate']} inputs "
           f"({'CUDA events' if result['device'] == 'cuda' else 'perf_counter'}). Compiles counted over "
           f"{s['stream_calls']} calls of random {result['dim']} in the range. Ratio < 1: flexrt faster.")
    parts = [title, meta, how, "## Latency (median ms)", latency_table(result), "## Peers", peer_table(result),
             "Build s = setup (export/compile/load) + first call at each measured shape (JIT compiles, graph captures).",
             "## p90 latency (ms)", shape_table(result, "p90_ms"),
             "## First call at each shape (s)", shape_table(result, "first_call_s", lambda v: _num(v, "{:.2f}"))]
    if result.get("floor"):
        parts += ["## Physical floor", floor_table(result)]
    if result.get("notes"):
        parts += ["## Notes", "\n".join(f"- {n}" for n in result["notes"])]
    return "\n\n".join(parts) + "\n"


def plot(result: Result, path: Path) -> None:
    """Latency vs the dynamic dim, one line per peer, log axes; the floor dashed where known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for peer in ok_peers(result):
        pts = [(int(k), v["median_ms"]) for k, v in result["peers"][peer]["shapes"].items() if v.get("median_ms")]
        if pts:
            pts.sort()
            ax.plot(*zip(*pts), marker="o", label=peer, linewidth=2.5 if peer == "flexrt" else 1.2)
    if result.get("floor"):
        pts = sorted((int(k), v["floor_ms"]) for k, v in result["floor"].items())
        ax.plot(*zip(*pts), linestyle="--", color="gray", label="physical floor")
    ax.set_xscale("log", base=2)
    ax.set_xticks(result["shapes"], [str(v) for v in result["shapes"]])
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel(result["dim"])
    ax.set_ylabel("median latency (ms)")
    ax.set_title(f"{result['model']}{' (smoke)' if result['smoke'] else ''} — {result['device_name']}, {result['dtype']}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(result: Result, out_dir: Path) -> dict[str, Path]:
    """Write json, md and png for one model; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{result['model']}.{ext}" for ext in ("json", "md", "png")}
    paths["json"].write_text(json.dumps(result, indent=1, default=str) + "\n")
    paths["md"].write_text(markdown(result))
    try:
        plot(result, paths["png"])
    except Exception as e:  # noqa: BLE001 - a plot must never lose the numbers
        logger.warning("plot failed: %s", e)
    return paths


def save_json(data: Any, out_dir: Path | str, name: str) -> Path:
    """Write `data` as `<out_dir>/<name>` (indent 1), creating the folder: probes and side benchmarks."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(data, indent=1))
    return path


def load(path: Path) -> Result | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        logger.warning("skipping %s: %s", path, e)
        return None


NOTES_MARKER = "<!-- hand-written notes below: kept when the tables above are regenerated -->"


def merge_readme(out_dir: Path) -> Path:
    """README.md in out_dir: one latency table per <model>.json found there, then the hand-written
    notes that follow NOTES_MARKER in the existing README, kept as they are."""
    readme = out_dir / "README.md"
    notes = ""
    if readme.exists() and NOTES_MARKER in readme.read_text():
        notes = readme.read_text().split(NOTES_MARKER, 1)[1]
    parts = ["# Benchmark results", "Generated by `python -m benchmarks.bench`; each model's details are in its .md and .json."]
    for path in sorted(out_dir.glob("*.json")):
        result = load(path)
        if not result or "peers" not in result:
            continue
        parts += [f"## {result['model']}", f"{result['device_name']}, torch {result['torch']}, {result['dtype']}, "
                  f"{result['date']} — [details]({result['model']}.md)", latency_table(result)]
    text = "\n\n".join(parts) + "\n"
    if notes:
        text += "\n" + NOTES_MARKER + notes
    readme.write_text(text)
    return readme
