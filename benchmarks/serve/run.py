"""`python -m benchmarks.serve`: flexrt serve vs the same Ray Serve deployment running the eager and
the torch.compile'd model (same protocol, checks and batching), and flexrt without batching.

Per model: compile the flexrt artifact, start a local Ray (127.0.0.1 only), then per variant deploy,
check a few answers against the eager model, and drive open-loop Poisson load at each rate.
Everything is bounded: requests per rate, seconds per rate, and a total time budget after which the
remaining variants/rates are recorded as skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import socket
import sys
import tempfile
import time
import urllib.request
import uuid
from typing import Any

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VARIANTS = ("flexrt", "flexrt_nobatch", "eager", "torch_compile")
logger = logging.getLogger("benchmarks.serve")
T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {text}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _replica_stats(url: str, name: str, replicas: int) -> list[dict[str, Any]]:
    """/stats of every replica: Ray routes each GET to one of them, so ask (a bounded number of times)
    until `replicas` distinct ones have answered."""
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(20 * replicas):
        with urllib.request.urlopen(f"{url}/v2/models/{name}/stats", timeout=30) as r:
            stats = json.loads(r.read())["replica"]
        seen[stats.get("replica_id", "?")] = stats
        if len(seen) >= replicas:
            break
    return list(seen.values())


def _stats(url: str, name: str, replicas: int) -> dict[str, dict[str, Any]]:
    """Each replica's counters, by replica id."""
    return {s.get("replica_id", "?"): s for s in _replica_stats(url, name, replicas)}


def _delta(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], key: str) -> float:
    """A counter's growth summed over the replicas seen both times (a replica seen only once, when Ray
    routed every /stats GET to the other, would otherwise count its whole history, or minus it)."""
    return sum(after[r].get(key, 0) - before[r].get(key, 0) for r in after if r in before)


def _model_replicas(stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The model replicas' own counters (model_calls, model_busy_ms) by replica id: each replica's own
    (single tier), or the model replica that answered each front end's /stats (two tiers)."""
    models = [s.get("model_tier", s) for s in stats.values()]
    return {m.get("replica_id", "?"): m for m in models if "model_calls" in m}


def _model_load(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], wall_s: float) -> dict[str, float]:
    """Model calls per second and the model threads' busy share over one rate, from the model replicas
    seen before and after it: whether the GPU's thread, or the request path before it, is the limit."""
    b, a = _model_replicas(before), _model_replicas(after)
    both = [r for r in a if r in b]
    if not both or wall_s <= 0:
        return {"model_replicas_seen": len(both)}
    calls = sum(a[r]["model_calls"] - b[r]["model_calls"] for r in both)
    busy_ms = sum(a[r]["model_busy_ms"] - b[r]["model_busy_ms"] for r in both)
    return {"model_replicas_seen": len(both), "model_calls_per_s": calls / wall_s,
            "model_busy_share": busy_ms / (1000 * wall_s * len(both))}


