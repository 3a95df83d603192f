"""#19: a warm engine cache makes a new compile of an unchanged module skip the trace (the module
cache), and anything that could change the engine makes it trace again."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

import pytest
import torch

import flexrt
from flexrt.compiler import module_cache
from flexrt.compiler.fingerprint import module_key
from flexrt.settings import parse_options
from flexrt.trace import normalize_inputs

SPEC = flexrt.Input(min_shape=(1, 8), opt_shape=(4, 8), max_shape=(16, 8))
HIT = "reused from the module cache"


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(8, 16)
        self.b = torch.nn.Linear(16, 4)
        self.scale = 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x))) * self.scale


def _key(model: torch.nn.Module, spec: flexrt.Input = SPEC, **options) -> str | None:
    settings, _ = parse_options({"cache_dir": "/unused", **options}, device=torch.device("cpu"))
    return module_key(model, normalize_inputs(model.forward, [spec]), None, settings)


def _check(compiled, model, batches=(1, 3, 4, 11, 16)) -> None:
    for b in batches:
        x = torch.randn(b, 8)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A model compiled once into its own cache directory."""
    torch.manual_seed(0)
    model = _Net().eval()
    cache_dir = str(tmp_path_factory.mktemp("module_cache"))
    flexrt.compile(model, ir="dynamo", inputs=[SPEC], cache_dir=cache_dir)
    return model, cache_dir


def test_second_compile_reuses_the_module_without_tracing(warm, caplog):
    model, cache_dir = warm
    with caplog.at_level(logging.INFO, logger="flexrt"):
        compiled = flexrt.compile(model, ir="dynamo", inputs=[SPEC], cache_dir=cache_dir, on_out_of_range="eager")
    assert HIT in caplog.text
    assert compiled.fallback._traced is None  # nothing traced yet
    _check(compiled, model)
    x = torch.randn(20, 8)  # outside the range: the deferred fallback traces now
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
    assert compiled.fallback._traced is not None


def test_what_changes_the_engine_changes_the_key():
    torch.manual_seed(0)
    model = _Net().eval()
    base = _key(model)
    assert base is not None and base == _key(model)
    assert _key(model, flexrt.Input(min_shape=(1, 8), opt_shape=(4, 8), max_shape=(32, 8))) != base
    assert _key(model, enabled_precisions={torch.float16}) != base
    assert _key(model, cache_dir="/elsewhere") == base  # where the cache is does not change an engine
    model.scale = 0.25
    assert _key(model) != base
    model.scale = 0.5
    assert _key(model) == base
    kept = model.b.weight[0, 0].item()
    with torch.no_grad():
        model.b.weight[0, 0] = kept + 1.0
    assert _key(model) != base
    with torch.no_grad():
        model.b.weight[0, 0] = kept
    handle = model.a.register_forward_hook(lambda m, i, o: o * 2)
    assert _key(model) != base
    handle.remove()
    model.train()
    assert _key(model) != base
    model.eval()
    assert _key(model) == base
    model.anchors = [torch.ones(3), torch.zeros(2)]  # tensors held in a plain list: their values count
    with_anchors = _key(model)
    model.anchors[0][1] = 5.0
    assert _key(model) not in (base, with_anchors)
    del model.anchors
    assert _key(model) == base
    import torch._inductor.config as inductor_config

    with inductor_config.patch(max_autotune=True):  # a user's Inductor setting shapes the engine
        assert _key(model) != base
    assert _key(model) == base  # and a setting patched back (by value) does not


def test_a_method_patched_in_this_process_changes_the_key(monkeypatch):
    model = _Net().eval()
    base = _key(model)
    monkeypatch.setattr(_Net, "forward", lambda self, x: self.b(torch.tanh(self.a(x))))
    assert _key(model) != base


def test_an_attribute_it_cannot_describe_leaves_the_cache_out(caplog):
    model = _Net().eval()
    model.lock = threading.Lock()
    with caplog.at_level(logging.DEBUG, logger="flexrt.compiler.fingerprint"):
        assert _key(model) is None
    assert "_thread.lock" in caplog.text
    model = _Net().eval()
    model.helpers = [torch.nn.Linear(4, 4)]  # a module whose weights are no parameter of the model
    assert _key(model) is None
    model.helpers = [model.a]  # one of its own, registered: described by the tree walk
    assert _key(model) is not None


def test_a_changed_source_file_a_damaged_entry_or_a_lost_engine_is_a_miss(warm, tmp_path, caplog):
    model, cache_dir = warm
    key = _key(model, cache_dir=cache_dir)
    settings, _ = parse_options({"cache_dir": cache_dir}, device=torch.device("cpu"))
    assert module_cache.lookup(key, settings) is not None
    # an entry whose recorded files include one that then changes
    source = tmp_path / "helper.py"
    source.write_text("X = 1\n")
    state = module_cache.lookup(key, settings)
    files = [module_cache.SourceFile(module="not_loaded_helper", path=str(source), size=6,
                                     mtime_ns=os.stat(source).st_mtime_ns)]
    other = key + "-test"
    module_cache.store(other, state, files, settings)
    assert module_cache.lookup(other, settings) is not None
    source.write_text("X = 22\n")
    with caplog.at_level(logging.INFO, logger="flexrt"):
        assert module_cache.lookup(other, settings) is None
    assert "helper.py changed" in caplog.text
    # a damaged entry: refused by its checksum, the compile goes on
    path = os.path.join(cache_dir, other + ".engine")
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    assert module_cache.lookup(other, settings) is None
    # an engine gone from the cache: a miss, not an error
    module_cache.store(other, state, [], settings)
    engine_key = next(s.engine.key for p in state.programs for s in p.segments if s.kind == "engine")
    os.rename(os.path.join(cache_dir, engine_key + ".engine"), os.path.join(cache_dir, engine_key + ".moved"))
    from flexrt.build import cache

    cache._memory.pop(engine_key, None)
    try:
        assert module_cache.lookup(other, settings) is None
    finally:
        os.rename(os.path.join(cache_dir, engine_key + ".moved"), os.path.join(cache_dir, engine_key + ".engine"))


