"""joblog's wall clock: integer milliseconds since the Unix epoch, the unit of every timestamp
on the wire."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Wall time in integer milliseconds."""
    return time.time_ns() // 1_000_000
