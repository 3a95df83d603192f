"""Shared helper for passes that run the graph in another floating dtype than the model declares."""

from __future__ import annotations

import torch


def run_graph_in(gm: torch.fx.GraphModule, source: torch.dtype, target: torch.dtype) -> int:
    """Cast `source`-typed weights to `target`, cast such inputs on entry and outputs back on exit.

    Explicit casts written in the model (x.float()) are kept: the model asked for them.
    Returns how many weights were converted.
    """
    converted = 0
    for name, tensor in list(gm.state_dict(keep_vars=True).items()):
        if tensor.dtype == source:
            module_name, _, attr = name.rpartition(".")
            owner = gm.get_submodule(module_name) if module_name else gm
            new = tensor.detach().to(target)
            if isinstance(getattr(owner, attr), torch.nn.Parameter):
                setattr(owner, attr, torch.nn.Parameter(new, requires_grad=False))
            else:
                owner.register_buffer(attr, new, persistent=attr not in getattr(owner, "_non_persistent_buffers_set", ()))
            converted += 1
    for node in list(gm.graph.nodes):
        if node.op == "get_attr":
            value = _attr(gm, str(node.target))
            if isinstance(value, torch.Tensor) and value.dtype == source:
                _set_attr(gm, str(node.target), value.to(target))
                converted += 1
    graph = gm.graph
    for node in list(graph.nodes):
        val = node.meta.get("val")
        if node.op == "placeholder" and isinstance(val, torch.Tensor) and val.dtype == source:
            with graph.inserting_after(node):
                cast = graph.call_function(torch.ops.aten._to_copy.default, (node,), {"dtype": target})
            node.replace_all_uses_with(cast, delete_user_cb=lambda user, cast=cast: user is not cast)
            cast.meta["val"] = val
    output = next(n for n in graph.nodes if n.op == "output")
    outs = output.args[0]
    flat, spec = torch.utils._pytree.tree_flatten(outs)
    new_flat = []
    for out in flat:
        val = out.meta.get("val") if isinstance(out, torch.fx.Node) else None
        if isinstance(val, torch.Tensor) and val.dtype == source:
            with graph.inserting_before(output):
                back = graph.call_function(torch.ops.aten._to_copy.default, (out,), {"dtype": source})
            back.meta["val"] = val
            new_flat.append(back)
        else:
            new_flat.append(out)
    output.args = (torch.utils._pytree.tree_unflatten(new_flat, spec),)
    if converted:  # a model already in `target` (float16 weights) is left exactly as traced
        _match_weights(gm, source, target)
    gm.recompile()
    return converted


_aten = torch.ops.aten
# ops whose floating operands must share a dtype (no type promotion): matmuls, attention, norms, cat
_SAME_DTYPE = {
    _aten.mm, _aten.bmm, _aten.matmul, _aten.addmm, _aten.baddbmm, _aten.linear, _aten.convolution,
    _aten.conv1d, _aten.conv2d, _aten.conv3d, _aten.layer_norm, _aten.native_layer_norm, _aten.group_norm,
    _aten.batch_norm, _aten.rms_norm, _aten.cat, _aten.stack, _aten.scaled_dot_product_attention,
    _aten._scaled_dot_product_flash_attention, _aten._scaled_dot_product_efficient_attention,
    _aten._scaled_dot_product_cudnn_attention, _aten._scaled_dot_product_flash_attention_for_cpu,
}


def _packet(node: torch.fx.Node) -> object:
    return getattr(node.target, "overloadpacket", None)


