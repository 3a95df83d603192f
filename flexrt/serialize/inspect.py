"""What `flexrt inspect` shows: an artifact's manifest summarised, without loading its native code."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.table import Table

from flexrt.console import make_console
from flexrt.format import read_manifest, runtime_options


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON-friendly summary of an artifact: versions, device, inputs, outputs, profiles, segments, sizes."""
    manifest, z = read_manifest(path)
    z.close()
    members = manifest["members"]
    profiles = []
    for k, (prof, program) in enumerate(zip(manifest["profiles"], manifest["programs"])):
        segments = []
        for i, seg in enumerate(program["segments"]):
            segments.append({
                "index": i, "kind": seg["kind"], "ops": sum(seg["ops"].values()), "op_counts": seg["ops"],
                "fallback_reasons": seg["reasons"], "bytes": members[seg["member"]]["bytes"],
                "refitted": "weights" in seg,  # new weights saved beside the engine (refit_module_weights)
            })
        profiles.append({"index": k, "inputs": prof, "segments": segments})
    return {
        "path": os.fspath(path),
        "format": f"{manifest['format']} v{manifest['format_version']}",
        "flexrt_version": manifest["flexrt_version"],
        "torch_version": manifest["torch_version"],
        "created": manifest.get("created"),
        "device": manifest["device"],
        "inputs": manifest["inputs"],
        "outputs": manifest["outputs"],
        "profiles": profiles,
        "settings": manifest["settings"],
        "runtime": runtime_options(manifest).describe(),
        "keeps_source_program": "source.pt2" in members,
        "file_bytes": os.path.getsize(path),
        "member_bytes": {n: m["bytes"] for n, m in members.items()},
    }


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _dims(dims: list[Any]) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"


def render(info: dict[str, Any], console: Console | None = None) -> None:
    """Print the summary as tables a person reads at a glance."""
    console = console or make_console()
    dev = info["device"]
    where = f"{dev['type']} {dev.get('name', '')}".strip()
    if dev["type"] == "cuda":
        where += f" (sm_{''.join(map(str, dev['capability']))})"
    console.print(f"[bold]{info['path']}[/bold]  {_mb(info['file_bytes'])}")
    console.print(
        f"format {info['format']} | flexrt {info['flexrt_version']} | torch {info['torch_version']} | built for {where}"
        f" | {info['created']}"
    )
    s, r = info["settings"], info["runtime"]
    graphs = f"cuda_graphs {r['cuda_graphs']} | " if dev["type"] == "cuda" else ""
    console.print(
        f"precisions {','.join(s['enabled_precisions'])} | min_block_size {s['min_block_size']} | {graphs}"
        f"on_out_of_range {r['on_out_of_range']}"
    )
    io = Table(title="Inputs and outputs", title_justify="left")
    for col in ("", "name", "dtype", "dims (program)"):
        io.add_column(col)
    for spec in info["inputs"]:
        io.add_row("input", spec["name"], spec["dtype"], _dims(spec["dims"]))
    for spec in info["outputs"]:
        io.add_row("output", spec["name"], spec["dtype"], _dims(spec["dims"]))
    console.print(io)
    prof = Table(title="Profiles", title_justify="left")
    for col in ("profile", "input", "min", "opt", "max", "segments"):
        prof.add_column(col)
    for p in info["profiles"]:
        segs = ", ".join(f"{s['kind']}:{s['ops']}" for s in p["segments"])
        for j, (name, r) in enumerate(p["inputs"].items()):
            prof.add_row(str(p["index"]) if j == 0 else "", name, _dims(r["min"]), _dims(r["opt"]), _dims(r["max"]), segs if j == 0 else "")
    console.print(prof)
    seg = Table(title="Segments (profile 0)", title_justify="left")
    for col in ("segment", "runs in", "ops", "main ops", "size"):
        seg.add_column(col)
    for sg in info["profiles"][0]["segments"]:
        top = ", ".join(
            f"{k.replace('aten.', '').replace('.default', '')} x{v}" for k, v in sorted(sg["op_counts"].items(), key=lambda kv: -kv[1])[:4]
        )
        kind = ("engine (refitted)" if sg.get("refitted") else "engine") if sg["kind"] == "engine" else "PyTorch"
        seg.add_row(str(sg["index"]), kind, str(sg["ops"]), top, _mb(sg["bytes"]))
        for op, why in sg["fallback_reasons"].items():
            seg.add_row("", "", "", f"[dim]{op}: {why}[/dim]", "")
    console.print(seg)
