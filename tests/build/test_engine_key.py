"""The engine cache key covers what changes an engine: the graph, every range, the weights, the
settings (flexrt's and the process's Inductor config) and the versions (Torch-TensorRT once shipped
a cache that ignored ranges, its #3148)."""

from __future__ import annotations

import pytest
import torch

import flexrt
from flexrt.build.inductor import SymbolRange, engine_key, export_segment, segment_key
from flexrt.settings import build_settings


class _Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


def _segment(model: torch.nn.Module) -> tuple[torch.fx.GraphModule, object]:
    gm = torch.export.export(model, (torch.randn(4, 8),), dynamic_shapes=({0: torch.export.Dim("b", min=1, max=64)},)).module()
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    return gm, placeholder.meta["val"].shape[0].node.expr


def _key(model: torch.nn.Module, lo: int, hi: int, **options: object) -> str:
    gm, symbol = _segment(model)
    ep = export_segment(gm, [torch.randn(4, 8)], {symbol: SymbolRange(lo, 4, hi)})
    return engine_key(ep, build_settings({"device": "cpu", **options}))


def _segment_key(model: torch.nn.Module, lo: int, hi: int, **options: object) -> str:
    """The key that lets a cached engine skip its segment's export."""
    gm, symbol = _segment(model)
    return segment_key(gm, [torch.randn(4, 8)], {symbol: SymbolRange(lo, 4, hi)}, False,
                       build_settings({"device": "cpu", **options}))


@pytest.mark.parametrize("key", [_key, _segment_key], ids=["engine", "segment"])
def test_same_model_range_and_settings_give_the_same_key(key):
    torch.manual_seed(0)
    model = _Mlp()
    assert key(model, 1, 16) == key(model, 1, 16)


@pytest.mark.parametrize("key", [_key, _segment_key], ids=["engine", "segment"])
def test_ranges_weights_and_settings_each_change_the_key(key):
    torch.manual_seed(0)
    model = _Mlp()
    base = key(model, 1, 16)
    assert key(model, 1, 32) != base  # another max
    assert key(model, 2, 16) != base  # another min
    assert key(model, 1, 16, optimization_level=4) != base
    assert key(model, 1, 16, _disabled_passes={"merge_common_subexpressions"}) != base
    other = _Mlp()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        other.fc.weight[0, 0] += 1.0
    assert key(other, 1, 16) != base  # one weight changed


@pytest.mark.parametrize("key", [_key, _segment_key], ids=["engine", "segment"])
def test_the_process_inductor_config_changes_the_key(key):
    """A user's own `torch._inductor.config` change builds another engine: a cached one made under
    other Inductor settings is not returned for it."""
    torch.manual_seed(0)
    model = _Mlp()
    base = key(model, 1, 16)
    with torch._inductor.config.patch({"aot_inductor.compile_wrapper_opt_level": "O0"}):
        assert key(model, 1, 16) != base
    with torch._inductor.config.patch({"max_autotune_gemm": True}):
        assert key(model, 1, 16) != base
    assert key(model, 1, 16) == base  # and back
    with torch._inductor.config.patch({"compile_threads": 1}):  # how fast it builds, not what
        assert key(model, 1, 16) == base


@pytest.mark.slow
def test_a_build_leaves_the_key_as_it_was():
    """Inductor writes into its own config during a build (`aot_inductor.metadata`): the same
    model compiled again in the same process still finds its engine."""
    from flexrt.build import cache as engine_cache

    torch.manual_seed(0)
    model = _Mlp().eval()
    before = _key(model, 1, 16)
    spec = flexrt.Input(min_shape=(1, 8), opt_shape=(4, 8), max_shape=(16, 8))
    flexrt.compile(model, ir="dynamo", inputs=[spec])
    assert _key(model, 1, 16) == before
    misses = engine_cache.stats()["misses"]
    flexrt.compile(model, ir="dynamo", inputs=[spec])
    assert engine_cache.stats()["misses"] == misses


_WARM = """
import logging, sys, torch, flexrt
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)).eval()
spec = flexrt.Input(min_shape=(1, 8), opt_shape=(4, 8), max_shape=(16, 8))
compiled = flexrt.compile(model, ir="dynamo", inputs=[spec], cache_dir=sys.argv[1])
for b in (1, 5, 16):
    x = torch.randn(b, 8)
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
print("matched")
"""


def test_second_compile_in_a_new_process_skips_export_and_build(tmp_path):
    """#19: with a warm engine cache, a new process's compile re-exported every segment only to hash
    it; the segment's own key now finds the engine first (when the module cache does not: its entry
    is removed here, see tests/compiler/test_module_cache.py for the entry itself)."""
    import subprocess
    import sys

    def run() -> str:
        r = subprocess.run([sys.executable, "-c", _WARM, str(tmp_path)], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0 and "matched" in r.stdout, r.stderr[-3000:]
        return r.stdout

    first = run()
    assert "no re-export" not in first and "export segment 0" in first
    for entry in tmp_path.glob("module-*.engine"):
        entry.unlink()
    second = run()
    assert "no re-export" in second and "export segment 0" not in second, second[-3000:]
