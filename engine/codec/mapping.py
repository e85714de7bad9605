"""What the per-kind mappings between records and Avro dicts share.

Every Avro record has exactly the fields of its dataclass, with the same names, so an
instance's ``vars()`` is most of its Avro form and the dict fastavro reads is most of the
instance's ``__dict__``; the mappings only convert what Avro spells differently (enums, tuples
of pairs, sets, nested records, optional lists).
"""

from __future__ import annotations

import enum
from typing import Any, TypeVar

from engine.lifecycle.records import (
    CancelMode,
    JobSpec,
    JobStatus,
    Notification,
    RetryPolicy,
    ScheduleAction,
    ScheduleOverlap,
    ScheduleSpec,
)

R = TypeVar("R")
E = TypeVar("E", bound=enum.Enum)
Pairs = tuple[tuple[str, str], ...]

_new = object.__new__


def restore(cls: type[R], fields: dict[str, Any]) -> R:
    """Build a frozen record from its complete, converted field dict.

    The generated ``__init__`` of a frozen dataclass sets each field through
    ``object.__setattr__``, which costs more than the Avro decoding of the record itself;
    taking the dict as the instance's ``__dict__`` gives the same object. The records have no
    ``__post_init__`` and no slots (a test keeps it so), and ``fields`` holds every field
    because the Avro schema has every field.
    """
    record = _new(cls)
    record.__dict__.update(fields)
    return record


def members(cls: type[E]) -> dict[str, E]:
    """An enum's members by value: a dict lookup is several times faster than ``cls(value)``."""
    return {member.value: member for member in cls}


CANCEL_MODES = members(CancelMode)
JOB_STATUSES = members(JobStatus)
SCHEDULE_ACTIONS = members(ScheduleAction)
_OVERLAPS = members(ScheduleOverlap)


def pairs_to_avro(pairs: Pairs) -> list[dict[str, str]]:
    """Ordered pairs as a list of ``KeyValue`` records."""
    return [{"key": key, "value": value} for key, value in pairs]


def pairs_from_avro(items: list[dict[str, str]]) -> Pairs:
    """A list of ``KeyValue`` records as ordered pairs."""
    return tuple([(item["key"], item["value"]) for item in items])


def spec_to_avro(spec: JobSpec) -> dict[str, Any]:
    """A job spec as a ``JobSpec`` record."""
    command = spec.command
    return {
        **vars(spec),
        # a tuple inside a union would be taken for fastavro's (type name, value) notation
        "command": None if command is None else list(command),
        "env": pairs_to_avro(spec.env),
        "retry": vars(spec.retry),
        "labels": pairs_to_avro(spec.labels),
    }


def spec_from_avro(fields: dict[str, Any]) -> JobSpec:
    """A ``JobSpec`` record as a job spec (``fields`` is consumed)."""
    command = fields["command"]
    retry = fields["retry"]
    retry["retry_on"] = tuple(retry["retry_on"])
    fields["command"] = None if command is None else tuple(command)
    fields["env"] = pairs_from_avro(fields["env"])
    fields["depends_on"] = tuple(fields["depends_on"])
    fields["retry"] = restore(RetryPolicy, retry)
    fields["labels"] = pairs_from_avro(fields["labels"])
    return restore(JobSpec, fields)


def notifications_to_avro(notifications: tuple[Notification, ...]) -> list[dict[str, Any]]:
    """Notifications as a list of ``Notification`` records."""
    return [vars(notification) for notification in notifications]


def notifications_from_avro(items: list[dict[str, Any]]) -> tuple[Notification, ...]:
    """A list of ``Notification`` records as notifications."""
    return tuple([restore(Notification, item) for item in items])


def schedule_spec_from_avro(fields: dict[str, Any]) -> ScheduleSpec:
    """A ``ScheduleSpec`` record as a schedule spec (``fields`` is consumed); ``vars`` of
    a spec is its Avro form."""
    fields["overlap"] = _OVERLAPS[fields["overlap"]]
    return restore(ScheduleSpec, fields)


def schedule_parts_to_avro(record: Any) -> dict[str, Any]:
    """A record with a schedule's ``spec``, ``jobs`` and ``labels`` in its Avro form."""
    return {
        **vars(record),
        "spec": vars(record.spec),
        "jobs": [spec_to_avro(spec) for spec in record.jobs],
        "labels": pairs_to_avro(record.labels),
    }


def schedule_parts_from_avro(fields: dict[str, Any]) -> dict[str, Any]:
    """The converse of :func:`schedule_parts_to_avro` (``fields`` is converted in place)."""
    fields["spec"] = schedule_spec_from_avro(fields["spec"])
    fields["jobs"] = tuple([spec_from_avro(spec) for spec in fields["jobs"]])
    fields["labels"] = pairs_from_avro(fields["labels"])
    return fields
