"""One log record per finished pipeline step, carrying the step and its seconds as attributes.

Why records rather than a callback: the library stays quiet by default (INFO is below Python's
default level), `-v` on the CLI prints them, the CLI's progress display and the build-time
benchmark read `record.stage` / `record.seconds`, and no stage needs to know who listens.
"""

from __future__ import annotations

import logging


def stage_done(logger: logging.Logger, stage: str, seconds: float, detail: str = "") -> None:
    logger.info("%s: %.2f s%s", stage, seconds, f" ({detail})" if detail else "", extra={"stage": stage, "seconds": seconds, "detail": detail})


def stage_started(logger: logging.Logger, stage: str) -> None:
    logger.debug("%s ...", stage, extra={"stage_started": stage})
