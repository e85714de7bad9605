"""What an event asks of the outside world: dispatch records, control signals, key traffic.

``effects(state_before, event)`` is pure; the scheduler writes what it returns in the same
transaction as the event itself, so a dispatch exists exactly when its event does.
"""

from __future__ import annotations

from engine.lifecycle.gates import claim_of, slot_answer, slot_traffic
from engine.lifecycle.records import (
    KEY_WAIT,
    SCHEDULE_LABEL,
    CancelMode,
    ClaimIdempotencyKey,
    ClaimSlot,
    CommandRejected,
    Control,
    Dispatch,
    Event,
    FailureReason,
    IdempotencyKeyAnswer,
    IdempotencyKeyDecided,
    JobAbandoned,
    JobAssigned,
    JobBlocked,
    JobCanceled,
    JobCancelRequested,
    JobCompleted,
    JobDispatched,
    JobDuplicateClaim,
    JobFailed,
    JobHeld,
    JobPending,
    JobRetryScheduled,
    JobSkipped,
    JobStatus,
    KeyCommand,
    KeyDecision,
    QueueConfigured,
    ReleaseIdempotencyKey,
    ScheduleFired,
    ScheduleRunEnded,
    SlotDecided,
    SlotDecision,
    SubmissionCompleted,
    SubmitJobs,
    job_ref,
    key_ledger_id,
    schedule_submission_id,
    slot_ledger_id,
)
from engine.lifecycle.schedules import run_command, run_rejected
from engine.lifecycle.state import JobState, SubmissionState

#: A side record: a dispatch, a kill, traffic to another partition's (pseudo-)submission, or
#: the submission a schedule fires.
Effect = Dispatch | Control | KeyCommand | SubmitJobs

#: Events that end the current attempt: the slots it holds or waits for are released.
_ENDS_AN_ATTEMPT = (
    JobRetryScheduled,
    JobCompleted,
    JobFailed,
    JobCanceled,
    JobAbandoned,
    JobSkipped,
)

_KILL_ON = frozenset(
    {FailureReason.TIMEOUT, FailureReason.QUEUE_TIMEOUT, FailureReason.WORKER_LOST}
)
_HAS_WORKER = frozenset({JobStatus.ASSIGNED, JobStatus.RUNNING})


def effects(
    before: SubmissionState, event: Event, *, lease_ms: int, kill_grace_ms: int
) -> list[Effect]:
    """The records to write with ``event``.

    Args:
        before: the submission's state just before ``event`` is folded in.
        event: the event.
        lease_ms: written into dispatch records (how often the worker must heartbeat).
        kill_grace_ms: how long a worker waits between SIGTERM and SIGKILL.
    """
    body = event.body
    if isinstance(body, IdempotencyKeyDecided):
        return _answer(event, body)
    if isinstance(body, SlotDecided):
        if body.decision is not SlotDecision.GRANTED:
            return []
        return [slot_answer(body, event.event_id, event.timestamp)]
    if isinstance(body, QueueConfigured):
        return _queue_limits(before, event, body)
    if isinstance(body, ScheduleFired):
        assert before.schedule is not None
        return [run_command(before.schedule, body, event.event_id, event.timestamp)]
    if isinstance(body, SubmissionCompleted):
        return _run_ended(before, event, body)
    if isinstance(body, CommandRejected) and body.command_type == "SubmitJobs":
        # a schedule's run that could not be submitted ended at once
        return list(run_rejected(body.command_id, event.submission_id, event.timestamp))
    job = before.jobs.get(event.job_id)
    if job is None:
        return []
    out = _job_effects(event, job, lease_ms, kill_grace_ms)
    key = job.spec.idempotency_key
    if key:
        traffic = _key_traffic(event, job, key)
        if traffic is not None:
            out = [traffic, *out]
    if isinstance(body, JobHeld) and body.slot and body.slot != job.held_slot:
        out.append(
            claim_of(event.submission_id, event.job_id, job, body, event.event_id, event.timestamp)
        )
    elif (job.slots or job.held_slot) and isinstance(body, _ENDS_AN_ATTEMPT):
        out.extend(
            slot_traffic(event.submission_id, event.job_id, job, event.event_id, event.timestamp)
        )
    return out


def _run_ended(before: SubmissionState, event: Event, body: SubmissionCompleted) -> list[Effect]:
    """A run a schedule fired ended: its schedule hears of it (for its overlap policy)."""
    schedule_id = dict(before.labels).get(SCHEDULE_LABEL)
    if not schedule_id:
        return []
    return [
        ScheduleRunEnded(
            command_id=f"{event.event_id}:run-ended",
            submission_id=schedule_submission_id(schedule_id),
            run_submission_id=event.submission_id,
            status=str(body.status),
            issued_at=event.timestamp,
        )
    ]


