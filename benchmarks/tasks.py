"""The task the end-to-end benchmarks run: nothing, so that only joblog's own cost is measured."""

from __future__ import annotations

from engine.worker import task


@task
def noop() -> None:
    """Does nothing and returns ``None``."""
