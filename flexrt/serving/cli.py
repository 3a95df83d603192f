"""`flexrt serve model.ep ...`: start (or join, through RAY_ADDRESS) Ray, run the app, drain on exit.

Wired into flexrt's CLI by `add_parser(subparsers)`; `run(args)` returns the exit code.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from flexrt.errors import FlexrtError, ServingError

if TYPE_CHECKING:  # the parser is built without torch (flexrt --help); config imports it
    from flexrt.serving.config import ServeConfig

logger = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `serve` to flexrt's subcommands; sets `fn=run` as the other subcommands do."""
    p = subparsers.add_parser(
        "serve", help="serve an artifact over HTTP (Open Inference Protocol v2) on Ray Serve, with dynamic batching"
    )
    p.add_argument("artifact", help="a saved flexrt model (flexrt.save / flexrt compile -o)")
    p.add_argument("--name", default=None, help="model name in /v2/models/{name} (default: the file's stem)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP host (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--replicas", default="1", help="number of replicas, or 'auto' (Ray Serve autoscaling)")
    p.add_argument("--min-replicas", type=int, default=1, help="with --replicas auto")
    p.add_argument("--max-replicas", type=int, default=4, help="with --replicas auto")
    p.add_argument("--replicas-per-gpu", type=int, default=1,
                   help="replicas sharing one GPU (each its own process: more CPU for request handling)")
    p.add_argument(
        "--frontends", type=int, default=0, metavar="N",
        help="N CPU replicas answer HTTP, validate and batch, and send one call per batch to the model's replicas "
        "(default 0: each model replica answers HTTP itself); more front ends, more requests/s per GPU",
    )
    p.add_argument("--max-batch-size", type=int, default=8, help="requests per model call (with --batch-dim)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a batch waits to fill")
    p.add_argument(
        "--batch-dim", action="append", default=[], metavar="NAME:DIM",
        help="an input dim whose rows are independent (e.g. x:0); give one per input. Without it, no stacking",
    )
    p.add_argument(
        "--pad", default="auto", choices=("auto", "buckets", "opt", "none"),
        help="pad a stacked batch's rows: buckets (next power of two: few shapes for CUDA graphs to capture), "
        "opt (the profile's opt batch) or none; auto: buckets on cuda, none on cpu",
    )
    p.add_argument(
        "--warm-up-sizes", action="append", default=[], metavar="NAME:DIM=SIZE,...",
        help="sizes a dynamic dim takes in requests (e.g. input_ids:1=32,64,128,256): each replica runs, and captures, "
        "every batch bucket at each before serving, so that requests of those sizes do not wait for a capture",
    )
    p.add_argument("--max-queue", type=int, default=256, help="requests waiting for a replica before 503s")
    p.add_argument("--max-ongoing", type=int, default=0, help="requests in a replica at once (default 2x batch, >= 8)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda: one GPU per replica, or per --replicas-per-gpu)")
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs reserved per replica")
    p.add_argument("--no-access-log", dest="access_log", action="store_false",
                   help="no access log line per request in the replicas' logs (metrics still count every request)")
    p.add_argument("--drain-s", type=float, default=30.0, help="on shutdown, wait this long for requests in flight")
    p.add_argument(
        "--direct-ingress", action="store_true",
        help="each replica also answers HTTP on a port of its own (listed at start), past Ray's one proxy "
        "process, for a load balancer or clients to spread over (Ray's RAY_SERVE_ENABLE_DIRECT_INGRESS)",
    )
    p.set_defaults(fn=run)
    return p


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    from flexrt.serving.config import ServeConfig, default_name

    return ServeConfig.from_mapping({
        "artifact": args.artifact,
        "name": args.name or default_name(args.artifact),
        "device": args.device,
        "replicas": args.replicas,
        "min_replicas": args.min_replicas,
        "max_replicas": args.max_replicas,
        "replicas_per_gpu": args.replicas_per_gpu,
        "frontends": args.frontends,
        "max_batch_size": args.max_batch_size,
        "batch_wait_ms": args.batch_wait_ms,
        "batch_dims": list(args.batch_dim),
        "max_queue": args.max_queue,
        "max_ongoing": args.max_ongoing,
        "pad": args.pad,
        "warm_up_sizes": list(args.warm_up_sizes),
        "num_cpus": args.num_cpus,
        "graceful_shutdown_timeout_s": args.drain_s,
        "access_log": args.access_log,
    })


def check(config: ServeConfig) -> None:
    """Check the artifact and the batch dims here, so that mistakes fail before Ray starts. The engines
    are loaded too where they can run; for a GPU deployment started where there is no GPU (a cluster's
    head node) the manifest is read alone (it checks every member's size), and the replicas load the
    engines."""
    import torch

    import flexrt
    from flexrt.serving.batching import BatchPlan, warm_up_symbols
    from flexrt.serving.protocol import ModelSignature

    if not os.path.isfile(config.artifact):
        raise ServingError(f"no such artifact: {config.artifact!r}")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        signature = ModelSignature.from_file(config.name, config.artifact)
    else:
        signature = ModelSignature.from_artifact(config.name, flexrt.load(config.artifact))
    if config.batching:
        BatchPlan.resolve(signature, dict(config.batch_dims))
    warm_up_symbols(signature, config.warm_up_sizes)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM, then drain and stop what was started. Returns the exit code."""
    try:
        config = config_from_args(args)
        check(config)
        try:
            import ray
            from ray import serve
        except ImportError:
            raise ServingError("flexrt serve needs Ray Serve: pip install 'flexrt[serve]'") from None
    except FlexrtError as e:
        print(f"flexrt: error: {e}", file=sys.stderr)
        return 2
    from flexrt.serving import ingress, ray_env
    from flexrt.serving.application import build_app

    joined = bool(os.environ.get("RAY_ADDRESS"))
    if not joined:
        ray_env.apply()  # read by Ray's processes when they start
    if args.direct_ingress and not joined:
        ingress.enable(args.drain_s)  # read by Ray's processes when they start
    elif args.direct_ingress and not ingress.enabled():
        print(f"flexrt: error: --direct-ingress on a running cluster needs {ingress.FLAG}=1 set where it was started",
              file=sys.stderr)
        return 2
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, log_to_driver=True)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(build_app(config), name=config.name, route_prefix="/", blocking=False)
        url = f"http://{args.host}:{args.port}/v2/models/{config.name}"
        print(f"flexrt: serving {config.artifact} at {url} (infer: POST {url}/infer); Ctrl-C to stop", flush=True)
        if args.direct_ingress:
            for replica in ingress.replica_urls(config.name, config.http_replicas, args.host):
                print(f"flexrt: replica at {replica}/v2/models/{config.name} (direct ingress)", flush=True)
        while not stop.wait(1.0):
            pass
        print("flexrt: draining and shutting down", flush=True)
        return 0
    except FlexrtError as e:
        print(f"flexrt: error: {e}", file=sys.stderr)
        return 2
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        try:
            # Drain: deleting the application first stops routing to its replicas and lets each finish
            # the requests it holds (up to --drain-s) while the HTTP proxy still runs to answer them;
            # only then is Serve (proxy, controller) torn down. On a shared cluster, only our app goes.
            serve.delete(config.name)
            if not joined:
                serve.shutdown()
        finally:
            if not joined:
                ray.shutdown()
