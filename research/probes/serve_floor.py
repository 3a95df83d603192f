"""The request-rate ceiling of Ray Serve's HTTP path itself, next to flexrt serve's replica.

Deploys, one after the other on a local Ray (127.0.0.1): `echo` (a FastAPI ingress that answers a
fixed v2 response without parsing or running anything), `nobatch` and `batch` (flexrt serve over a
one-linear CPU artifact), and drives each with the serving benchmark's open-loop load at 100, 200 and
400 requests/s for 3 s. If `echo` saturates where flexrt does, the ceiling is Ray's, not the replica's.
With `image`, requests are ResNet-50's (1x3x224x224 float32, 602 KB in the v2 binary extension), the
artifact pools and projects them (no real compute), and the rates are 100..800/s. With `direct`,
Ray runs with direct ingress and the load goes to the replica's own port instead of the proxy.

    python -m research.probes.serve_floor echo nobatch batch [image] [direct]
"""

# No `from __future__ import annotations`: FastAPI reads Echo's route annotations at run time.

import json
import os
import sys
import tempfile
import time

import ray
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

import flexrt
from benchmarks.serve import load
from flexrt.serving import ingress
from flexrt.serving.application import build_app
from flexrt.serving.config import ServeConfig
from flexrt.serving.protocol import encode_binary_request, encode_request

PORT = 8111
api = FastAPI()


@serve.deployment(name="echo", max_ongoing_requests=128, ray_actor_options={"num_cpus": 1})
@serve.ingress(api)
class Echo:
    @api.post("/v2/models/{model}/infer")
    async def infer(self, model: str, http: Request) -> JSONResponse:
        await http.body()
        return JSONResponse({"outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 8], "data": [0.0] * 8}]})


def artifact(folder: str, image: bool) -> str:
    path = os.path.join(folder, "linear.ep")
    rest = (3, 224, 224) if image else (16,)
    spec = [flexrt.Input(min_shape=(1, *rest), opt_shape=(4, *rest), max_shape=(16, *rest), name="x")]
    head = [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 8)] if image else [torch.nn.Linear(16, 8)]
    model = torch.nn.Sequential(*head).eval()
    flexrt.save(flexrt.compile(model, ir="dynamo", arg_inputs=spec, device="cpu"), path, arg_inputs=spec)
    return path


def main(variants: list[str]) -> None:
    image, direct = "image" in variants, "direct" in variants
    variants = [v for v in variants if v not in ("image", "direct")]
    if direct:
        ingress.enable(1.0)  # before Ray starts
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)  # replicas import this
    path = artifact(tempfile.mkdtemp(), image)
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": PORT})
        if image:
            data, header = encode_binary_request({"x": torch.rand(1, 3, 224, 224)})
            bodies = [(data, "1x3x224x224", header)]
        else:
            bodies = [(json.dumps(encode_request({"x": torch.rand(1, 16)})).encode(), "1x16", None)]
        for variant in variants:
            if variant == "echo":
                serve.run(Echo.bind(), name="v", route_prefix="/", blocking=False)
            else:
                batching = {"batch_dims": "x:0", "max_batch_size": 16} if variant == "batch" else {}
                config = ServeConfig.from_mapping({"artifact": path, "name": "m", "max_ongoing": 128, "max_queue": 100000,
                                                   **batching})
                serve.run(build_app(config), name="v", route_prefix="/", blocking=False)
            time.sleep(2)
            base = ingress.replica_urls("v", 1, "127.0.0.1") if direct else [f"http://127.0.0.1:{PORT}"]
            for rate in (100, 200, 400, 800) if image else (100, 200, 400):
                outcomes, wall = load.open_loop([f"{b}/v2/models/m/infer" for b in base], bodies, rate, 3.0, 5000,
                                                seed=rate, timeout=10)
                s = load.summarize(outcomes, wall, rate)
                print(f"{variant}{' direct' if direct else ''} @ {rate}/s: {s['ok']}/{s['sent']} answered, {s['achieved_rps']:.0f}/s, "
                      f"p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms", flush=True)
            serve.delete("v")
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:] or ["echo", "nobatch", "batch"])
