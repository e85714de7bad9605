"""The transitions several rules share: making a job pending, failing or retrying an
attempt, cascading a terminal status to what waits on it, completing the submission."""

from __future__ import annotations

import random

from engine.lifecycle.draft import Draft
from engine.lifecycle.gates import gated, pass_gates
from engine.lifecycle.policy import dispatch_id
from engine.lifecycle.records import (
    CancelMode,
    FailureReason,
    JobAbandoned,
    JobCanceled,
    JobFailed,
    JobPending,
    JobRetryScheduled,
    JobSpec,
    JobStatus,
    SubmissionCompleted,
    SubmissionStatus,
)


def make_pending(draft: Draft, job_id: str, attempt: int, reason: str) -> None:
    """The job may run: dispatched at once, or PENDING behind its gates (its ``not_before``,
    a paused queue, its limits' slots: :mod:`engine.lifecycle.gates`)."""
    spec = draft.job(job_id).spec
    not_before = max(draft.now, spec.not_before)
    if not_before <= draft.now and not gated(spec, draft.queues):
        draft.emit(
            job_id,
            JobPending(
                attempt=attempt,
                queue=spec.queue,
                dispatch_id=dispatch_id(draft.state.submission_id, job_id, attempt),
                not_before=draft.now,
                reason=reason,
            ),
        )
        return
    draft.emit(
        job_id,
        JobPending(attempt, spec.queue, dispatch_id=None, not_before=not_before, reason=reason),
    )
    if not_before <= draft.now:
        pass_gates(draft, job_id)


def by_priority(draft: Draft, job_ids: list[str] | tuple[str, ...]) -> list[str]:
    """Job ids with the higher priorities first (ties keep their order)."""
    return sorted(job_ids, key=lambda job_id: -draft.job(job_id).spec.priority)


def backoff_ms(spec: JobSpec, submission_id: str, failed_attempt: int) -> int:
    """The delay before the attempt after ``failed_attempt``, jittered deterministically."""
    policy = spec.retry
    cap = float(policy.max_backoff_ms)
    try:
        base = policy.backoff_ms * policy.backoff_multiplier ** (failed_attempt - 1)
    except OverflowError:
        base = cap
    base = min(base, cap)
    if policy.jitter > 0 and base > 0:
        rng = random.Random(f"{submission_id}/{spec.job_id}/{failed_attempt}")
        base *= 1 + rng.uniform(-policy.jitter, policy.jitter)
    # max_backoff_ms bounds the delay itself: jitter may shorten a capped delay, not lengthen it
    return max(0, min(round(base), policy.max_backoff_ms))


def retryable(spec: JobSpec, reason: FailureReason, error_type: str) -> bool:
    retry_on = spec.retry.retry_on
    return not retry_on or error_type in retry_on or str(reason) in retry_on


def fail_attempt(
    draft: Draft,
    job_id: str,
    reason: FailureReason,
    error_type: str,
    note: str,
    *,
    traceback: str = "",
    exit_code: int | None = None,
    ended_at: int = 0,
) -> None:
    job = draft.job(job_id)
    if job.cancel is not None and job.cancel.mode is CancelMode.KILL:
        cancel_killed(draft, job_id, "", ended_at)
        return
    spec = job.spec
    run_attempt = job.attempt - job.first_attempt + 1  # a rerun has a retry budget of its own
    if run_attempt < spec.retry.max_attempts and retryable(spec, reason, error_type):
        delay = backoff_ms(spec, draft.state.submission_id, run_attempt)
        next_attempt = job.attempt + 1
        at_once = delay == 0 and not gated(spec, draft.queues)
        draft.emit(
            job_id,
            JobRetryScheduled(
                failed_attempt=job.attempt,
                reason=reason,
                error_type=error_type,
                error_note=note,
                next_attempt=next_attempt,
                not_before=draft.now + delay,
                dispatch_id=(
                    dispatch_id(draft.state.submission_id, job_id, next_attempt)
                    if at_once
                    else None
                ),
                queue=spec.queue,
            ),
        )
        return
    draft.emit(
        job_id,
        JobFailed(
            attempt=job.attempt,
            reason=reason,
            error_type=error_type,
            error_note=note,
            traceback=traceback,
            exit_code=exit_code,
            ended_at=ended_at,
        ),
    )
    after_terminal(draft, job_id)


