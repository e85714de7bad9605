"""The decision: ``decide(state, input, now) -> [events]``. Every lifecycle rule lives here.

Pure: no Kafka, no clock, no randomness that a replay could not repeat (retry jitter is drawn
from a generator seeded by the attempt's identity). ``decide`` never changes ``state``; it
folds the events it emits into a draft (copy-on-write over the state's mappings) so that
one input can cascade (a completion unblocks dependents, a failure abandons them, the last
terminal job completes the submission).

Besides events, a scheduler keeps transient bookkeeping that is not worth a record on the
log: :func:`observe` renews worker leases and holds back progress that coalescing dropped,
and :func:`recover` re-arms leases after a rebuild. :func:`next_deadline` says when the
submission's next timer is due, and a :class:`~engine.lifecycle.records.Tick` fires it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine.lifecycle.commands import (
    decide_cancel,
    decide_claim_key,
    decide_delete,
    decide_key_answer,
    decide_release_key,
    decide_rerun,
    decide_retired,
    decide_retry_now,
    decide_submit,
)
from engine.lifecycle.draft import NO_QUEUES, Draft, merge_draft
from engine.lifecycle.effects import Effect
from engine.lifecycle.gates import (
    decide_claim_slot,
    decide_configure_queue,
    decide_release_slot,
    decide_slot_answer,
)
from engine.lifecycle.notifications import decide_add_notification, decide_remove_notification
from engine.lifecycle.policy import (
    DEFAULT_POLICY,
    MAX_IDEMPOTENCY_KEY_BYTES,
    Policy,
    dispatch_id,
    event_id,
)
from engine.lifecycle.records import (
    AddNotification,
    CancelJobs,
    ChangeSchedule,
    ClaimIdempotencyKey,
    ClaimSlot,
    ConfigureQueue,
    CreateSchedule,
    DeleteJobs,
    Event,
    FailureReason,
    Heartbeat,
    IdempotencyKeyAnswer,
    Input,
    RejectionCode,
    ReleaseIdempotencyKey,
    ReleaseSlot,
    RemoveNotification,
    RerunJobs,
    RetryJob,
    ScheduleRunEnded,
    SlotAnswer,
    SubmitJobs,
    Tick,
    Unprocessable,
    WorkerLeft,
)
from engine.lifecycle.reports import (
    decide_report,
    holder_alive,
    is_current,
    is_stale,
    stale_reply,
)
from engine.lifecycle.schedules import decide_change, decide_create, decide_run_ended
from engine.lifecycle.state import (
    QueueConfig,
    SubmissionState,
)
from engine.lifecycle.timers import fire_timers, job_deadline, next_deadline, observe, recover
from engine.lifecycle.transitions import backoff_ms, fail_attempt
from engine.lifecycle.validation import validate_submission

_NO_KEYS: Mapping[str, str] = {}


def decide(
    state: SubmissionState | None,
    given: Input,
    now: int,
    *,
    policy: Policy = DEFAULT_POLICY,
    completed_keys: Mapping[str, str] = _NO_KEYS,
    queues: Mapping[str, QueueConfig] = NO_QUEUES,
) -> list[Event]:
    """Decides what happens when ``given`` meets the submission in ``state``.

    Args:
        state: the submission's state, or ``None`` if nothing is known of it. Not modified.
        given: a command, a worker report, or a :class:`Tick`.
        now: the scheduler's clock, in ms; every event is stamped with it.
        policy: scheduler-wide limits and timings.
        completed_keys: idempotency key -> ``submission_id/job_id`` that completed it.
        queues: the settings of the queues in the submission's partition (paused, limits).

    Returns:
        The new events of this submission, with consecutive sequence numbers.
    """
    submission_id = _submission_of(given, state)
    if submission_id is None:
        return []
    draft = Draft(state, submission_id, now, policy, queues=queues)
    _decide_into(draft, given, completed_keys)
    return draft.events


@dataclass
class Step:
    """One input fully applied: its events, the records they call for, the state after.

    ``state`` is ``None`` when the input concerned no known submission and created none.
    ``stale`` says the input was a worker report the rules ignore (an ended, superseded or
    unknown attempt, or a fenced worker's).
    """

    events: list[Event]
    effects: list[Effect]
    state: SubmissionState | None
    stale: bool = False


def step(
    state: SubmissionState | None,
    given: Input,
    now: int,
    *,
    policy: Policy = DEFAULT_POLICY,
    completed_keys: Mapping[str, str] = _NO_KEYS,
    queues: Mapping[str, QueueConfig] = NO_QUEUES,
) -> Step:
    """decide, effects, evolve and observe in one pass: the scheduler's hot path.

    The same rules as :func:`decide` followed by folding each event (with
    :func:`~engine.lifecycle.effects.effects` taken just before it) and :func:`observe`,
    without folding every event twice. Unlike :func:`decide` it updates ``state`` in place.
    """
    submission_id = _submission_of(given, state)
    if submission_id is None:
        return Step([], [], state)
    stale = is_stale(state, given)
    if stale:
        return Step([], list(stale_reply(state, given, now, policy)), state, stale=True)
    draft = Draft(state, submission_id, now, policy, collect_effects=True, queues=queues)
    _decide_into(draft, given, completed_keys)
    if state is None:
        if not draft.state.accepted:
            return Step(draft.events, draft.effects, None)
        state = draft.state  # a new submission's draft holds maps of its own (Draft)
    else:
        merge_draft(draft.state, state)
    observe(state, given, now, policy)
    return Step(draft.events, draft.effects, state)


def _decide_into(draft: Draft, given: Input, completed_keys: Mapping[str, str]) -> None:
    submission_id = draft.state.submission_id
    if isinstance(given, Unprocessable):
        command = given.command
        draft.reject(
            command.command_id,
            type(command).__name__,
            RejectionCode.UNPROCESSABLE,
            given.reason,
            getattr(command, "job_id", None) or "",
        )
    elif isinstance(given, SubmitJobs):
        decide_submit(draft, given, completed_keys)
    elif isinstance(given, CancelJobs):
        decide_cancel(draft, given)
    elif isinstance(given, RetryJob):
        decide_retry_now(draft, given)
    elif isinstance(given, DeleteJobs):
        decide_delete(draft, given)
    elif isinstance(given, AddNotification):
        decide_add_notification(draft, given)
    elif isinstance(given, RemoveNotification):
        decide_remove_notification(draft, given)
    elif isinstance(given, Tick):
        fire_timers(draft)
    elif isinstance(given, WorkerLeft):
        for ref in given.unfinished:
            if (
                ref.submission_id == submission_id
                and is_current(draft.state, ref)
                and draft.job(ref.job_id).worker_id in ("", ref.worker_id)
            ):
                fail_attempt(
                    draft,
                    ref.job_id,
                    FailureReason.WORKER_LOST,
                    "worker_left",
                    f"worker {ref.worker_id} left before finishing",
                )
    elif isinstance(given, Heartbeat):
        pass  # leases are renewed by observe(); a heartbeat decides nothing
    elif isinstance(given, ClaimIdempotencyKey):
        decide_claim_key(draft, given)
    elif isinstance(given, ReleaseIdempotencyKey):
        decide_release_key(draft, given)
    elif isinstance(given, IdempotencyKeyAnswer):
        decide_key_answer(draft, given)
    elif isinstance(given, RerunJobs):
        decide_rerun(draft, given)
    elif isinstance(given, ConfigureQueue):
        decide_configure_queue(draft, given)
    elif isinstance(given, ClaimSlot):
        decide_claim_slot(draft, given)
    elif isinstance(given, ReleaseSlot):
        decide_release_slot(draft, given)
    elif isinstance(given, SlotAnswer):
        decide_slot_answer(draft, given)
    elif isinstance(given, CreateSchedule):
        decide_create(draft, given)
    elif isinstance(given, ChangeSchedule):
        decide_change(draft, given)
    elif isinstance(given, ScheduleRunEnded):
        decide_run_ended(draft, given)
    else:
        decide_report(draft, given)


def _submission_of(given: Input, state: SubmissionState | None) -> str | None:
    if isinstance(
        given,
        SubmitJobs
        | CancelJobs
        | RetryJob
        | DeleteJobs
        | AddNotification
        | RemoveNotification
        | ClaimIdempotencyKey
        | ReleaseIdempotencyKey
        | IdempotencyKeyAnswer
        | RerunJobs
        | ConfigureQueue
        | ClaimSlot
        | ReleaseSlot
        | SlotAnswer
        | CreateSchedule
        | ChangeSchedule
        | ScheduleRunEnded,
    ):
        return given.submission_id
    if isinstance(given, Unprocessable):
        return given.command.submission_id
    if isinstance(given, Tick | Heartbeat | WorkerLeft):
        return None if state is None else state.submission_id
    return given.ref.submission_id


__all__ = [
    "DEFAULT_POLICY",
    "MAX_IDEMPOTENCY_KEY_BYTES",
    "Policy",
    "Step",
    "backoff_ms",
    "decide",
    "decide_retired",
    "dispatch_id",
    "event_id",
    "holder_alive",
    "is_current",
    "is_stale",
    "job_deadline",
    "next_deadline",
    "observe",
    "recover",
    "stale_reply",
    "step",
    "validate_submission",
]
