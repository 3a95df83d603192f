"""Direct ingress: each replica answers HTTP on a port of its own, with no proxy in between.

Why: Ray Serve's HTTP proxy is one Python process per node; it capped every deployment near 200
requests/s of ResNet-size bodies on the H200 host, a deployment answering nothing included
(`benchmarks/results/serve/h200-2026-11-30`; ray#42565). Ray 2.55+ can let each ingress replica
serve HTTP itself (`RAY_SERVE_ENABLE_DIRECT_INGRESS`), which is meant for an external load balancer
(HAProxy, a cloud LB) spreading clients over the replicas' ports; on a 2-core CPU the same echo
deployment went from 127 to 817 answers/s (`research/probes/serve_floor.py ... direct`). The proxy
keeps working beside it. The switch is Ray's, read when Ray's processes start: it must be set before
Ray starts (here, for a local Ray) or on the cluster.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flexrt.errors import ServingError

FLAG = "RAY_SERVE_ENABLE_DIRECT_INGRESS"
DRAIN = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"


def enable(drain_s: float) -> None:
    """Switch direct ingress on for a Ray started after this call (its processes inherit the
    environment). `drain_s`: how long a stopping replica keeps answering, for load balancers to let
    it go (Ray's default is 30 s)."""
    os.environ[FLAG] = "1"
    os.environ[DRAIN] = str(drain_s)


def enabled() -> bool:
    return os.environ.get(FLAG) == "1"


def replica_urls(app_name: str, replicas: int, host: str, timeout_s: float = 60.0) -> list[str]:
    """`http://host:port` of each running replica of `app_name` (direct ingress must be on); waits,
    bounded by `timeout_s`, until `replicas` of them have a port. Replicas bind Serve's HTTP host
    (`serve.start(http_options={"host": ...})`), while Serve lists each with its node's address: a
    specific `host` (127.0.0.1) is where they answer, "0.0.0.0" means the node's address."""
    if not enabled():
        raise ServingError(f"direct ingress is off: set {FLAG}=1 before Ray starts (flexrt serve --direct-ingress)")
    from ray.serve.context import _get_global_client

    deadline = time.monotonic() + timeout_s
    urls: list[str] = []
    while time.monotonic() < deadline:
        urls = _http_targets(_get_global_client().get_serve_details(), app_name, host)
        if len(urls) >= replicas:
            return urls
        time.sleep(0.2)
    raise ServingError(f"{len(urls)} of {replicas} replicas of {app_name!r} have a direct-ingress port after {timeout_s:.0f} s")


def _http_targets(details: dict[str, Any], app_name: str, host: str) -> list[str]:
    """The HTTP targets Serve lists for `app_name` (replicas under direct ingress)."""
    urls = []
    for group in details.get("target_groups", []):
        if group.get("app_name") == app_name and str(group.get("protocol", "")).upper().endswith("HTTP"):
            urls += [f"http://{t['ip'] if host in ('0.0.0.0', '::') else host}:{t['port']}" for t in group.get("targets", [])]
    return sorted(set(urls))
