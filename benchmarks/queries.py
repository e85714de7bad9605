"""DuckDB query times on a large projection, built synthetically in the projection's schema.

The file is made by :class:`projections.store.ProjectionStore` (tables and views exactly as
the projector makes them) and filled with SQL: ``events`` rows of ``job_events`` and one
``jobs`` row per eight events (a no-op job costs seven or eight events), with a mix of
statuses, eight task names and log-normal durations. The queries are the views users run
(``status_counts``, ``task_durations``) and their counterparts over the event history.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import duckdb

from projections.store import ProjectionStore

EVENTS_PER_JOB = 8

QUERIES: dict[str, str] = {
    "status_counts": "SELECT * FROM status_counts",
    "task_durations": "SELECT * FROM task_durations",
    "history_status_counts": (
        "SELECT status, count(*) AS events FROM job_events GROUP BY status ORDER BY status"
    ),
    "history_run_percentiles": (
        "SELECT quantile_cont(d, [0.5, 0.9, 0.99]) FROM ("
        " SELECT epoch_ms(max(timestamp) FILTER (WHERE event = 'JobCompleted'))"
        "      - epoch_ms(min(timestamp) FILTER (WHERE event = 'JobStarted')) AS d"
        " FROM job_events GROUP BY submission_id, job_id)"
    ),
}

_STATUS = (
    "CASE WHEN h < 80 THEN 'COMPLETED' WHEN h < 88 THEN 'FAILED' WHEN h < 92 THEN 'CANCELED' "
    "WHEN h < 95 THEN 'ABANDONED' WHEN h < 97 THEN 'RUNNING' ELSE 'PENDING' END"
)
_EVENTS = [
    ("JobSubmitted", "SUBMITTED"),
    ("JobPending", "PENDING"),
    ("JobAssigned", "ASSIGNED"),
    ("JobStarted", "RUNNING"),
    ("JobProgressed", "RUNNING"),
    ("JobProgressed", "RUNNING"),
    ("JobCompleted", "COMPLETED"),
    ("SubmissionCompleted", "COMPLETED"),
]


def build(path: Path, events: int) -> dict[str, Any]:
    """Creates ``path`` with ``events`` job events and their jobs; returns sizes and time."""
    started = time.perf_counter()
    with ProjectionStore(path, topic_prefix="bench.") as store:
        del store
    jobs = events // EVENTS_PER_JOB
    names = ", ".join(f"('{event}', '{status}')" for event, status in _EVENTS)
    connection = duckdb.connect(str(path))
    try:
        connection.execute(
            f"""
            INSERT INTO jobs (submission_id, job_id, name, task, queue, status, attempts,
                              max_attempts, priority, worker_id, submitted_at, pending_at,
                              first_pending_at, assigned_at, run_at, finished_at,
                              execution_duration, pending_duration, deleted, last_seq, updated_at)
            SELECT 's-' || i, 'job', 'task-' || (i % 8), 'task-' || (i % 8), 'default', status,
                   1, 1, 0, 'w-' || (i % 16),
                   start, start + pend, start + pend, start + pend, start + pend,
                   CASE WHEN status IN ('RUNNING', 'PENDING') THEN NULL ELSE start + pend + run END,
                   CASE WHEN status IN ('RUNNING', 'PENDING') THEN NULL
                        ELSE epoch_ms(run) / 1000.0 END,
                   epoch_ms(pend) / 1000.0, false, 8, start + pend + run
            FROM (SELECT i, {_STATUS} AS status,
                         TIMESTAMP '2026-01-01' + to_milliseconds(i * 5) AS start,
                         to_milliseconds(CAST(exp(random() * 3) AS BIGINT)) AS pend,
                         to_milliseconds(CAST(exp(4 + random() * 6) AS BIGINT)) AS run
                  FROM (SELECT range AS i, hash(range) % 100 AS h FROM range({jobs})))
            """
        )
        connection.execute(
            f"""
            INSERT INTO job_events (event_id, submission_id, job_id, seq, timestamp, event,
                                    status, attempt, description, body, kafka_partition,
                                    kafka_offset)
            SELECT 's-' || j || ':' || k, 's-' || j, 'job', k + 1,
                   TIMESTAMP '2026-01-01' + to_milliseconds(j * 5 + k * 3),
                   names[k + 1][1], names[k + 1][2], 1, names[k + 1][1] || ' of job ' || j,
                   '{{}}', j % 6, range
            FROM (SELECT range, range // {EVENTS_PER_JOB} AS j, range % {EVENTS_PER_JOB} AS k,
                         [{names}] AS names
                  FROM range({jobs * EVENTS_PER_JOB}))
            """
        )
        connection.execute("CHECKPOINT")
    finally:
        connection.close()
    return {
        "events": jobs * EVENTS_PER_JOB,
        "jobs": jobs,
        "build_seconds": time.perf_counter() - started,
        "file_mb": path.stat().st_size / 1e6,
    }


def time_queries(path: Path, repeats: int = 5) -> dict[str, Any]:
    """Each query once cold (fresh connection), then ``repeats`` times warm; seconds."""
    out: dict[str, Any] = {}
    for name, sql in QUERIES.items():
        connection = duckdb.connect(str(path), read_only=True)
        try:
            started = time.perf_counter()
            connection.execute(sql).fetchall()
            cold = time.perf_counter() - started
            warm = []
            for _ in range(repeats):
                started = time.perf_counter()
                connection.execute(sql).fetchall()
                warm.append(time.perf_counter() - started)
        finally:
            connection.close()
        out[name] = {
            "cold_s": cold,
            "median_s": statistics.median(warm),
            "min_s": min(warm),
            "max_s": max(warm),
            "runs": repeats,
        }
    return out
