"""Records of the ``reports`` topic: observations from workers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.codec.framing import decode, encode
from engine.codec.mapping import members, restore
from engine.codec.schemas import NAMESPACE, REGISTRY
from engine.lifecycle.records import (
    AttemptRef,
    AttemptReport,
    Claimed,
    ExceptionReported,
    Finished,
    Heartbeat,
    Outcome,
    OutputReported,
    ProgressReported,
    Report,
    Started,
    WorkerLeft,
)

_SCHEMA = REGISTRY.current("Report")
_OUTCOMES = members(Outcome)


def _attempt_to_avro(r: AttemptReport) -> dict[str, Any]:
    return {**vars(r), "ref": vars(r.ref)}


def _heartbeat_to_avro(r: Heartbeat) -> dict[str, Any]:
    return {**vars(r), "attempts": [vars(ref) for ref in r.attempts]}


def _worker_left_to_avro(r: WorkerLeft) -> dict[str, Any]:
    return {**vars(r), "unfinished": [vars(ref) for ref in r.unfinished]}


def _attempt_report(cls: type[AttemptReport]) -> Callable[[dict[str, Any]], AttemptReport]:
    def from_avro(r: dict[str, Any]) -> AttemptReport:
        r["ref"] = restore(AttemptRef, r["ref"])
        return restore(cls, r)

    return from_avro


def _finished(r: dict[str, Any]) -> Finished:
    r["ref"] = restore(AttemptRef, r["ref"])
    r["outcome"] = _OUTCOMES[r["outcome"]]
    return restore(Finished, r)


def _heartbeat(r: dict[str, Any]) -> Heartbeat:
    r["attempts"] = tuple([restore(AttemptRef, ref) for ref in r["attempts"]])
    return restore(Heartbeat, r)


def _worker_left(r: dict[str, Any]) -> WorkerLeft:
    r["unfinished"] = tuple([restore(AttemptRef, ref) for ref in r["unfinished"]])
    return restore(WorkerLeft, r)


_TO_AVRO: dict[type, tuple[str, Callable[[Any], dict[str, Any]]]] = {
    Claimed: (f"{NAMESPACE}.Claimed", _attempt_to_avro),
    Started: (f"{NAMESPACE}.Started", _attempt_to_avro),
    ProgressReported: (f"{NAMESPACE}.ProgressReported", _attempt_to_avro),
    OutputReported: (f"{NAMESPACE}.OutputReported", _attempt_to_avro),
    ExceptionReported: (f"{NAMESPACE}.ExceptionReported", _attempt_to_avro),
    Finished: (f"{NAMESPACE}.Finished", _attempt_to_avro),
    Heartbeat: (f"{NAMESPACE}.Heartbeat", _heartbeat_to_avro),
    WorkerLeft: (f"{NAMESPACE}.WorkerLeft", _worker_left_to_avro),
}
_FROM_AVRO: dict[str, Callable[[dict[str, Any]], Report]] = {
    f"{NAMESPACE}.Claimed": _attempt_report(Claimed),
    f"{NAMESPACE}.Started": _attempt_report(Started),
    f"{NAMESPACE}.ProgressReported": _attempt_report(ProgressReported),
    f"{NAMESPACE}.OutputReported": _attempt_report(OutputReported),
    f"{NAMESPACE}.ExceptionReported": _attempt_report(ExceptionReported),
    f"{NAMESPACE}.Finished": _finished,
    f"{NAMESPACE}.Heartbeat": _heartbeat,
    f"{NAMESPACE}.WorkerLeft": _worker_left,
}


def _to_avro(r: Report) -> dict[str, Any]:
    name, to_avro = _TO_AVRO[type(r)]
    return {"body": (name, to_avro(r))}


def _from_avro(record: dict[str, Any]) -> Report:
    name, body = record["body"]
    return _FROM_AVRO[name](body)


def encode_report(r: Report) -> bytes:
    """Encode a worker report for the ``reports`` topic.

    Args:
        r: a Claimed, Started, ProgressReported, OutputReported, ExceptionReported, Finished,
            Heartbeat or WorkerLeft.

    Returns:
        The record value: Avro single-object encoding of the ``Report`` schema.

    Raises:
        CodecError: ``r`` is not a report or does not fit the schema.
    """
    return encode(_SCHEMA, _to_avro, r)


def decode_report(raw: bytes) -> Report:
    """Decode a record value of the ``reports`` topic.

    Args:
        raw: the record value.

    Returns:
        The report.

    Raises:
        UnknownSchemaError: not single-object encoded, or written with an unknown schema.
        WrongKindError: the record is not a report.
        CorruptRecordError: the body does not decode.
    """
    return decode("Report", raw, _from_avro)
