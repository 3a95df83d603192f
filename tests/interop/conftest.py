"""The `onnx` marker: tests that need polygraphy, onnx, onnxscript and onnxruntime (the `test` extra
installs them; without them these tests skip)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "onnx: needs polygraphy, onnx, onnxscript and onnxruntime (CPU)")
