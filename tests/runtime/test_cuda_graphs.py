"""CUDA graphs on the GPU: correct against eager, outputs never aliased, memory bounded."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import assert_matches, sweep

import flexrt
from flexrt.runtime import graph_inputs
from flexrt.runtime.cuda_graphs import CudaGraphCache
from flexrt.runtime.graph_writes import overlaps

pytestmark = pytest.mark.cuda


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64)).eval().cuda()


SPEC = flexrt.Input(min_shape=(1, 64), opt_shape=(8, 64), max_shape=(64, 64), name="x")


@pytest.fixture(scope="module")
def compiled():
    model = _model()
    return model, flexrt.compile(model, inputs=[SPEC], cuda_graph_cache_size=4)


def test_graphs_are_captured_and_replayed_correctly(compiled):
    model, m = compiled
    graphs = m.contexts[0].graphs
    assert graphs is not None
    x = torch.randn(5, 64, device="cuda")
    with torch.no_grad():
        for _ in range(3):  # first call captures, later calls replay
            assert_matches(m(x), model(x))
            x = torch.randn(5, 64, device="cuda")
    assert graphs.captures >= 1
    sweep(m, model, [SPEC], device="cuda")


def test_replays_survive_cublas_workspaces_being_cleared():
    """torch.compile's CUDA-graph trees clear cuBLAS's workspaces at every capture. A graph that kept
    the workspace the warm-up run had allocated outside its pool then wrote to freed memory: here, to
    the filler tensors allocated after the clear (in the zoo: `unspecified launch failure`)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(512, 2048, bias=False), torch.nn.Linear(2048, 512, bias=False)).eval().cuda()
    m = flexrt.compile(model, inputs=[flexrt.Input(min_shape=(1, 512), opt_shape=(64, 512), max_shape=(256, 512))])
    x = torch.randn(256, 512, device="cuda")
    with torch.no_grad():
        for _ in range(2):  # a plain run, then the capture
            m(x)
        torch._C._cuda_clearCublasWorkspaces()
        torch.cuda.empty_cache()
        filler = [torch.full((256, 1024), 7.0, device="cuda") for _ in range(256)]  # 256 MiB over the freed memory
        for _ in range(3):
            x = torch.randn(256, 512, device="cuda")
            assert_matches(m(x), model(x))
        torch.cuda.synchronize()
    assert all(bool((f == 7.0).all()) for f in filler), "a replay wrote into memory it does not own"


def test_outputs_are_never_overwritten_by_a_later_call(compiled):
    model, m = compiled
    graphs = m.contexts[0].graphs
    xs = [torch.randn(7, 64, device="cuda") for _ in range(5)]
    with torch.no_grad():
        m(xs[0])  # first call of the shape: plain run, then capture
        held = [m(x) for x in xs]  # all kept alive: one slot each for two, then plain runs
        torch.cuda.synchronize()
        for x, out in zip(xs, held):
            assert_matches(out, model(x))
        assert len({o.data_ptr() for o in held}) == len(held)
        assert graphs.plain_runs >= 3
        plain = graphs.plain_runs
        del held
        y = None
        for _ in range(10):  # the usual loop: the previous y is alive during the call, then dropped
            x = torch.randn(7, 64, device="cuda")
            y = m(x)
            assert_matches(y, model(x))
        assert graphs.plain_runs == plain  # alternated between the two slots, no plain runs
        x = torch.randn(7, 64, device="cuda")
        part = m(x)[2:4]  # only a view of an output survives: its slot must not be replayed
        expected = model(x)[2:4]
        for _ in range(4):
            m(torch.randn(7, 64, device="cuda"))
        assert_matches(part, expected)


def test_a_held_output_survives_replays_of_graphs_captured_before_it(compiled):
    """All graphs of a context share one memory pool, and a graph's intermediates are freed back
    into it after capture: a graph captured later may get those blocks. Its outputs must not, or
    replaying the earlier graph would overwrite an output the caller still holds."""
    model, m = compiled
    sizes = (40, 11, 2)  # largest first: the smaller outputs fit where the larger intermediates were
    with flexrt.Runner(m.engine, profile=0) as r, torch.no_grad():  # a fresh context: an empty pool
        for b in sizes:
            for _ in range(2):  # a plain run, then the capture
                r.infer({"x": torch.randn(b, 64, device="cuda")})
        held = []
        for b in sizes[1:]:
            x = torch.randn(b, 64, device="cuda")
            held.append((r.infer({"x": x})["output"], model(x)))
        for b in sizes:  # replays every graph while the outputs of the later ones are held
            r.infer({"x": torch.randn(b, 64, device="cuda")})
        torch.cuda.synchronize()
        for out, expected in held:
            assert_matches(out, expected)
        slots = {b: r.context.graphs.entries[(torch.Size([b, 64]),)][0] for b in sizes}
    assert not slots[40].copies_out  # the first graph in an empty pool: nothing earlier to overlap
    # a graph leaves its outputs in the pool only where no graph captured before it writes
    for b, before in ((11, [40]), (2, [40, 11])):
        assert slots[b].writes is not None  # the allocator's history was recorded around the capture
        if not slots[b].copies_out:
            assert not overlaps(slots[b].tensors, [w for e in before for w in slots[e].writes or []]), b