def _match_weights(gm: torch.fx.GraphModule, source: torch.dtype, target: torch.dtype) -> int:
    """Cast to `target` each `source` activation that meets a converted weight, or a `target` operand
    of an op that takes one dtype (attention, matmul, norms, cat), in one op.

    A cast the trace recorded as `.to(float32)` may have been the model's `.to(x.dtype)` or
    `.to(self.weight.dtype)` (BART's positions, LLaMA's RMSNorm returning to its input dtype): kept
    as written, it handed a float32 activation to a LayerNorm or linear whose weights are now float16
    (`mixed dtype`); LLaMA's rotary tables made its query and key float32 beside a float16 value. The
    model run in `target` would have met them in `target`, so they meet there; a float32 computation
    that meets neither (RMSNorm's variance) stays float32. Returns how many
    casts were added."""
    dtypes: dict[torch.fx.Node, torch.dtype] = {}
    added = 0
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op == "get_attr":
            value = _attr(gm, str(node.target))
            if isinstance(value, torch.Tensor):
                dtypes[node] = value.dtype
            continue
        dtype = _result_dtype(node, dtypes)
        if dtype is None:
            continue
        if node.op == "call_function":
            inputs = [a for a in node.all_input_nodes if a in dtypes and dtypes[a].is_floating_point]
            weights = [a for a in inputs if a.op == "get_attr" and dtypes[a] == target]
            stale = [a for a in inputs if dtypes[a] == source and a.op != "get_attr"]
            same_dtype = _packet(node) in _SAME_DTYPE and any(dtypes[a] == target for a in inputs)
            if stale and (weights or same_dtype):
                for a in stale:
                    with graph.inserting_before(node):
                        cast = graph.call_function(torch.ops.aten._to_copy.default, (a,), {"dtype": target})
                    cast.meta["val"] = a.meta.get("val")
                    dtypes[cast] = target
                    node.replace_input_with(a, cast)
                    added += 1
                dtype = target if dtype == source else dtype
            if dtype == target:
                added += _clamp_scalars(node, target)
        dtypes[node] = dtype
    return added


def _clamp_scalars(node: torch.fx.Node, target: torch.dtype) -> int:
    """A float constant beyond `target`'s range, computed from the traced dtype (`torch.finfo(float32).min`
    as a mask fill: DeBERTa-v2), becomes `target`'s extreme, the value the model computes in `target`
    (PyTorch refuses to fill float16 with -3.4e38)."""
    limit = torch.finfo(target).max

    def clamp(v: object) -> object:
        if isinstance(v, float) and abs(v) > limit and v not in (float("inf"), float("-inf")):
            return limit if v > 0 else -limit
        return v

    args, kwargs = tuple(clamp(a) for a in node.args), {k: clamp(v) for k, v in node.kwargs.items()}
    changed = sum(a is not b for a, b in zip(args, node.args)) + sum(kwargs[k] is not v for k, v in node.kwargs.items())
    if changed:
        node.args, node.kwargs = args, kwargs
    return changed


def _result_dtype(node: torch.fx.Node, dtypes: dict[torch.fx.Node, torch.dtype]) -> torch.dtype | None:
    """The dtype a node produces after the rewrite: an explicit dtype argument wins, else the
    promotion of its floating inputs, else what the trace recorded."""
    val = node.meta.get("val")
    traced = val.dtype if isinstance(val, torch.Tensor) else None
    if node.op != "call_function":
        return traced
    explicit = node.kwargs.get("dtype")
    if explicit is None:
        explicit = next((a for a in node.args if isinstance(a, torch.dtype)), None)
    if isinstance(explicit, torch.dtype):
        return explicit
    floats = [dtypes[a] for a in node.all_input_nodes if a in dtypes and dtypes[a].is_floating_point]
    if traced is not None and not traced.is_floating_point:
        return traced
    if floats:
        out = floats[0]
        for d in floats[1:]:
            out = torch.promote_types(out, d)
        return out
    return traced


def _attr(gm: torch.nn.Module, target: str) -> object:
    obj: object = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _set_attr(gm: torch.nn.Module, target: str, value: torch.Tensor) -> None:
    module_name, _, attr = target.rpartition(".")
    owner = gm.get_submodule(module_name) if module_name else gm
    if isinstance(getattr(owner, attr), torch.nn.Parameter):
        setattr(owner, attr, torch.nn.Parameter(value, requires_grad=False))
    else:
        setattr(owner, attr, value)
