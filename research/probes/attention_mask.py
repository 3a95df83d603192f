"""What does BERT's padding mask cost cuDNN attention, and would a broadcast mask cost less?

    python -m research.probes.attention_mask [--seqs 128,512] [--out DIR]

HF's SDPA mask for an encoder is `and(all-true (1,1,S,1), padding (B,1,1,S))`, materialised as a
(B,1,S,S) tensor. At batch 8, 12 heads, head dim 64, float16, each variant is replayed in a CUDA
graph of 20 calls (GPU time only), its error against the math kernel in float32:
the additive bias (B,1,S,S) as flexrt's engine passes it today, the same bias held as (B,1,1,S) and
expanded (stride 0 over queries), the efficient-attention kernel with both, and cuDNN and flash
with no mask at all (a floor, not a correct result).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.report import save_json
from research.probes.gelu_epilogue import graph_us

B, H, D = 8, 12, 64


def _inputs(s: int) -> dict[str, torch.Tensor]:
    g = torch.Generator(device="cuda").manual_seed(s)
    qkv = torch.randn(B, s, 3, H, D, device="cuda", dtype=torch.float16, generator=g)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (B, H, S, D) views of one buffer, as BERT's
    lengths = torch.randint(1, s + 1, (B, 1), device="cuda", generator=g)
    keep = torch.arange(s, device="cuda")[None] < lengths  # (B, S)
    row = torch.zeros(B, 1, 1, s, device="cuda", dtype=torch.float16).masked_fill(~keep[:, None, None, :], float("-inf"))
    return {"q": q, "k": k, "v": v, "keep": keep, "row": row, "full": row.expand(B, 1, s, s).contiguous()}


def _variants(t: dict[str, torch.Tensor], s: int) -> dict[str, Callable[[], torch.Tensor]]:
    q, k, v = t["q"], t["k"], t["v"]
    full = t["full"].expand(B, H, s, s)
    row = t["row"].expand(B, H, s, s)
    cudnn = torch.ops.aten._scaled_dot_product_cudnn_attention
    eff = torch.ops.aten._scaled_dot_product_efficient_attention
    flash = torch.ops.aten._scaled_dot_product_flash_attention
    return {
        "cudnn_bias_full": lambda: cudnn(q, k, v, full, False, 0.0, False, False)[0],
        "cudnn_bias_row_expanded": lambda: cudnn(q, k, v, row, False, 0.0, False, False)[0],
        "efficient_bias_full": lambda: eff(q, k, v, full, False, 0.0, False)[0],
        "efficient_bias_row_expanded": lambda: eff(q, k, v, row, False, 0.0, False)[0],
        "sdpa_bool_mask_default_backend": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=t["keep"][:, None, None, :].expand(B, 1, s, s)),
        "cudnn_no_mask_floor": lambda: cudnn(q, k, v, None, False, 0.0, False, False)[0],
        "flash_no_mask_floor": lambda: flash(q, k, v, 0.0, False, False)[0],
    }


def measure(s: int) -> dict[str, Any]:
    t = _inputs(s)
    ref = F.scaled_dot_product_attention(t["q"].float(), t["k"].float(), t["v"].float(), attn_mask=t["row"].float())
    out: dict[str, Any] = {}
    for name, fn in _variants(t, s).items():
        try:
            y = fn()
            err = float((y.float() - ref).abs().max())
            out[name] = {"us": graph_us(fn), "max_abs_err": err}
        except Exception as e:  # noqa: BLE001 - a variant the backend refuses is a result too
            out[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        print(s, name, out[name], flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seqs", default="128,512")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "batch": B, "heads": H, "head_dim": D,
              "seqs": {s: measure(int(s)) for s in args.seqs.split(",")}}
    if args.out:
        save_json(report, args.out, "attention_mask.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
