"""Taipy's job durations, computed from the events of one job.

Taipy defines three durations of a job from the times its status changed:

* execution: from RUNNING to the end (``finished_at - run_at``, measured on the worker's
  clock when it said; see below), or to now while it runs;
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

The worker's clock. ``run_at`` and ``finished_at`` are when the scheduler *decided* the start
and the end, so they carry the delays of the reports' trip and of the scheduler's batches:
a task that sleeps 0.1 s can show 0.06 s between them. The worker stamps when the attempt's
code started (:attr:`~engine.lifecycle.records.JobStarted.started_at`) and when it ended
(``ended_at`` of ``JobCompleted``, ``JobFailed``, ``JobCanceled``). The execution of a
finished job is measured between these two when both are known and the end is not before
the start (one clock, the worker's); otherwise (a timeout, a lost worker, an older worker
that stamped nothing) between ``run_at`` and ``finished_at`` (the scheduler's clock).
:attr:`JobTimes.execution_clock` says which. An execution still running counts from
``run_at`` to the reader's ``now``: the worker's clock is not the reader's. Pending time
ends at ``run_at`` in every case, so the scheduler's two clocks are never mixed with the
worker's in one span.

These are the same times :func:`~engine.lifecycle.evolve.evolve` folds into
:class:`~engine.lifecycle.state.JobState`, and the one definition of the durations: the
projector's rows and attempts (:mod:`projections.fold`) and the watch's
:class:`~engine.lifecycle.views.JobView` measure with :func:`durations_of`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import assert_never

from engine.lifecycle import records as ev
from engine.lifecycle.records import Event, EventBody

#: Values of :attr:`JobTimes.execution_clock`.
WORKER_CLOCK = "worker"
SCHEDULER_CLOCK = "scheduler"


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
        worker_started_at: the worker's clock when the last attempt's code started
            (``None``: not started, or the worker did not say).
        worker_ended_at: the worker's clock when the last attempt ended (``None``: not
            ended, or no worker said: a timeout, a lost worker).
    """

    submitted_at: int | None = None
    blocked_at: int | None = None
    first_pending_at: int | None = None
    pending_at: int | None = None
    run_at: int | None = None
    finished_at: int | None = None
    attempt: int = 0
    worker_started_at: int | None = None
    worker_ended_at: int | None = None

    @property
    def execution_clock(self) -> str | None:
        """Whose clock measures the execution: ``"worker"``, ``"scheduler"``, or ``None``
        while it has no end (not run, or still running)."""
        if self.run_at is None or self.finished_at is None:
            return None
        started, ended = self.worker_started_at, self.worker_ended_at
        if started is not None and ended is not None and ended >= started:
            return WORKER_CLOCK
        return SCHEDULER_CLOCK


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
    worker_started_at: int | None = None
    worker_ended_at: int | None = None
    attempt = 0
    for event in ordered:
        body, ts = event.body, event.timestamp
        match body:
            case ev.JobSubmitted():
                submitted_at = ts
            case ev.JobBlocked():
                # blocked again while blocked (its idempotency key was granted, dependencies
                # remain): still blocked since the first time
                blocked_at = ts if blocked_at is None else blocked_at
            case ev.JobPending():
                first_pending_at = ts if first_pending_at is None else first_pending_at
                pending_at, run_at, attempt = ts, None, body.attempt
                worker_started_at = worker_ended_at = None
            case ev.JobRetryScheduled():
                pending_at, run_at, attempt = ts, None, body.next_attempt
                worker_started_at = worker_ended_at = None
            case ev.JobStarted():
                run_at, worker_started_at = ts, body.started_at or None
            case ev.JobCompleted() | ev.JobFailed() | ev.JobCanceled():
                if finished_at is None:
                    finished_at, worker_ended_at = ts, body.ended_at or None
            case ev.JobAbandoned() | ev.JobSkipped():
                if finished_at is None:
                    finished_at = ts
            case ev.JobRerun():
                # a new run: its times start again (the job was submitted once)
                blocked_at = first_pending_at = pending_at = run_at = finished_at = None
                worker_started_at = worker_ended_at = None
                attempt = body.attempt
            case (
                ev.JobAssigned()
                | ev.JobDispatched()
                | ev.JobProgressed()
                | ev.JobOutput()
                | ev.JobExceptionRaised()
                | ev.JobCancelRequested()
                | ev.JobDeleted()
                | ev.JobDuplicateClaim()
                | ev.SubmissionAccepted()
                | ev.SubmissionCompleted()
                | ev.CommandRejected()
                | ev.IdempotencyKeyDecided()
                | ev.NotificationAdded()
                | ev.NotificationRemoved()
                | ev.JobHeld()
                | ev.SlotDecided()
                | ev.QueueConfigured()
                | ev.ScheduleCreated()
                | ev.ScheduleChanged()
                | ev.ScheduleFired()
                | ev.ScheduleSkipped()
                | ev.ScheduleRunSeen()
                | ev.SubmissionThrottled()
            ):
                pass
            case _:
                assert_never(body)
    return JobTimes(
        submitted_at=submitted_at,
        blocked_at=blocked_at,
        first_pending_at=first_pending_at,
        pending_at=pending_at,
        run_at=run_at,
        finished_at=finished_at,
        attempt=attempt,
        worker_started_at=worker_started_at,
        worker_ended_at=worker_ended_at,
    )


