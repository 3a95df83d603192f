"""The Ray settings flexrt serve starts its Ray with: set where the environment is silent, a user's own kept."""

from __future__ import annotations

import os

import pytest

from flexrt.serving import ray_env

KEY = "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"


def test_sets_what_the_environment_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ray_env.SETTINGS:
        monkeypatch.delenv(key, raising=False)
    assert ray_env.apply() == {KEY: "0", ray_env.GRPC_LIMIT: str(2**31 - 1)}
    assert os.environ[KEY] == "0"
    assert ray_env.grpc_limit() == ray_env.GRPC_MESSAGE_BYTES


def test_keeps_the_users_own_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY, "1")
    monkeypatch.setenv(ray_env.GRPC_LIMIT, "1000")
    assert ray_env.apply() == {KEY: "1", ray_env.GRPC_LIMIT: "1000"}
    assert ray_env.grpc_limit() == 1000
