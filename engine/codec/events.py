"""Records of the ``events`` topic: the facts decided by the scheduler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.codec.framing import decode, encode
from engine.codec.mapping import (
    CANCEL_MODES,
    JOB_STATUSES,
    members,
    pairs_from_avro,
    pairs_to_avro,
    restore,
    spec_from_avro,
    spec_to_avro,
)
from engine.codec.schemas import NAMESPACE, REGISTRY
from engine.lifecycle.records import (
    CommandRejected,
    Event,
    EventBody,
    FailureReason,
    IdempotencyKeyDecided,
    JobAbandoned,
    JobAssigned,
    JobBlocked,
    JobCanceled,
    JobCancelRequested,
    JobCompleted,
    JobDeleted,
    JobDispatched,
    JobDuplicateClaim,
    JobExceptionRaised,
    JobFailed,
    JobOutput,
    JobPending,
    JobProgressed,
    JobRetryScheduled,
    JobSkipped,
    JobStarted,
    JobSubmitted,
    KeyDecision,
    SubmissionAccepted,
    SubmissionCompleted,
    SubmissionStatus,
)

_SCHEMA = REGISTRY.current("Event")
_FAILURE_REASONS = members(FailureReason)
_SUBMISSION_STATUSES = members(SubmissionStatus)
_KEY_DECISIONS = members(KeyDecision)

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


def _body(
    cls: type[EventBody], to_avro: _ToAvro | None = None, from_avro: _FromAvro | None = None
) -> tuple[type, str, _ToAvro, _FromAvro]:
    # without converters, the Avro record is the instance dict as it is
    if from_avro is None:
        return cls, f"{NAMESPACE}.{cls.__name__}", vars, lambda r: restore(cls, r)
    return cls, f"{NAMESPACE}.{cls.__name__}", to_avro or vars, from_avro


# in the order of the Avro union
_BODIES = (
    _body(SubmissionAccepted, _accepted_to_avro, _accepted),
    _body(JobSubmitted, _submitted_to_avro, _submitted),
    _body(JobBlocked, vars, _blocked),
    _body(JobPending),
    _body(JobDispatched),
    _body(JobAssigned),
    _body(JobStarted),
    _body(JobProgressed),
    _body(JobOutput),
    _body(JobExceptionRaised),
    _body(JobRetryScheduled, vars, _retry_scheduled),
    _body(JobCancelRequested, vars, _cancel_requested),
    _body(JobCompleted),
    _body(JobFailed, vars, _failed),
    _body(JobCanceled),
    _body(JobAbandoned, vars, _abandoned),
    _body(JobSkipped),
    _body(JobDeleted),
    _body(CommandRejected),
    _body(SubmissionCompleted, _completed_to_avro, _completed),
    _body(JobDuplicateClaim),
    _body(IdempotencyKeyDecided, vars, _key_decided),
)
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
