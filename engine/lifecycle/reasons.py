"""Why a job is not running: its pending reason, as the events of the job say it.

Every job that is not RUNNING and not finished carries one reason (``code``), a sentence
(``detail``) and, where a time ends the wait, ``until``:

| code | the job waits for | until |
|---|---|---|
| ``dependencies`` | the jobs it depends on, or its sub-jobs, to succeed | |
| ``idempotency_key`` | its idempotency key's ledger (another job holds the key) | |
| ``not_before`` | its ``not_before`` time | that time |
| ``backoff`` | the backoff before its next attempt | the end of the backoff |
| ``queue_paused`` | its queue to be resumed | |
| ``concurrency`` | a slot of a concurrency or rate limit (1) | |
| ``worker`` | a worker of its queue to take the dispatched attempt | |
| ``assigned`` | the worker that claimed it to start it | |

(1) Its position in line and when the rate window opens are the ledger's: the projection's
``pending_reasons`` view joins them in.

:func:`reason_after` is a fold over the job's events like
:func:`~engine.lifecycle.views.status_after`; watches, the CLI and the projection read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import assert_never

from engine.lifecycle import records as ev
from engine.lifecycle.records import KEY_WAIT, EventBody


@dataclass(frozen=True)
class PendingReason:
    """Why a job waits (``code`` empty: it does not: it runs, or it ended)."""

    code: str = ""
    detail: str = ""
    until: int = 0  # ms since the epoch; 0: no time ends the wait

    def __bool__(self) -> bool:
        return bool(self.code)


NONE = PendingReason()


def _at(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _blocked(waiting_on: tuple[str, ...]) -> PendingReason:
    jobs = [job for job in waiting_on if job != KEY_WAIT]
    if not jobs:
        return PendingReason("idempotency_key", "waits for its idempotency key's ledger")
    shown = ", ".join(jobs[:5]) + (f" and {len(jobs) - 5} more" if len(jobs) > 5 else "")
    return PendingReason("dependencies", f"waits on {shown}")


def _worker(queue: str) -> PendingReason:
    return PendingReason("worker", f"dispatched, waits for a worker of queue {queue}")


def reason_after(body: EventBody, timestamp: int) -> PendingReason | None:
    """The pending reason of a job after one of its events (``None``: unchanged)."""
    match body:
        case ev.JobBlocked():
            return _blocked(body.waiting_on)
        case ev.JobPending():
            if body.dispatch_id is not None:
                return _worker(body.queue)
            if body.not_before > timestamp:
                return PendingReason(
                    "not_before", f"not before {_at(body.not_before)}", body.not_before
                )
            return None  # the decision goes on: a JobHeld or JobDispatched follows
        case ev.JobRetryScheduled():
            if body.dispatch_id is not None:
                return _worker(body.queue)
            if body.not_before > timestamp:
                return PendingReason(
                    "backoff",
                    f"attempt {body.next_attempt} after a backoff, at {_at(body.not_before)}",
                    body.not_before,
                )
            return None
        case ev.JobDispatched():
            return _worker(body.queue)
        case ev.JobHeld():
            return PendingReason(str(body.reason), body.detail)
        case ev.JobAssigned():
            return PendingReason("assigned", f"claimed by worker {body.worker_id}, starting")
        case (
            ev.JobSubmitted()
            | ev.JobStarted()
            | ev.JobCompleted()
            | ev.JobFailed()
            | ev.JobCanceled()
            | ev.JobAbandoned()
            | ev.JobSkipped()
            | ev.JobRerun()
        ):
            return NONE
        case (
            ev.SubmissionAccepted()
            | ev.JobProgressed()
            | ev.JobOutput()
            | ev.JobExceptionRaised()
            | ev.JobCancelRequested()
            | ev.JobDeleted()
            | ev.CommandRejected()
            | ev.SubmissionCompleted()
            | ev.JobDuplicateClaim()
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
            return None
        case _:
            assert_never(body)
