"""Ray Serve settings for the replicas flexrt serves: Ray reads them from the environment when its
processes start, so they are set before a local Ray starts (`flexrt serve`, the serving benchmark)
and must be set where a cluster is started to apply there (`serve run`, `serve deploy`).

RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0. By default Ray Serve runs a replica's handlers on a
second event loop in a thread of its own, so that a handler that blocks cannot stall the replica's
own loop (HTTP, health checks). flexrt's handlers never block it: every model call runs on the
replica's model thread. The second loop cost every request, and each chunk of its body, a hop
between threads and their contention for the GIL (Ray's own throughput-optimized mode turns it off
too). RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH=2 GiB - 1: the largest message a
replica's gRPC server takes (Ray's default, 4 MiB, is below one batch of a few images); front ends
send batches over gRPC only where it is that large (`grpc_limit`). A setting the user made (in the
environment) is kept.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

GRPC_LIMIT = "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH"
GRPC_MESSAGE_BYTES = 2**31 - 1  # the sending side's limit in Ray (RAY_SERVE_GRPC_MAX_MESSAGE_SIZE)
# Not RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0 (Ray's throughput mode sets it): processes inherit these,
# and a driver's handle then routed on a loop that closed under it (the serving benchmark's handle
# clients failed every request in CI).
SETTINGS = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", GRPC_LIMIT: str(GRPC_MESSAGE_BYTES)}


def apply() -> dict[str, str]:
    """Set each of SETTINGS the environment does not set already; returns what is in effect."""
    for key, value in SETTINGS.items():
        if os.environ.setdefault(key, value) != value:
            logger.info("keeping %s=%s from the environment (flexrt serve's default: %s)", key, os.environ[key], value)
    return {key: os.environ[key] for key in SETTINGS}


def grpc_limit() -> int:
    """The largest gRPC message this process's Ray replicas accept, as far as the environment says
    (0 when unset: Ray's own 4 MiB)."""
    try:
        return int(os.environ.get(GRPC_LIMIT, "0"))
    except ValueError:
        return 0
