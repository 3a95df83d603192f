"""A live progress line for builds on the command line: the step running, how long it has run,
and a line per finished step (trace, lower, partition, each segment's export and engine).

It listens to the pipeline's step records (`flexrt.stage_log`), so the library itself stays quiet.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

from rich.console import Console
from rich.status import Status


class _ProgressHandler(logging.Handler):
    def __init__(self, console: Console, status: Status) -> None:
        super().__init__(logging.DEBUG)
        self.console = console
        self.status = status
        self.start = time.perf_counter()

    def emit(self, record: logging.LogRecord) -> None:
        elapsed = time.perf_counter() - self.start
        if hasattr(record, "stage_started"):
            self.status.update(f"[bold]{record.stage_started}[/bold] (elapsed {elapsed:.0f} s)")  # type: ignore[attr-defined]
        elif hasattr(record, "stage"):
            self.console.print(f"  [green]done[/green] {record.getMessage()}  [dim]{elapsed:.1f} s[/dim]")
        elif record.levelno >= logging.WARNING:
            self.console.print(f"[yellow]{record.levelname.lower()}[/yellow] {record.getMessage()}")


@contextlib.contextmanager
def build_progress(verbose: bool) -> Iterator[None]:
    """Show progress on stderr for the block; with `verbose`, the log lines already say it all."""
    if verbose:
        yield
        return
    console = Console(stderr=True)
    logger = logging.getLogger("flexrt")
    old_level, old_propagate = logger.level, logger.propagate
    with console.status("starting") as status:
        handler = _ProgressHandler(console, status)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False  # step records are for this display, not for the root handler
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
            logger.propagate = old_propagate