def _big_then_small(inputs):
    """Shape (1024, 256): a 64 MB intermediate freed inside the graph, a small output; any other shape:
    one output allocated once (in place after), which lands on the pool's largest free block."""
    (x,) = inputs
    if x.shape[0] == 1024:
        t = x.repeat(64, 1) * 3
        return [t.sum(0, keepdim=True)]
    out = x * 2
    return [out.add_(1)]


def test_an_output_on_a_block_an_earlier_graph_writes_is_copied_out():
    """A graph captured second whose output lands on the first graph's freed intermediate must copy it
    out of the pool: the first graph's replays write that block, and a held output would change."""
    cache = CudaGraphCache(_big_then_small, torch.device("cuda"), capacity=4)
    a, b = torch.randn(1024, 256, device="cuda"), torch.randn(65536, 256, device="cuda")
    for _ in range(2):  # a plain run, then the capture
        cache.run([a])
    for _ in range(2):
        cache.run([b])
    slot_a, slot_b = cache.entries[(a.shape,)][0], cache.entries[(b.shape,)][0]
    assert slot_a.writes and slot_b.copies_out, (slot_a.writes, slot_b.copies_out)
    b2 = torch.randn(65536, 256, device="cuda")
    held = cache.run([b2])[0]
    cache.run([torch.randn(1024, 256, device="cuda")])  # replays the first graph: writes its intermediates
    torch.cuda.synchronize()
    torch.testing.assert_close(held, b2 * 2 + 1)


def test_a_model_without_matrix_products_is_captured_in_a_fresh_process():
    """A capture fetches cuBLAS's handle to place its workspace in the pool; in a process (thread) where
    nothing created the handle yet, creating it inside the capture failed the capture, and the
    context ran without graphs. A fresh process, so no earlier test created it."""
    script = textwrap.dedent("""
        import torch
        from flexrt.runtime.cuda_graphs import CudaGraphCache
        cache = CudaGraphCache(lambda inputs: [inputs[0] * 2 + 1], torch.device("cuda"), capacity=2)
        for _ in range(4):
            x = torch.randn(8, 256, device="cuda")
            torch.testing.assert_close(cache.run([x])[0], x * 2 + 1)
        print("disabled", cache.disabled, "captures", cache.captures)
    """)
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "disabled False captures" in done.stdout and "captures 0" not in done.stdout, done.stdout + done.stderr[-2000:]


def test_a_users_memory_history_is_left_alone():
    """A capture while the user records the allocator's history neither stops nor clears it; the
    capture then checks its outputs conservatively (no blocks known)."""
    torch.cuda.memory._record_memory_history(enabled="all", context=None, stacks="python")
    try:
        marker = torch.empty(1000, device="cuda")
        cache = CudaGraphCache(_big_then_small, torch.device("cuda"), capacity=4)
        x = torch.randn(8, 256, device="cuda")
        for _ in range(3):
            torch.testing.assert_close(cache.run([x])[0], x * 2 + 1)
        assert torch._C._cuda_isHistoryEnabled()
        assert all(s.writes is None for s in cache.entries[(x.shape,)])
        trace = torch.cuda.memory._snapshot()["device_traces"][torch.cuda.current_device()]
        assert any(e["action"] == "alloc" and e["addr"] == marker.data_ptr() for e in trace)  # not cleared
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    cache = CudaGraphCache(_big_then_small, torch.device("cuda"), capacity=4)
    for _ in range(2):
        cache.run([x])
    assert cache.entries[(x.shape,)][0].writes is not None  # recorded, and switched off again after
    assert not torch._C._cuda_isHistoryEnabled()


def test_outputs_stay_in_the_pool_where_no_earlier_graph_writes():
    """The seed model's case: outputs three times the input, shapes captured smallest first. Copying
    outputs out whenever they landed on any memory the pool had (each capture's cuBLAS workspace
    among it) cost a 29 MB copy per call at batch 16 on the H200; with each graph's written blocks
    known and the workspace shared, the middle shapes keep their outputs in the pool, and outputs
    held across every other shape's replays keep their values."""
    torch.manual_seed(0)
    model = torch.nn.Linear(256, 768).eval().cuda()
    m = flexrt.compile(model, inputs=[flexrt.Input(min_shape=(1, 50, 256), opt_shape=(8, 50, 256), max_shape=(32, 50, 256))])
    sizes = (1, 3, 8, 16, 32)
    with torch.no_grad():
        for b in sizes:
            y = None
            for _ in range(4):  # a plain run, a capture, then the loop's second slot
                y = m(torch.randn(b, 50, 256, device="cuda"))
        del y
        graphs = m.contexts[0].graphs
        copied = {key[0][0]: [s.copies_out for s in slots] for key, slots in graphs.entries.items()}
        assert not any(copied[8] + copied[16]), copied
        held = [(m(x), model(x)) for x in (torch.randn(b, 50, 256, device="cuda") for b in (3, 8, 16))]
        for _ in range(2):
            for b in sizes:
                m(torch.randn(b, 50, 256, device="cuda"))
        torch.cuda.synchronize()
        for out, expected in held:
            assert_matches(out, expected)


