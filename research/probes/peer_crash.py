"""Which step breaks a zoo model's CUDA context after its checks passed (hf_llama/mistral/qwen2/t5
on the H200, 2026-11-29: `unspecified launch failure` at flexrt's first timed call at the max shape,
after the torch.compile peers ran at opt).

    python research/probes/peer_crash.py MODEL PEERS   # PEERS: none | flexrt | comma-separated zoo peers
    CG=0 ...                                           # flexrt without CUDA graphs
    CUDNN_SDP=0 ...                                    # no cuDNN attention, in flexrt's trace and in eager

`none`: the checks, then flexrt alone at the max shape; `flexrt`: the zoo's timing with no peers (opt,
then the cache emptied, then max).
"""

from __future__ import annotations

import os
import sys

import torch

import flexrt
from benchmarks.zoo import check, timing
from benchmarks.zoo.models import ZOO


def main(name: str, peers: str) -> None:
    entry, dev, dt = ZOO[name], torch.device("cuda"), torch.float16
    if os.environ.get("CUDNN_SDP") == "0":
        torch.backends.cuda.enable_cudnn_sdp(False)
    torch.manual_seed(0)
    model = entry.build(False).eval()
    reference = check.fp32_reference(model).to(dev)
    model = model.to(dev, dt)
    args, kwargs = entry.flexrt_inputs(dt, False)
    compiled = flexrt.compile(model, ir="dynamo", arg_inputs=args, kwarg_inputs=kwargs or None, enabled_precisions={dt},
                              device="cuda", cuda_graphs=os.environ.get("CG", "1") == "1", **entry.options)
    rows = check.check_shapes(entry, compiled, reference, dt, False, dev, eager=model)
    torch.cuda.synchronize()
    print("checks", [round(r["max_error"], 4) for r in rows], flush=True)
    del reference
    if peers == "none":
        hi = {d.name: d.hi for d in entry.dims_for(False)}
        rotation = [entry.make_inputs(hi, dt, dev, 3000 + i) for i in range(3)]
        print("flexrt max alone", timing._median(compiled, rotation, dev, False), flush=True)
        return
    chosen = () if peers == "flexrt" else tuple(peers.split(","))
    out = timing.time_all(entry, model, compiled, dt, dev, False, chosen)
    for label, row in out.items():
        print(label, {k: v for k, v in row.items() if not k.endswith("_seconds_incl_build")}, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
