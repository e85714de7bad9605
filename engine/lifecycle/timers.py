"""Time: queue and run timeouts, lost workers, kill deadlines, retry backoff; and the
transient bookkeeping (lease renewals, held-back progress) that is not worth an event."""

from __future__ import annotations

from dataclasses import replace

from engine.lifecycle.draft import Draft
from engine.lifecycle.gates import grant_waiting, ledger_deadline, pass_gates, woken
from engine.lifecycle.policy import ACTIVE, DEFAULT_POLICY, Policy
from engine.lifecycle.records import (
    AttemptRef,
    CancelMode,
    Claimed,
    ExceptionReported,
    FailureReason,
    Finished,
    Heartbeat,
    Input,
    JobCanceled,
    JobProgressed,
    JobStatus,
    OutputReported,
    ProgressReported,
    Started,
)
from engine.lifecycle.reports import is_news, is_stale, latest_progress
from engine.lifecycle.schedules import fire_due, schedule_deadline
from engine.lifecycle.state import (
    JobState,
    SubmissionState,
)
from engine.lifecycle.transitions import after_terminal, fail_attempt


def _queue_timeout_at(job: JobState) -> int | None:
    """When the attempt's wait for a worker times out.

    The wait starts when the attempt may run (a retry's backoff is not queueing) and ends at
    its first start: an attempt another worker took over after it started is not queued again.
    """
    timeout = job.spec.queue_timeout_ms
    if timeout <= 0 or job.status not in (JobStatus.PENDING, JobStatus.ASSIGNED):
        return None
    if job.run_at is not None:
        return None
    assert job.pending_at is not None
    return max(job.pending_at, job.not_before) + timeout


def _run_timeout_at(job: JobState) -> int | None:
    """When the started attempt times out (also while a takeover waits for its restart)."""
    timeout = job.spec.timeout_ms
    if timeout <= 0 or job.status not in ACTIVE or job.run_at is None:
        return None
    if job.cancel is not None and job.cancel.mode is CancelMode.KILL:
        return None  # the kill's own deadline takes over
    return job.run_at + timeout


def job_deadline(job: JobState, policy: Policy = DEFAULT_POLICY) -> int | None:
    """When the job's next timer is due, if it has one."""
    if job.is_terminal:
        return None
    due: list[int] = []
    status = job.status
    if status is JobStatus.PENDING and job.dispatch_id is None and job.held is None:
        due.append(job.not_before)
    for timeout_at in (_queue_timeout_at(job), _run_timeout_at(job)):
        if timeout_at is not None:
            due.append(timeout_at)
    if status in ACTIVE and job.lease_until is not None:
        due.append(job.lease_until)
    if job.cancel is not None and job.cancel.mode is CancelMode.KILL:
        due.append(job.cancel.deadline)
    if job.held_progress is not None and job.last_progress_at is not None:
        due.append(job.last_progress_at + policy.progress_interval_ms)
    return min(due) if due else None


def own_deadline(state: SubmissionState) -> int | None:
    """When the submission's own timer (not one of a job's) is due: a slot ledger waiting for
    its rate window, a schedule's next slot."""
    if state.schedule is not None:
        return schedule_deadline(state.schedule)
    ledger = state.slot_ledger
    if ledger is None:
        return None
    return ledger_deadline(ledger, state.last_timestamp)


def next_deadline(state: SubmissionState, policy: Policy = DEFAULT_POLICY) -> int | None:
    """When a :class:`Tick` should next be decided for this submission (``None``: never)."""
    if state.slot_ledger is not None or state.schedule is not None:
        return own_deadline(state)
    if state.outcome is not None:
        return None
    best: int | None = None
    for job in state.jobs.values():
        due = job_deadline(job, policy)
        if due is not None and (best is None or due < best):
            best = due
    return best


