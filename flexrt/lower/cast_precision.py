"""Run engines in the requested precision (`enabled_precisions`), returning the model's own dtypes."""

from __future__ import annotations

import logging

import torch

from flexrt.lower.dtype_rewrite import run_graph_in
from flexrt.settings import CompileSettings

logger = logging.getLogger(__name__)


def cast_precision(gm: torch.fx.GraphModule, settings: CompileSettings) -> torch.fx.GraphModule:
    target = settings.engine_dtype
    if target == torch.float32:
        return gm
    n = run_graph_in(gm, torch.float32, target)
    logger.debug("cast_precision: %d float32 weights now %s; inputs cast on entry, outputs cast back", n, target)
    return gm
