"""The read side of ``joblog ui``: SQL on the DuckDB projection, shaped for the API.

Every answer comes from the projection (``docs/projections.md``) through
:class:`~projections.reader.ProjectionReader`: the running projector's query endpoint, else
the file opened read-only for one query. Lists are paged by key (a cursor names the last row
of a page: its sort value, submission and job), never by ``OFFSET``, so the millionth row
costs what the first does, and every page is one query of at most
:attr:`~engine.ui.config.UiLimits.max_page_size` rows plus one ``count(*)``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.lifecycle.records import JobStatus
from engine.ui.config import UiLimits
from engine.ui.http import ApiError, bad_request
from projections.reader import ProjectionReader

#: Columns of a job in a list (the full row is in the job's own answer).
JOB_COLUMNS = (
    "submission_id",
    "job_id",
    "name",
    "task",
    "command",
    "queue",
    "status",
    "attempts",
    "max_attempts",
    "worker_id",
    "progress",
    "total",
    "status_line",
    "parent",
    "depends_on",
    "labels",
    "submitted_at",
    "pending_at",
    "run_at",
    "finished_at",
    "execution_duration",
    "pending_duration",
    "blocked_duration",
    "error_type",
    "error_note",
    "exit_code",
    "exceptions",
    "deleted",
    "updated_at",
    "priority",
    "pending_reason",
    "pending_detail",
    "pending_until",
)

#: Sortable columns of the jobs list and their SQL types (for the cursor's value).
JOB_SORTS: Mapping[str, str] = {
    "submitted_at": "TIMESTAMP",
    "finished_at": "TIMESTAMP",
    "run_at": "TIMESTAMP",
    "updated_at": "TIMESTAMP",
    "status": "VARCHAR",
    "task": "VARCHAR",
    "queue": "VARCHAR",
    "job_id": "VARCHAR",
    "submission_id": "VARCHAR",
    "attempts": "INTEGER",
    "execution_duration": "DOUBLE",
    "pending_duration": "DOUBLE",
}

SUBMISSION_SORTS: Mapping[str, str] = {
    "submitted_at": "TIMESTAMP",
    "finished_at": "TIMESTAMP",
    "updated_at": "TIMESTAMP",
    "jobs": "INTEGER",
    "wall_time": "DOUBLE",
    "outcome": "VARCHAR",
}

#: The projection's views the analytics page charts, each with the most rows it shows.
ANALYTICS: Mapping[str, tuple[str, int]] = {
    "status_counts": ("jobs per status", 20),
    "task_durations": ("execution and pending percentiles per task", 200),
    "throughput_per_minute": ("jobs submitted, started and finished per minute", 240),
    "task_failures": ("failure rate per task", 200),
    "task_error_types": ("error types of failed attempts per task", 200),
    "queue_wait": ("wait from dispatch to a worker per queue", 100),
    "slowest_jobs": ("finished jobs by execution duration", 50),
    "worker_load": ("attempts, outcomes and busy time per worker", 500),
    "retries": ("jobs that ran more than one attempt", 100),
    "duplicate_executions": ("attempts that ran on more than one worker", 100),
    "idempotency_keys": ("idempotency keys and their decisions", 100),
    "rejected_commands": ("commands the scheduler rejected", 100),
}


@dataclass(frozen=True)
class Page:
    """One page of a keyed list.

    Attributes:
        rows: the rows.
        total: rows matching the filters, all pages.
        next: the cursor of the next page, ``None`` on the last.
    """

    rows: list[dict[str, Any]]
    total: int
    next: str | None

    def json(self, name: str) -> dict[str, Any]:
        return {name: self.rows, "total": self.total, "next": self.next}


@dataclass(frozen=True)
class JobFilter:
    """The filters of the jobs list (every one optional).

    Attributes:
        statuses: job statuses.
        task: task name (or, for commands, the job's name).
        queue: worker queue.
        submission_id: one submission.
        labels: ``key -> value`` pairs the job's labels (or else its submission's) must
            all hold.
        submitted_after / submitted_before: a range of submission times (inclusive,
            exclusive).
        include_deleted: list deleted jobs too.
        search: a substring of the job id, name or task.
    """

    statuses: tuple[str, ...] = ()
    task: str | None = None
    queue: str | None = None
    submission_id: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    submitted_after: datetime | None = None
    submitted_before: datetime | None = None
    include_deleted: bool = False
    search: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.statuses:
            clauses.append(f"status IN ({', '.join('?' for _ in self.statuses)})")
            params.extend(self.statuses)
        if self.task:
            clauses.append("coalesce(task, name) = ?")
            params.append(self.task)
        if self.queue:
            clauses.append("queue = ?")
            params.append(self.queue)
        if self.submission_id:
            clauses.append("submission_id = ?")
            params.append(self.submission_id)
        for key, value in self.labels:
            # the job's own label, else its submission's
            clauses.append(
                "coalesce(labels[?], (SELECT s.labels[?] FROM submissions s "
                "WHERE s.submission_id = jobs.submission_id)) = ?"
            )
            params.extend([key, key, value])
        if self.submitted_after is not None:
            clauses.append("submitted_at >= CAST(? AS TIMESTAMP)")
            params.append(_naive(self.submitted_after))
        if self.submitted_before is not None:
            clauses.append("submitted_at < CAST(? AS TIMESTAMP)")
            params.append(_naive(self.submitted_before))
        if not self.include_deleted:
            clauses.append("NOT deleted")
        if self.search:
            clauses.append(
                "(contains(job_id, ?) OR contains(coalesce(name, ''), ?) "
                "OR contains(coalesce(task, ''), ?))"
            )
            params.extend([self.search] * 3)
        return " AND ".join(clauses) or "TRUE", params


def parse_statuses(values: Sequence[str]) -> tuple[str, ...]:
    """Job statuses named in any case.

    Raises:
        ApiError: 400 naming the unknown status and the known ones.
    """
    out = []
    for value in values:
        try:
            out.append(str(JobStatus(value.upper())))
        except ValueError:
            known = ", ".join(str(s) for s in JobStatus)
            raise bad_request(f"unknown status {value!r}; one of {known}") from None
    return tuple(out)


def parse_time(name: str, value: str | None) -> datetime | None:
    """An ISO 8601 time (no zone means UTC) or epoch milliseconds.

    Raises:
        ApiError: 400 when it is neither.
    """
    if value is None or value == "":
        return None
    if value.isdigit():
        return datetime.fromtimestamp(int(value) / 1000, tz=UTC)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(
            f"{name}={value!r} is not a time: give ISO 8601 (2026-05-01T12:00:00Z) or epoch "
            "milliseconds"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_labels(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``key=value`` label filters.

    Raises:
        ApiError: 400 for one without ``=``.
    """
    out = []
    for value in values:
        key, eq, wanted = value.partition("=")
        if not eq or not key:
            raise bad_request(f"label={value!r}: give key=value")
        out.append((key, wanted))
    return tuple(out)


