"""Merge shard results into benchmarks/results/zoo/zoo.json, zoo.md (the table) and zoo.png
(flexrt / best peer per model at opt and max; below 1 means flexrt is faster)."""

from __future__ import annotations

import glob
import json
import math
import os
from typing import Any


def _load(inputs: list[str]) -> list[dict[str, Any]]:
    by_model: dict[str, dict[str, Any]] = {}
    for item in inputs:
        paths = sorted(glob.glob(os.path.join(item, "*.json"))) if os.path.isdir(item) else [item]
        for path in paths:
            data = json.load(open(path))
            for r in data if isinstance(data, list) else [data]:
                if isinstance(r, dict) and "model" in r:
                    by_model[r["model"]] = _restatus(r)  # a later file (a rerun) replaces an earlier one
    return sorted(by_model.values(), key=lambda r: (r.get("library", ""), r.get("family", ""), r["model"]))


UNVERIFIABLE = 0.1  # an error above this against float32 says nothing: the model's float16 is not float32's


def check_status(shapes: list[dict[str, Any]]) -> str:
    """ok: every checked shape within its bound. unverified: within the bound only because eager float16
    itself is off by more than UNVERIFIABLE against float32 (random-weight models that overflow), so the
    check could not fail. mismatch: a shape over its bound."""
    if not all(s["ok"] for s in shapes):
        return "mismatch"
    if any(s["max_error"] > UNVERIFIABLE and s.get("eager_error", 0.0) > UNVERIFIABLE for s in shapes):
        return "unverified: float16 overflows in eager too"
    return "ok"


def float32_status(shapes: list[dict[str, Any]]) -> str:
    """The status of a model whose float16 check was unverifiable, from its float32 engine's check."""
    if all(s["ok"] for s in shapes):
        return "ok: checked in float32 (float16 overflows in eager)"
    return "mismatch: in float32"


def _restatus(r: dict[str, Any]) -> dict[str, Any]:
    """Results written before `check_status` existed get its status from their per-shape rows."""
    if r.get("shapes") and r.get("status") == "ok":
        return {**r, "status": check_status(r["shapes"])}
    return r


def geomean(values: list[float]) -> float | None:
    vals = [v for v in values if v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, vals)) / len(vals)) if vals else None


def model_ratio(r: dict[str, Any]) -> float | None:
    """One number per model: the geomean of flexrt / best peer over its timed shapes."""
    return geomean([v["ratio"] for v in (r.get("ratio") or {}).values()])


def _ms(row: dict[str, Any] | None, peer: str) -> str:
    v = (row or {}).get(peer)
    return f"{v:.3f}" if isinstance(v, float) else ("err" if isinstance(v, str) else "")


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| model | family | status | error class | build s | segments engine/PyTorch | max error (eager fp16) | "
        "eager opt/max ms | compile(dynamic) opt/max | reduce-overhead opt/max | flexrt opt/max | flexrt ÷ best peer |",
        "|" + "---|" * 12,
    ]
    for r in results:
        seg = r.get("segments") or {}
        lat = r.get("latency_ms") or {}
        cells = [
            r["model"], r.get("family", ""), r.get("status", ""), r.get("error_class", ""),
            f"{r['build_seconds']:.0f}" if "build_seconds" in r else "",
            (f"{seg['pieces']} pieces" if "pieces" in seg else f"{seg.get('engine', '')}/{seg.get('torch', '')}") if seg else "",
            (f"{r['max_error']:.1e}" + (f" ({r['eager_fp16_error']:.1e})" if r.get("eager_fp16_error") else ""))
            if isinstance(r.get("max_error"), float) else "",
        ]
        for peer in ("eager", "compile_dynamic", "reduce_overhead", "flexrt"):
            cells.append(f"{_ms(lat.get('opt'), peer)} / {_ms(lat.get('max'), peer)}" if lat else "")
        ratio = model_ratio(r)
        cells.append(f"{ratio:.2f}" if ratio else "")
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    for r in results:
        key = r.get("status", "?").split(":")[0]
        statuses[key] = statuses.get(key, 0) + 1
    ratios = [x for x in (model_ratio(r) for r in results) if x]
    return {"models": len(results), "status_counts": statuses, "geomean_flexrt_over_best_peer": geomean(ratios),
            "models_timed": len(ratios)}


def plot(results: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(r["model"], r["ratio"]) for r in results if r.get("ratio")]
    fig, ax = plt.subplots(figsize=(10, max(3, 0.28 * len(rows) + 1)))
    if rows:
        names = [n for n, _ in rows]
        for label, offset in (("opt", -0.2), ("max", 0.2)):
            vals = [ratio.get(label, {}).get("ratio", float("nan")) for _, ratio in rows]
            ax.barh([i + offset for i in range(len(rows))], vals, height=0.4, label=label)
        ax.set_yticks(range(len(rows)), names, fontsize=7)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.legend()
    ax.set_xlabel("flexrt median / best peer median (below 1: flexrt faster)")
    ax.set_title("flexrt zoo")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge(inputs: list[str], results_dir: str, notes: str = "") -> None:
    """`notes`: how the run was made (device, peers, concurrency), written under the summary."""
    results = _load(inputs)
    os.makedirs(results_dir, exist_ok=True)
    info = summary(results)
    with open(os.path.join(results_dir, "zoo.json"), "w") as f:
        json.dump({"summary": info, "results": results}, f, indent=1, default=str)
    g = info["geomean_flexrt_over_best_peer"]
    md = [
        "# flexrt zoo", "",
        f"{info['models']} models; status: {info['status_counts']}; geomean of flexrt ÷ best peer over "
        f"{info['models_timed']} timed models: {f'{g:.2f}' if g else 'n/a'}.", "",
        "Produced by `python -m benchmarks.zoo merge`; latencies are medians (CUDA events) at the opt and max shapes.",
        *([notes, ""] if notes else []),
        "", table(results), "",
    ]
    with open(os.path.join(results_dir, "zoo.md"), "w") as f:
        f.write("\n".join(md))
    plot(results, os.path.join(results_dir, "zoo.png"))
    print(os.path.join(results_dir, "zoo.md"))