def test_each_replay_reads_the_callers_tensor_through_re_pointed_input_copies(compiled):
    """The graph's input copy is re-pointed at the caller's tensor before each replay
    (`graph_inputs`): a replay must read the tensor of this call, also after it changed in place,
    also when it is a non-contiguous view, never the one the graph was captured with."""
    model, m = compiled
    graphs = m.contexts[0].graphs
    with torch.no_grad():
        x = torch.randn(9, 64, device="cuda")
        m(x)
        m(x)  # captured with x as the copy's source
        slot = graphs.entries[(torch.Size([9, 64]),)][0]
        assert isinstance(slot.feed, graph_inputs.InputCopies)  # the GPU image has the runtime graph API
        for _ in range(3):
            y = torch.randn(9, 64, device="cuda")
            assert_matches(m(y), model(y))
        x.normal_()  # the capture-time tensor changes in place: read now, not a stale copy
        assert_matches(m(x), model(x))
        wide = torch.randn(9, 128, device="cuda")
        view = wide[:, ::2]  # same shape, not contiguous
        assert not view.is_contiguous()
        assert_matches(m(view), model(view))
        captures = graphs.captures
        for _ in range(4):
            z = torch.randn(9, 64, device="cuda")
            assert_matches(m(z), model(z))
        assert graphs.captures == captures  # all of them replays


def test_re_pointed_inputs_of_a_two_input_engine():
    class Two(torch.nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.relu(a @ b.t()) + a.sum(-1, keepdim=True)

    specs = [flexrt.Input(min_shape=(1, 32), opt_shape=(4, 32), max_shape=(16, 32), name="a"),
             flexrt.Input(min_shape=(1, 32), opt_shape=(4, 32), max_shape=(16, 32), name="b")]
    model = Two().eval().cuda()
    m = flexrt.compile(model, inputs=specs)
    with torch.no_grad():
        for n, k in [(3, 5), (3, 5), (3, 5), (16, 1), (16, 1), (16, 1)]:
            a, b = torch.randn(n, 32, device="cuda"), torch.randn(k, 32, device="cuda")
            assert_matches(m(a, b), model(a, b))
        slot = m.contexts[0].graphs.entries[(torch.Size([16, 32]), torch.Size([1, 32]))][0]
        assert isinstance(slot.feed, graph_inputs.InputCopies)
        assert len(slot.feed.nodes) == 2
        for _ in range(4):  # both inputs strided views of one size (plain run, capture, replays):
            wide = torch.randn(2, 8, 64, device="cuda")  # each gets its own contiguous copy
            a, b = wide[0, :, ::2], wide[1, :, 1::2]
            assert_matches(m(a, b), model(a, b))
    sweep(m, model, specs, device="cuda")


def test_zero_copy_runner_hands_out_the_static_buffers(compiled):
    model, m = compiled
    with flexrt.Runner(m.engine, profile=0, zero_copy_outputs=True) as r:
        x = torch.randn(3, 64, device="cuda")
        r.infer({"x": x})  # capture
        a = r.infer({"x": x})["output"]
        x3 = torch.randn(3, 64, device="cuda")
        b = r.infer({"x": x3})["output"]
        assert a.data_ptr() == b.data_ptr()  # documented: zero-copy outputs are reused
        with torch.no_grad():
            assert_matches(b, model(x3))


def test_graph_cache_and_memory_stay_bounded(compiled):
    model, m = compiled
    graphs = m.contexts[0].graphs
    with torch.no_grad():
        for b in range(1, 13):
            m(torch.randn(b, 64, device="cuda"))
            m(torch.randn(b, 64, device="cuda"))
        torch.cuda.synchronize()
        first = torch.cuda.memory_allocated()
        for b in range(13, 65):
            x = torch.randn(b, 64, device="cuda")
            m(x)
            out = m(x)
            assert_matches(out, model(x))
        torch.cuda.synchronize()
        later = torch.cuda.memory_allocated()
    assert len(graphs) <= 4
    assert later - first < 64 * 1024 * 1024, (first, later)


def test_fp16_engine_on_the_gpu():
    model = _model()
    m = flexrt.compile(model, inputs=[SPEC], enabled_precisions={torch.float16})
    sweep(m, model, [SPEC], device="cuda", precision=torch.float16)
