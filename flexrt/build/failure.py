"""A build failure in flexrt's words: which op of the model, at which line, and what to do.

Inductor names the op it could not lower or compile (`target: aten.foo.default`) but not where it
came from; the exported segment's nodes carry the user's stack trace. So the error names the op,
the model's source line of its first node, and the workaround: run that op in PyTorch
(`torch_executed_ops`), or a narrower range / profiles when the failure is about sizes.
"""

from __future__ import annotations

import re

import torch

from flexrt.trace.guards import source_line

_TARGET = re.compile(r"target: ([\w.]+)")
_OP = re.compile(r"\b(aten\.\w+(?:\.\w+)?)\b")


def failing_op(e: BaseException, graph: torch.fx.Graph) -> tuple[str, str] | None:
    """(op name, source line) of the op the error is about, when the message names one the program has."""
    message = str(e)
    names = _TARGET.findall(message) or _OP.findall(message)
    by_op: dict[str, torch.fx.Node] = {}
    for node in graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            by_op.setdefault(str(node.target), node)
            by_op.setdefault(str(node.target).rsplit(".", 1)[0], node)
    for name in names:
        node = by_op.get(name) or by_op.get(f"aten.{name}")
        if node is not None:
            return str(node.target), source_line(node)
    return None


def describe_build_failure(stage: str, e: BaseException, graph: torch.fx.Graph, label: str) -> str:
    first = str(e).strip().splitlines()[0][:600] if str(e).strip() else ""
    found = failing_op(e, graph)
    if found is None:
        return (
            f"build: {stage} failed on {label}: {type(e).__name__}: {first}\n"
            "Workarounds: run the op named above in PyTorch with torch_executed_ops={...}, compile a narrower "
            "range or several profiles, or pass on_build_failure='eager' with ir='torch_compile'."
        )
    op, where = found
    return (
        f"build: {stage} failed on {label} at op {op} (model source: {where}): {type(e).__name__}: {first}\n"
        f"Workaround: run it in PyTorch with torch_executed_ops={{{op!r}}}; if the failure is about sizes, "
        "compile a narrower range or several profiles."
    )