def cancel_killed(draft: Draft, job_id: str, late_outcome: str, ended_at: int) -> None:
    """Ends a job whose attempt was sent a kill: CANCELED, whatever the attempt reported.

    A finish report that arrives after an accepted kill-cancel is recorded in the reason
    (``late_outcome``) but does not change the outcome, so a canceled job's dependents are
    abandoned even when its task ignored the kill and completed.
    """
    job = draft.job(job_id)
    assert job.cancel is not None
    reason = job.cancel.reason or "canceled"
    if late_outcome:
        reason = f"{reason} (the attempt reported {late_outcome} after the kill; ignored)"
    draft.emit(
        job_id,
        JobCanceled(
            reason=reason,
            requested_by=job.cancel.requested_by,
            attempt=job.attempt,
            ended_at=ended_at,
        ),
    )
    after_terminal(draft, job_id)


def after_terminal(draft: Draft, job_id: str) -> None:
    """Cascades a terminal status: release or abandon what waits on it, complete the submission."""
    cascade(draft, [job_id])
    complete_if_done(draft)


def cascade(draft: Draft, roots: list[str]) -> None:
    queue = list(roots)
    while queue:
        job_id = queue.pop(0)
        job = draft.job(job_id)
        for dependent_id in by_priority(draft, draft.state.dependents.get(job_id, ())):
            dependent = draft.job(dependent_id)
            if dependent.is_terminal or dependent.status is not JobStatus.BLOCKED:
                continue
            if job.status.is_success:
                if not dependent.waiting_on:
                    # (a rerun job keeps the attempt number its JobRerun gave it)
                    attempt = max(1, dependent.attempt)
                    make_pending(draft, dependent_id, attempt, reason="dependencies completed")
            else:
                draft.emit(
                    dependent_id,
                    JobAbandoned(
                        cause_job_id=job_id,
                        cause_status=job.status,
                        reason=f"{job_id} ended {job.status}",
                    ),
                )
                queue.append(dependent_id)


def abandon_dependents(
    draft: Draft, job_id: str, reason: str, spare: frozenset[str] = frozenset()
) -> None:
    """Taipy's cancel of a RUNNING job with ``finish``: it runs on, what waits on it won't.

    Jobs in ``spare`` are left alone: the same cancel names them, so they end CANCELED.
    """
    queue = [job_id]
    while queue:
        current = queue.pop(0)
        for dependent_id in draft.state.dependents.get(current, ()):
            dependent = draft.job(dependent_id)
            if dependent.is_terminal or dependent_id in spare:
                continue
            draft.emit(
                dependent_id,
                JobAbandoned(
                    cause_job_id=current, cause_status=draft.job(current).status, reason=reason
                ),
            )
            queue.append(dependent_id)


def complete_if_done(draft: Draft) -> None:
    state = draft.state
    if state.outcome is not None or not state.accepted or state.open_jobs > 0:
        return
    counts: dict[str, int] = {}
    for job in state.jobs.values():
        if not job.is_terminal:
            return
        counts[job.status] = counts.get(job.status, 0) + 1
    if counts.get(JobStatus.FAILED):
        status = SubmissionStatus.FAILED
    elif counts.get(JobStatus.CANCELED) or counts.get(JobStatus.ABANDONED):
        status = SubmissionStatus.CANCELED
    else:
        status = SubmissionStatus.COMPLETED
    draft.emit("", SubmissionCompleted(status, tuple(sorted(counts.items()))))
