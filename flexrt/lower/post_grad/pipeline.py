"""flexrt's passes on Inductor's post-grad graph, in order, handed to Inductor as its
`post_grad_custom_pre_pass` when an engine is built.

Why apart from the ATen passes in `flexrt/lower/pipeline.py`: what they fix appears only after Inductor's decompositions
(an attention call's boolean mask becomes a per-call `where`), and it is Inductor's lowering that
they steer.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

import torch
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

from flexrt.lower.post_grad import attention_calls, attention_masks, broadcast_masks, cse, mask_values
from flexrt.settings import CompileSettings

logger = logging.getLogger(__name__)

PostGradPass = Callable[[torch.fx.Graph], int]

# Each pass rewrites the graph in place and returns how many rewrites it made.
POST_GRAD_PASSES: list[PostGradPass] = [
    cse.merge_common_subexpressions,
    broadcast_masks.broadcast_row_masks,
    attention_masks.realize_shared_attention_masks,
]
# Every file whose code decides what the passes do: a change to any of them changes the engine.
_PASS_FILES = (__file__, cse.__file__, attention_calls.__file__, broadcast_masks.__file__, mask_values.__file__,
               attention_masks.__file__)


class PostGradPasses(CustomGraphPass):
    """The passes the settings enable, as Inductor takes them: callable on the graph, with a `uuid`
    for Inductor's FX graph cache and a `repr` stable across processes for flexrt's engine cache key."""

    def __init__(self, settings: CompileSettings) -> None:
        self.passes = [p for p in POST_GRAD_PASSES if settings.pass_enabled(p.__name__)]

    def __call__(self, graph: torch.fx.Graph) -> None:
        for p in self.passes:
            n = p(graph)
            if n:
                logger.debug("post-grad: %s made %d rewrites", p.__name__, n)

    def uuid(self) -> bytes:
        """The passes' code and their order: a change to either changes the engines built."""
        names = ",".join(f"{p.__module__}.{p.__name__}" for p in self.passes)
        return hashlib.sha256(get_hash_for_files(_PASS_FILES) + names.encode()).digest()

    def __repr__(self) -> str:
        return f"flexrt.lower.post_grad.pipeline.PostGradPasses({self.uuid().hex()[:16]})"
