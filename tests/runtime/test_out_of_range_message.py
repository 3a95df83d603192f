"""The out-of-range error names, for each profile, the dim that rules that profile out (issue #20, 8)."""

from __future__ import annotations

import torch

from flexrt.ir import TensorSpec
from flexrt.runtime.shapes import ShapeChecker
from flexrt.spec import Profile


def test_each_profile_is_blamed_on_its_own_first_misfit():
    spec = TensorSpec("x", torch.float32, ("s0", "s1", 16))
    profiles = [
        Profile().add("x", min=(1, 1, 16), opt=(1, 4, 16), max=(1, 8, 16)),
        Profile().add("x", min=(2, 1, 16), opt=(4, 8, 16), max=(8, 32, 16)),
        Profile().add("x", min=(16, 8, 16), opt=(16, 16, 16), max=(32, 64, 16)),
    ]
    checker = ShapeChecker([spec], profiles, torch.device("cpu"))
    shapes = [(20, 4, 16)]
    assert checker.choose(shapes, 0) is None
    message = str(checker.out_of_range(shapes))
    assert "input 'x' dim 0 = 20 (profile 0 allows [1, 1]" in message
    assert "input 'x' dim 0 = 20 (profile 1 allows [2, 8]" in message
    assert "input 'x' dim 1 = 4 (profile 2 allows [8, 64]" in message
    assert "profile 2 allows [16, 32]" not in message  # dim 0 = 20 fits profile 2: never blamed on it