def _queue_limits(before: SubmissionState, event: Event, body: QueueConfigured) -> list[Effect]:
    """New limits of a queue go to its ledger at once (jobs waiting there may go on)."""
    old = before.queue_config
    limits = (body.max_running, body.rate_limit, body.rate_period_ms)
    if old is not None and limits == (old.max_running, old.rate_limit, old.rate_period_ms):
        return []
    if old is None and limits == (0, 0, 0):
        return []
    name = f"queue:{body.queue}"
    return [
        ClaimSlot(
            command_id=f"{event.event_id}:limits",
            submission_id=slot_ledger_id(name),
            ledger=name,
            holder="",
            max_running=body.max_running,
            rate_limit=body.rate_limit,
            rate_period_ms=body.rate_period_ms,
            issued_at=event.timestamp,
        )
    ]


def _job_effects(event: Event, job: JobState, lease_ms: int, kill_grace_ms: int) -> list[Effect]:
    body = event.body
    if isinstance(body, JobPending | JobDispatched) and body.dispatch_id is not None:
        return [_dispatch(event, job, body.attempt, body.dispatch_id, lease_ms)]
    if isinstance(body, JobRetryScheduled):
        out: list[Effect] = []
        if body.reason in _KILL_ON and job.worker_id:
            out.append(_kill(event, job, str(body.reason), kill_grace_ms))
        if body.dispatch_id is not None:
            out.append(_dispatch(event, job, body.next_attempt, body.dispatch_id, lease_ms))
        return out
    if isinstance(body, JobCancelRequested):
        if body.mode is not CancelMode.KILL:
            return []  # left to finish: nothing is sent to the worker
        return [_kill(event, job, body.reason, kill_grace_ms)]
    if isinstance(body, JobFailed) and body.reason in _KILL_ON and job.worker_id:
        return [_kill(event, job, str(body.reason), kill_grace_ms)]
    # (an ASSIGNED job is abandoned when a cancel of a job it waited on comes after that
    # job completed: Taipy's rule, see commands.cancel_after_success)
    if isinstance(body, JobCanceled | JobAbandoned) and job.status in _HAS_WORKER and job.worker_id:
        return [_kill(event, job, body.reason, kill_grace_ms)]
    if isinstance(body, JobDuplicateClaim):
        return [
            _kill(
                event,
                job,
                f"{body.holder_worker_id} holds this attempt and is alive",
                kill_grace_ms,
                worker_id=body.worker_id,
            )
        ]
    if isinstance(body, JobAssigned) and body.previous_worker_id:
        return [
            _kill(
                event,
                job,
                "another worker took over",
                kill_grace_ms,
                worker_id=body.previous_worker_id,
            )
        ]
    return []


_ENDS_A_CLAIM = (JobCompleted, JobFailed, JobCanceled, JobAbandoned)


def _key_traffic(event: Event, job: JobState, key: str) -> KeyCommand | None:
    """A keyed job claims its key when it starts waiting for it and releases it when it ends
    (unless it was SKIPPED: then it never claimed, or the ledger already answered it)."""
    body = event.body
    holder = job_ref(event.submission_id, event.job_id)
    if isinstance(body, JobBlocked) and KEY_WAIT in body.waiting_on:
        if KEY_WAIT in job.waiting_on:
            return None
        return ClaimIdempotencyKey(
            command_id=f"{event.event_id}:claim",
            submission_id=key_ledger_id(key),
            key=key,
            holder=holder,
            issued_at=event.timestamp,
        )
    if isinstance(body, _ENDS_A_CLAIM) and not job.is_terminal:
        return ReleaseIdempotencyKey(
            command_id=f"{event.event_id}:release",
            submission_id=key_ledger_id(key),
            key=key,
            holder=holder,
            completed=isinstance(body, JobCompleted),
            issued_at=event.timestamp,
        )
    return None


def _answer(event: Event, body: IdempotencyKeyDecided) -> list[Effect]:
    """A ledger's grant or "already completed" goes back to the job's submission."""
    if body.decision not in (KeyDecision.GRANTED, KeyDecision.COMPLETED):
        return []
    submission_id, _, job_id = body.job.partition("/")
    return [
        IdempotencyKeyAnswer(
            command_id=f"{event.event_id}:answer",
            submission_id=submission_id,
            job_id=job_id,
            key=body.key,
            granted=body.decision is KeyDecision.GRANTED,
            completed_by=body.other,
            issued_at=event.timestamp,
        )
    ]


def _dispatch(
    event: Event, job: JobState, attempt: int, dispatch_id: str, lease_ms: int
) -> Dispatch:
    return Dispatch(
        dispatch_id=dispatch_id,
        submission_id=event.submission_id,
        job_id=event.job_id,
        attempt=attempt,
        spec=job.spec,
        dispatched_at=event.timestamp,
        lease_ms=lease_ms,
    )


def _kill(
    event: Event, job: JobState, reason: str, grace_ms: int, *, worker_id: str | None = None
) -> Control:
    return Control(
        worker_id=worker_id or job.worker_id,
        action="kill",
        submission_id=event.submission_id,
        job_id=event.job_id,
        attempt=job.attempt,
        dispatch_id=job.dispatch_id or "",
        reason=reason,
        grace_ms=grace_ms,
        sent_at=event.timestamp,
    )
