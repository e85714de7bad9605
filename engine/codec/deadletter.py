"""Records of the ``deadletter`` topic: what a consumer could not decode or validate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.codec.framing import decode, encode
from engine.codec.mapping import restore
from engine.codec.schemas import REGISTRY

_SCHEMA = REGISTRY.current("DeadLetter")


@dataclass(frozen=True)
class DeadLetter:
    """A record some consumer gave up on, kept byte for byte with the reason.

    Attributes:
        topic / partition / offset: where the original record is.
        key: its key, as it was.
        value: its value, as it was.
        error_type: class of the error, e.g. ``CorruptRecordError``.
        error_message: what went wrong and what to do next.
        consumer: the consumer group (or component) that failed.
        failed_at: when it gave up (ms since the epoch).
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    error_type: str
    error_message: str
    consumer: str
    failed_at: int


def _from_avro(r: dict[str, Any]) -> DeadLetter:
    return restore(DeadLetter, r)


def encode_deadletter(d: DeadLetter) -> bytes:
    """Encode a dead letter for the ``deadletter`` topic.

    Args:
        d: the dead letter.

    Returns:
        The record value: Avro single-object encoding of the ``DeadLetter`` schema.

    Raises:
        CodecError: ``d`` is not a DeadLetter or does not fit the schema.
    """
    return encode(_SCHEMA, vars, d)


def decode_deadletter(raw: bytes) -> DeadLetter:
    """Decode a record value of the ``deadletter`` topic.

    Args:
        raw: the record value.

    Returns:
        The dead letter.

    Raises:
        UnknownSchemaError: not single-object encoded, or written with an unknown schema.
        WrongKindError: the record is not a dead letter.
        CorruptRecordError: the body does not decode.
    """
    return decode("DeadLetter", raw, _from_avro)
