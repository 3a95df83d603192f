"""Parts of the serving benchmark: how its load spreads requests, where its results go."""

from __future__ import annotations

import json
import os
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from benchmarks.serve import report
from benchmarks.serve.load import target

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@given(replicas=st.integers(1, 6), bodies=st.integers(1, 40), rounds=st.integers(1, 3))
def test_every_replica_gets_every_body_equally(replicas, bodies, rounds) -> None:
    urls = [f"http://127.0.0.1:{8000 + r}" for r in range(replicas)]
    names = [f"body{b}" for b in range(bodies)]
    seen = Counter(target(urls, names, i) for i in range(replicas * bodies * rounds))
    assert seen == Counter({(u, b): rounds for u in urls for b in names})


def test_a_second_run_into_a_folder_keeps_the_firsts_results(tmp_path) -> None:
    """Two runs with the same layout (here: other variants) into one folder: both results stay; a run's
    own checkpoints replace each other."""
    with open(os.path.join(ROOT, "benchmarks", "results", "serve", "tiny_smoke.json")) as f:
        template = json.load(f)
    first = {**template, "run_id": "a"}
    second = {**template, "run_id": "b", "variants": template["variants"][:1]}
    assert report.write(first, str(tmp_path))[0].endswith("tiny_smoke.json")
    assert report.write(first, str(tmp_path))[0].endswith("tiny_smoke.json")  # its checkpoint again
    assert report.write(second, str(tmp_path))[0].endswith("tiny_smoke_2.json")
    saved = {p.name: json.loads(p.read_text())["run_id"] for p in tmp_path.glob("*.json")}
    assert saved == {"tiny_smoke.json": "a", "tiny_smoke_2.json": "b"}
    assert {p.name for p in tmp_path.glob("*.md")} == {"tiny_smoke.md", "tiny_smoke_2.md"}
