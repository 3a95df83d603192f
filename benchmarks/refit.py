"""Refit against rebuild: the time to give a compiled module new weights.

    python -m benchmarks.refit [--device cpu|cuda] [--profiles N]

The small conv net (batch 1..16), compiled once; then the same architecture with other weights
given to it twice: rebuilt with `flexrt.compile` (a new engine per profile: the weights are part of
the engine cache key, so nothing is reused) and refitted with `flexrt.dynamo.refit_module_weights`
(from the nn.Module, which is traced and lowered again, and from an ExportedProgram, which is only
lowered). Both results are checked against eager on the same random batch.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

import flexrt
from benchmarks.models import SmallConvNet


def _model(seed: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(seed)
    return SmallConvNet().eval().to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profiles", type=int, default=1, help="profiles compiled (one engine each)")
    args = parser.parse_args()
    device = torch.device(args.device)
    bounds = [(1 + 16 * k // args.profiles, 16 * (k + 1) // args.profiles) for k in range(args.profiles)]
    profiles = [flexrt.Profile().add("x", (lo, 3, 32, 32), (hi, 3, 32, 32), (hi, 3, 32, 32)) for lo, hi in bounds]
    spec = flexrt.Input(min_shape=(1, 3, 32, 32), opt_shape=(4, 3, 32, 32), max_shape=(16, 3, 32, 32), name="x")
    with tempfile.TemporaryDirectory() as cache:  # an empty engine cache: the first compile builds
        options = {"cache_dir": cache, "profiles": profiles}
        compiled = flexrt.compile(_model(0, device), inputs=[spec], **options)
        new = _model(1, device)
        start = time.perf_counter()
        rebuilt = flexrt.compile(new, inputs=[spec], **options)
        rebuild_s = time.perf_counter() - start
    start = time.perf_counter()
    refitted = flexrt.dynamo.refit_module_weights(compiled, new)
    refit_s = time.perf_counter() - start
    x = torch.randn(8, 3, 32, 32, device=device)
    dims = {0: torch.export.Dim("batch", min=1, max=16)}
    ep = torch.export.export(new, (x,), dynamic_shapes=(dims,))
    start = time.perf_counter()
    from_ep = flexrt.dynamo.refit_module_weights(compiled, ep)
    refit_ep_s = time.perf_counter() - start
    with torch.no_grad():
        ref = new(x)
        errors = [float((m(x) - ref).abs().max()) for m in (rebuilt, refitted, from_ep)]
    print(f"device {device}, {len(profiles)} profile(s), torch {torch.__version__}")
    print(f"rebuild (flexrt.compile, new weights):       {rebuild_s:8.2f} s")
    print(f"refit from the nn.Module:                    {refit_s:8.2f} s  ({rebuild_s / refit_s:.0f}x faster)")
    print(f"refit from an ExportedProgram:               {refit_ep_s:8.2f} s  ({rebuild_s / refit_ep_s:.0f}x faster)")
    print(f"max abs error against eager (rebuilt, refit, refit from program): {errors}")


if __name__ == "__main__":
    main()
