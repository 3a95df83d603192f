"""Where a flexrt call spends its time: the module against its own layers, on a small model.

    python -m benchmarks.overhead [--device cuda]

Per batch size: eager; flexrt with CUDA graphs (default); flexrt without; the bare AOTInductor
runner; a bare CUDA-graph replay of that runner. Two figures each: latency (CUDA events around
one synchronised call, median) and host cost (median of 200 back-to-back calls timed with
perf_counter, synchronised once), which shows the Python overhead when the GPU work is tiny.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

import flexrt
from benchmarks import report
from benchmarks.models import ExpandReshapeModel
from benchmarks.timing import median_ms
from flexrt.tf32 import tf32_policy

RESULTS = Path(__file__).resolve().parent / "results"


def _host_us(fn: Any, device: torch.device, calls: int = 200) -> float:
    for _ in range(10):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / calls * 1e6


def _bare(runner: Any, x: torch.Tensor) -> Any:
    """The runner as flexrt's engine segment calls it: under the engine's TF32 policy (the default
    allows TF32), so that both run the same kernels."""
    with tf32_policy(True):
        return runner.run([x])


def run(device: str | None = None, out_dir: str | None = None) -> dict[str, Any]:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    model = ExpandReshapeModel(768).eval().to(dev)
    spec = flexrt.Input(min_shape=(1, 196, 768), opt_shape=(8, 196, 768), max_shape=(32, 196, 768), name="x")
    with_graphs = flexrt.compile(model, inputs=[spec])
    without = flexrt.compile(model, inputs=[spec], cuda_graphs=False)
    runner = with_graphs.engine.programs[0].segments[0].runner
    rows = {}
    with torch.no_grad():
        for b in (1, 8, 32):
            x = torch.randn(b, 196, 768, device=dev)
            peers = {
                "eager": lambda x=x: model(x),
                "flexrt": lambda x=x: with_graphs(x),
                "flexrt_no_graphs": lambda x=x: without(x),
                "aoti_runner": lambda x=x: _bare(runner, x),
            }
            if dev.type == "cuda":
                _bare(runner, x)
                torch.cuda.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    _bare(runner, x)
                peers["aoti_runner_graph_replay"] = graph.replay
            rows[b] = {name: {"latency_ms": median_ms(fn, dev, 100, warmup=10), "host_us": _host_us(fn, dev)} for name, fn in peers.items()}
    result = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__, "rows": rows}
    report.save_json(result, out_dir or RESULTS, f"overhead_{dev.type}.json")
    for b, peers in rows.items():
        print(f"batch {b}: " + "; ".join(f"{k} {v['latency_ms']:.4f} ms / {v['host_us']:.1f} us" for k, v in peers.items()))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    run(args.device, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
