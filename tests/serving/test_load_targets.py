"""The serving benchmark's open-loop load spreads requests over replicas independently of their bodies."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from benchmarks.serve.load import target


@given(replicas=st.integers(1, 6), bodies=st.integers(1, 40), rounds=st.integers(1, 3))
def test_every_replica_gets_every_body_equally(replicas, bodies, rounds) -> None:
    urls = [f"http://127.0.0.1:{8000 + r}" for r in range(replicas)]
    names = [f"body{b}" for b in range(bodies)]
    seen = Counter(target(urls, names, i) for i in range(replicas * bodies * rounds))
    assert seen == Counter({(u, b): rounds for u in urls for b in names})
