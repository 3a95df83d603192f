"""Compile options: Torch-TensorRT names, one frozen settings object, clear errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from flexrt.errors import InputSpecError
from flexrt.settings import CompileSettings, build_settings


def test_defaults_and_precisions():
    s = build_settings({}, device=torch.device("cpu"))
    assert s.enabled_precisions == frozenset({torch.float32}) and s.min_block_size == 5 and s.engine_dtype == torch.float32
    assert build_settings({"enabled_precisions": {torch.float32, torch.half}}).engine_dtype == torch.float16
    assert build_settings({"enabled_precisions": {"bf16"}}).engine_dtype == torch.bfloat16


def test_settings_are_frozen():
    s = build_settings({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.min_block_size = 3  # type: ignore[misc]
    assert s.replace(min_block_size=3).min_block_size == 3 and s.min_block_size == 5


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"min_blok_size": 3}, r"unknown compile option 'min_blok_size'; did you mean 'min_block_size'"),
        ({"enabled_precisions": {torch.int8}}, r"torch.int8 is not supported"),
        ({"min_block_size": 0}, r"min_block_size must be an integer >= 1"),
        ({"on_out_of_range": "ignore"}, r"on_out_of_range must be"),
        ({"device": "tpu"}, r"not supported|device"),
        ({"optimization_level": 9}, r"optimization_level must be"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(InputSpecError, match=match):
        build_settings(options)


def test_torch_executed_ops_normalised():
    s = build_settings({"torch_executed_ops": {torch.ops.aten.relu.default, "torch.ops.aten.sub.Tensor", "aten::mul"}})
    assert s.torch_executed_ops == frozenset({"aten.relu.default", "aten.sub.Tensor", "aten.mul"})


def test_tensorrt_only_options_warn_and_are_ignored(caplog):
    s = build_settings({"workspace_size": 1 << 20})
    assert isinstance(s, CompileSettings)
    assert "only applies to TensorRT" in caplog.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_cuda_device_without_cuda():
    with pytest.raises(InputSpecError, match=r"CUDA is not available"):
        build_settings({"device": "cuda"})
