"""Property: every model of the grammar, compiled for random ranges, matches eager at random shapes
inside them (fresh random data, never zeros). Few models (a compile costs ~20 s), many shapes each."""

from __future__ import annotations

import torch
from grammar import GrammarModel, Recipe, recipes
from helpers import assert_matches
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flexrt

FUZZED = {"models": 0, "shapes": 0}


def _compile(recipe: Recipe) -> tuple[torch.nn.Module, torch.nn.Module]:
    model = GrammarModel(recipe).eval()
    (b0, b1, b2), (s0, s1, s2) = recipe.batch, recipe.seq
    spec = flexrt.Input(min_shape=(b0, s0, recipe.features), opt_shape=(b1, s1, recipe.features),
                        max_shape=(b2, s2, recipe.features), name="x")
    return model, flexrt.compile(model, arg_inputs=[spec], min_block_size=1)


@settings(max_examples=5, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(recipe=recipes(), data=st.data())
def test_grammar_models_match_eager_at_random_shapes(recipe, data):
    model, compiled = _compile(recipe)
    FUZZED["models"] += 1
    for _ in range(20):
        b = data.draw(st.integers(recipe.batch[0], recipe.batch[2]), label="batch")
        s = data.draw(st.integers(recipe.seq[0], recipe.seq[2]), label="seq")
        x = torch.randn(b, s, recipe.features) + 0.1  # fresh random data, never zeros
        with torch.no_grad():
            assert_matches(compiled(x), model(x))
        FUZZED["shapes"] += 1
    print(f"fuzzed so far: {FUZZED}")
