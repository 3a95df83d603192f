"""TF32 for float32 engines on CUDA: on by default (as TensorRT), off with `disable_tf32=True`."""

from __future__ import annotations

import pytest
import torch
from helpers import rel_err

import flexrt
from flexrt.errors import InputSpecError
from flexrt.settings import CompileSettings, build_settings
from flexrt.tf32 import TF32_TOLERANCE, in_effect, tf32_policy


def _flags() -> tuple[bool, bool]:
    return torch._C._get_cublas_allow_tf32(), torch._C._get_cudnn_allow_tf32()


def test_setting_defaults_round_trips_and_rejects_non_bool() -> None:
    cpu = torch.device("cpu")
    assert build_settings({}, cpu).disable_tf32 is False
    s = build_settings({"disable_tf32": True}, cpu)
    assert CompileSettings.from_description(s.describe(), cpu).disable_tf32 is True
    old = {k: v for k, v in s.describe().items() if k != "disable_tf32"}  # an artifact from before the option
    assert CompileSettings.from_description(old, cpu).disable_tf32 is False
    with pytest.raises(InputSpecError, match="disable_tf32 must be True or False, got 'yes'"):
        build_settings({"disable_tf32": "yes"}, cpu)


@pytest.mark.parametrize("allow", [True, False])
def test_policy_is_set_inside_and_restored_after_errors(allow: bool) -> None:
    before = _flags()
    try:
        torch._C._set_cublas_allow_tf32(not allow)
        torch._C._set_cudnn_allow_tf32(not allow)
        with pytest.raises(RuntimeError, match="boom"), tf32_policy(allow):
            assert _flags() == (allow, allow) and in_effect(allow)
            raise RuntimeError("boom")
        assert _flags() == (not allow, not allow) and not in_effect(allow)
    finally:
        torch._C._set_cublas_allow_tf32(before[0])
        torch._C._set_cudnn_allow_tf32(before[1])


class _Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(1024, 1024)
        self.b = torch.nn.Linear(1024, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


@pytest.mark.cuda
def test_float32_engine_uses_tf32_unless_disabled() -> None:
    """The default engine's error against strict float32 eager is TF32's (so TF32 ran); with
    `disable_tf32=True` it is float32's. Plain runs and CUDA-graph replays alike; the caller's flags
    are left as they were."""
    model = _Mlp().cuda().eval()
    spec = flexrt.Input(min_shape=(1, 1024), opt_shape=(64, 1024), max_shape=(256, 1024))
    with tf32_policy(False):  # eager reference in strict float32 (PyTorch's default for matmuls)
        fast = flexrt.compile(model, inputs=[spec])
        strict = flexrt.compile(model, inputs=[spec], disable_tf32=True)
        for batch in (1, 64, 100, 256):
            x = torch.randn(batch, 1024, device="cuda")
            with torch.no_grad():
                ref = model(x)
                for _ in range(3):  # plain run, capture, replay
                    fast_err, strict_err = rel_err(fast(x), ref), rel_err(strict(x), ref)
                    assert fast_err < TF32_TOLERANCE, f"batch {batch}: TF32 engine error {fast_err:.1e}"
                    # batch 1 is a matrix-vector product, which cuBLAS runs without tensor cores
                    assert batch == 1 or fast_err > 2e-5, f"batch {batch}: TF32 engine error {fast_err:.1e}: no TF32?"
                    assert strict_err < 2e-5, f"batch {batch}: strict engine error {strict_err:.1e}"
                    assert _flags() == (False, False)


def test_policies_from_two_threads_take_turns_and_leave_the_flags_as_they_were() -> None:
    """Interleaved, thread B saved A's setting as its "before", A restored the original, and B's
    restore then left the process with A's policy."""
    import threading

    before = _flags()
    entered, release, b_inside = threading.Event(), threading.Event(), threading.Event()
    seen_by_b: list[tuple[bool, bool]] = []

    def a() -> None:
        with tf32_policy(not before[0]):
            entered.set()
            release.wait(10)

    def b() -> None:
        entered.wait(10)
        with tf32_policy(before[0]):
            b_inside.set()
            seen_by_b.append(_flags())

    ta, tb = threading.Thread(target=a), threading.Thread(target=b)
    ta.start()
    tb.start()
    assert entered.wait(10)
    assert not b_inside.wait(0.3), "a second thread changed the policy while the first held it"
    release.set()
    ta.join(10)
    tb.join(10)
    assert not ta.is_alive() and not tb.is_alive()
    assert seen_by_b == [(before[0], before[0])]
    assert _flags() == before