def fire_timers(draft: Draft) -> None:
    if draft.state.slot_ledger is not None:
        grant_waiting(draft)  # the rate window opened
        return
    if draft.state.schedule is not None:
        fire_due(draft)  # its slots came
        return
    now = draft.now
    policy = draft.policy
    for job_id in list(draft.state.jobs):
        job = draft.job(job_id)
        if woken(job, draft.queues):
            pass_gates(draft, job_id)  # its queue was resumed
            continue
        due = job_deadline(job, policy)
        if due is None or due > now:
            continue
        if (
            job.held_progress is not None
            and job.last_progress_at is not None
            and (job.last_progress_at + policy.progress_interval_ms <= now)
        ):
            held = job.held_progress
            draft.emit(job_id, JobProgressed(job.attempt, held.value, held.total, held.status_line))
            job = draft.job(job_id)
        if (
            job.cancel is not None
            and job.cancel.mode is CancelMode.KILL
            and (job.cancel.deadline <= now)
        ):
            draft.emit(
                job_id,
                JobCanceled(
                    reason=f"{job.cancel.reason} (the worker did not confirm the kill)",
                    requested_by=job.cancel.requested_by,
                    attempt=job.attempt,
                ),
            )
            after_terminal(draft, job_id)
            continue
        if (
            job.status is JobStatus.PENDING
            and job.dispatch_id is None
            and job.held is None
            and job.not_before <= now
        ):
            pass_gates(draft, job_id)
            job = draft.job(job_id)
        queue_timeout_at = _queue_timeout_at(job)
        if queue_timeout_at is not None and queue_timeout_at <= now:
            fail_attempt(
                draft,
                job_id,
                FailureReason.QUEUE_TIMEOUT,
                "QueueTimeout",
                f"not started within {job.spec.queue_timeout_ms} ms",
            )
            continue
        run_timeout_at = _run_timeout_at(job)
        if run_timeout_at is not None and run_timeout_at <= now:
            fail_attempt(
                draft,
                job_id,
                FailureReason.TIMEOUT,
                "Timeout",
                f"ran longer than {job.spec.timeout_ms} ms",
            )
            continue
        if job.status in ACTIVE and job.lease_until is not None and job.lease_until <= now:
            fail_attempt(
                draft,
                job_id,
                FailureReason.WORKER_LOST,
                "WorkerLost",
                f"worker {job.worker_id} was silent past its lease",
            )


def observe(
    state: SubmissionState, given: Input, now: int, policy: Policy = DEFAULT_POLICY
) -> SubmissionState:
    """Applies what an input changes besides events: lease renewals and held-back progress.

    Call it after the events of ``decide(state, given, now)`` were folded in.
    """
    if isinstance(given, Heartbeat):
        for ref in given.attempts:
            if ref.submission_id == state.submission_id:
                _renew(state, ref, now)
        return state
    if not isinstance(
        given, Claimed | Started | ProgressReported | OutputReported | ExceptionReported | Finished
    ):
        return state
    if is_stale(state, given):
        return state
    _renew(state, given.ref, now)
    if isinstance(given, ProgressReported):
        # Hold what the log does not say yet: a report coalescing dropped (even one in the same
        # millisecond as the last progress event), merged over what was already held.
        job = state.jobs[given.ref.job_id]
        latest = latest_progress(given.value, given.total, given.status_line, job.held_progress)
        held = latest if is_news(job, latest) else None
        if held != job.held_progress:
            state.jobs[given.ref.job_id] = replace(job, held_progress=held)
    return state


def _renew(state: SubmissionState, ref: AttemptRef, now: int) -> None:
    job = state.jobs.get(ref.job_id)
    if job is None or job.status not in ACTIVE or job.worker_id != ref.worker_id:
        return
    if job.attempt != ref.attempt or job.lease_ms <= 0:
        return
    until = now + job.lease_ms
    if job.lease_until is None or until > job.lease_until:
        state.jobs[ref.job_id] = replace(job, lease_until=until)


def recover(state: SubmissionState, now: int) -> SubmissionState:
    """Re-arms the leases of running attempts after a rebuild, so that a scheduler failover
    does not declare every quiet worker lost."""
    for job_id, job in list(state.jobs.items()):
        if job.status in ACTIVE and job.lease_ms > 0:
            until = max(job.lease_until or 0, now + job.lease_ms)
            state.jobs[job_id] = replace(job, lease_until=until)
    return state
