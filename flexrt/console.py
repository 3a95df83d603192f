"""One place that makes the rich console: wide when output goes to a file or pipe, so rows stay whole."""

from __future__ import annotations

from rich.console import Console


def make_console(width: int = 140) -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=width)
