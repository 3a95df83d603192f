"""Output names come from the model's output structure and are unique (no compile needed)."""

from __future__ import annotations

import collections

import torch
import torch.utils._pytree as pytree

from flexrt.ir.names import output_names

Pair = collections.namedtuple("Pair", "logits hidden")


class Opaque:
    """A pytree node registered without keys (as some libraries do)."""

    def __init__(self, a: object, b: object) -> None:
        self.a, self.b = a, b


pytree.register_pytree_node(Opaque, lambda o: ([o.a, o.b], None), lambda leaves, _: Opaque(*leaves))


def names_of(tree: object) -> list[str]:
    leaves, spec = pytree.tree_flatten(tree)
    return output_names(spec, len(leaves))


def test_names_follow_the_structure():
    t = torch.zeros(1)
    assert names_of(t) == ["output"]
    assert names_of((t, t)) == ["output_0", "output_1"]
    assert names_of([t]) == ["output_0"]
    assert names_of({"Y": t, "aux": (t, t)}) == ["Y", "aux_0", "aux_1"]
    assert names_of(Pair(t, t)) == ["logits", "hidden"]
    assert names_of(({"x": t}, t)) == ["output_0_x", "output_1"]


def test_names_are_unique_and_survive_nodes_without_keys():
    t = torch.zeros(1)
    assert names_of({"a_0": t, "a": [t]}) == ["a_0", "a_0_1"]
    assert names_of(Opaque(t, t)) == ["output_0", "output_1"]
