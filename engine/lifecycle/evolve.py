"""The fold: ``evolve(state, event) -> state``. Pure apart from reusing the container.

:func:`evolve_job` is the per-job fold on frozen :class:`JobState` values; :func:`evolve`
applies it to a :class:`SubmissionState` in place (O(1) per event) and returns it.
"""

from __future__ import annotations

from typing import assert_never

from engine.lifecycle import records as ev
from engine.lifecycle.gates import evolve_slot_ledger
from engine.lifecycle.notifications import active_after
from engine.lifecycle.records import (
    Event,
    EventBody,
    JobStatus,
    KeyDecision,
)
from engine.lifecycle.schedules import evolve_schedule
from engine.lifecycle.state import (
    CancelRequest,
    JobState,
    KeyLedger,
    QueueConfig,
    SlotLedger,
    SubmissionState,
    replace_job,
    upstream_of,
)


def evolve(state: SubmissionState | None, event: Event) -> SubmissionState:
    """Folds one event into the submission's state.

    Args:
        state: the state before the event (``None`` for a submission not seen yet). It is
            updated in place; copy it first (:meth:`SubmissionState.copy`) to keep it.
        event: the next event of this submission.

    Returns:
        The state after the event.
    """
    if state is None:
        state = SubmissionState(submission_id=event.submission_id)
    if event.seq == 0:
        return state  # a rejection outside the submission's sequence: changes nothing
    state.seq = event.seq
    state.last_timestamp = event.timestamp
    body = event.body
    match body:
        case ev.SubmissionAccepted():
            state.accepted = True
            state.command_id = body.command_id
            state.submitted_by = body.submitted_by
            state.labels = body.labels
        case ev.JobSubmitted():
            _add_job(state, body, event.timestamp)
        case ev.SubmissionCompleted():
            state.outcome = body.status
        case ev.CommandRejected() | ev.SubmissionThrottled():
            pass  # logged outside the sequence: nothing changed
        case ev.IdempotencyKeyDecided():
            state.accepted = True
            state.key_ledger = evolve_ledger(state.key_ledger or KeyLedger(body.key), body)
        case ev.JobDeleted():
            state.jobs[event.job_id] = replace_job(state.jobs[event.job_id], deleted=True)
            state.deleted = all(job.deleted for job in state.jobs.values())
        case ev.NotificationAdded() | ev.NotificationRemoved():
            state.notifications = active_after(state.notifications, body)
        case ev.SlotDecided():
            state.accepted = True
            state.slot_ledger = evolve_slot_ledger(
                state.slot_ledger or SlotLedger(body.ledger), body, event.seq, event.timestamp
            )
        case (
            ev.ScheduleCreated()
            | ev.ScheduleChanged()
            | ev.ScheduleFired()
            | ev.ScheduleSkipped()
            | ev.ScheduleRunSeen()
        ):
            if isinstance(body, ev.ScheduleCreated):
                state.accepted = True
                state.command_id = body.command_id
            state.schedule = evolve_schedule(state.schedule, body, event.timestamp)
        case ev.QueueConfigured():
            state.accepted = True
            state.queue_config = QueueConfig(
                body.queue, body.paused, body.max_running, body.rate_limit, body.rate_period_ms
            )
        case _:
            job = state.jobs[event.job_id]
            new = evolve_job(job, body, event.timestamp)
            state.jobs[event.job_id] = new
            if new.is_terminal and not job.is_terminal:
                state.open_jobs -= 1
            elif job.is_terminal and not new.is_terminal:
                state.open_jobs += 1  # a rerun: the submission is open again
                state.outcome = None
            if isinstance(body, ev.JobCompleted | ev.JobSkipped):
                _release_dependents(state, event.job_id)
    return state


def _add_job(state: SubmissionState, body: ev.JobSubmitted, timestamp: int) -> None:
    spec = body.spec
    state.jobs[spec.job_id] = JobState(spec=spec, submitted_at=timestamp)
    state.open_jobs += 1
    if spec.parent is not None:
        state.children[spec.parent] = (*state.children.get(spec.parent, ()), spec.job_id)
        state.dependents[spec.job_id] = (*state.dependents.get(spec.job_id, ()), spec.parent)
    for upstream in spec.depends_on:
        state.dependents[upstream] = (*state.dependents.get(upstream, ()), spec.job_id)


