"""Records of the ``events`` topic: the facts decided by the scheduler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.codec.framing import decode, encode
from engine.codec.mapping import (
    CANCEL_MODES,
    JOB_STATUSES,
    SCHEDULE_ACTIONS,
    members,
    pairs_from_avro,
    pairs_to_avro,
    restore,
    schedule_parts_from_avro,
    schedule_parts_to_avro,
    spec_from_avro,
    spec_to_avro,
)
from engine.codec.schemas import NAMESPACE, REGISTRY
from engine.lifecycle.names import EVENT_TYPES
from engine.lifecycle.records import (
    Event,
    EventBody,
    FailureReason,
    HoldReason,
    IdempotencyKeyDecided,
    JobAbandoned,
    JobBlocked,
    JobCancelRequested,
    JobFailed,
    JobHeld,
    JobRerun,
    JobRetryScheduled,
    JobSubmitted,
    KeyDecision,
    Notification,
    NotificationAdded,
    ScheduleChanged,
    ScheduleCreated,
    SlotDecided,
    SlotDecision,
    SubmissionAccepted,
    SubmissionCompleted,
    SubmissionStatus,
)

_SCHEMA = REGISTRY.current("Event")
_FAILURE_REASONS = members(FailureReason)
_SUBMISSION_STATUSES = members(SubmissionStatus)
_KEY_DECISIONS = members(KeyDecision)
_HOLD_REASONS = members(HoldReason)
_SLOT_DECISIONS = members(SlotDecision)

_ToAvro = Callable[[Any], dict[str, Any]]
_FromAvro = Callable[[dict[str, Any]], EventBody]


def _accepted_to_avro(b: SubmissionAccepted) -> dict[str, Any]:
    return {**vars(b), "labels": pairs_to_avro(b.labels)}


def _accepted(r: dict[str, Any]) -> SubmissionAccepted:
    r["labels"] = pairs_from_avro(r["labels"])
    r["job_ids"] = tuple(r["job_ids"])
    return restore(SubmissionAccepted, r)


def _submitted_to_avro(b: JobSubmitted) -> dict[str, Any]:
    return {"spec": spec_to_avro(b.spec)}


def _submitted(r: dict[str, Any]) -> JobSubmitted:
    r["spec"] = spec_from_avro(r["spec"])
    return restore(JobSubmitted, r)


def _blocked(r: dict[str, Any]) -> JobBlocked:
    r["waiting_on"] = tuple(r["waiting_on"])
    return restore(JobBlocked, r)


def _retry_scheduled(r: dict[str, Any]) -> JobRetryScheduled:
    r["reason"] = _FAILURE_REASONS[r["reason"]]
    return restore(JobRetryScheduled, r)


def _cancel_requested(r: dict[str, Any]) -> JobCancelRequested:
    r["mode"] = CANCEL_MODES[r["mode"]]
    return restore(JobCancelRequested, r)


def _failed(r: dict[str, Any]) -> JobFailed:
    r["reason"] = _FAILURE_REASONS[r["reason"]]
    return restore(JobFailed, r)


def _abandoned(r: dict[str, Any]) -> JobAbandoned:
    r["cause_status"] = JOB_STATUSES[r["cause_status"]]
    return restore(JobAbandoned, r)


def _completed_to_avro(b: SubmissionCompleted) -> dict[str, Any]:
    return {
        "status": b.status,
        "counts": [{"status": status, "count": count} for status, count in b.counts],
    }


def _completed(r: dict[str, Any]) -> SubmissionCompleted:
    r["status"] = _SUBMISSION_STATUSES[r["status"]]
    r["counts"] = tuple([(JOB_STATUSES[c["status"]], c["count"]) for c in r["counts"]])
    return restore(SubmissionCompleted, r)


def _key_decided(r: dict[str, Any]) -> IdempotencyKeyDecided:
    r["decision"] = _KEY_DECISIONS[r["decision"]]
    return restore(IdempotencyKeyDecided, r)


def _held(r: dict[str, Any]) -> JobHeld:
    r["reason"] = _HOLD_REASONS[r["reason"]]
    return restore(JobHeld, r)


def _slot_decided(r: dict[str, Any]) -> SlotDecided:
    r["decision"] = _SLOT_DECISIONS[r["decision"]]
    return restore(SlotDecided, r)


def _rerun(r: dict[str, Any]) -> JobRerun:
    r["previous_status"] = JOB_STATUSES[r["previous_status"]]
    return restore(JobRerun, r)


def _notification_added_to_avro(b: NotificationAdded) -> dict[str, Any]:
    return {**vars(b), "notification": vars(b.notification)}


def _notification_added(r: dict[str, Any]) -> NotificationAdded:
    r["notification"] = restore(Notification, r["notification"])
    return restore(NotificationAdded, r)


def _schedule_created(r: dict[str, Any]) -> ScheduleCreated:
    return restore(ScheduleCreated, schedule_parts_from_avro(r))


def _schedule_changed(r: dict[str, Any]) -> ScheduleChanged:
    r["action"] = SCHEDULE_ACTIONS[r["action"]]
    return restore(ScheduleChanged, r)


# Bodies whose Avro record is not the instance dict as it is: (to Avro, from Avro).
_CONVERTERS: dict[type, tuple[_ToAvro, _FromAvro]] = {
    SubmissionAccepted: (_accepted_to_avro, _accepted),
    JobSubmitted: (_submitted_to_avro, _submitted),
    JobBlocked: (vars, _blocked),
    JobRetryScheduled: (vars, _retry_scheduled),
    JobCancelRequested: (vars, _cancel_requested),
    JobFailed: (vars, _failed),
    JobAbandoned: (vars, _abandoned),
    SubmissionCompleted: (_completed_to_avro, _completed),
    IdempotencyKeyDecided: (vars, _key_decided),
    NotificationAdded: (_notification_added_to_avro, _notification_added),
    JobHeld: (vars, _held),
    SlotDecided: (vars, _slot_decided),
    JobRerun: (vars, _rerun),
    ScheduleCreated: (schedule_parts_to_avro, _schedule_created),
    ScheduleChanged: (vars, _schedule_changed),
}


def _body(cls: type[EventBody]) -> tuple[type, str, _ToAvro, _FromAvro]:
    to_avro, from_avro = _CONVERTERS.get(cls, (vars, lambda r: restore(cls, r)))
    return cls, f"{NAMESPACE}.{cls.__name__}", to_avro, from_avro


# One entry per class of the EventBody union, in its order (the order of the Avro union).
_BODIES = tuple(_body(cls) for cls in EVENT_TYPES)
_TO_AVRO: dict[type, tuple[str, _ToAvro]] = {cls: (name, to) for cls, name, to, _ in _BODIES}
_FROM_AVRO: dict[str, _FromAvro] = {name: from_ for _, name, _, from_ in _BODIES}


def _to_avro(e: Event) -> dict[str, Any]:
    name, to_avro = _TO_AVRO[type(e.body)]
    return {**vars(e), "body": (name, to_avro(e.body))}


def _from_avro(r: dict[str, Any]) -> Event:
    name, body = r["body"]
    r["body"] = _FROM_AVRO[name](body)
    return restore(Event, r)


def encode_event(e: Event) -> bytes:
    """Encode an event for the ``events`` topic.

    Args:
        e: the event, with any of the event bodies.

    Returns:
        The record value: Avro single-object encoding of the ``Event`` schema.

    Raises:
        CodecError: ``e`` is not an event or does not fit the schema.
    """
    return encode(_SCHEMA, _to_avro, e)


def decode_event(raw: bytes) -> Event:
    """Decode a record value of the ``events`` topic.

    Args:
        raw: the record value.

    Returns:
        The event.

    Raises:
        UnknownSchemaError: not single-object encoded, or written with an unknown schema.
        WrongKindError: the record is not an event.
        CorruptRecordError: the body does not decode.
    """
    return decode("Event", raw, _from_avro)
