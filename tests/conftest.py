"""Shared fixtures: compiled zoo models are built once per session (a compile costs ~10-20 s on CPU)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from models import ZOO

import flexrt


@pytest.fixture(scope="session", autouse=True)
def engine_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One on-disk engine cache for the session, inherited by example subprocesses."""
    path = os.environ.get("FLEXRT_CACHE_DIR") or str(tmp_path_factory.mktemp("engine_cache"))
    old = os.environ.get("FLEXRT_CACHE_DIR")
    os.environ["FLEXRT_CACHE_DIR"] = path
    yield path
    if old is None:
        os.environ.pop("FLEXRT_CACHE_DIR", None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


class Compiled:
    """A zoo model, its specs and its compiled module."""

    def __init__(self, name: str, device: str, **options: Any) -> None:
        entry = ZOO[name]
        self.model = entry.make().to(device)
        self.inputs = entry.inputs()
        self.kwarg_inputs = entry.kwarg_inputs()
        self.device = device
        self.module = flexrt.compile(
            self.model, ir="dynamo", arg_inputs=self.inputs, kwarg_inputs=self.kwarg_inputs or None,
            **{**entry.options, **options},
        )


_compiled: dict[tuple[str, str, tuple[tuple[str, Any], ...]], Compiled] = {}


def compiled(name: str, device: str = "cpu", **options: Any) -> Compiled:
    key = (name, device, tuple(sorted((k, repr(v)) for k, v in options.items())))
    if key not in _compiled:
        _compiled[key] = Compiled(name, device, **options)
    return _compiled[key]


@pytest.fixture(scope="session")
def zoo() -> Any:
    """`zoo("expand_reshape", device="cpu", **options)` -> a Compiled, built once per session."""
    return compiled


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, zoo: Any) -> str:
    """The seed model's artifact, saved once per test module (the format and serialize tests damage copies)."""
    path = str(tmp_path_factory.mktemp("saved") / "good.ep")
    flexrt.save(zoo("expand_reshape").module, path)
    return path