def moves_times(body: EventBody) -> bool:
    """Whether an event can move one of its job's times, and so its durations.

    The events :func:`job_times` does not ignore; a reader that keeps durations (the
    projections' ``jobs`` rows) measures them again after these only.
    """
    match body:
        case (
            ev.JobSubmitted()
            | ev.JobBlocked()
            | ev.JobPending()
            | ev.JobRetryScheduled()
            | ev.JobStarted()
            | ev.JobCompleted()
            | ev.JobFailed()
            | ev.JobCanceled()
            | ev.JobAbandoned()
            | ev.JobSkipped()
            | ev.JobRerun()
        ):
            return True
        case (
            ev.JobAssigned()
            | ev.JobDispatched()
            | ev.JobProgressed()
            | ev.JobOutput()
            | ev.JobExceptionRaised()
            | ev.JobCancelRequested()
            | ev.JobDeleted()
            | ev.JobDuplicateClaim()
            | ev.SubmissionAccepted()
            | ev.SubmissionCompleted()
            | ev.CommandRejected()
            | ev.IdempotencyKeyDecided()
            | ev.NotificationAdded()
            | ev.NotificationRemoved()
            | ev.JobHeld()
            | ev.SlotDecided()
            | ev.QueueConfigured()
            | ev.ScheduleCreated()
            | ev.ScheduleChanged()
            | ev.ScheduleFired()
            | ev.ScheduleSkipped()
            | ev.ScheduleRunSeen()
            | ev.SubmissionThrottled()
        ):
            return False
        case _:
            assert_never(body)


def durations_of(times: JobTimes, now: int | None = None) -> Durations:
    """Taipy's durations from a job's times.

    Args:
        times: the job's times (:func:`job_times`).
        now: the clock (ms) that closes a phase still open; without it an open phase has no
            duration (``None``).

    Returns:
        The durations; never negative (a clock behind the events counts as no time). A
        finished execution is measured on the worker's clock when it can be (see the
        module's docstring and :attr:`JobTimes.execution_clock`).
    """
    end = times.finished_at if times.finished_at is not None else now
    if times.execution_clock == WORKER_CLOCK:
        execution_ms = _span(times.worker_started_at, times.worker_ended_at)
    else:
        execution_ms = _span(times.run_at, end)
    return Durations(
        execution_ms=execution_ms,
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


__all__ = [
    "SCHEDULER_CLOCK",
    "WORKER_CLOCK",
    "Durations",
    "JobTimes",
    "durations",
    "durations_of",
    "job_times",
    "moves_times",
]
