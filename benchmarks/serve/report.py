"""JSON, a markdown table and a plot (latency vs offered load) per model."""

from __future__ import annotations

import json
import math
import os
from typing import Any

VIA_TITLES = {"handle": ", load through a DeploymentHandle, no HTTP", "direct": ", HTTP straight to each replica's port (direct ingress)"}


def _f(x: Any, digits: int = 1) -> str:
    if isinstance(x, float):
        return "-" if math.isnan(x) else f"{x:.{digits}f}"
    return str(x)


def _at_bound(result: dict[str, Any]) -> list[str]:
    """With a p99 bound: each variant's highest rate within it, and flexrt's ratio to each other variant."""
    bound = result.get("p99_bound_ms")
    if not bound:
        return []
    best = {v["variant"]: v.get("max_rps_at_p99") for v in result["variants"]}
    lines = ["", f"Highest offered rate with p99 <= {bound:g} ms and every request answered (searched):", "",
             "| variant | requests/s | flexrt's rate / this |", "|---|---|---|"]
    mine = best.get("flexrt")
    for variant, rate in best.items():
        ratio = "-" if not mine or not rate else f"{mine / rate:.2f}x"
        lines.append(f"| {variant} | {_f(rate, 0) if rate else 'none'} | {ratio} |")
    return lines


def _own_stem(base: str, run_id: str | None) -> str:
    """`base`, or `base_2`, `base_3`...: the first that is free or holds this run's own checkpoint. A
    second run into the same folder (another variant, the same layout) once overwrote the first's."""
    for k in range(1, 1000):
        stem = base if k == 1 else f"{base}_{k}"
        try:
            with open(stem + ".json") as f:
                if run_id is not None and json.load(f).get("run_id") == run_id:
                    return stem
        except FileNotFoundError:
            return stem
        except ValueError:  # not a result file of ours: leave it
            continue
    raise FileExistsError(f"{base}: 999 results already in this folder")


def write(result: dict[str, Any], out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    replicas = result.get("replicas", 1)
    per_gpu = result.get("replicas_per_gpu", 1)
    fronts = result.get("frontends", 0)
    via = {"handle": "_handle", "direct": "_direct"}.get(result.get("via", "http"), "")
    stem = _own_stem(os.path.join(out_dir, result["model"] + (f"_r{replicas}" if replicas > 1 else "") + (f"_g{per_gpu}" if per_gpu > 1 else "")
                                  + (f"_f{fronts}" if fronts else "") + via + ("_p99" if result.get("p99_bound_ms") else "") + ("_smoke" if result.get("smoke") else "")),
                     result.get("run_id"))
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1, default=str)
    lines = [
        f"# flexrt serve: {result['model']} ({result['device']}, {replicas} replica{'s' if replicas > 1 else ''} per variant"
        f"{', ' + str(per_gpu) + ' per GPU' if per_gpu > 1 else ''}"
        f"{', behind ' + str(fronts) + ' CPU front ends' if fronts else ''}"
        f"{VIA_TITLES.get(result.get('via', 'http'), '')}"
        f"{', load from ' + str(result['clients']) + ' client processes' if result.get('clients', 1) > 1 else ''})",
        "",
        result["description"],
        "",
        f"Open-loop Poisson arrivals, {result['duration_s']} s per rate; batching: max {result['max_batch_size']} requests, "
        f"wait {result['batch_wait_ms']} ms, batch dims {result['batch_dims']}; inputs sent as {result.get('encoding', 'json')}. "
        "Latency of answered requests, client side.",
        "",
        "| variant | offered rps | sent | ok | 503 | err | timeout | achieved rps | p50 ms | p90 ms | p99 ms | calls/req "
        "| client mean ms | in replica ms | model ms/req | check |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in result["variants"]:
        for r in v["rates"]:
            lines.append(
                f"| {v['variant']} | {_f(r['offered_rps'], 0)} | {r['sent']} | {r['ok']} | {r['rejected_503']} | {r['errors']} | "
                f"{r['timeouts']} | {_f(r['achieved_rps'])} | {_f(r['p50_ms'])} | {_f(r['p90_ms'])} | {_f(r['p99_ms'])} | "
                f"{_f(r.get('calls_per_request', float('nan')), 2)} | {_f(r.get('client_mean_ms', float('nan')))} | "
                f"{_f(r.get('replica_ms_per_request', float('nan')))} | {_f(r.get('model_ms_per_request', float('nan')), 2)} | "
                f"{v['check']} |"
            )
    lines += _at_bound(result)
    lines += ["", "| variant | replica | GPU | CUDA_VISIBLE_DEVICES | start-up s (load + warm-up) | GPU MiB reserved (PyTorch) |",
              "|---|---|---|---|---|---|"]
    for v in result["variants"]:
        for r in v.get("replicas", []):
            m = r.get("model_tier") or r  # behind front ends: the model replica that answered this one's /stats
            gpu = m.get("gpu") or {}
            lines.append(f"| {v['variant']} | {r.get('replica_id', '?')} | {gpu.get('pci_bus_id') or gpu.get('name') or '-'} | "
                         f"{m.get('cuda_visible_devices')} | {_f(r.get('startup_s', float('nan')), 2)} | "
                         f"{_f(m.get('gpu_memory_reserved_mib', float('nan')), 0)} |")
    lines.append("")
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines))
    written = [stem + ".json", stem + ".md"]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return written
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v in result["variants"]:
        xs = [r["offered_rps"] for r in v["rates"]]
        ax.plot(xs, [r["p50_ms"] for r in v["rates"]], marker="o", label=f"{v['variant']} p50")
        ax.plot(xs, [r["p99_ms"] for r in v["rates"]], marker="x", linestyle="--", label=f"{v['variant']} p99")
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title(f"{result['model']} on {result['device']}: latency vs offered load")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(stem + ".png", dpi=110)
    plt.close(fig)
    return written + [stem + ".png"]
