"""The tables and views of the projection DuckDB file: one definition for DDL and Arrow.

Every table is declared once as a :class:`Table` (column names and DuckDB types); the DDL and
the Arrow schema the writer builds its batches with both derive from it, so they cannot
drift apart. Timestamps are ``TIMESTAMP`` values in UTC (the events carry epoch milliseconds);
durations are ``DOUBLE`` seconds. The views are documented in ``docs/projections.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import duckdb
import pyarrow as pa

#: Bumped when a table changes incompatibly; a file of another version must be rebuilt.
SCHEMA_VERSION = 3

_ARROW_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "JSON": pa.string(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMP": pa.timestamp("ms"),
    "VARCHAR[]": pa.list_(pa.string()),
    "MAP(VARCHAR, VARCHAR)": pa.map_(pa.string(), pa.string()),
}


@dataclass(frozen=True)
class Table:
    """A projection table: its columns (name, DuckDB type) and its primary key."""

    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    @cached_property
    def column_list(self) -> str:
        """The quoted column names, comma-separated, in table order (an INSERT's list)."""
        return ", ".join(f'"{name}"' for name in self.names)

    @cached_property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(name, _ARROW_TYPES[kind]) for name, kind in self.columns])

    def empty_row(self) -> dict[str, Any]:
        """A row with every column ``None``."""
        return dict.fromkeys(self.names)

    def ddl(self) -> str:
        columns = ",\n    ".join(f'"{name}" {kind}' for name, kind in self.columns)
        key = ", ".join(f'"{name}"' for name in self.key)
        return (
            f"CREATE TABLE IF NOT EXISTS {self.name} (\n    {columns},\n    PRIMARY KEY ({key})\n)"
        )

    def select_for_fold(self) -> str:
        """A SELECT list that reads rows back the way the fold holds them (ms timestamps)."""
        return ", ".join(
            f'epoch_ms("{name}") AS "{name}"' if kind == "TIMESTAMP" else f'"{name}"'
            for name, kind in self.columns
        )


_TS = "TIMESTAMP"
_S = "VARCHAR"
_I = "INTEGER"
_B = "BIGINT"
_D = "DOUBLE"
_BOOL = "BOOLEAN"

JOBS = Table(
    "jobs",
    (
        ("submission_id", _S),
        ("job_id", _S),
        ("name", _S),
        ("task", _S),
        ("command", _S),
        ("queue", _S),
        ("status", _S),
        ("attempts", _I),
        ("max_attempts", _I),
        ("priority", _I),
        ("worker_id", _S),
        ("host", _S),
        ("pid", _I),
        ("executions", _I),
        ("takeovers", _I),
        ("duplicate_claims", _I),
        ("workers_seen", "VARCHAR[]"),
        ("submitted_at", _TS),
        ("blocked_at", _TS),
        ("first_pending_at", _TS),
        ("pending_at", _TS),
        ("assigned_at", _TS),
        ("run_at", _TS),
        ("finished_at", _TS),
        ("worker_started_at", _TS),
        ("worker_ended_at", _TS),
        ("not_before", _TS),
        ("execution_duration", _D),
        ("execution_clock", _S),
        ("pending_duration", _D),
        ("blocked_duration", _D),
        ("progress", _D),
        ("total", _D),
        ("status_line", _S),
        ("failure_reason", _S),
        ("error_type", _S),
        ("error_note", _S),
        ("traceback", _S),
        ("result", _S),
        ("exit_code", _I),
        ("exceptions", _I),
        ("end_reason", _S),
        ("canceled_by", _S),
        ("deleted", _BOOL),
        ("parent", _S),
        ("depends_on", "VARCHAR[]"),
        ("labels", "MAP(VARCHAR, VARCHAR)"),
        ("args", _S),
        ("idempotency_key", _S),
        ("timeout_ms", _B),
        ("queue_timeout_ms", _B),
        ("last_seq", _B),
        ("updated_at", _TS),
        ("pending_reason", _S),
        ("pending_detail", _S),
        ("pending_until", _TS),
        ("concurrency_key", _S),
        ("force", _BOOL),
        ("reruns", _I),
    ),
    ("submission_id", "job_id"),
)

ATTEMPTS = Table(
    "attempts",
    (
        ("submission_id", _S),
        ("job_id", _S),
        ("attempt", _I),
        ("queue", _S),
        ("pending_at", _TS),
        ("not_before", _TS),
        ("dispatched_at", _TS),
        ("assigned_at", _TS),
        ("run_at", _TS),
        ("finished_at", _TS),
        ("worker_started_at", _TS),
        ("worker_ended_at", _TS),
        ("worker_id", _S),
        ("host", _S),
        ("pid", _I),
        ("takeovers", _I),
        ("duplicate_claims", _I),
        ("executions", _I),
        ("workers_seen", "VARCHAR[]"),
        ("outcome", _S),
        ("failure_reason", _S),
        ("error_type", _S),
        ("error_note", _S),
        ("exceptions", _I),
        ("queue_wait", _D),
        ("execution_duration", _D),
        ("execution_clock", _S),
    ),
    ("submission_id", "job_id", "attempt"),
)