def _release_dependents(state: SubmissionState, job_id: str) -> None:
    for dependent_id in state.dependents.get(job_id, ()):
        dependent = state.jobs.get(dependent_id)
        if dependent is not None and job_id in dependent.waiting_on:
            state.jobs[dependent_id] = replace_job(
                dependent, waiting_on=dependent.waiting_on - {job_id}
            )


def evolve_ledger(ledger: KeyLedger, body: ev.IdempotencyKeyDecided) -> KeyLedger:
    """Folds one decision into an idempotency key's ledger."""
    job, decision = body.job, body.decision
    waiters = tuple(w for w in ledger.waiters if w != job)
    match decision:
        case KeyDecision.GRANTED:
            return KeyLedger(
                ledger.key, holder=job, completed_by=ledger.completed_by, waiters=waiters
            )
        case KeyDecision.QUEUED:
            return KeyLedger(ledger.key, ledger.holder, ledger.completed_by, (*waiters, job))
        case KeyDecision.DONE:
            return KeyLedger(ledger.key, holder="", completed_by=job, waiters=waiters)
        case KeyDecision.RELEASED:
            return KeyLedger(
                ledger.key, holder="", completed_by=ledger.completed_by, waiters=waiters
            )
        case KeyDecision.COMPLETED | KeyDecision.WITHDRAWN:
            # answered (the job is SKIPPED) or withdrawn: the job no longer waits
            return KeyLedger(ledger.key, ledger.holder, ledger.completed_by, waiters)
        case _:
            assert_never(decision)


