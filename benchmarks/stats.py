"""Medians, spreads and percentiles of repeated measurements."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterator, Sequence


def paced(total: int, rate: float, started: float) -> Iterator[int]:
    """``0 .. total-1``, each index handed out at ``started + index / rate`` (``time.time()``)."""
    for index in range(total):
        delay = started + index / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        yield index


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: Sequence[float]) -> dict[str, float | int]:
    """Median, min, max and relative spread ((max - min) / median) of repeated runs."""
    if not values:
        return {"runs": 0, "median": math.nan, "min": math.nan, "max": math.nan, "spread": math.nan}
    median = statistics.median(values)
    low, high = min(values), max(values)
    return {
        "runs": len(values),
        "median": median,
        "min": low,
        "max": high,
        "spread": (high - low) / median if median else math.nan,
    }


def latency_summary(seconds: Sequence[float]) -> dict[str, float | int]:
    """Count, p50, p90, p99 and max of latencies, in milliseconds."""
    return {
        "count": len(seconds),
        "p50_ms": percentile(seconds, 0.5) * 1000,
        "p90_ms": percentile(seconds, 0.9) * 1000,
        "p99_ms": percentile(seconds, 0.99) * 1000,
        "max_ms": max(seconds) * 1000 if seconds else math.nan,
    }
