"""Serve a flexrt artifact over HTTP (KServe/Triton Open Inference Protocol v2) on Ray Serve.

`import flexrt.serving` costs nothing: Ray is imported only by `deployment`, `app` and `cli.run`.
`protocol` and `batching` are pure (torch and numpy only) so they are testable without Ray.
`app` is resolved lazily so that `serve run flexrt.serving:app artifact=model.ep` works.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app", "build_app"]


def __getattr__(name: str) -> Any:
    if name in ("app", "build_app"):
        from flexrt.serving import application as _app

        return getattr(_app, name)
    raise AttributeError(f"module 'flexrt.serving' has no attribute {name!r}")
