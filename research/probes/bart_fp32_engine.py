"""BART compiled from its float32 weights into a float16 engine (`enabled_precisions={torch.float16}`):
the workaround for its float16 overflow branch (docs/third_party_models.md). Checked like the zoo,
against float32 eager at the five shapes, three calls each.

    python research/probes/bart_fp32_engine.py [cuda|cpu]
"""

from __future__ import annotations

import sys

import torch

from benchmarks.zoo import check
from benchmarks.zoo.models import ZOO


def main(device: str) -> None:
    entry, dev = ZOO["hf_bart"], torch.device(device)
    torch.manual_seed(0)
    model = entry.build(False).eval().to(dev)
    seconds, rows = check.check_float32_weights_in(torch.float16, entry, model, False, dev)
    print(f"compiled in {seconds:.1f} s", flush=True)
    for r in rows:
        print(r["sizes"], [f"{e:.2e}" for e in r["errors"]], "ok" if r["ok"] else "MISMATCH", flush=True)
    print("all ok" if all(r["ok"] for r in rows) else "NOT ok")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cuda")
