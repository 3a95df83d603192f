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
    gm.recompile()
    return converted


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
