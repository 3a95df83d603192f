"""Throughput at a latency bound: the highest offered rate a deployment serves with every request
answered and p99 within the bound, found by doubling then bisecting (bounded in steps), so that
variants are compared at equal p99 rather than at whatever rates were listed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def meets(summary: Mapping[str, Any], p99_ms: float) -> bool:
    """Every request sent was answered (no 503, error or timeout) and p99 is within the bound."""
    return summary["sent"] > 0 and summary["ok"] == summary["sent"] and summary["p99_ms"] <= p99_ms


def highest_rate(measure: Callable[[float], Mapping[str, Any]], start: float, p99_ms: float, steps: int,
                 precision: float = 1.15) -> float | None:
    """Double from `start` while the bound holds (halve while it does not), then bisect between the
    best rate that held and the lowest that failed until they are within `precision` of each other;
    at most `steps` measurements, fewer if one comes back `skipped` (the run's time budget is spent).
    Returns the best rate that held (None: not even the lowest tried)."""
    good: float | None = None
    bad: float | None = None
    rate = start
    for _ in range(steps):
        summary = measure(rate)
        if summary.get("skipped"):
            break
        if meets(summary, p99_ms):
            good = rate
        else:
            bad = rate
        if good is not None and bad is not None:
            if bad / good <= precision:
                break
            rate = (good + bad) / 2
        else:
            rate = rate * 2 if bad is None else rate / 2
    return good
