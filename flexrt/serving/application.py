"""`app`: the builder Ray's own tooling calls.

    serve run flexrt.serving:app artifact=model.ep batch_dim=x:0 max_batch_size=16
    serve deploy examples/serve_config.yaml        (import_path: flexrt.serving:app, args: {...})

Ray passes the `key=value` pairs (or the YAML `args:` map) as one dict; see ServeConfig for keys.
"""

from __future__ import annotations

import logging
from typing import Any

from flexrt.serving.config import ServeConfig

logger = logging.getLogger(__name__)


def build_app(config: ServeConfig) -> Any:
    """A ServeConfig -> the Ray Serve Application (imports Ray)."""
    from flexrt.serving.deployment import build

    return build(config)


def app(args: dict[str, Any]) -> Any:
    """Application builder for `serve run flexrt.serving:app artifact=...` and serve deploy configs."""
    return build_app(ServeConfig.from_mapping(dict(args)))
