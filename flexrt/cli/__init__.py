"""The `flexrt` command line: a thin layer over the library (see `main.py`)."""

from flexrt.cli.main import main

__all__ = ["main"]
