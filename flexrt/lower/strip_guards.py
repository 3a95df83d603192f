"""Remove export's runtime guards and assertions: the runtime checks inputs itself, before any engine runs."""

from __future__ import annotations

import logging

import torch

from flexrt.settings import CompileSettings

logger = logging.getLogger(__name__)

_ASSERTIONS = {
    torch.ops.aten._assert_scalar.default,
    torch.ops.aten._assert_tensor_metadata.default,
    torch.ops.aten.sym_constrain_range.default,
    torch.ops.aten.sym_constrain_range_for_size.default,
}


def strip_guards(gm: torch.fx.GraphModule, settings: CompileSettings) -> torch.fx.GraphModule:
    removed = 0
    for node in reversed(list(gm.graph.nodes)):
        is_guard_call = node.op == "call_module" and str(node.target).startswith("_guards")
        if is_guard_call or (node.op == "call_function" and node.target in _ASSERTIONS):
            if node.users:
                continue
            target = node.target
            gm.graph.erase_node(node)
            if is_guard_call and hasattr(gm, str(target)):
                delattr(gm, str(target))
            removed += 1
    for key, hook in list(gm._forward_pre_hooks.items()):
        if getattr(hook, "__name__", "") == "_check_input_constraints_pre_hook":  # ep.module()'s range check
            del gm._forward_pre_hooks[key]
            gm._forward_pre_hooks_with_kwargs.pop(key, None)
            removed += 1
    gm.graph.eliminate_dead_code()
    logger.debug("strip_guards: removed %d guard/assertion nodes", removed)
    return gm
