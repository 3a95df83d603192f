"""The serving benchmark's search for the highest rate within a p99 bound, against a synthetic server."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.serve.search import highest_rate, meets


def server(capacity: float, calls: list[float]):  # type: ignore[no-untyped-def]
    """Answers everything within 10 ms up to `capacity` requests/s, then p99 of seconds."""

    def measure(rate: float) -> dict[str, float]:
        calls.append(rate)
        return {"sent": 100, "ok": 100, "p99_ms": 10.0 if rate <= capacity else 3000.0}

    return measure


@settings(max_examples=200, deadline=None)
@given(capacity=st.floats(1.0, 10_000.0), start=st.floats(1.0, 1000.0), steps=st.integers(1, 12))
def test_found_rate_held_and_is_near_capacity(capacity: float, start: float, steps: int) -> None:
    calls: list[float] = []
    best = highest_rate(server(capacity, calls), start, p99_ms=50.0, steps=steps, precision=1.15)
    assert len(calls) <= steps
    assert best is None or best <= capacity  # only a rate that held is reported
    if best is not None and any(c > capacity for c in calls):
        # once bracketed, bisection stops within the precision or when the steps run out
        assert min(c for c in calls if c > capacity) / best <= 1.15 or len(calls) == steps


def test_unanswered_requests_fail_the_bound_whatever_the_latency() -> None:
    assert not meets({"sent": 100, "ok": 99, "p99_ms": 1.0}, 50.0)
    assert not meets({"sent": 0, "ok": 0, "p99_ms": float("nan")}, 50.0)
    assert meets({"sent": 10, "ok": 10, "p99_ms": 50.0}, 50.0)


def test_brackets_then_bisects() -> None:
    calls: list[float] = []
    assert highest_rate(server(300.0, calls), 100.0, 50.0, steps=8) == 300.0
    assert calls == [100.0, 200.0, 400.0, 300.0, 350.0, 325.0]  # 325 / 300 is within 1.15: done
    calls.clear()
    assert highest_rate(server(30.0, calls), 100.0, 50.0, steps=8) == 28.125  # halving, then bisecting
    assert calls == [100.0, 50.0, 25.0, 37.5, 31.25, 28.125]


def test_a_skipped_rate_ends_the_search() -> None:
    """Past the run's time budget the harness returns `skipped` rows: the search stops there."""
    calls: list[float] = []

    def measure(rate: float) -> dict[str, object]:
        calls.append(rate)
        if len(calls) > 2:
            return {"skipped": True, "sent": 0, "ok": 0, "p99_ms": float("nan")}
        return {"sent": 10, "ok": 10, "p99_ms": 1.0}

    assert highest_rate(measure, 10.0, 50.0, steps=8) == 20.0 and calls == [10.0, 20.0, 40.0]