JOB_EVENTS = Table(
    "job_events",
    (
        ("event_id", _S),
        ("submission_id", _S),
        ("job_id", _S),
        ("seq", _B),
        ("timestamp", _TS),
        ("event", _S),
        ("status", _S),
        ("attempt", _I),
        ("description", _S),
        ("body", "JSON"),
        ("kafka_partition", _I),
        ("kafka_offset", _B),
    ),
    ("event_id",),
)

JOB_EXCEPTIONS = Table(
    "job_exceptions",
    (
        ("event_id", _S),
        ("submission_id", _S),
        ("job_id", _S),
        ("attempt", _I),
        ("timestamp", _TS),
        ("type", _S),
        ("note", _S),
        ("severity", _I),
        ("fatal", _BOOL),
        ("traceback", _S),
    ),
    ("event_id",),
)

JOB_OUTPUTS = Table(
    "job_outputs",
    (
        ("event_id", _S),
        ("submission_id", _S),
        ("job_id", _S),
        ("attempt", _I),
        ("timestamp", _TS),
        ("stream", _S),
        ("offset", _B),
        ("chunk", _S),
        ("truncated", _BOOL),
    ),
    ("event_id",),
)

PROGRESS = Table(
    "progress",
    (
        ("event_id", _S),
        ("submission_id", _S),
        ("job_id", _S),
        ("attempt", _I),
        ("timestamp", _TS),
        ("value", _D),
        ("total", _D),
        ("status_line", _S),
    ),
    ("event_id",),
)

SUBMISSIONS = Table(
    "submissions",
    (
        ("submission_id", _S),
        ("submitted_by", _S),
        ("command_id", _S),
        ("labels", "MAP(VARCHAR, VARCHAR)"),
        ("jobs", _I),
        ("submitted", _I),
        ("blocked", _I),
        ("pending", _I),
        ("assigned", _I),
        ("running", _I),
        ("completed", _I),
        ("failed", _I),
        ("canceled", _I),
        ("skipped", _I),
        ("abandoned", _I),
        ("deleted_jobs", _I),
        ("rejections", _I),
        ("done", _BOOL),
        ("outcome", _S),
        ("submitted_at", _TS),
        ("finished_at", _TS),
        ("wall_time", _D),
        ("last_seq", _B),
        ("updated_at", _TS),
    ),
    ("submission_id",),
)

WORKERS = Table(
    "workers",
    (
        ("worker_id", _S),
        ("queue", _S),
        ("host", _S),
        ("pid", _I),
        ("first_seen", _TS),
        ("last_heartbeat", _TS),
        ("lease_ms", _B),
        ("slots_total", _I),
        ("slots_used", _I),
        ("running", _I),
        ("heartbeats", _B),
        ("left", _BOOL),
        ("left_at", _TS),
        ("unfinished_at_leave", _I),
    ),
    ("worker_id",),
)

OFFSETS = Table(
    "projection_offsets",
    (("topic", _S), ("partition", _I), ("next_offset", _B), ("updated_at", _TS)),
    ("topic", "partition"),
)

META = Table("projection_meta", (("key", _S), ("value", _S)), ("key",))

#: Tables the fold upserts by key (a batch replaces the rows it touched).
KEYED_TABLES = (JOBS, ATTEMPTS, SUBMISSIONS, WORKERS)
#: Tables the fold only appends to (one row per event).
APPEND_TABLES = (JOB_EVENTS, JOB_EXCEPTIONS, JOB_OUTPUTS, PROGRESS)
TABLES = (*KEYED_TABLES, *APPEND_TABLES, OFFSETS, META)

#: Columns of ``submissions`` that count its jobs by status.
STATUS_COUNT_COLUMNS = (
    "submitted",
    "blocked",
    "pending",
    "assigned",
    "running",
    "completed",
    "failed",
    "canceled",
    "skipped",
    "abandoned",
)

_NOW = "timezone('UTC', now())"
_TASK = "coalesce(task, name)"

