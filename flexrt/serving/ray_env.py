"""Ray Serve settings for the replicas flexrt serves: Ray reads them from the environment when its
processes start, so they are set before a local Ray starts (`flexrt serve`, the serving benchmark)
and must be set where a cluster is started to apply there (`serve run`, `serve deploy`).

RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0. By default Ray Serve runs a replica's handlers on a
second event loop in a thread of its own, so that a handler that blocks cannot stall the replica's
own loop (HTTP, health checks). flexrt's handlers never block it: every model call runs on the
replica's model thread. The second loop cost every request, and each chunk of its body, a hop
between threads and their contention for the GIL (Ray's own throughput-optimized mode turns it off
too). A setting the user made (in the environment) is kept.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

SETTINGS = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}


def apply() -> dict[str, str]:
    """Set each of SETTINGS the environment does not set already; returns what is in effect."""
    for key, value in SETTINGS.items():
        if os.environ.setdefault(key, value) != value:
            logger.info("keeping %s=%s from the environment (flexrt serve's default: %s)", key, os.environ[key], value)
    return {key: os.environ[key] for key in SETTINGS}
