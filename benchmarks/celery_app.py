"""The Celery application of the peer benchmark: no-op tasks, Redis broker and results.

``noop`` is the throughput runs' task; ``stamp`` also does nothing but returns when it ran,
so that a latency run can tell send → task started from send → result stored.

The worker runs them with ``celery -A benchmarks.celery_app worker``; ``BENCH_REDIS_URL``
names the Redis server (database 0 is the broker, database 1 the result backend).
"""

from __future__ import annotations

import os
import time

from celery import Celery  # type: ignore[import-untyped,import-not-found,unused-ignore]

_REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")


def make_app(redis_url: str) -> Celery:
    """The application on ``redis_url``: the worker's, and the harness's own to send with.

    A peer started after another (a new Redis on a new port) gets a new application, since an
    application keeps its broker connections and result backend once it has used them.
    """
    made = Celery("bench", broker=f"{redis_url}/0", backend=f"{redis_url}/1")
    made.conf.update(
        task_ignore_result=False,
        result_expires=3600,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    return made


app = make_app(_REDIS)


@app.task(name="noop")  # type: ignore[untyped-decorator,misc,unused-ignore]
def noop() -> None:
    """Does nothing and returns ``None`` (its result is stored all the same)."""


@app.task(name="stamp")  # type: ignore[untyped-decorator,misc,unused-ignore]
def stamp() -> float:
    """Does nothing; returns when it ran (seconds since the epoch), for the latency runs."""
    return time.time()