def evolve_job(job: JobState, body: EventBody, timestamp: int) -> JobState:
    """Folds one job-level event into a job's state."""
    match body:
        case ev.JobBlocked():
            still = job.status is JobStatus.BLOCKED and job.blocked_at is not None
            return replace_job(
                job,
                status=JobStatus.BLOCKED,
                blocked_at=job.blocked_at if still else timestamp,
                waiting_on=frozenset(body.waiting_on),
            )
        case ev.JobPending():
            return replace_job(
                job,
                status=JobStatus.PENDING,
                attempt=body.attempt,
                dispatch_id=body.dispatch_id,
                not_before=body.not_before,
                pending_at=timestamp,
                waiting_on=frozenset(),
                fenced_workers=frozenset(),
                held=None,
                held_slot="",
                slots=frozenset(),
            )
        case ev.JobDispatched():
            # a dispatch after a claim means the claim was granted (nothing else ends a
            # slot's wait but the attempt's end)
            return replace_job(
                job,
                dispatch_id=body.dispatch_id,
                held=None,
                held_slot="",
                slots=job.slots | {job.held_slot} if job.held_slot else job.slots,
            )
        case ev.JobHeld():
            granted = job.held_slot and job.held_slot != body.slot
            return replace_job(
                job,
                held=body.reason,
                held_slot=body.slot,
                slots=job.slots | {job.held_slot} if granted else job.slots,
            )
        case ev.JobRerun():
            return replace_job(
                job,
                status=JobStatus.SUBMITTED,
                attempt=body.attempt,
                first_attempt=body.attempt,
                dispatch_id=None,
                not_before=0,
                worker_id="",
                host="",
                waiting_on=frozenset(),
                blocked_at=None,
                pending_at=None,
                assigned_at=None,
                run_at=None,
                finished_at=None,
                cancel=None,
                error_type="",
                error_note="",
                result=None,
                exit_code=None,
                fenced_workers=frozenset(),
                held=None,
                held_slot="",
                slots=frozenset(),
                lease_until=None,
                held_progress=None,
            )
        case ev.JobAssigned():
            return replace_job(
                job,
                status=JobStatus.ASSIGNED,
                worker_id=body.worker_id,
                host=body.host,
                assigned_at=timestamp,
                lease_ms=body.lease_ms,
                lease_until=timestamp + body.lease_ms,
                fenced_workers=(
                    job.fenced_workers | {body.previous_worker_id}
                    if body.previous_worker_id
                    else job.fenced_workers
                ),
            )
        case ev.JobStarted():
            return replace_job(
                job,
                status=JobStatus.RUNNING,
                run_at=timestamp,
                lease_until=_renewed(job, timestamp),
            )
        case ev.JobProgressed():
            # Whatever was held back is older than the input that produced this event, and
            # decide merged its fields into it: nothing held survives a progress event.
            return replace_job(
                job,
                progress=body.value if body.value is not None else job.progress,
                total=body.total if body.total is not None else job.total,
                status_line=body.status_line if body.status_line is not None else job.status_line,
                last_progress_at=timestamp,
                held_progress=None,
                lease_until=_renewed(job, timestamp),
            )
        case ev.JobOutput():
            return replace_job(job, lease_until=_renewed(job, timestamp))
        case ev.JobExceptionRaised():
            return replace_job(
                job,
                exceptions=job.exceptions + 1,
                error_type=body.type if body.severity == 0 else job.error_type,
                error_note=body.note if body.severity == 0 else job.error_note,
                lease_until=_renewed(job, timestamp),
            )
        case ev.JobRetryScheduled():
            return replace_job(
                job,
                status=JobStatus.PENDING,
                attempt=body.next_attempt,
                dispatch_id=body.dispatch_id,
                not_before=body.not_before,
                pending_at=timestamp,
                worker_id="",
                host="",
                assigned_at=None,
                run_at=None,
                error_type=body.error_type,
                error_note=body.error_note,
                lease_until=None,
                held_progress=None,
                fenced_workers=frozenset(),
                held=None,
                held_slot="",
                slots=frozenset(),
            )
        case ev.JobCancelRequested():
            return replace_job(
                job,
                cancel=CancelRequest(
                    mode=body.mode, reason=body.reason, requested_by="", deadline=body.deadline
                ),
            )
        case ev.JobCompleted():
            return _terminal(
                job, JobStatus.COMPLETED, timestamp, result=body.result, exit_code=body.exit_code
            )
        case ev.JobFailed():
            return _terminal(
                job,
                JobStatus.FAILED,
                timestamp,
                error_type=body.error_type or str(body.reason),
                error_note=body.error_note,
                exit_code=body.exit_code,
            )
        case ev.JobCanceled():
            return _terminal(job, JobStatus.CANCELED, timestamp)
        case ev.JobAbandoned():
            return _terminal(job, JobStatus.ABANDONED, timestamp)
        case ev.JobSkipped():
            return _terminal(job, JobStatus.SKIPPED, timestamp)
        case ev.JobDuplicateClaim():
            return replace_job(job, fenced_workers=job.fenced_workers | {body.worker_id})
        case (
            ev.SubmissionAccepted()
            | ev.JobSubmitted()
            | ev.JobDeleted()
            | ev.CommandRejected()
            | ev.SubmissionCompleted()
            | ev.IdempotencyKeyDecided()
            | ev.NotificationAdded()
            | ev.NotificationRemoved()
            | ev.SlotDecided()
            | ev.QueueConfigured()
            | ev.ScheduleCreated()
            | ev.ScheduleChanged()
            | ev.ScheduleFired()
            | ev.ScheduleSkipped()
            | ev.ScheduleRunSeen()
            | ev.SubmissionThrottled()
        ):
            # folded by evolve into the submission's state, not into one job's
            raise TypeError(f"not a job event: {type(body).__name__}")
        case _:
            assert_never(body)


def _renewed(job: JobState, timestamp: int) -> int | None:
    if job.lease_ms <= 0:
        return job.lease_until
    return max(job.lease_until or 0, timestamp + job.lease_ms)


def _terminal(
    job: JobState,
    status: JobStatus,
    timestamp: int,
    *,
    result: str | None = None,
    exit_code: int | None = None,
    error_type: str | None = None,
    error_note: str | None = None,
) -> JobState:
    return replace_job(
        job,
        status=status,
        finished_at=timestamp,
        result=result,
        exit_code=exit_code,
        error_type=job.error_type if error_type is None else error_type,
        error_note=job.error_note if error_note is None else error_note,
        lease_until=None,
        held_progress=None,
        waiting_on=frozenset(),
        held=None,
        held_slot="",
        slots=frozenset(),
    )


__all__ = ["evolve", "evolve_job", "evolve_ledger", "upstream_of"]
