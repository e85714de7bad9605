"""An independent fold of the expected ``jobs`` rows, and the projection checked against it.

:func:`expected_jobs` derives what each ``jobs`` row must hold from the decider's own fold
(:func:`engine.lifecycle.evolve.evolve`) plus a separate walk over each job's events for
Taipy's three durations. It shares no code with ``projections.fold``; the integration tests
use it too, against the DuckDB file a real projector wrote.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from engine.lifecycle.evolve import evolve
from engine.lifecycle.records import (
    Event,
    JobAbandoned,
    JobBlocked,
    JobCanceled,
    JobCompleted,
    JobFailed,
    JobPending,
    JobRetryScheduled,
    JobSkipped,
    JobStarted,
)
from engine.lifecycle.state import SubmissionState
from projections.fold import Fold, NoRows
from projections.workload import simulate

#: Columns of ``jobs`` the oracle predicts (the others are copied from specs and not derived).
CHECKED = (
    "status",
    "attempts",
    "worker_id",
    "host",
    "submitted_at",
    "blocked_at",
    "pending_at",
    "run_at",
    "finished_at",
    "execution_duration",
    "pending_duration",
    "blocked_duration",
    "progress",
    "total",
    "status_line",
    "error_type",
    "error_note",
    "result",
    "exit_code",
    "exceptions",
    "deleted",
)

_TERMINAL = (JobCompleted, JobFailed, JobCanceled, JobAbandoned, JobSkipped)


def expected_jobs(events: Iterable[Event]) -> dict[tuple[str, str], dict[str, Any]]:
    """What the ``jobs`` table must hold for a log, by (submission id, job id).

    Timestamps are epoch milliseconds, durations seconds, empty strings ``None``.
    """
    states: dict[str, SubmissionState] = {}
    marks: dict[tuple[str, str], dict[str, int | None]] = {}
    for event in events:
        states[event.submission_id] = evolve(states.get(event.submission_id), event)
        if not event.job_id or event.seq == 0:
            continue
        mark = marks.setdefault(
            (event.submission_id, event.job_id),
            {"blocked": None, "first_pending": None, "pending": None, "run": None, "end": None},
        )
        body, ts = event.body, event.timestamp
        if isinstance(body, JobBlocked) and mark["blocked"] is None:
            mark["blocked"] = ts
        elif isinstance(body, JobPending | JobRetryScheduled):
            if mark["first_pending"] is None:
                mark["first_pending"] = ts
            mark["pending"] = ts
            mark["run"] = None
        elif isinstance(body, JobStarted):
            mark["run"] = ts
        elif isinstance(body, _TERMINAL):
            mark["end"] = ts

    out: dict[tuple[str, str], dict[str, Any]] = {}
    for sid, state in states.items():
        for job_id, job in state.jobs.items():
            mark = marks[(sid, job_id)]
            out[(sid, job_id)] = {
                "status": str(job.status),
                "attempts": job.attempt,
                "worker_id": job.worker_id or None,
                "host": job.host or None,
                "submitted_at": job.submitted_at,
                "blocked_at": job.blocked_at,
                "pending_at": job.pending_at,
                "run_at": job.run_at,
                "finished_at": job.finished_at,
                "execution_duration": _span(mark["run"], mark["end"]),
                "pending_duration": _span(
                    mark["pending"], mark["run"] if mark["run"] is not None else mark["end"]
                ),
                "blocked_duration": _span(
                    mark["blocked"],
                    mark["first_pending"] if mark["first_pending"] is not None else mark["end"],
                ),
                "progress": job.progress,
                "total": job.total,
                "status_line": job.status_line,
                "error_type": job.error_type or None,
                "error_note": job.error_note or None,
                "result": job.result,
                "exit_code": job.exit_code,
                "exceptions": job.exceptions,
                "deleted": job.deleted,
            }
    return out


def actual_subset(row: dict[str, Any]) -> dict[str, Any]:
    """The :data:`CHECKED` columns of a ``jobs`` row, empty strings as ``None``."""
    return {name: (None if row[name] == "" else row[name]) for name in CHECKED}


def _span(start: int | None, end: int | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start) / 1000.0


# --------------------------------------------------------------------------- the check


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fold_matches_the_independent_fold(seed: int) -> None:
    workload = simulate(120, seed=seed)
    fold = Fold()
    fold.prefetch(workload.events, (), NoRows())
    for event in workload.events:
        fold.event(event)
    expected = expected_jobs(workload.events)

    assert set(fold.jobs) == set(expected)
    for key, want in expected.items():
        assert actual_subset(fold.jobs[key]) == want, key


def test_every_terminal_status_is_covered() -> None:
    expected = expected_jobs(simulate(60).events)
    statuses = {row["status"] for row in expected.values()}
    assert {"COMPLETED", "FAILED", "CANCELED", "ABANDONED", "SKIPPED"} <= statuses
    assert any(row["attempts"] > 1 and row["status"] == "FAILED" for row in expected.values())
    assert any(row["attempts"] > 1 and row["status"] == "COMPLETED" for row in expected.values())
    assert any(row["blocked_duration"] is not None for row in expected.values())


def test_submission_counts_match_the_decider() -> None:
    workload = simulate(80, seed=5)
    fold = Fold()
    for event in workload.events:
        fold.event(event)
    for sid, state in workload.states.items():
        row = fold.submissions[sid]
        counts: dict[str, int] = {}
        for job in state.jobs.values():
            counts[job.status.lower()] = counts.get(job.status.lower(), 0) + 1
        for status in ("completed", "failed", "canceled", "skipped", "abandoned", "pending"):
            assert row[status] == counts.get(status, 0), (sid, status)
        assert row["jobs"] == len(state.jobs)
        assert row["done"] == state.done
        assert row["outcome"] == (str(state.outcome) if state.outcome else None)
        assert row["last_seq"] == state.seq
