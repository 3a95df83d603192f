"""Memory of captured CUDA graphs: every benchmark shape of a model captured in one profile, in the
order calls bring them (smallest first) and largest first (`capture_cuda_graphs`), against the
largest shape captured alone.

    python -m benchmarks.graph_memory --models resnet50,bert,vit --out DIR [--smoke]

One flexrt build per model; each variant runs on fresh execution contexts (their own graph pools) over
that engine. Memory is what `cuda_graph_memory()` reports: the pool's segments plus the static input
and copied-out output buffers. After the captures, every shape is replayed and checked against eager.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

MIB = 2**20


def _measure(model_name: str, smoke: bool) -> dict[str, Any]:
    import flexrt
    from benchmarks.models import get_case
    from flexrt.runtime import CompiledModule

    dev = torch.device("cuda")
    case = get_case(model_name, smoke)
    torch.manual_seed(0)
    model = case.build().eval().to(device=dev, dtype=case.dtype)
    compiled = flexrt.compile(model, ir="dynamo", arg_inputs=case.flexrt_inputs(), enabled_precisions={case.dtype})
    sizes = sorted(case.shapes())
    inputs = {s: case.make_inputs(s, dev, seed=s) for s in sizes}
    shapes = {s: [tuple(t.shape) for t in inputs[s]] for s in sizes}

    on_demand = CompiledModule(compiled.engine)
    steps = []
    with torch.no_grad():
        for s in sizes:  # as a stream of calls brings them: each shape's second call captures
            for _ in range(2):
                on_demand(*inputs[s])
            steps.append({"size": s, "total_mib": on_demand.cuda_graph_memory()["total_bytes"] / MIB})
    largest_first = CompiledModule(compiled.engine)
    report = largest_first.capture_cuda_graphs([shapes[s] for s in sizes])
    alone = CompiledModule(compiled.engine).capture_cuda_graphs([shapes[sizes[-1]]])
    worst = 0.0
    with torch.no_grad():
        for s in sizes:
            want = model(*inputs[s])
            for m in (on_demand, largest_first):
                got = m(*inputs[s])
                worst = max(worst, float((got.float() - want.float()).norm() / want.float().norm().clamp_min(1e-12)))
    per_shape = [{"shapes": c["shapes"], "pool_growth_mib": c["pool_growth_bytes"] / MIB, "buffer_mib": c["buffer_bytes"] / MIB}
                 for c in report["profiles"][0]["captured"]]
    largest = alone["total_bytes"] / MIB
    return {
        "model": model_name, "device": torch.cuda.get_device_name(dev), "torch": torch.__version__, "sizes": sizes,
        "dim": case.dim, "on_demand_smallest_first": steps, "largest_first_mib": report["total_bytes"] / MIB,
        "largest_first_per_shape": per_shape, "largest_alone_mib": largest,
        "ratio_on_demand": steps[-1]["total_mib"] / largest, "ratio_largest_first": report["total_bytes"] / MIB / largest,
        "max_rel_err_vs_eager": worst,
    }


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | shapes | largest alone MiB | all, smallest first (as called) MiB | ratio | all, largest first MiB | ratio | max rel err |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['dim']} {', '.join(map(str, r['sizes']))} | {r['largest_alone_mib']:.1f} | "
                     f"{r['on_demand_smallest_first'][-1]['total_mib']:.1f} | {r['ratio_on_demand']:.2f} | "
                     f"{r['largest_first_mib']:.1f} | {r['ratio_largest_first']:.2f} | {r['max_rel_err_vs_eager']:.1e} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet50,bert,vit")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/build")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("graph_memory needs a CUDA GPU (CUDA graphs)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models.split(","):
        rows.append(_measure(name, args.smoke))
        (out / "graph_memory.json").write_text(json.dumps(rows, indent=1))
        print(_table(rows[-1:]), flush=True)
    (out / "graph_memory.md").write_text(_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