def _nvidia_smi() -> str | None:
    """Per-process GPU memory as the driver sees it (AOTInductor's constants included)."""
    import subprocess

    try:
        return subprocess.run(["nvidia-smi", "--query-compute-apps=pid,gpu_uuid,used_memory", "--format=csv"],
                              capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def _rel_err(got: np.ndarray, want: torch.Tensor) -> float:
    w = want.detach().float().cpu().numpy()
    scale = float(np.abs(w).max()) or 1.0
    return float(np.abs(got.astype(np.float32) - w).max()) / scale


def _compile(case: Any, model: torch.nn.Module, device: str, path: str) -> float:
    import flexrt

    start = time.perf_counter()
    inputs = [flexrt.Input(**kw) for kw in case.inputs]
    options: dict[str, Any] = {}
    if any(kw["dtype"] == torch.float16 for kw in case.inputs) or "fp16" in case.factory:
        options["enabled_precisions"] = {torch.float16}
    compiled = flexrt.compile(model, ir="dynamo", arg_inputs=inputs, device=device, **options)
    flexrt.save(compiled, path, arg_inputs=inputs)
    return time.perf_counter() - start


def _checkpoint(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    from benchmarks.serve.report import write

    return write(result, args.out)


def bench_model(name: str, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    import ray
    from ray import serve

    from benchmarks.serve.models import get_case
    from flexrt.serving import ray_env

    case = get_case(name, args.device)
    rates = tuple(args.rates) if args.rates else case.rates
    # Ray starts in the background while the artifact compiles
    say("starting Ray")
    ray_env.apply()  # the settings flexrt serve starts its Ray with
    ray.init(address="local", include_dashboard=False, log_to_driver=False, **({"num_cpus": os.cpu_count()} if args.device == "cpu" else {}))
    try:
        return _bench_model(case, rates, args, deadline)
    finally:
        serve.shutdown()
        ray.shutdown()
        say("Ray shut down")


def _bench_model(case: Any, rates: tuple[float, ...], args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    import ray
    from ray import serve

    from benchmarks.serve import load, search
    from flexrt.serving import ingress
    from flexrt.serving.application import build_app
    from flexrt.serving.client import InferenceClient
    from flexrt.serving.config import ServeConfig
    from flexrt.serving.protocol import encode_binary_request, encode_request

    name = case.name
    model = case.build().to(args.device)
    workdir = tempfile.mkdtemp(prefix="flexrt-serve-bench-")
    artifact = os.path.join(workdir, f"{name}.ep")
    compile_s = _compile(case, model, args.device, artifact)
    say(f"{name}: flexrt compile {compile_s:.1f} s")

    rng = random.Random(0)
    requests = [case.request(rng) for _ in range(args.distinct)]
    binary = args.binary or case.binary
    bodies, handle_requests = [], []  # the same requests for HTTP and for the DeploymentHandle
    for r in requests:
        label = "x".join(str(d) for d in next(iter(r.values())).shape)
        handle_requests.append((r, label))
        if binary:
            data, length = encode_binary_request(r, binary_outputs=True)
            bodies.append((data, label, length))
        else:
            bodies.append((json.dumps(encode_request(r)).encode(), label, None))
    with torch.inference_mode():
        reference = [model(*[torch.from_numpy(v).to(args.device) for v in r.values()]) for r in requests[:4]]

    result: dict[str, Any] = {
        "model": name, "device": args.device, "description": case.description, "smoke": args.smoke,
        "torch": torch.__version__, "ray": ray.__version__, "compile_s": compile_s, "duration_s": args.duration_s,
        "max_batch_size": case.max_batch_size, "batch_wait_ms": args.batch_wait_ms, "batch_dims": list(case.batch_dims),
        "distinct_requests": len(bodies), "encoding": "binary" if binary else "json", "variants": [],
        "replicas": args.replicas, "replicas_per_gpu": args.replicas_per_gpu, "frontends": args.frontends, "warm_up_sizes": list(case.warm_up_sizes),
        "p99_bound_ms": args.p99_ms, "access_log": args.access_log, "via": args.via, "clients": args.clients,
        "run_id": uuid.uuid4().hex,  # its checkpoints overwrite each other, never another run's files
    }
    port = args.port or _free_port()
    base = f"http://127.0.0.1:{port}"
    serve.start(http_options={"host": "127.0.0.1", "port": port})

    def config_for(variant: str) -> ServeConfig:
        return ServeConfig.from_mapping({
            "artifact": artifact, "name": name, "device": args.device,
            "backend": "flexrt" if variant.startswith("flexrt") else variant,
            "reference_model": case.factory,
            "batch_dims": list(case.batch_dims) if variant != "flexrt_nobatch" else [],
            "max_batch_size": case.max_batch_size, "batch_wait_ms": args.batch_wait_ms, "pad": args.pad,
            "max_queue": 100000, "max_ongoing": max(64, 4 * case.max_batch_size), "replicas": args.replicas,
            "replicas_per_gpu": args.replicas_per_gpu, "frontends": args.frontends,
            "num_cpus": 1.0 / len(args.variants) if args.together else 1.0, "graceful_shutdown_timeout_s": 5,
            "access_log": args.access_log, "warm_up_sizes": list(case.warm_up_sizes),
        })

    def target(variant: str) -> Any:
        return build_app(config_for(variant))

    http_replicas = config_for(args.variants[0]).http_replicas  # the replicas that answer HTTP (and /stats)
    entries = {v: {"variant": v, "rates": [], "check": "skipped"} for v in args.variants}
    result["variants"] = list(entries.values())
    if args.together:  # smoke: every variant deployed at once (replicas start in parallel), one route each
        start = time.perf_counter()
        serve.run_many([serve.RunTarget(target(v), name=f"bench-{v}", route_prefix=f"/{v}") for v in args.variants])
        for v in args.variants:
            entries[v]["deploy_s"] = time.perf_counter() - start
    for variant in args.variants:
        entry = entries[variant]
        if time.monotonic() > deadline:
            say(f"{name} {variant}: skipped (time budget spent)")
            continue
        url = f"{base}/{variant}" if args.together else base
        if not args.together:
            start = time.perf_counter()
            serve.run(target(variant), name=f"bench-{variant}", route_prefix="/", blocking=False)
            entry["deploy_s"] = time.perf_counter() - start
        client = InferenceClient(url, name, timeout=120)
        errs = []
        for r, want in zip(requests, reference):
            got = client.infer(r, binary=binary)
            errs.extend(_rel_err(got[k], want[k]) for k in want)
        worst = max(errs)
        entry["max_rel_err"] = worst
        entry["check"] = f"ok ({worst:.1e})" if worst <= case.tolerance else f"FAILED ({worst:.1e})"
        say(f"{name} {variant}: deployed in {entry['deploy_s']:.1f} s, check {entry['check']}")
        entry["replicas"] = _replica_stats(url, name, http_replicas)  # identity, GPU, start-up s, memory
        if args.via == "direct":  # each replica's own HTTP port, requests in turn: no proxy
            prefix = f"/{variant}" if args.together else ""
            infer: str | list[str] = [f"{u}{prefix}/v2/models/{name}/infer"
                                      for u in ingress.replica_urls(f"bench-{variant}", http_replicas, "127.0.0.1")]
        else:
            infer = f"{url}/v2/models/{name}/infer"
        entry["nvidia_smi"] = _nvidia_smi() if args.device.startswith("cuda") else None
        if len(entry["replicas"]) < http_replicas:
            say(f"{name} {variant}: only {len(entry['replicas'])} of {http_replicas} replicas answered /stats")
        def send(rate: float, duration_s: float, seed: int, variant: str = variant, infer: Any = infer
                 ) -> tuple[list[Any], float]:
            """Open-loop load at `rate` for `duration_s`: from several client processes, through a
            DeploymentHandle, or over HTTP (to every replica's port under direct ingress)."""
            if args.clients > 1:  # the same load from several client processes
                target_name = f"bench-{variant}" if args.via == "handle" else infer
                return load.open_loop_clients(args.clients, args.via, target_name,
                                              handle_requests if args.via == "handle" else bodies, rate,
                                              duration_s, args.max_requests, seed=seed, timeout=args.timeout_s)
            if args.via == "handle":  # no HTTP proxy: Ray's DeploymentHandle straight to the replicas
                return load.open_loop_handle(serve.get_app_handle(f"bench-{variant}"), handle_requests, rate,
                                             duration_s, args.max_requests, seed=seed, timeout=args.timeout_s)
            return load.open_loop(infer, bodies, rate, duration_s, args.max_requests, seed=seed, timeout=args.timeout_s)

        def measure(rate: float, variant: str = variant, entry: dict[str, Any] = entry, url: str = url,
                    send: Any = send) -> dict[str, Any]:
            """One open-loop rate against this variant: outcomes, latency, and where the time went."""
            if time.monotonic() > deadline:
                skipped = {"offered_rps": rate, "skipped": True, **{k: float("nan") for k in (
                    "p50_ms", "p90_ms", "p99_ms", "achieved_rps")}, "sent": 0, "ok": 0, "rejected_503": 0,
                    "errors": 0, "timeouts": 0}
                entry["rates"].append(skipped)
                return skipped
            before = _stats(url, name, http_replicas)
            outcomes, wall = send(rate, args.duration_s, int(rate * 1000))
            after = _stats(url, name, http_replicas)
            summary = load.summarize(outcomes, wall, rate)
            summary.update(_model_load(before, after, wall))
            served = _delta(before, after, "requests")
            summary["calls_per_request"] = _delta(before, after, "calls") / served if served else float("nan")
            summary["stats_replicas"] = len(set(before) & set(after))  # replicas whose counters these sums cover
            # where a request's time went, per answered request: in the replica (parse, batch queue, model
            # calls, encode) and, of that, queued and in model calls; the client's mean minus replica_ms is
            # the HTTP proxy and Ray's transport
            answered = _delta(before, after, "answered")
            for key in ("replica_ms", "queue_ms", "model_ms"):
                summary[f"{key}_per_request"] = _delta(before, after, key) / answered if answered else float("nan")
            ok = [o.latency_s for o in outcomes if o.status == 200]
            summary["client_mean_ms"] = 1000 * sum(ok) / len(ok) if ok else float("nan")
            entry["rates"].append(summary)
            _checkpoint(result, args)  # a run cut short by an outer time limit keeps what it measured
            say(f"{name} {variant} @ {rate:g}/s: sent {summary['sent']} ok {summary['ok']} 503 {summary['rejected_503']} "
                f"p50 {summary['p50_ms']:.1f} p99 {summary['p99_ms']:.1f} ms, {summary['calls_per_request']:.2f} calls/req; "
                f"per request: client mean {summary['client_mean_ms']:.1f} ms, in replica {summary['replica_ms_per_request']:.1f} "
                f"(queued {summary['queue_ms_per_request']:.1f}), model calls {summary['model_ms_per_request']:.1f} ms; model replicas: "
                f"{summary.get('model_calls_per_s', float('nan')):.0f} calls/s, thread busy {summary.get('model_busy_share', float('nan')):.0%}")
            if summary["errors"]:
                say(f"{name} {variant} @ {rate:g}/s: errors by status {summary['error_statuses']}: {summary['error_samples']}")
            return summary

        if args.warmup_s > 0:  # first calls of new shapes (and their CUDA graph captures) before any measured rate
            # again while its p99 is past the bound (at most 3 rounds): a first measured rate right after a
            # slow warm-up failed in runs x and y (benchmarks/results/serve/h200-2026-11-30g)
            for round_ in range(3):
                entry["warmup"] = load.summarize(*send(rates[0], args.warmup_s, 1), rates[0])
                entry["warmup_rounds"] = round_ + 1
                say(f"{name} {variant}: warm-up {round_ + 1} at {rates[0]:g}/s for {args.warmup_s:g} s (not counted): "
                    f"p99 {entry['warmup']['p99_ms']:.1f} ms")
                if not args.p99_ms or entry["warmup"]["p99_ms"] <= args.p99_ms:
                    break
        if args.p99_ms:  # the highest rate served within the p99 bound, every request answered
            best = search.highest_rate(measure, rates[0], args.p99_ms, args.search_steps, args.search_precision)
            entry["rates"].sort(key=lambda r: r["offered_rps"])
            entry["max_rps_at_p99"] = best
            say(f"{name} {variant}: highest rate with p99 <= {args.p99_ms:g} ms: {best if best is not None else 'none'}/s")
        else:
            for rate in rates:
                measure(rate)
        if not args.together:
            serve.delete(f"bench-{variant}")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.split("\n")[0])
    p.add_argument("--model", nargs="+", default=None, help="tiny, bert_tiny, bert, image_tiny, resnet50 (default: bert resnet50; smoke: tiny)")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny model, short: checks the harness in < 60 s")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--variants", nargs="+", default=None, choices=VARIANTS)
    p.add_argument("--rates", nargs="+", type=float, default=None, help="offered loads, requests/s")
    p.add_argument("--duration-s", type=float, default=None, help="seconds of load per rate (default 8; smoke 2)")
    p.add_argument("--max-requests", type=int, default=4000, help="per rate")
    p.add_argument("--p99-ms", type=float, default=None,
                   help="instead of the listed rates: search (from the first rate) the highest rate each variant serves "
                   "with p99 within this bound and every request answered")
    p.add_argument("--search-steps", type=int, default=6, help="rates measured per variant in the search")
    p.add_argument("--search-precision", type=float, default=1.15,
                   help="the search stops when the lowest failing rate is within this factor of the best that held")
    p.add_argument("--warmup-s", type=float, default=0.0,
                   help="seconds of load at the first rate before any measured one, not counted (new shapes' first "
                   "calls and CUDA graph captures)")
    p.add_argument("--distinct", type=int, default=32, help="distinct request bodies (shapes mixed)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--pad", default="auto", choices=("auto", "buckets", "opt", "none"),
                   help="every variant alike: pad stacked batches (auto: power-of-two buckets on cuda, none on cpu)")
    p.add_argument("--binary", action="store_true", help="send inputs and take outputs as raw bytes, the v2 binary tensor extension (resnet50 does)")
    p.add_argument("--timeout-s", type=float, default=60.0, help="per request")
    p.add_argument("--budget-s", type=float, default=None, help="total time; then the rest is skipped (default 540; smoke 110)")
    p.add_argument("--replicas", type=int, default=1, help="replicas per variant (one GPU each on CUDA)")
    p.add_argument("--replicas-per-gpu", type=int, default=1, help="replicas sharing one GPU (Ray's num_gpus = 1/K)")
    p.add_argument("--frontends", type=int, default=0,
                   help="every variant alike: CPU front ends answering HTTP and batching before the model's replicas")
    p.add_argument("--no-access-log", dest="access_log", action="store_false", help="every variant without Ray's access log")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--via", default="http", choices=("http", "handle", "direct"),
                   help="send the load over HTTP through Ray's proxy, through a DeploymentHandle, or over HTTP "
                   "straight to each replica's own port (direct ingress)")
    p.add_argument("--clients", type=int, default=1,
                   help="client processes sharing the load, each Poisson at rate/N (default 1: this process)")
    p.add_argument("--together", action="store_true",
                   help="deploy every variant at once (one route each) instead of one after another; smoke does")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "serve"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.via == "direct":  # before Ray starts: its processes read the switch when they start
        from flexrt.serving import ingress

        ingress.enable(1.0)
    if args.smoke:
        args.device = args.device or "cpu"
        args.model = args.model or ["tiny"]
        args.variants = args.variants or ["flexrt", "flexrt_nobatch", "eager"]
        args.duration_s = args.duration_s or 2.0
        args.rates = args.rates or [40.0]
        args.together = True
        args.distinct = min(args.distinct, 12)
        args.budget_s = args.budget_s or 110.0  # a bound, not a target: ~55-60 s on an idle 2-core machine
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.model = args.model or ["bert", "resnet50"]
    args.variants = args.variants or list(VARIANTS)
    args.duration_s = args.duration_s or 8.0
    args.budget_s = args.budget_s or 540.0
    # replicas import benchmarks.serve.models (the peers' factories) and flexrt from this checkout
    paths = [ROOT] + [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    sys.path.insert(0, ROOT)
    deadline = time.monotonic() + args.budget_s
    for name in args.model:
        result = bench_model(name, args, deadline)
        for path in _checkpoint(result, args):
            say(f"wrote {path}")
    return 0
