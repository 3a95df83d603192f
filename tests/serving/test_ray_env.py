"""The Ray settings flexrt serve starts its Ray with: set where the environment is silent, a user's own kept."""

from __future__ import annotations

import pytest

from flexrt.serving import ray_env

KEY = "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"


def test_sets_what_the_environment_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY, raising=False)
    assert ray_env.apply() == {KEY: "0"}
    import os

    assert os.environ[KEY] == "0"


def test_keeps_the_users_own_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY, "1")
    assert ray_env.apply() == {KEY: "1"}
