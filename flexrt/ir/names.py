"""Output names from the model's own output structure, so runners and ONNX files name them alike.

A model returning a dict (or a HuggingFace `ModelOutput`) names its outputs by key, a named tuple by
field; positions are numbered (`output_0`, ...), and a single tensor is `output`. The names are
stored in the artifact, so changing this scheme never renames the outputs of a saved engine.
"""

from __future__ import annotations

import logging

import torch.utils._pytree as pytree

logger = logging.getLogger(__name__)


def _part(key: object) -> str:
    for attr in ("key", "name", "idx"):  # MappingKey, GetAttrKey, SequenceKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def output_names(out_spec: pytree.TreeSpec, n: int) -> list[str]:
    """Readable, unique names for the n flat outputs of `out_spec`."""
    tree = pytree.tree_unflatten(list(range(n)), out_spec)
    try:
        paths = [path for path, _ in pytree.tree_flatten_with_path(tree)[0]]
    except (ValueError, NotImplementedError) as e:  # a pytree node registered without keys
        logger.debug("output names: %s; numbering the outputs", e)
        return ["output"] if n == 1 and out_spec.is_leaf() else [f"output_{i}" for i in range(n)]
    names = []
    for path in paths:
        parts = [_part(k) for k in path]
        if not parts:
            names.append("output")
        elif hasattr(path[0], "idx"):
            names.append("_".join(["output", *parts]))
        else:
            names.append("_".join(parts))
    return _unique(names)


def _unique(names: list[str]) -> list[str]:
    """Suffix repeats (`{"a_0": x, "a": [y]}` flattens to two `a_0`), so no output hides another."""
    seen: set[str] = set()
    out = []
    for name in names:
        candidate, k = name, 1
        while candidate in seen or (candidate != name and candidate in names):
            candidate, k = f"{name}_{k}", k + 1
        seen.add(candidate)
        out.append(candidate)
    return out