#: name -> (one-line description, SELECT). Created as views, in this order.
VIEWS: dict[str, tuple[str, str]] = {
    "status_counts": (
        "How many jobs are in each status (deleted jobs excluded).",
        """
        SELECT status, count(*) AS jobs
        FROM jobs WHERE NOT deleted
        GROUP BY status ORDER BY jobs DESC, status
        """,
    ),
    "job_durations": (
        "Taipy's three durations of every job, counted up to now while a phase is still open.",
        f"""
        SELECT submission_id, job_id, name, {_TASK} AS task, status, submitted_at, blocked_at,
               first_pending_at, pending_at, run_at, finished_at, worker_started_at,
               worker_ended_at, execution_clock,
               coalesce(execution_duration,
                        CASE WHEN run_at IS NOT NULL AND finished_at IS NULL
                             THEN greatest(0, epoch_ms({_NOW}) - epoch_ms(run_at)) / 1000.0
                        END) AS execution_duration,
               coalesce(pending_duration,
                        CASE WHEN pending_at IS NOT NULL AND run_at IS NULL
                                  AND finished_at IS NULL
                             THEN greatest(0, epoch_ms({_NOW}) - epoch_ms(pending_at)) / 1000.0
                        END) AS pending_duration,
               coalesce(blocked_duration,
                        CASE WHEN blocked_at IS NOT NULL AND first_pending_at IS NULL
                                  AND finished_at IS NULL
                             THEN greatest(0, epoch_ms({_NOW}) - epoch_ms(blocked_at)) / 1000.0
                        END) AS blocked_duration
        FROM jobs WHERE NOT deleted
        """,
    ),
    "task_durations": (
        "Per task: finished jobs and p50/p90/p99/max of execution and pending durations (s).",
        f"""
        SELECT {_TASK} AS task,
               count(*) AS jobs,
               count(execution_duration) AS executed,
               quantile_cont(execution_duration, 0.5) AS execution_p50,
               quantile_cont(execution_duration, 0.9) AS execution_p90,
               quantile_cont(execution_duration, 0.99) AS execution_p99,
               max(execution_duration) AS execution_max,
               avg(execution_duration) AS execution_mean,
               quantile_cont(pending_duration, 0.5) AS pending_p50,
               quantile_cont(pending_duration, 0.9) AS pending_p90,
               quantile_cont(pending_duration, 0.99) AS pending_p99,
               max(pending_duration) AS pending_max
        FROM jobs WHERE finished_at IS NOT NULL AND NOT deleted
        GROUP BY ALL ORDER BY task
        """,
    ),
    "throughput_per_minute": (
        "Jobs submitted, started and finished (by outcome) in each minute (UTC).",
        """
        WITH marks AS (
            SELECT time_bucket(INTERVAL 1 minute, submitted_at) AS minute,
                   'submitted' AS what FROM jobs
            UNION ALL
            SELECT time_bucket(INTERVAL 1 minute, run_at), 'started'
            FROM attempts WHERE run_at IS NOT NULL
            UNION ALL
            SELECT time_bucket(INTERVAL 1 minute, finished_at), lower(status)
            FROM jobs WHERE finished_at IS NOT NULL
        )
        SELECT minute,
               count(*) FILTER (what = 'submitted') AS submitted,
               count(*) FILTER (what = 'started') AS started,
               count(*) FILTER (what NOT IN ('submitted', 'started')) AS finished,
               count(*) FILTER (what = 'completed') AS completed,
               count(*) FILTER (what = 'failed') AS failed,
               count(*) FILTER (what = 'canceled') AS canceled,
               count(*) FILTER (what = 'skipped') AS skipped,
               count(*) FILTER (what = 'abandoned') AS abandoned
        FROM marks GROUP BY minute ORDER BY minute
        """,
    ),
    "task_failures": (
        "Per task: finished jobs, failures, failure rate, retried jobs and attempts.",
        f"""
        SELECT {_TASK} AS task,
               count(*) AS finished,
               count(*) FILTER (status = 'COMPLETED') AS completed,
               count(*) FILTER (status = 'FAILED') AS failed,
               count(*) FILTER (status = 'FAILED') / count(*) AS failure_rate,
               count(*) FILTER (attempts > 1) AS retried,
               sum(attempts) AS attempts
        FROM jobs WHERE finished_at IS NOT NULL AND NOT deleted
        GROUP BY ALL ORDER BY failure_rate DESC, task
        """,
    ),
    "task_error_types": (
        "Per task, the error types of failed attempts, most frequent first (rank 1 = top).",
        f"""
        SELECT task, error_type, failures, last_seen, example_note,
               row_number() OVER (PARTITION BY task ORDER BY failures DESC, error_type) AS rank
        FROM (
            SELECT {_TASK} AS task, a.error_type, count(*) AS failures,
                   max(a.finished_at) AS last_seen, any_value(a.error_note) AS example_note
            FROM attempts a JOIN jobs USING (submission_id, job_id)
            WHERE a.outcome = 'FAILED'
            GROUP BY ALL
        )
        ORDER BY task, rank
        """,
    ),
    "queue_wait": (
        "Per queue: how long dispatched attempts waited for a worker (s), and what waits now.",
        f"""
        WITH waits AS (
            SELECT queue, queue_wait FROM attempts WHERE queue_wait IS NOT NULL
        ), waiting AS (
            SELECT queue, count(*) AS waiting_now,
                   max((epoch_ms({_NOW}) - epoch_ms(coalesce(dispatched_at, pending_at)))
                       / 1000.0) AS oldest_wait
            FROM attempts
            WHERE assigned_at IS NULL AND finished_at IS NULL
            GROUP BY queue
        ), queues AS (
            SELECT queue FROM waits UNION SELECT queue FROM waiting
        )
        SELECT q.queue,
               (SELECT count(*) FROM waits w WHERE w.queue = q.queue) AS attempts,
               (SELECT quantile_cont(queue_wait, 0.5) FROM waits w WHERE w.queue = q.queue)
                   AS wait_p50,
               (SELECT quantile_cont(queue_wait, 0.9) FROM waits w WHERE w.queue = q.queue)
                   AS wait_p90,
               (SELECT quantile_cont(queue_wait, 0.99) FROM waits w WHERE w.queue = q.queue)
                   AS wait_p99,
               (SELECT max(queue_wait) FROM waits w WHERE w.queue = q.queue) AS wait_max,
               coalesce(n.waiting_now, 0) AS waiting_now,
               n.oldest_wait
        FROM queues q LEFT JOIN waiting n USING (queue)
        ORDER BY q.queue
        """,
    ),
    "slowest_jobs": (
        "Finished jobs by execution duration, longest first.",
        f"""
        SELECT submission_id, job_id, name, {_TASK} AS task, status, attempts, worker_id,
               run_at, finished_at, worker_started_at, worker_ended_at, execution_duration,
               execution_clock, pending_duration
        FROM jobs WHERE execution_duration IS NOT NULL AND NOT deleted
        ORDER BY execution_duration DESC, submission_id, job_id
        """,
    ),
    "retries": (
        "Jobs that ran more than one attempt, with the error of each failed attempt.",
        f"""
        SELECT j.submission_id, j.job_id, j.name, {_TASK} AS task, j.status, j.attempts,
               j.max_attempts,
               list(a.error_type ORDER BY a.attempt) FILTER (a.outcome = 'FAILED')
                   AS attempt_errors,
               list(a.worker_id ORDER BY a.attempt) FILTER (a.worker_id IS NOT NULL)
                   AS attempt_workers
        FROM jobs j JOIN attempts a USING (submission_id, job_id)
        WHERE j.attempts > 1
        GROUP BY ALL
        ORDER BY j.attempts DESC, j.submission_id, j.job_id
        """,
    ),
    "duplicate_executions": (
        "Attempts that ran on more than one worker (takeovers, refused duplicate claims).",
        f"""
        SELECT a.submission_id, a.job_id, j.name, {_TASK} AS task, a.attempt, j.status,
               a.outcome, a.executions, a.takeovers, a.duplicate_claims, a.workers_seen,
               a.worker_id AS kept_by, a.assigned_at, a.finished_at
        FROM attempts a JOIN jobs j USING (submission_id, job_id)
        WHERE a.executions > 1
        ORDER BY a.executions DESC, a.submission_id, a.job_id, a.attempt
        """,
    ),
    "idempotency_keys": (
        "Per idempotency key: who completed it, how many jobs were granted it, skipped or "
        "waited for it, from its ledger's decisions.",
        """
        SELECT json_extract_string(body, '$.key') AS key,
               submission_id AS ledger_id,
               max(json_extract_string(body, '$.job')) FILTER (status = 'done') AS completed_by,
               max(timestamp) FILTER (status = 'done') AS completed_at,
               count(*) FILTER (status = 'granted') AS granted,
               count(*) FILTER (status = 'completed') AS skipped,
               count(*) FILTER (status = 'queued') AS queued,
               count(*) FILTER (status = 'released') AS released,
               min(timestamp) AS first_claim_at,
               max(timestamp) AS updated_at
        FROM job_events
        WHERE event = 'IdempotencyKeyDecided'
        GROUP BY ALL
        ORDER BY updated_at DESC
        """,
    ),
    "worker_load": (
        "Per worker: attempts run and their outcomes, busy time, running now, liveness.",
        f"""
        WITH runs AS (
            SELECT worker_id,
                   count(*) AS attempts,
                   count(*) FILTER (outcome = 'COMPLETED') AS completed,
                   count(*) FILTER (outcome = 'FAILED') AS failed,
                   count(*) FILTER (outcome = 'CANCELED') AS canceled,
                   count(*) FILTER (outcome IS NULL) AS unfinished,
                   sum(execution_duration) AS busy_seconds,
                   min(run_at) AS first_run,
                   max(coalesce(finished_at, run_at)) AS last_activity
            FROM attempts WHERE worker_id IS NOT NULL
            GROUP BY worker_id
        )
        SELECT worker_id, w.queue, w.host, w.pid,
               coalesce(r.attempts, 0) AS attempts,
               coalesce(r.completed, 0) AS completed,
               coalesce(r.failed, 0) AS failed,
               coalesce(r.canceled, 0) AS canceled,
               coalesce(r.unfinished, 0) AS unfinished,
               r.busy_seconds,
               w.slots_total, w.slots_used, w.last_heartbeat, w.left,
               coalesce(NOT w.left AND epoch_ms(w.last_heartbeat) + w.lease_ms
                        >= epoch_ms({_NOW}), false) AS alive
        FROM runs r FULL OUTER JOIN workers w USING (worker_id)
        ORDER BY worker_id
        """,
    ),
    "accounting": (
        "One line per job in the manner of Slurm's sacct: id, name, state, times, exit code.",
        f"""
        SELECT submission_id || '/' || job_id AS job,
               name, {_TASK} AS task, queue, status AS state,
               submitted_at AS submit,
               CASE WHEN execution_clock = 'worker' THEN worker_started_at ELSE run_at END
                   AS start,
               CASE WHEN execution_clock = 'worker' THEN worker_ended_at ELSE finished_at END
                   AS "end",
               execution_duration AS elapsed_seconds,
               CASE WHEN execution_duration IS NULL THEN NULL
                    ELSE printf('%02d:%02d:%06.3f',
                                CAST(floor(execution_duration / 3600) AS BIGINT),
                                CAST(floor(execution_duration / 60) AS BIGINT) % 60,
                                execution_duration - 60 * floor(execution_duration / 60))
               END AS elapsed,
               exit_code, attempts, worker_id AS worker, host, error_type
        FROM jobs WHERE NOT deleted
        ORDER BY submitted_at, submission_id, job_id
        """,
    ),
    "job_history": (
        "Every event of every job in order, with its readable description (Tapis's history).",
        """
        SELECT submission_id, job_id, seq, "timestamp" AS created, event, status, attempt,
               description
        FROM job_events
        ORDER BY submission_id, seq, event_id
        """,
    ),
    "notifications": (
        "Each submission's declared webhooks and emails (Tapis's notifications): when added, "
        "when removed and why (removed by a command, or fired once: not persistent).",
        """
        WITH added AS (
            SELECT submission_id,
                   body->'notification'->>'notification_id' AS notification_id,
                   nullif(body->'notification'->>'job_id', '') AS job_id,
                   body->'notification'->>'url' AS url,
                   body->'notification'->>'event' AS event,
                   CAST(body->'notification'->>'persistent' AS BOOLEAN) AS persistent,
                   body->>'requested_by' AS added_by,
                   "timestamp" AS added_at, seq AS added_seq
            FROM job_events WHERE event = 'NotificationAdded'
        ),
        removed AS (
            SELECT submission_id, body->>'notification_id' AS notification_id,
                   "timestamp" AS removed_at, seq AS removed_seq,
                   body->>'reason' AS removed_reason,
                   CAST(body->>'fired_seq' AS BIGINT) AS fired_seq
            FROM job_events WHERE event = 'NotificationRemoved'
        )
        SELECT a.submission_id, a.notification_id, a.job_id, a.url, a.event, a.persistent,
               a.added_by, a.added_at, r.removed_at, r.removed_reason,
               nullif(r.fired_seq, 0) AS fired_seq, r.removed_at IS NULL AS active
        FROM added a LEFT JOIN removed r
          ON r.submission_id = a.submission_id AND r.notification_id = a.notification_id
         AND r.removed_seq > a.added_seq
        ORDER BY a.submission_id, a.added_seq
        """,
    ),
    "queues": (
        "Per queue: its settings (paused, limits; from its partitions' QueueConfigured "
        "events), its jobs by status, its workers alive, its starts in the last 5 minutes.",
        f"""
        WITH settings AS (
            SELECT json_extract_string(body, '$.queue') AS queue,
                   submission_id AS config_id,
                   CAST(json_extract(body, '$.paused') AS BOOLEAN) AS paused,
                   CAST(json_extract(body, '$.max_running') AS BIGINT) AS max_running,
                   CAST(json_extract(body, '$.rate_limit') AS BIGINT) AS rate_limit,
                   CAST(json_extract(body, '$.rate_period_ms') AS BIGINT) AS rate_period_ms,
                   "timestamp",
                   row_number() OVER (PARTITION BY submission_id ORDER BY seq DESC) AS latest
            FROM job_events WHERE event = 'QueueConfigured'
        ),
        configured AS (
            SELECT queue,
                   bool_or(paused) AS paused,
                   count(*) FILTER (paused) AS paused_partitions,
                   count(*) AS configured_partitions,
                   max(max_running) AS max_running,
                   max(rate_limit) AS rate_limit,
                   max(rate_period_ms) AS rate_period_ms,
                   max("timestamp") AS configured_at
            FROM settings WHERE latest = 1 GROUP BY queue
        ),
        jobs_by_queue AS (
            SELECT queue,
                   count(*) FILTER (status IN ('SUBMITTED', 'BLOCKED', 'PENDING')) AS waiting,
                   count(*) FILTER (status = 'PENDING' AND pending_reason <> 'worker')
                       AS held,
                   count(*) FILTER (status IN ('ASSIGNED', 'RUNNING')) AS running,
                   count(*) FILTER (status IN ('COMPLETED', 'SKIPPED')) AS completed,
                   count(*) FILTER (status IN ('FAILED', 'CANCELED', 'ABANDONED')) AS failed,
                   count(*) FILTER (run_at >= {_NOW} - INTERVAL 5 MINUTE) AS started_5m
            FROM jobs WHERE NOT deleted GROUP BY queue
        ),
        alive AS (
            SELECT w.queue, count(*) AS workers_alive, sum(w.slots_total) AS slots
            FROM workers w
            WHERE NOT w.left AND epoch_ms(w.last_heartbeat) + w.lease_ms >= epoch_ms({_NOW})
            GROUP BY w.queue
        )
        SELECT queue,
               coalesce(c.paused, false) AS paused,
               coalesce(c.paused_partitions, 0) AS paused_partitions,
               coalesce(c.max_running, 0) AS max_running,
               coalesce(c.rate_limit, 0) AS rate_limit,
               coalesce(c.rate_period_ms, 0) AS rate_period_ms,
               coalesce(j.waiting, 0) AS waiting,
               coalesce(j.held, 0) AS held,
               coalesce(j.running, 0) AS running,
               coalesce(j.completed, 0) AS completed,
               coalesce(j.failed, 0) AS failed,
               coalesce(a.workers_alive, 0) AS workers_alive,
               coalesce(a.slots, 0) AS worker_slots,
               coalesce(j.started_5m, 0) / 300.0 AS starts_per_second,
               c.configured_at
        FROM jobs_by_queue j FULL OUTER JOIN configured c USING (queue)
             FULL OUTER JOIN alive a USING (queue)
        ORDER BY queue
        """,
    ),
    "concurrency_slots": (
        "Per concurrency limit (a key's or a queue's): the attempts holding a slot and the "
        "claims waiting for one, with their line position (priority, then arrival) and, behind "
        "a rate limit, when the next start is allowed; from the ledgers' SlotDecided events.",
        """
        WITH decided AS (
            SELECT submission_id AS ledger_id, seq, "timestamp",
                   json_extract_string(body, '$.ledger') AS ledger,
                   json_extract_string(body, '$.job') AS claim,
                   json_extract_string(body, '$.decision') AS decision,
                   CAST(json_extract(body, '$.priority') AS BIGINT) AS priority,
                   CAST(json_extract(body, '$.until') AS BIGINT) AS until_ms,
                   CAST(json_extract(body, '$.max_running') AS BIGINT) AS max_running,
                   CAST(json_extract(body, '$.rate_limit') AS BIGINT) AS rate_limit,
                   CAST(json_extract(body, '$.rate_period_ms') AS BIGINT) AS rate_period_ms
            FROM job_events WHERE event = 'SlotDecided'
        ),
        latest AS (
            SELECT *, row_number() OVER (PARTITION BY ledger_id, claim ORDER BY seq DESC) AS rn
            FROM decided WHERE decision <> 'limits'
        ),
        limits AS (
            SELECT ledger_id, max_running, rate_limit, rate_period_ms
            FROM (SELECT *, row_number() OVER (PARTITION BY ledger_id ORDER BY seq DESC) AS rn
                  FROM decided) WHERE rn = 1
        ),
        live AS (
            SELECT l.*, CASE decision WHEN 'granted' THEN 'holding' ELSE 'waiting' END AS state
            FROM latest l WHERE rn = 1 AND decision IN ('granted', 'queued')
        )
        SELECT live.ledger AS "limit",
               split_part(claim, '/', 1) AS submission_id,
               regexp_extract(claim, '^[^/]*/(.*)@[0-9]+$', 1) AS job_id,
               CAST(regexp_extract(claim, '@([0-9]+)$', 1) AS INTEGER) AS attempt,
               state, priority, "timestamp" AS since,
               CASE WHEN state = 'waiting' THEN
                   row_number() OVER (PARTITION BY live.ledger_id, state
                                      ORDER BY priority DESC, seq) - 1
               END AS position,
               CASE WHEN state = 'waiting' AND until_ms > 0
                    THEN make_timestamp(until_ms * 1000) END AS rate_opens_at,
               m.max_running, m.rate_limit, m.rate_period_ms, live.ledger_id
        FROM live JOIN limits m USING (ledger_id)
        ORDER BY "limit", state, position NULLS FIRST, since
        """,
    ),
    "pending_reasons": (
        "Why each unfinished job that is not running waits: its reason and detail, when the "
        "wait ends if a time ends it, its position in a limit's line, whether a worker of its "
        "queue is alive, and an estimated start from the queue's starts of the last 5 minutes.",
        f"""
        WITH waiting AS (
            SELECT submission_id, job_id, name, queue, status, priority, submitted_at,
                   pending_at, pending_reason AS reason, pending_detail AS detail,
                   pending_until AS until, concurrency_key
            FROM jobs
            WHERE NOT deleted AND status IN ('SUBMITTED', 'BLOCKED', 'PENDING', 'ASSIGNED')
        ),
        lines AS (
            SELECT submission_id, job_id, min(position) AS position,
                   max(rate_opens_at) AS rate_opens_at, string_agg("limit", ', ') AS limits
            FROM concurrency_slots WHERE state = 'waiting' GROUP BY submission_id, job_id
        ),
        pace AS (
            SELECT queue, workers_alive, starts_per_second, paused FROM queues
        )
        SELECT w.submission_id, w.job_id, w.name, w.queue, w.status, w.priority,
               w.submitted_at, w.pending_at,
               CASE WHEN w.reason = 'worker' AND coalesce(p.workers_alive, 0) = 0
                    THEN 'no_worker' ELSE w.reason END AS reason,
               CASE WHEN w.reason = 'worker' AND coalesce(p.workers_alive, 0) = 0
                    THEN 'dispatched, but no worker of queue ' || w.queue || ' is alive'
                    ELSE w.detail END AS detail,
               coalesce(w.until, l.rate_opens_at) AS until,
               l.position, l.limits AS waits_for,
               coalesce(p.workers_alive, 0) AS workers_alive,
               CASE
                   WHEN w.until IS NOT NULL THEN w.until
                   WHEN l.position IS NOT NULL AND coalesce(p.starts_per_second, 0) > 0
                       THEN {_NOW} + to_milliseconds(
                           CAST(1000 * (l.position + 1) / p.starts_per_second AS BIGINT))
               END AS estimated_start
        FROM waiting w
        LEFT JOIN lines l USING (submission_id, job_id)
        LEFT JOIN pace p USING (queue)
        ORDER BY w.submitted_at, w.submission_id, w.job_id
        """,
    ),
    "schedules": (
        "Every schedule: its spec (cron and time zone, or interval), overlap and catch-up "
        "policy, status (ACTIVE, PAUSED, DELETED), next slot, runs fired, slots skipped, the "
        "last run and how many of its runs have not ended; from its ScheduleCreated, "
        "ScheduleChanged, ScheduleFired and ScheduleSkipped events.",
        """
        WITH own AS (
            SELECT submission_id, seq, "timestamp", event, status, body
            FROM job_events WHERE submission_id LIKE '#schedule-%'
        ),
        created AS (
            SELECT submission_id,
                   body->>'schedule_id' AS schedule_id,
                   nullif(body->'spec'->>'cron', '') AS cron,
                   body->'spec'->>'timezone' AS timezone,
                   nullif(CAST(body->'spec'->>'interval_ms' AS BIGINT), 0) AS interval_ms,
                   CAST(body->'spec'->>'offset_ms' AS BIGINT) AS offset_ms,
                   body->'spec'->>'overlap' AS overlap,
                   CAST(body->'spec'->>'catchup_window_ms' AS BIGINT) AS catchup_window_ms,
                   nullif(CAST(body->'spec'->>'start_at' AS BIGINT), 0) AS start_ms,
                   nullif(CAST(body->'spec'->>'end_at' AS BIGINT), 0) AS end_ms,
                   json_array_length(body->'jobs') AS jobs,
                   body->>'requested_by' AS created_by,
                   "timestamp" AS created_at
            FROM own WHERE event = 'ScheduleCreated'
        ),
        state AS (
            SELECT submission_id, arg_max(status, seq) AS status
            FROM own WHERE event IN ('ScheduleCreated', 'ScheduleChanged')
                       AND status IN ('ACTIVE', 'PAUSED', 'DELETED')
            GROUP BY submission_id
        ),
        timer AS (
            SELECT submission_id, arg_max(CAST(body->>'next_at' AS BIGINT), seq) AS next_ms
            FROM own WHERE event IN ('ScheduleCreated', 'ScheduleChanged', 'ScheduleFired',
                                     'ScheduleSkipped')
              AND NOT (event = 'ScheduleFired' AND CAST(body->>'manual' AS BOOLEAN))
            GROUP BY submission_id
        ),
        fires AS (
            SELECT submission_id, count(*) AS fired, max("timestamp") AS last_fired_at,
                   arg_max(body->>'run_submission_id', seq) AS last_run
            FROM own WHERE event = 'ScheduleFired' GROUP BY submission_id
        ),
        skips AS (
            SELECT submission_id, sum(CAST(body->>'count' AS BIGINT)) AS skipped
            FROM own WHERE event = 'ScheduleSkipped' AND body->>'reason' <> 'buffered'
            GROUP BY submission_id
        ),
        unfinished AS (
            SELECT f.submission_id, count(*) AS running
            FROM own f JOIN submissions s ON s.submission_id = f.body->>'run_submission_id'
            WHERE f.event = 'ScheduleFired' AND NOT s.done
            GROUP BY f.submission_id
        )
        SELECT c.schedule_id, s.status, c.cron, c.timezone, c.interval_ms, c.offset_ms,
               c.overlap, c.catchup_window_ms,
               CASE WHEN s.status = 'ACTIVE' AND t.next_ms > 0
                    THEN make_timestamp(t.next_ms * 1000) END AS next_at,
               coalesce(f.fired, 0) AS fired, coalesce(k.skipped, 0) AS skipped,
               f.last_fired_at, f.last_run, coalesce(u.running, 0) AS running,
               c.jobs, make_timestamp(c.start_ms * 1000) AS start_at,
               make_timestamp(c.end_ms * 1000) AS end_at, c.created_by, c.created_at,
               c.submission_id AS schedule_key
        FROM created c
        LEFT JOIN state s USING (submission_id)
        LEFT JOIN timer t USING (submission_id)
        LEFT JOIN fires f USING (submission_id)
        LEFT JOIN skips k USING (submission_id)
        LEFT JOIN unfinished u USING (submission_id)
        ORDER BY c.schedule_id
        """,
    ),
    "schedule_firings": (
        "Each slot a schedule decided: fired (the run it submitted, and how that run ended), "
        "or skipped (why, and how many slots the skip counts), with the slot's time and when "
        "it was decided.",
        """
        SELECT substr(f.submission_id, 11) AS schedule_id,
               make_timestamp(CAST(f.body->>'slot' AS BIGINT) * 1000) AS slot,
               CASE f.event WHEN 'ScheduleFired' THEN 'fired' ELSE 'skipped' END AS decision,
               CASE WHEN f.event = 'ScheduleFired' THEN
                    CASE WHEN CAST(f.body->>'manual' AS BOOLEAN) THEN 'trigger'
                         WHEN CAST(f.body->>'catch_up' AS BOOLEAN) THEN 'late'
                         ELSE 'on time' END
                    ELSE f.body->>'reason' END AS reason,
               CASE WHEN f.event = 'ScheduleSkipped' THEN CAST(f.body->>'count' AS BIGINT)
                    ELSE 1 END AS slots,
               f.body->>'run_submission_id' AS run_submission_id,
               s.outcome AS run_outcome, s.done AS run_done, s.wall_time AS run_wall_time,
               f."timestamp" AS decided_at, f.seq
        FROM job_events f
        LEFT JOIN submissions s ON s.submission_id = f.body->>'run_submission_id'
        WHERE f.submission_id LIKE '#schedule-%'
          AND f.event IN ('ScheduleFired', 'ScheduleSkipped')
        ORDER BY schedule_id, f.seq
        """,
    ),
    "rejected_commands": (
        "Commands the scheduler rejected, with the machine code and what to fix.",
        """
        SELECT "timestamp", submission_id, job_id,
               body->>'command_type' AS command_type, body->>'command_id' AS command_id,
               body->>'code' AS code, body->>'reason' AS reason
        FROM job_events WHERE event = 'CommandRejected'
        ORDER BY "timestamp", event_id
        """,
    ),
}


def create_schema(connection: duckdb.DuckDBPyConnection) -> None:
    """Creates every table and (re)creates every view; safe to run on an existing file."""
    for table in TABLES:
        connection.execute(table.ddl())
    for name, (_, select) in VIEWS.items():
        connection.execute(f"CREATE OR REPLACE VIEW {name} AS {select}")
