"""`truncate_long_and_double`: compute in float32 where the model uses float64.

int64 stays int64: Inductor supports it natively (TensorRT did not, hence the option's name).
"""

from __future__ import annotations

import logging

import torch

from flexrt.lower.dtype_rewrite import run_graph_in
from flexrt.settings import CompileSettings

logger = logging.getLogger(__name__)


def truncate_double(gm: torch.fx.GraphModule, settings: CompileSettings) -> torch.fx.GraphModule:
    if not settings.truncate_long_and_double:
        return gm
    n = run_graph_in(gm, torch.float64, torch.float32)
    logger.debug("truncate_double: %d float64 weights now float32; float64 inputs and outputs cast at the edges", n)
    return gm
