from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "serve: starts a local Ray Serve on 127.0.0.1 (needs ray[serve]; ~1-2 min)")
