"""Where the attention calls in Inductor's post-grad graph take their mask: the one table that the
mask passes (`broadcast_masks.py`, `attention_masks.py`) read and rewrite through.

Why cuDNN attention alone: Inductor's lowering accepts its mask as it is once the mask is a buffer
in the requested stride order, or a view of one whose strides are multiples of 8; the
efficient-attention kernel also wants a dense, padded last dim, so it would be copied anyway.
"""

from __future__ import annotations

from typing import Any

import torch

# Attention op -> its mask's place in the call: a positional index or a keyword.
MASK_SLOTS: dict[Any, int | str] = {torch.ops.aten._scaled_dot_product_cudnn_attention.default: 3}


def mask_of(call: torch.fx.Node) -> Any:
    """The node an attention call reads its mask from (None for any other node)."""
    slot = MASK_SLOTS.get(call.target) if call.op == "call_function" else None
    if isinstance(slot, str):
        return call.kwargs.get(slot)
    return call.args[slot] if slot is not None and len(call.args) > slot else None


def mask_readers(node: torch.fx.Node) -> list[torch.fx.Node]:
    """The attention calls that read `node` as their mask."""
    return [u for u in node.users if mask_of(u) is node]


def set_mask(call: torch.fx.Node, mask: torch.fx.Node) -> None:
    """Point an attention call's mask at `mask`."""
    slot = MASK_SLOTS[call.target]
    call.update_kwarg(slot, mask) if isinstance(slot, str) else call.update_arg(slot, mask)
