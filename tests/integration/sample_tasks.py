"""Tasks the worker tests run (``--tasks tests.integration.sample_tasks``)."""

from __future__ import annotations

import threading
import time
from collections import Counter

from engine.worker import JobContext, task

# How many attempts of `hold` run at once, per worker: the concurrency tests read it.
_lock = threading.Lock()
_running: Counter[str] = Counter()
peak: Counter[str] = Counter()
ran_on: Counter[str] = Counter()


@task
def add(a: int, b: int) -> int:
    """No context: just the arguments."""
    return a + b


@task(name="count")
def count_to(ctx: JobContext, n: int, *, label: str = "counting") -> dict[str, object]:
    """Reports progress many times (coalesced), a status line, and some output."""
    ctx.set_status_line(label)
    for i in range(1, n + 1):
        ctx.set_progress(i, total=n)
        if i % 100 == 0:
            time.sleep(0.01)
    ctx.write_output(f"counted to {n}\n")
    return {"counted": n, "attempt": ctx.attempt}


@task
def hold(ctx: JobContext, seconds: float) -> str:
    """Holds a slot for ``seconds``, recording how many run at once on this worker."""
    worker = ctx.worker_id
    with _lock:
        _running[worker] += 1
        ran_on[worker] += 1
        peak[worker] = max(peak[worker], _running[worker])
    try:
        ctx.wait_cancelled(seconds)
        ctx.check_cancelled()
    finally:
        with _lock:
            _running[worker] -= 1
    return worker


@task(retries=1)
def warn_then_fail_once(ctx: JobContext) -> str:
    """A non-fatal exception each attempt; a fatal one on the first attempt only."""
    ctx.raise_exception("LowDisk", "only 5% free", severity=2)
    if ctx.attempt == 1:
        ctx.raise_exception("InputMissing", "frame 12 not rendered yet", severity=0)
    return "second attempt"


@task
def boom(message: str) -> None:
    """Raises a plain Python exception."""
    raise ValueError(message)


@task
def sleepy(ctx: JobContext, seconds: float) -> float:
    """Sleeps without looking at the cancel flag (a task that cannot be interrupted)."""
    time.sleep(seconds)
    return seconds


@task
def shell(ctx: JobContext, argv: list[str]) -> int:
    """Runs a program through the context (cgkit's execCmd) and returns its exit code."""
    return ctx.run_command(argv)


@task
def slow_first(ctx: JobContext, seconds: float) -> int:
    """Holds its slot for ``seconds`` on the first attempt only (until cancelled)."""
    if ctx.attempt == 1:
        ctx.wait_cancelled(seconds)
        ctx.check_cancelled()
    return ctx.attempt
