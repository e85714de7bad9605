"""The read side's questions about jobs: SQL over the ``jobs`` table and its rows as views.

:class:`JobQueries` answers :meth:`engine.api.Joblog.get_jobs` and friends (Taipy's
``get_jobs``, ``get_latest_job``) from the projections, through a
:class:`~projections.reader.ProjectionReader` (the running projector's endpoint, else the
file). Rows come back as :class:`~engine.watch.JobView`, the same view a watch folds from
events.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.lifecycle.records import JobStatus
from engine.watch import JobView
from projections.reader import ProjectionReader

_ORDER = "submitted_at, submission_id, job_id"
_NEWEST = "submitted_at DESC, submission_id DESC, job_id DESC"


class JobQueries:
    """Jobs read from a projection file (or the projector serving it)."""

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self._reader = ProjectionReader(self.db_path)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Read-only SQL on the projection."""
        return self._reader.query(sql, list(params))

    def jobs(
        self,
        *,
        statuses: Sequence[str] | None = None,
        task: str | None = None,
        submission_id: str | None = None,
        include_deleted: bool = False,
        limit: int | None = None,
    ) -> list[JobView]:
        """Jobs, oldest submission first; ``limit`` keeps the most recent ones.

        Args:
            statuses: job statuses (any case), or ``None`` for all.
            task: only jobs of this task (or, for commands, this name).
            submission_id: only jobs of this submission.
            include_deleted: include deleted jobs.
            limit: at most this many.
        """
        where: list[str] = []
        params: list[Any] = []
        if statuses is not None:
            where.append(f"status IN ({', '.join('?' for _ in statuses)})")
            params.extend(str(JobStatus(s.upper())) for s in statuses)
        if task is not None:
            where.append("coalesce(task, name) = ?")
            params.append(task)
        if submission_id is not None:
            where.append("submission_id = ?")
            params.append(submission_id)
        if not include_deleted:
            where.append("NOT deleted")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        if limit is None:
            sql = f"SELECT * FROM jobs{clause} ORDER BY {_ORDER}"
        else:
            sql = (
                f"SELECT * FROM (SELECT * FROM jobs{clause} ORDER BY {_NEWEST} "
                f"LIMIT {int(limit)}) ORDER BY {_ORDER}"
            )
        return [job_from_row(row) for row in self.query(sql, params)]

    def job(self, submission_id: str, job_id: str) -> JobView | None:
        """One job, or ``None`` if the projection does not hold it (yet)."""
        rows = self.query(
            "SELECT * FROM jobs WHERE submission_id = ? AND job_id = ?", [submission_id, job_id]
        )
        return job_from_row(rows[0]) if rows else None

    def latest(self, task: str) -> JobView | None:
        """The most recently submitted job of a task (or command name), or ``None``."""
        rows = self.query(
            f"SELECT * FROM jobs WHERE coalesce(task, name) = ? AND NOT deleted "
            f"ORDER BY {_NEWEST} LIMIT 1",
            [task],
        )
        return job_from_row(rows[0]) if rows else None


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def job_from_row(row: Mapping[str, Any]) -> JobView:
    """A :class:`~engine.watch.JobView` from a row of the projections' ``jobs`` table."""
    command = row.get("command")
    return JobView(
        submission_id=str(row["submission_id"]),
        job_id=str(row["job_id"]),
        name=row.get("name") or "",
        task=row.get("task"),
        command=tuple(shlex.split(command)) if command else None,
        queue=row.get("queue") or "default",
        parent=row.get("parent"),
        depends_on=tuple(row.get("depends_on") or ()),
        status=JobStatus(row["status"]),
        attempt=int(row.get("attempts") or 0),
        max_attempts=int(row.get("max_attempts") or 1),
        worker_id=row.get("worker_id") or "",
        progress=row.get("progress"),
        total=row.get("total"),
        status_line=row.get("status_line"),
        submitted_at=_utc(row.get("submitted_at")),
        blocked_at=_utc(row.get("blocked_at")),
        pending_at=_utc(row.get("pending_at")),
        run_at=_utc(row.get("run_at")),
        finished_at=_utc(row.get("finished_at")),
        error_type=row.get("error_type") or "",
        error_note=row.get("error_note") or row.get("end_reason") or "",
        result=row.get("result"),
        exit_code=row.get("exit_code"),
        exceptions=int(row.get("exceptions") or 0),
        deleted=bool(row.get("deleted")),
        stacktrace=(row["traceback"],) if row.get("traceback") else (),
        force=row.get("force"),
        host=row.get("host") or "",
        pending_reason=row.get("pending_reason") or "",
        pending_detail=row.get("pending_detail") or "",
        pending_until=_utc(row.get("pending_until")),
        priority=int(row.get("priority") or 0),
    )
