"""What an event asks of the outside world: dispatch records and control signals.

``effects(state_before, event)`` is pure; the scheduler writes what it returns in the same
transaction as the event itself, so a dispatch exists exactly when its event does.
"""

from __future__ import annotations

from engine.lifecycle.records import (
    Control,
    Dispatch,
    Event,
    FailureReason,
    JobAssigned,
    JobCanceled,
    JobCancelRequested,
    JobDispatched,
    JobDuplicateClaim,
    JobFailed,
    JobPending,
    JobRetryScheduled,
    JobStatus,
)
from engine.lifecycle.state import JobState, SubmissionState

Effect = Dispatch | Control

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
    job = before.jobs.get(event.job_id)
    if job is None:
        return []
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
        return [_kill(event, job, body.reason, kill_grace_ms)]
    if isinstance(body, JobFailed) and body.reason in _KILL_ON and job.worker_id:
        return [_kill(event, job, str(body.reason), kill_grace_ms)]
    if isinstance(body, JobCanceled) and job.status in _HAS_WORKER and job.worker_id:
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