class ReadModel:
    """The API's questions to the projection.

    Args:
        db_path: the projection file (its projector's endpoint is found next to it).
        limits: the API's limits.
    """

    def __init__(self, db_path: str | Path, limits: UiLimits) -> None:
        self.db_path = Path(db_path)
        self.limits = limits
        self._reader = ProjectionReader(self.db_path, timeout=30.0)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Read-only SQL on the projection; rows with their values made JSON-ready."""
        return [_clean(row) for row in self._reader.query(sql, list(params))]

    # ------------------------------------------------------------------ jobs

    def jobs(
        self,
        filters: JobFilter,
        *,
        sort: str = "submitted_at",
        descending: bool = True,
        limit: int,
        cursor: str | None = None,
    ) -> Page:
        """One page of jobs.

        Raises:
            ApiError: 400 for an unknown sort column or a cursor of another list.
        """
        if sort not in JOB_SORTS:
            raise bad_request(f"sort={sort!r}: sort by one of {', '.join(JOB_SORTS)}")
        where, params = filters.where()
        return self._page(
            "jobs",
            ", ".join(JOB_COLUMNS),
            where,
            params,
            sort=sort,
            kind=JOB_SORTS[sort],
            keys=("submission_id", "job_id"),
            descending=descending,
            limit=limit,
            cursor=cursor,
        )

    def status_counts(self, filters: JobFilter) -> dict[str, int]:
        """Jobs per status under the filters (every status present, zeros included)."""
        where, params = filters.where()
        rows = self.query(
            f"SELECT status, count(*) AS jobs FROM jobs WHERE {where} GROUP BY status", params
        )
        counts = {str(status): 0 for status in JobStatus}
        counts.update({str(row["status"]): int(row["jobs"]) for row in rows})
        return counts

    def job(self, submission_id: str, job_id: str) -> dict[str, Any]:
        """A job's full row with its attempts and exceptions.

        Raises:
            ApiError: 404 when the projection holds no such job (yet).
        """
        rows = self.query(
            "SELECT * FROM jobs WHERE submission_id = ? AND job_id = ?", [submission_id, job_id]
        )
        if not rows:
            raise _not_found(f"job {submission_id}/{job_id}")
        job = rows[0]
        job["attempt_rows"] = self.query(
            "SELECT * FROM attempts WHERE submission_id = ? AND job_id = ? ORDER BY attempt",
            [submission_id, job_id],
        )
        job["exception_rows"] = self.query(
            "SELECT attempt, timestamp, type, note, severity, fatal, traceback "
            "FROM job_exceptions WHERE submission_id = ? AND job_id = ? ORDER BY timestamp",
            [submission_id, job_id],
        )
        return job

    def job_status(self, submission_id: str, job_id: str) -> dict[str, Any]:
        """The job's status, attempt and progress (Tapis's ``getJobStatus``).

        Raises:
            ApiError: 404 when the projection holds no such job (yet).
        """
        rows = self.query(
            "SELECT submission_id, job_id, status, attempts, max_attempts, progress, total, "
            "status_line, worker_id, deleted, updated_at FROM jobs "
            "WHERE submission_id = ? AND job_id = ?",
            [submission_id, job_id],
        )
        if not rows:
            raise _not_found(f"job {submission_id}/{job_id}")
        return rows[0]

    def history(self, submission_id: str, job_id: str | None, *, limit: int) -> dict[str, Any]:
        """The ``describe`` lines of a job's (or a whole submission's) events, in order."""
        job_clause = "" if job_id is None else " AND job_id = ?"
        params: list[Any] = [submission_id] + ([] if job_id is None else [job_id])
        rows = self.query(
            "SELECT seq, timestamp AS created, job_id, event, status, attempt, description "
            f"FROM job_events WHERE submission_id = ?{job_clause} ORDER BY seq LIMIT {limit + 1}",
            params,
        )
        if not rows:
            self._known(submission_id, job_id)
        return {"history": rows[:limit], "truncated": len(rows) > limit}

    def output(self, submission_id: str, job_id: str | None, stream: str | None) -> dict[str, Any]:
        """A job's (or submission's) command output, chunks joined per job and stream.

        At most :attr:`~engine.ui.config.UiLimits.output_max_bytes` characters; the answer
        says when more were left out.
        """
        clauses = ["submission_id = ?"]
        params: list[Any] = [submission_id]
        if job_id is not None:
            clauses.append("job_id = ?")
            params.append(job_id)
        if stream is not None:
            clauses.append("stream = ?")
            params.append(stream)
        cap = self.limits.output_max_bytes
        rows = self.query(
            "SELECT job_id, stream, attempt, chunk, truncated FROM ("
            'SELECT job_id, stream, attempt, "offset", chunk, truncated, '
            'sum(length(chunk)) OVER (ORDER BY timestamp, job_id, stream, "offset") AS upto '
            f"FROM job_outputs WHERE {' AND '.join(clauses)}) "
            f'WHERE upto - length(chunk) < {cap} ORDER BY job_id, stream, "offset"',
            params,
        )
        if not rows and job_id is not None:
            self._known(submission_id, job_id)
        joined: dict[tuple[str, str], dict[str, Any]] = {}
        size = 0
        cut = False
        for row in rows:
            key = (str(row["job_id"]), str(row["stream"]))
            item = joined.setdefault(
                key,
                {"job_id": key[0], "stream": key[1], "text": "", "dropped": False},
            )
            chunk = str(row["chunk"])
            if size + len(chunk) > cap:
                chunk = chunk[: cap - size]
                cut = True
            size += len(chunk)
            item["text"] += chunk
            item["dropped"] = item["dropped"] or bool(row["truncated"])
        return {"outputs": list(joined.values()), "truncated": cut, "limit_bytes": cap}

    # ------------------------------------------------------------------ submissions

    def submissions(
        self,
        *,
        done: bool | None,
        outcome: str | None,
        submitted_after: datetime | None,
        submitted_before: datetime | None,
        sort: str,
        descending: bool,
        limit: int,
        cursor: str | None,
    ) -> Page:
        """One page of submissions.

        Raises:
            ApiError: 400 for an unknown sort column or a cursor of another list.
        """
        if sort not in SUBMISSION_SORTS:
            raise bad_request(f"sort={sort!r}: sort by one of {', '.join(SUBMISSION_SORTS)}")
        clauses: list[str] = []
        params: list[Any] = []
        if done is not None:
            clauses.append("done = ?")
            params.append(done)
        if outcome:
            clauses.append("outcome = ?")
            params.append(outcome.upper())
        if submitted_after is not None:
            clauses.append("submitted_at >= CAST(? AS TIMESTAMP)")
            params.append(_naive(submitted_after))
        if submitted_before is not None:
            clauses.append("submitted_at < CAST(? AS TIMESTAMP)")
            params.append(_naive(submitted_before))
        return self._page(
            "submissions",
            "*",
            " AND ".join(clauses) or "TRUE",
            params,
            sort=sort,
            kind=SUBMISSION_SORTS[sort],
            keys=("submission_id",),
            descending=descending,
            limit=limit,
            cursor=cursor,
        )

    def submission(self, submission_id: str) -> dict[str, Any]:
        """A submission's row, its jobs (the DAG/tree's nodes) and its attempts (the Gantt).

        Raises:
            ApiError: 404 when the projection holds no such submission (yet).
        """
        rows = self.query("SELECT * FROM submissions WHERE submission_id = ?", [submission_id])
        if not rows:
            raise _not_found(f"submission {submission_id}")
        submission = rows[0]
        submission["job_rows"] = self.query(
            f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs WHERE submission_id = ? "
            f"ORDER BY submitted_at, job_id LIMIT {self.limits.history_max_rows}",
            [submission_id],
        )
        submission["attempt_rows"] = self.query(
            "SELECT job_id, attempt, outcome, worker_id, pending_at, dispatched_at, assigned_at, "
            "run_at, finished_at, worker_started_at, worker_ended_at, execution_duration, "
            "queue_wait, error_type FROM attempts WHERE submission_id = ? "
            f"ORDER BY coalesce(pending_at, run_at), job_id, attempt "
            f"LIMIT {self.limits.history_max_rows}",
            [submission_id],
        )
        return submission

    def submission_status(self, submission_id: str) -> dict[str, Any]:
        """A submission's counts per status and its outcome.

        Raises:
            ApiError: 404 when the projection holds no such submission (yet).
        """
        rows = self.query(
            "SELECT submission_id, jobs, submitted, blocked, pending, assigned, running, "
            "completed, failed, canceled, skipped, abandoned, deleted_jobs, rejections, done, "
            "outcome, submitted_at, finished_at, wall_time, updated_at FROM submissions "
            "WHERE submission_id = ?",
            [submission_id],
        )
        if not rows:
            raise _not_found(f"submission {submission_id}")
        return rows[0]

    # ------------------------------------------------------------------ workers, analytics

    def workers(self) -> dict[str, Any]:
        """Every worker with its load and liveness, and every queue with its jobs and wait."""
        workers = self.query("SELECT * FROM worker_load ORDER BY alive DESC, worker_id LIMIT 1000")
        queues = self.query(
            "SELECT j.queue, count(*) AS jobs, "
            "count(*) FILTER (WHERE status = 'PENDING') AS pending, "
            "count(*) FILTER (WHERE status IN ('ASSIGNED', 'RUNNING')) AS running, "
            "count(*) FILTER (WHERE status = 'COMPLETED') AS completed, "
            "count(*) FILTER (WHERE status = 'FAILED') AS failed, "
            "any_value(w.wait_p50) AS wait_p50, any_value(w.wait_p90) AS wait_p90, "
            "any_value(w.waiting_now) AS waiting_now "
            "FROM jobs j LEFT JOIN queue_wait w ON w.queue = j.queue "
            "WHERE NOT j.deleted GROUP BY j.queue ORDER BY j.queue LIMIT 1000"
        )
        return {"workers": workers, "queues": queues}

    def analytics(self, view: str) -> dict[str, Any]:
        """The rows of one of the projection's views (:data:`ANALYTICS`).

        Raises:
            ApiError: 404 for a view not in :data:`ANALYTICS`.
        """
        if view not in ANALYTICS:
            raise ApiError(
                404, "not_found", f"no analytics view {view!r}; one of {', '.join(ANALYTICS)}"
            )
        description, cap = ANALYTICS[view]
        order = " ORDER BY minute DESC" if view == "throughput_per_minute" else ""
        rows = self.query(f"SELECT * FROM {view}{order} LIMIT {cap}")
        return {"view": view, "description": description, "rows": rows, "limit": cap}

    def sql(self, text: str, params: list[Any]) -> dict[str, Any]:
        """The SQL box: one read-only statement, at most ``sql_max_rows`` rows.

        A SELECT (or WITH, FROM, VALUES, TABLE) is wrapped in ``SELECT * FROM (...) LIMIT n``
        so the projection never builds more rows than are shown; SHOW, DESCRIBE, SUMMARIZE
        and EXPLAIN run as they are (their results are small).

        Raises:
            ApiError: 400 for SQL longer than ``sql_max_chars``.
            QueryError: DuckDB refused or failed it, or it is not read-only.
        """
        limits = self.limits
        statement = text.strip().rstrip(";").strip()
        if not statement:
            raise bad_request("send a statement in 'sql'")
        if len(statement) > limits.sql_max_chars:
            raise bad_request(
                f"SQL of {len(statement)} characters; the SQL box takes at most "
                f"{limits.sql_max_chars}",
                "sql_too_long",
            )
        first = statement.split(None, 1)[0].lower()
        wrapped = first in ("select", "with", "from", "values", "table", "(")
        sql = (
            f"SELECT * FROM ({statement}\n) AS sql_box LIMIT {limits.sql_max_rows + 1}"
            if wrapped
            else statement
        )
        reader = ProjectionReader(self.db_path, timeout=limits.sql_timeout_s)
        try:
            table = reader.arrow(sql, params)
        except TimeoutError:
            raise ApiError(
                504,
                "sql_timeout",
                f"the projection did not answer within {limits.sql_timeout_s:g} s; narrow the "
                "query (a WHERE, fewer rows)",
            ) from None
        rows = [_clean(row) for row in table.slice(0, limits.sql_max_rows).to_pylist()]
        return {
            "columns": table.schema.names,
            "rows": rows,
            "truncated": table.num_rows > limits.sql_max_rows,
            "limit_rows": limits.sql_max_rows,
            "source": reader.source,
        }

    # ------------------------------------------------------------------ paging

    def _page(
        self,
        table: str,
        columns: str,
        where: str,
        params: list[Any],
        *,
        sort: str,
        kind: str,
        keys: tuple[str, ...],
        descending: bool,
        limit: int,
        cursor: str | None,
    ) -> Page:
        total_rows = self.query(f"SELECT count(*) AS n FROM {table} WHERE {where}", params)
        total = int(total_rows[0]["n"]) if total_rows else 0
        clause, after = "", list[Any]()
        if cursor:
            clause, after = _after(cursor, table, sort, kind, keys, descending)
        direction = "DESC" if descending else "ASC"
        order = ", ".join(
            [f"{sort} {direction} NULLS LAST"] + [f"{key} {direction}" for key in keys]
        )
        rows = self.query(
            f"SELECT {columns} FROM {table} WHERE ({where}){clause} ORDER BY {order} "
            f"LIMIT {limit + 1}",
            params + after,
        )
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = _encode_cursor(table, sort, last[sort], [last[key] for key in keys])
        return Page(rows, total, next_cursor)

    def _known(self, submission_id: str, job_id: str | None) -> None:
        if job_id is None:
            found = self.query(
                "SELECT 1 AS x FROM submissions WHERE submission_id = ?", [submission_id]
            )
            what = f"submission {submission_id}"
        else:
            found = self.query(
                "SELECT 1 AS x FROM jobs WHERE submission_id = ? AND job_id = ?",
                [submission_id, job_id],
            )
            what = f"job {submission_id}/{job_id}"
        if not found:
            raise _not_found(what)


def _not_found(what: str) -> ApiError:
    return ApiError(
        404,
        "not_found",
        f"the projection holds no {what} (yet: a projector may still be catching up)",
    )


def _encode_cursor(table: str, sort: str, value: Any, keys: list[Any]) -> str:
    raw = json.dumps({"t": table, "s": sort, "v": value, "k": keys}, default=str)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _after(
    cursor: str,
    table: str,
    sort: str,
    kind: str,
    keys: tuple[str, ...],
    descending: bool,
) -> tuple[str, list[Any]]:
    """The WHERE clause of the rows after a cursor, in the list's order (NULLS LAST)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        value, key_values = data["v"], list(data["k"])
        same = data["t"] == table and data["s"] == sort and len(key_values) == len(keys)
    except (ValueError, KeyError, TypeError):
        raise bad_request("cursor is not one this API made") from None
    if not same:
        raise bad_request(f"cursor belongs to another list or sort; restart without it ({sort})")
    op = "<" if descending else ">"
    # keys after (k1, k2) in lexicographic order
    key_parts: list[str] = []
    key_params: list[Any] = []
    for index, key in enumerate(keys):
        equal = [f"{keys[i]} = ?" for i in range(index)]
        key_parts.append("(" + " AND ".join([*equal, f"{key} {op} ?"]) + ")")
        key_params.extend([*key_values[:index], key_values[index]])
    keys_after = "(" + " OR ".join(key_parts) + ")"
    if value is None:
        return f" AND {sort} IS NULL AND {keys_after}", key_params
    cast = f"CAST(? AS {kind})"
    clause = f" AND ({sort} {op} {cast} OR ({sort} = {cast} AND {keys_after}) OR {sort} IS NULL)"
    return clause, [value, value, *key_params]


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _clean(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            value = (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
        elif isinstance(value, list) and value and isinstance(value[0], tuple):
            value = {str(k): v for k, v in value}  # a DuckDB MAP read through Arrow
        out[key] = value
    return out
