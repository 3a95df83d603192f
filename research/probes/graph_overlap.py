"""Would a precise test copy fewer graph outputs out of the shared pool? For each capture of the seed
model's shapes (called as a benchmark loop calls them), the allocator's history gives the blocks the
recorded graph allocated (what its replays write: intermediates, cuBLAS workspace, outputs). Today a
graph copies its outputs out when they land on any memory the pool held before its capture; a
precise test would copy only when they land on blocks a kept graph writes.

    python -m research.probes.graph_overlap [--out DIR]

Research only: it wraps `CudaGraphCache._record` to switch the allocator's history on around it.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

import flexrt
from benchmarks.models import get_case
from benchmarks.report import save_json
from flexrt.runtime import cuda_graphs


def _overlap(ranges: list[tuple[int, int]], others: list[tuple[int, int]]) -> bool:
    return any(a < d and c < b for a, b in ranges for c, d in others)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    records: list[dict[str, Any]] = []
    original = cuda_graphs.CudaGraphCache._record

    def recording(self: Any, static: Any, sources: Any, out: Any) -> Any:
        torch.cuda.memory._record_memory_history(enabled="all", context=None, stacks="python", clear_history=True)
        try:
            graph, produced = original(self, static, sources, out)
        finally:
            snap = torch.cuda.memory._snapshot()
            torch.cuda.memory._record_memory_history(enabled=None)
        trace = snap["device_traces"][torch.cuda.current_device()]
        allocs = [(e["addr"], e["addr"] + e["size"]) for e in trace if e["action"] == "alloc"]
        outs = [(t.data_ptr(), t.data_ptr() + t.untyped_storage().nbytes()) for t in produced if isinstance(t, torch.Tensor)]
        records.append({"shape": tuple(static[0].shape), "copy_out": out is not None, "writes": allocs, "outputs": outs})
        return graph, produced

    cuda_graphs.CudaGraphCache._record = recording  # type: ignore[method-assign]
    case = get_case("expand_reshape", False)
    torch.manual_seed(0)
    model = case.build().eval().cuda()
    with torch.no_grad():
        compiled = flexrt.compile(model, ir="dynamo", arg_inputs=case.flexrt_inputs(), enabled_precisions={torch.float32})
        for b in (1, 3, 8, 16, 32):
            x = case.make_inputs(b, torch.device("cuda"), seed=b)[0]
            out = compiled(x)
            for _ in range(4):
                out = compiled(x)
            torch.testing.assert_close(out, model(x), rtol=2e-3, atol=2e-3)
    # a plain record followed by a copy-out record of the same shape: the plain one was decided against
    kept: list[dict[str, Any]] = []
    rows = []
    for i, r in enumerate(records):
        replaced = i + 1 < len(records) and records[i + 1]["copy_out"] and not r["copy_out"] and records[i + 1]["shape"] == r["shape"]
        if r["copy_out"]:
            continue
        writes_of_kept = [w for k in kept for w in k["writes"]]
        rows.append({"shape": r["shape"], "copied_out_today": replaced,
                     "precise_needs_copy": _overlap(r["outputs"], writes_of_kept),
                     "output_mb": round(sum(b - a for a, b in r["outputs"]) / 2**20, 1),
                     "writes_mb": round(sum(b - a for a, b in r["writes"]) / 2**20, 1)})
        kept.append(records[i + 1] if replaced else r)
    for row in rows:
        print(row, flush=True)
    if args.out:
        save_json(rows, args.out, "graph_overlap.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
