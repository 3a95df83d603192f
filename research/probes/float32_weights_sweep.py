"""Every transformers model of the zoo with a smoke config, from float32 weights into a float16 engine
(`enabled_precisions={torch.float16}`, Torch-TensorRT's usual form), checked against float32 eager at
the five smoke shapes, three calls each. Results: research/results/float32_weights_float16_engines_cpu.md.

    python research/probes/float32_weights_sweep.py
"""

from __future__ import annotations

import logging
import time
import warnings

import torch

from benchmarks.zoo import check
from benchmarks.zoo.models import ZOO


def main() -> None:
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    for name, entry in ZOO.items():
        if entry.library != "transformers" or entry.smoke_dims is None:
            continue
        start = time.time()
        try:
            torch.manual_seed(0)
            model = entry.build(True).eval()
            _, rows = check.check_float32_weights_in(torch.float16, entry, model, True, torch.device("cpu"))
            verdict = "ok" if all(r["ok"] for r in rows) else "MISMATCH"
            print(name, verdict, f"{max(r['max_error'] for r in rows):.1e}", f"{time.time() - start:.0f}s", flush=True)
        except Exception as e:  # noqa: BLE001 - a probe: every model's outcome is printed
            print(name, "FAIL", type(e).__name__, (str(e).splitlines() or [""])[0][:200], flush=True)


if __name__ == "__main__":
    main()
