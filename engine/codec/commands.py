"""Records of the ``commands`` topic: intents from clients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.codec.framing import decode, encode
from engine.codec.mapping import (
    CANCEL_MODES,
    SCHEDULE_ACTIONS,
    notifications_from_avro,
    notifications_to_avro,
    pairs_from_avro,
    pairs_to_avro,
    restore,
    schedule_parts_from_avro,
    schedule_parts_to_avro,
    spec_from_avro,
    spec_to_avro,
)
from engine.codec.schemas import NAMESPACE, REGISTRY
from engine.lifecycle.records import (
    AddNotification,
    AnyCommand,
    CancelJobs,
    ChangeSchedule,
    ClaimIdempotencyKey,
    ClaimSlot,
    ConfigureQueue,
    CreateSchedule,
    DeleteJobs,
    IdempotencyKeyAnswer,
    Notification,
    ReleaseIdempotencyKey,
    ReleaseSlot,
    RemoveNotification,
    RerunJobs,
    RetryJob,
    ScheduleRunEnded,
    SlotAnswer,
    SubmitJobs,
)

_SCHEMA = REGISTRY.current("Command")


def _submit_to_avro(c: SubmitJobs) -> dict[str, Any]:
    return {
        **vars(c),
        "jobs": [spec_to_avro(spec) for spec in c.jobs],
        "labels": pairs_to_avro(c.labels),
        "notifications": notifications_to_avro(c.notifications),
    }


def _submit_from_avro(r: dict[str, Any]) -> SubmitJobs:
    r["jobs"] = tuple([spec_from_avro(spec) for spec in r["jobs"]])
    r["labels"] = pairs_from_avro(r["labels"])
    r["notifications"] = notifications_from_avro(r["notifications"])
    return restore(SubmitJobs, r)


def _add_notification_to_avro(c: AddNotification) -> dict[str, Any]:
    return {**vars(c), "notification": vars(c.notification)}


def _add_notification_from_avro(r: dict[str, Any]) -> AddNotification:
    r["notification"] = restore(Notification, r["notification"])
    return restore(AddNotification, r)


def _cancel_from_avro(r: dict[str, Any]) -> CancelJobs:
    r["mode"] = CANCEL_MODES[r["mode"]]
    return restore(CancelJobs, r)


def _retry_from_avro(r: dict[str, Any]) -> RetryJob:
    return restore(RetryJob, r)


def _delete_from_avro(r: dict[str, Any]) -> DeleteJobs:
    return restore(DeleteJobs, r)


def _change_schedule_from_avro(r: dict[str, Any]) -> ChangeSchedule:
    r["action"] = SCHEDULE_ACTIONS[r["action"]]
    return restore(ChangeSchedule, r)


_TO_AVRO: dict[type, tuple[str, Callable[[Any], dict[str, Any]]]] = {
    SubmitJobs: (f"{NAMESPACE}.SubmitJobs", _submit_to_avro),
    CancelJobs: (f"{NAMESPACE}.CancelJobs", vars),
    RetryJob: (f"{NAMESPACE}.RetryJob", vars),
    DeleteJobs: (f"{NAMESPACE}.DeleteJobs", vars),
    ClaimIdempotencyKey: (f"{NAMESPACE}.ClaimIdempotencyKey", vars),
    ReleaseIdempotencyKey: (f"{NAMESPACE}.ReleaseIdempotencyKey", vars),
    IdempotencyKeyAnswer: (f"{NAMESPACE}.IdempotencyKeyAnswer", vars),
    AddNotification: (f"{NAMESPACE}.AddNotification", _add_notification_to_avro),
    RemoveNotification: (f"{NAMESPACE}.RemoveNotification", vars),
    RerunJobs: (f"{NAMESPACE}.RerunJobs", vars),
    ConfigureQueue: (f"{NAMESPACE}.ConfigureQueue", vars),
    ClaimSlot: (f"{NAMESPACE}.ClaimSlot", vars),
    ReleaseSlot: (f"{NAMESPACE}.ReleaseSlot", vars),
    SlotAnswer: (f"{NAMESPACE}.SlotAnswer", vars),
    CreateSchedule: (f"{NAMESPACE}.CreateSchedule", schedule_parts_to_avro),
    ChangeSchedule: (f"{NAMESPACE}.ChangeSchedule", vars),
    ScheduleRunEnded: (f"{NAMESPACE}.ScheduleRunEnded", vars),
}
_FROM_AVRO: dict[str, Callable[[dict[str, Any]], AnyCommand]] = {
    f"{NAMESPACE}.SubmitJobs": _submit_from_avro,
    f"{NAMESPACE}.CancelJobs": _cancel_from_avro,
    f"{NAMESPACE}.RetryJob": _retry_from_avro,
    f"{NAMESPACE}.DeleteJobs": _delete_from_avro,
    f"{NAMESPACE}.ClaimIdempotencyKey": lambda r: restore(ClaimIdempotencyKey, r),
    f"{NAMESPACE}.ReleaseIdempotencyKey": lambda r: restore(ReleaseIdempotencyKey, r),
    f"{NAMESPACE}.IdempotencyKeyAnswer": lambda r: restore(IdempotencyKeyAnswer, r),
    f"{NAMESPACE}.AddNotification": _add_notification_from_avro,
    f"{NAMESPACE}.RemoveNotification": lambda r: restore(RemoveNotification, r),
    f"{NAMESPACE}.RerunJobs": lambda r: restore(RerunJobs, r),
    f"{NAMESPACE}.ConfigureQueue": lambda r: restore(ConfigureQueue, r),
    f"{NAMESPACE}.ClaimSlot": lambda r: restore(ClaimSlot, r),
    f"{NAMESPACE}.ReleaseSlot": lambda r: restore(ReleaseSlot, r),
    f"{NAMESPACE}.SlotAnswer": lambda r: restore(SlotAnswer, r),
    f"{NAMESPACE}.CreateSchedule": lambda r: restore(CreateSchedule, schedule_parts_from_avro(r)),
    f"{NAMESPACE}.ChangeSchedule": _change_schedule_from_avro,
    f"{NAMESPACE}.ScheduleRunEnded": lambda r: restore(ScheduleRunEnded, r),
}


def _to_avro(c: AnyCommand) -> dict[str, Any]:
    name, to_avro = _TO_AVRO[type(c)]
    return {"body": (name, to_avro(c))}


def _from_avro(record: dict[str, Any]) -> AnyCommand:
    name, body = record["body"]
    return _FROM_AVRO[name](body)


def encode_command(c: AnyCommand) -> bytes:
    """Encode a command for the ``commands`` topic.

    Args:
        c: a SubmitJobs, CancelJobs, RetryJob, DeleteJobs, AddNotification or
            RemoveNotification (or a scheduler's key command).

    Returns:
        The record value: Avro single-object encoding of the ``Command`` schema.

    Raises:
        CodecError: ``c`` is not a command or does not fit the schema.
    """
    return encode(_SCHEMA, _to_avro, c)


def decode_command(raw: bytes) -> AnyCommand:
    """Decode a record value of the ``commands`` topic.

    Args:
        raw: the record value.

    Returns:
        The command.

    Raises:
        UnknownSchemaError: not single-object encoded, or written with an unknown schema.
        WrongKindError: the record is not a command.
        CorruptRecordError: the body does not decode.
    """
    return decode("Command", raw, _from_avro)