_SCRIPT = """
import logging, sys, torch, flexrt
sys.path.insert(0, sys.argv[2])
from netdef import Net
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s")
torch.manual_seed(0)
device = sys.argv[3]
model = Net().eval().to(device)
compiled = flexrt.compile(model, ir="dynamo", inputs=[flexrt.Input(min_shape=(1, 8), opt_shape=(4, 8), max_shape=(16, 8))],
                          cache_dir=sys.argv[1], disable_tf32=True)
print("sympy imported:", "sympy" in sys.modules)  # a warm compile imports neither the tracer nor the builder
for b in (1, 3, 4, 11, 16, 11):  # 11 twice: a CUDA graph replay on the GPU
    x = torch.randn(b, 8, device=device)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
print("matched")
"""

_NET = """
import torch

import acts


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(8, 16)
        self.b = torch.nn.Linear(16, 4)

    def forward(self, x):
        return self.b(acts.act(self.a(x)))
"""

_ACTS = """
import torch


def act(x):
    return torch.{act}(x)
"""


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_a_new_process_reuses_the_module_until_its_source_changes(tmp_path, device):
    code = tmp_path / "code"
    code.mkdir()
    (code / "netdef.py").write_text(_NET)
    (code / "acts.py").write_text(_ACTS.format(act="relu"))
    cache_dir = tmp_path / "cache"

    def run() -> str:
        r = subprocess.run([sys.executable, "-c", _SCRIPT, str(cache_dir), str(code), device], capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0 and "matched" in r.stdout, r.stdout[-2000:] + r.stderr[-3000:]
        return r.stdout

    assert HIT not in run()
    warm = run()
    assert HIT in warm and "sympy imported: False" in warm, warm[-2000:]
    # a helper in a file of its own (not in the key: only the recorded files see it) changes
    (code / "acts.py").write_text(_ACTS.format(act="tanh"))
    out = run()
    assert HIT not in out and "acts.py changed" in out, out[-2000:]
    assert HIT in run()


_KEY_SCRIPT = """
import sys, torch, flexrt
sys.path.insert(0, sys.argv[1])
from netdef import Net
from flexrt.compiler.fingerprint import module_key
from flexrt.settings import parse_options
from flexrt.trace import normalize_inputs
torch.manual_seed(0)
model = Net().eval()
model.modes = {"fast", "exact", "tiled", "wide"}
model.table = {"b": frozenset({"x", "y", "z"}), "a": 1}
settings, _ = parse_options({"cache_dir": "/unused"}, device=torch.device("cpu"))
spec = flexrt.Input(min_shape=(1, 8), opt_shape=(4, 8), max_shape=(16, 8))
print(module_key(model, normalize_inputs(model.forward, [spec]), None, settings))
"""

_NET_WITH_SETS = """
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(8, 4)
        self.mode = "fast"

    def forward(self, x):
        if self.mode in {"fast", "exact", "tiled", "wide", "narrow"}:
            return torch.relu(self.a(x))
        return self.a(x)
"""


def test_the_key_is_the_same_in_every_process(tmp_path):
    """String hashing is seeded per process: set constants in code and set attributes must not move
    the key (ResNet-50 and ViT missed the module cache on the H200 before their code's frozensets
    were described in order)."""
    (tmp_path / "netdef.py").write_text(_NET_WITH_SETS)
    keys = set()
    for seed in ("1", "2", "3"):
        r = subprocess.run([sys.executable, "-c", _KEY_SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONHASHSEED": seed})
        assert r.returncode == 0, r.stderr[-3000:]
        keys.add(r.stdout.strip().splitlines()[-1])
    assert len(keys) == 1 and next(iter(keys)).startswith("module-"), keys


def test_cached_engines_this_process_cannot_load_are_built_again(warm, monkeypatch, caplog):
    """Nothing lost: a hit whose engines fail to load (here: made to) compiles as usual."""
    import flexrt.compiler.api as api
    from flexrt.errors import ArtifactError

    model, cache_dir = warm
    real, failed = api.Engine, []

    def engine(state, runtime):
        if not failed:
            failed.append(True)
            raise ArtifactError("made to fail")
        return real(state, runtime)

    monkeypatch.setattr(api, "Engine", engine)
    with caplog.at_level(logging.WARNING, logger="flexrt"):
        compiled = flexrt.compile(model, ir="dynamo", inputs=[SPEC], cache_dir=cache_dir)
    assert failed and "made to fail" in caplog.text and compiled.fallback._traced is not None
    _check(compiled, model)
