"""Would one cuBLAS workspace shared by a cache's graphs, with a precise overlap test, spare the seed
model's output copies? Research only: it replaces `CudaGraphCache._record` and `_record_checked` in
this process with a variant that (1) clears cuBLAS's workspaces only before a cache's first capture
and allocates the workspace first in every capture (`_cuda_getCurrentBlasHandle`, no kernel), so it
stays one live block of the pool that no output can land on, and (2) copies outputs out only when
they land on blocks a kept graph's capture allocated (the allocator's history), not on any memory
the pool held. Reports each slot's copy, the call time per batch as `graph_slots` measures it, and
checks that outputs held across other shapes' replays keep their values.

    python -m research.probes.shared_workspace [--out DIR]
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

import flexrt
from benchmarks.models import get_case
from benchmarks.report import save_json
from flexrt.runtime import cuda_graphs as cg
from research.probes.graph_slots import _median_us

WRITES: dict[int, list[tuple[int, int]]] = {}  # id(graph) -> blocks its capture allocated


def _ranges(tensors: list[torch.Tensor]) -> list[tuple[int, int]]:
    return [(t.data_ptr(), t.data_ptr() + t.untyped_storage().nbytes()) for t in tensors]


def _record(self: Any, static: Any, sources: Any, out: Any) -> Any:
    graph = torch.cuda.CUDAGraph(keep_graph=True) if sources is not None else torch.cuda.CUDAGraph()
    if not getattr(self, "_shared_workspace", False):
        torch._C._cuda_clearCublasWorkspaces()  # the first capture allocates the workspace in the pool
    torch.cuda.memory._record_memory_history(enabled="all", context=None, stacks="python", clear_history=True)
    try:
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            torch._C._cuda_getCurrentBlasHandle()  # the workspace first, before any other block
            for dst, src in zip(static, sources or ()):
                dst.copy_(src)
            produced = list(self.fn(static))
            if out is not None:
                cg._copy_all(cg._tensors(out), cg._tensors(produced))
    finally:
        snap = torch.cuda.memory._snapshot()
        torch.cuda.memory._record_memory_history(enabled=None)
    self._shared_workspace = True
    trace = snap["device_traces"][torch.cuda.current_device()]
    WRITES[id(graph)] = [(e["addr"], e["addr"] + e["size"]) for e in trace if e["action"] == "alloc"]
    if sources is not None:
        graph.instantiate()
    return graph, produced if out is None else out


def _record_checked(self: Any, static: Any, sources: Any, earlier: Any) -> Any:
    graph, outputs = self._record(static, sources, None)
    kept = [w for slots in self.entries.values() for s in slots for w in WRITES.get(id(s.graph), [])]
    if not any(a < d and c < b for a, b in _ranges(cg._tensors(outputs)) for c, d in kept):
        return graph, outputs, None
    out = [torch.empty_like(o) if isinstance(o, torch.Tensor) else o for o in outputs]
    del graph, outputs
    graph, outputs = self._record(static, sources, out)
    return graph, outputs, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    cg.CudaGraphCache._record = _record  # type: ignore[method-assign]
    cg.CudaGraphCache._record_checked = _record_checked  # type: ignore[method-assign]
    case = get_case("expand_reshape", False)
    torch.manual_seed(0)
    model = case.build().eval().cuda()
    result: dict[str, Any] = {}
    dev = torch.device("cuda")
    with torch.no_grad():
        compiled = flexrt.compile(model, ir="dynamo", arg_inputs=case.flexrt_inputs(), enabled_precisions={torch.float32})
        for b in (1, 3, 8, 16, 32):
            x = case.make_inputs(b, dev, seed=b)[0]
            result[str(b)] = {"median_us": _median_us(compiled, x)}
            torch.testing.assert_close(compiled(x), model(x), rtol=2e-3, atol=2e-3)
        cache = compiled.contexts[0].graphs
        for key, slots in cache.entries.items():
            result[str(key[0][0])]["slots_copy_out"] = [s.copies_out for s in slots]
        # outputs held while every other shape replays keep their values
        held = {}
        for b in (3, 8, 16):
            x = case.make_inputs(b, dev, seed=100 + b)[0]
            held[b] = (compiled(x), model(x))
        for _ in range(3):
            for b in (1, 3, 8, 16, 32):
                compiled(case.make_inputs(b, dev, seed=200 + b)[0])
        torch.cuda.synchronize()
        for out, expected in held.values():
            torch.testing.assert_close(out, expected, rtol=2e-3, atol=2e-3)
        result["held_outputs_intact"] = True
        result["memory"] = compiled.cuda_graph_memory()["total_bytes"]
    for k, v in result.items():
        print(k, v, flush=True)
    if args.out:
        save_json(result, args.out, "shared_workspace.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
