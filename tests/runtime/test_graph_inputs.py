"""Re-pointing a graph's input copies (`flexrt.runtime.graph_inputs`), the parts a CPU can check:
which pointer each copy is given, and that copies made for non-contiguous inputs stay alive until
the replay that reads them has been enqueued. The GPU path itself is in test_cuda_graphs.py."""

from __future__ import annotations

import pytest
import torch

from flexrt.runtime import graph_inputs


def _feed(static: list[torch.Tensor], calls: list[tuple[int, int, int, int]]) -> graph_inputs.InputCopies:
    """An InputCopies with a stand-in for cudaGraphExecMemcpyNodeSetParams1D that records its calls."""

    def set_params(exec_: int, node: int, dst: int, src: int, nbytes: int, kind: int) -> int:
        calls.append((node, dst, src, nbytes))
        return 0

    return graph_inputs.InputCopies(None, 7, set_params, [100 + i for i in range(len(static))], static)


def test_each_input_copy_is_pointed_at_the_callers_tensor() -> None:
    static = [torch.empty(4, 8), torch.empty(2, 3)]
    calls: list[tuple[int, int, int, int]] = []
    feed = _feed(static, calls)
    a, b = torch.randn(4, 8), torch.randn(2, 3)
    feed([a, b])
    assert calls == [(100, static[0].data_ptr(), a.data_ptr(), 128), (101, static[1].data_ptr(), b.data_ptr(), 24)]
    assert feed.made == []  # contiguous inputs are read where they are


def test_contiguous_copies_of_strided_inputs_outlive_the_call() -> None:
    static = [torch.empty(4, 8), torch.empty(4, 8)]
    calls: list[tuple[int, int, int, int]] = []
    feed = _feed(static, calls)
    wide = torch.randn(2, 4, 16)
    feed([wide[0, :, ::2], wide[1, :, 1::2]])
    made = feed.made
    assert len(made) == 2 and all(t.is_contiguous() for t in made)
    assert [c[2] for c in calls] == [t.data_ptr() for t in made]  # the graph reads these, still alive
    assert made[0].data_ptr() != made[1].data_ptr()
    assert torch.equal(made[0], wide[0, :, ::2]) and torch.equal(made[1], wide[1, :, 1::2])
    feed([torch.randn(4, 8), torch.randn(4, 8)])
    assert feed.made == []  # dropped on the next call, once the replay that read them was enqueued


def test_a_cpu_build_of_torch_offers_no_re_pointing() -> None:
    if torch.version.cuda is not None:
        pytest.skip("a CUDA build of torch: the GPU path is tested in test_cuda_graphs.py")
    assert graph_inputs.cudart() is None
    assert not graph_inputs.supported()
