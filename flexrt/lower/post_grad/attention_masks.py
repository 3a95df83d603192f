"""Materialise an attention mask that several cuDNN attention calls share, once (Inductor's
post-grad graph, every engine).

Why: Inductor keeps a cheap elementwise result unmaterialised and recomputes it in each consumer;
for an extern kernel such as cuDNN attention, each call then gets its own copy. BERT's 12 layers
read one additive mask (one node after `cse`), and Inductor still wrote 12 [batch, 1, seq, seq]
copies per call: 107 us of 1907 us of kernels at sequence 512 with dynamic shapes (H100, fp16;
`research/results/kernel_diff_bert_gelu_epilogue.json`). Routing the calls through
Inductor's `inductor_force_stride_order` (with the mask's own strides, the layout attention asks
of it) makes Inductor write one buffer, which every call then takes as it is.
"""

from __future__ import annotations

import torch
from torch._inductor import inductor_prims

from flexrt.lower.post_grad.attention_calls import mask_readers, set_mask


def realize_shared_attention_masks(graph: torch.fx.Graph) -> int:
    """Give each mask read by two or more attention calls one materialised node; returns how many."""
    realized = 0
    for node in list(graph.nodes):
        readers = mask_readers(node)
        val = node.meta.get("val")
        strides = _guard_free_strides(val) if isinstance(val, torch.Tensor) else None
        if len(readers) < 2 or strides is None or any(type(s) is int and s == 0 for s in strides):
            continue  # a broadcast view (`broadcast_masks.py`) stays one: realising it writes it dense
        with graph.inserting_after(node):
            mask = graph.call_function(inductor_prims.force_stride_order, (node, strides))
        mask.meta["val"] = val
        for reader in readers:
            set_mask(reader, mask)
        realized += 1
    return realized


def _guard_free_strides(val: torch.Tensor) -> list[int | torch.SymInt] | None:
    """The mask's own strides, symbolic ones as they are: the lowering reads only their order, and
    Inductor's fake-tensor update compares them with the input's, which must hold without a guard
    (hint values here would specialise the engine to the example shape). None for data-dependent
    strides."""
    strides = list(val.stride())
    return None if any(isinstance(s, torch.SymInt) and s.node.hint is None for s in strides) else strides
