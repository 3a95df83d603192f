"""The lowering pipeline: unlift the exported program, then run each pass in `PASSES`, in order.

The passes that run inside Inductor, on its post-grad graph, are listed in `post_grad/pipeline.py`.
Any pass of either list is left out by naming it in the private setting `_disabled_passes`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch
from torch.export import ExportedProgram

from flexrt.lower.cast_precision import cast_precision
from flexrt.lower.conv_patches_to_linear import conv_patches_to_linear
from flexrt.lower.fuse_conv_epilogue import fuse_conv_epilogue
from flexrt.lower.fuse_linear_gelu import fuse_linear_gelu
from flexrt.lower.fuse_parallel_linear import fuse_parallel_linear
from flexrt.lower.strip_guards import strip_guards
from flexrt.lower.truncate_double import truncate_double
from flexrt.settings import CompileSettings

logger = logging.getLogger(__name__)

Pass = Callable[[torch.fx.GraphModule, CompileSettings], torch.fx.GraphModule]

# One pass per file; each takes and returns a GraphModule and reads only the settings it is given.
# fuse_parallel_linear runs before cast_precision, while node metadata still holds the model's dtypes;
# fuse_linear_gelu after it, since it applies only where the weights end up float16 or bfloat16.
PASSES: list[Pass] = [
    strip_guards,
    truncate_double,
    fuse_parallel_linear,
    cast_precision,
    fuse_conv_epilogue,
    conv_patches_to_linear,
    fuse_linear_gelu,
]


def lower(ep: ExportedProgram, settings: CompileSettings) -> torch.fx.GraphModule:
    """The program as an unlifted GraphModule (weights as attributes) after every pass."""
    gm = ep.module()
    for p in PASSES:
        if not settings.pass_enabled(p.__name__):
            logger.debug("lower: %s disabled by the settings", p.__name__)
            continue
        start = time.perf_counter()
        gm = p(gm, settings)
        logger.debug("lower: %s took %.3f s", p.__name__, time.perf_counter() - start)
    gm.graph.lint()
    gm.recompile()
    return gm
