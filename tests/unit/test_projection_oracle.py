"""An independent fold of the expected ``jobs`` rows, and the projection checked against it.

:func:`expected_jobs` derives what each ``jobs`` row must hold from the decider's own fold
(:func:`engine.lifecycle.evolve.evolve`) and Taipy's three durations from each job's events
(:func:`engine.lifecycle.durations.durations`, the definitions the projection must follow).
It shares no code with ``projections.fold``'s event handling; the integration tests use it
too, against the DuckDB file a real projector wrote.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from engine.lifecycle.durations import durations, job_times
from engine.lifecycle.evolve import evolve
from engine.lifecycle.records import Event, JobAssigned, JobDuplicateClaim
from engine.lifecycle.state import SubmissionState
from engine.lifecycle.workload import simulate
from projections.fold import Fold, NoRows

#: Columns of ``jobs`` the oracle predicts (the others are copied from specs and not derived).
CHECKED = (
    "status",
    "attempts",
    "worker_id",
    "host",
    "submitted_at",
    "blocked_at",
    "first_pending_at",
    "pending_at",
    "run_at",
    "finished_at",
    "worker_started_at",
    "worker_ended_at",
    "execution_duration",
    "execution_clock",
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
    "executions",
    "takeovers",
    "duplicate_claims",
    "workers_seen",
)


def expected_jobs(events: Iterable[Event]) -> dict[tuple[str, str], dict[str, Any]]:
    """What the ``jobs`` table must hold for a log, by (submission id, job id).

    Timestamps are epoch milliseconds, durations seconds, empty strings ``None``.
    """
    states: dict[str, SubmissionState] = {}
    by_job: dict[tuple[str, str], list[Event]] = {}
    for event in events:
        states[event.submission_id] = evolve(states.get(event.submission_id), event)
        if event.job_id and event.seq > 0:
            by_job.setdefault((event.submission_id, event.job_id), []).append(event)

    out: dict[tuple[str, str], dict[str, Any]] = {}
    for sid, state in states.items():
        for job_id, job in state.jobs.items():
            spans = durations(by_job[(sid, job_id)])
            times = job_times(by_job[(sid, job_id)])
            out[(sid, job_id)] = {
                "status": str(job.status),
                "attempts": job.attempt,
                "worker_id": job.worker_id or None,
                "host": job.host or None,
                "submitted_at": job.submitted_at,
                "blocked_at": job.blocked_at,
                "first_pending_at": times.first_pending_at,
                "pending_at": job.pending_at,
                "run_at": job.run_at,
                "finished_at": job.finished_at,
                "worker_started_at": times.worker_started_at,
                "worker_ended_at": times.worker_ended_at,
                "execution_duration": _seconds(spans.execution_ms),
                "execution_clock": times.execution_clock,
                "pending_duration": _seconds(spans.pending_ms),
                "blocked_duration": _seconds(spans.blocked_ms),
                "progress": job.progress,
                "total": job.total,
                "status_line": job.status_line,
                "error_type": job.error_type or None,
                "error_note": job.error_note or None,
                "result": job.result,
                "exit_code": job.exit_code,
                "exceptions": job.exceptions,
                "deleted": job.deleted,
                **_executions(by_job[(sid, job_id)]),
            }
    return out


def _executions(events: list[Event]) -> dict[str, Any]:
    """How often and where the job ran: every claim a worker made of one of its dispatches."""
    claims = [
        event.body
        for event in events
        if isinstance(event.body, JobAssigned | JobDuplicateClaim) and event.seq > 0
    ]
    workers: list[str] = []
    for claim in claims:
        if claim.worker_id not in workers:
            workers.append(claim.worker_id)
    return {
        "executions": len(claims),
        "takeovers": sum(isinstance(c, JobAssigned) and bool(c.previous_worker_id) for c in claims),
        "duplicate_claims": sum(isinstance(c, JobDuplicateClaim) for c in claims),
        "workers_seen": workers,
    }


def actual_subset(row: dict[str, Any]) -> dict[str, Any]:
    """The :data:`CHECKED` columns of a ``jobs`` row, empty strings as ``None``."""
    return {name: (None if row[name] == "" else row[name]) for name in CHECKED}


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000.0


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
    assert any(row["takeovers"] and row["executions"] > 1 for row in expected.values())
    assert any(row["duplicate_claims"] for row in expected.values())
    clocks = {row["execution_clock"] for row in expected.values()}
    assert {"worker", "scheduler", None} <= clocks


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
