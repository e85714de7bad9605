"""Taipy's job durations, computed from the events of one job.

Taipy defines three durations of a job from the times its status changed:

* execution: from RUNNING to the end (``finished_at - run_at``), or to now while it runs;
* pending: from PENDING to RUNNING, or to now while it waits;
* blocked: from BLOCKED to PENDING, or to now while it is blocked.

joblog adds two things Taipy does not have, and settles them as follows.

Retries. A retried job has several attempts; the times and durations are those of its *last*
attempt, the one that decided how the job ended (Taipy's job is one execution: a retry is
the next execution). ``pending_at`` is when the last attempt became PENDING (the
:class:`~engine.lifecycle.records.JobRetryScheduled` of a retry, so its backoff counts as
pending), ``run_at`` is when it started. The time earlier attempts took is in none of the
three; the events of each attempt (or the projection's attempt rows) tell it. Blocked time
ends when the job first became PENDING, which happens once.

Ends without the phase's successor. A job can end while a phase is open: canceled while
PENDING, abandoned while BLOCKED. The phase then ends at ``finished_at`` instead of growing
with the clock (Taipy's reading would count a canceled job as pending forever).

Takeovers. When another worker takes a started attempt over and restarts it, ``run_at`` is
the restart: the run the first worker lost counts as pending, like the wait of a retry.

These are the same times :func:`~engine.lifecycle.evolve.evolve` folds into
:class:`~engine.lifecycle.state.JobState`, and the definitions the projector uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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
    JobSubmitted,
)

_TERMINAL = (JobCompleted, JobFailed, JobCanceled, JobAbandoned, JobSkipped)


@dataclass(frozen=True)
class JobTimes:
    """When a job reached each status (ms since the epoch; ``None``: not reached).

    Attributes:
        submitted_at: the job was submitted.
        blocked_at: it waited for dependencies or sub-jobs.
        first_pending_at: it first became runnable (the end of BLOCKED).
        pending_at: its last attempt became PENDING.
        run_at: its last attempt started (``None`` while a retry waits or runs no more).
        finished_at: it reached its terminal status.
        attempt: the number of its last attempt (0 if it never had one).
    """

    submitted_at: int | None = None
    blocked_at: int | None = None
    first_pending_at: int | None = None
    pending_at: int | None = None
    run_at: int | None = None
    finished_at: int | None = None
    attempt: int = 0


@dataclass(frozen=True)
class Durations:
    """Taipy's three durations, in ms; ``None`` for a phase the job never went through.

    Attributes:
        execution_ms: the last attempt's run, to ``finished_at`` or now.
        pending_ms: the last attempt's wait, from PENDING to its start, ``finished_at`` or now.
        blocked_ms: from BLOCKED to the first PENDING, ``finished_at`` or now.
    """

    execution_ms: int | None
    pending_ms: int | None
    blocked_ms: int | None


def job_times(events: Iterable[Event]) -> JobTimes:
    """Folds the events of one job into the times it reached each status.

    Args:
        events: the job's events, in any order (they are sorted by sequence number);
            events that do not change a status are ignored.

    Returns:
        The times of the job.

    Raises:
        ValueError: the events belong to more than one job.
    """
    ordered = sorted(events, key=lambda event: event.seq)
    if len({(event.submission_id, event.job_id) for event in ordered}) > 1:
        raise ValueError("job_times takes the events of a single job")
    submitted_at = blocked_at = first_pending_at = pending_at = run_at = finished_at = None
    attempt = 0
    for event in ordered:
        body, ts = event.body, event.timestamp
        if isinstance(body, JobSubmitted):
            submitted_at = ts
        elif isinstance(body, JobBlocked):
            blocked_at = ts
        elif isinstance(body, JobPending):
            first_pending_at = ts if first_pending_at is None else first_pending_at
            pending_at, run_at, attempt = ts, None, body.attempt
        elif isinstance(body, JobRetryScheduled):
            pending_at, run_at, attempt = ts, None, body.next_attempt
        elif isinstance(body, JobStarted):
            run_at = ts
        elif isinstance(body, _TERMINAL) and finished_at is None:
            finished_at = ts
    return JobTimes(
        submitted_at=submitted_at,
        blocked_at=blocked_at,
        first_pending_at=first_pending_at,
        pending_at=pending_at,
        run_at=run_at,
        finished_at=finished_at,
        attempt=attempt,
    )


def durations_of(times: JobTimes, now: int | None = None) -> Durations:
    """Taipy's durations from a job's times.

    Args:
        times: the job's times (:func:`job_times`).
        now: the clock (ms) that closes a phase still open; without it an open phase has no
            duration (``None``).

    Returns:
        The durations; never negative (a clock behind the events counts as no time).
    """
    end = times.finished_at if times.finished_at is not None else now
    return Durations(
        execution_ms=_span(times.run_at, end),
        pending_ms=_span(times.pending_at, times.run_at if times.run_at is not None else end),
        blocked_ms=_span(
            times.blocked_at,
            times.first_pending_at if times.first_pending_at is not None else end,
        ),
    )


def durations(events: Iterable[Event], now: int | None = None) -> Durations:
    """Taipy's durations of one job, from its events (see the module's docstring).

    Args:
        events: the events of one job.
        now: the clock (ms) for phases still open; without it they have no duration.

    Returns:
        Execution, pending and blocked time in ms, ``None`` for a phase that never happened.

    Raises:
        ValueError: the events belong to more than one job.
    """
    return durations_of(job_times(events), now)


def _span(start: int | None, end: int | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, end - start)


__all__ = ["Durations", "JobTimes", "durations", "durations_of", "job_times"]
