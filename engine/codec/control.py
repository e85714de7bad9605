"""Records of the ``control`` topic: signals to workers."""

from __future__ import annotations

from typing import Any

from engine.codec.framing import decode, encode
from engine.codec.mapping import restore
from engine.codec.schemas import REGISTRY
from engine.lifecycle.records import Control

_SCHEMA = REGISTRY.current("Control")


def _from_avro(r: dict[str, Any]) -> Control:
    return restore(Control, r)


def encode_control(c: Control) -> bytes:
    """Encode a control signal for the ``control`` topic.

    Args:
        c: the signal.

    Returns:
        The record value: Avro single-object encoding of the ``Control`` schema.

    Raises:
        CodecError: ``c`` is not a Control or does not fit the schema.
    """
    return encode(_SCHEMA, vars, c)


def decode_control(raw: bytes) -> Control:
    """Decode a record value of the ``control`` topic.

    Args:
        raw: the record value.

    Returns:
        The signal.

    Raises:
        UnknownSchemaError: not single-object encoded, or written with an unknown schema.
        WrongKindError: the record is not a control signal.
        CorruptRecordError: the body does not decode.
    """
    return decode("Control", raw, _from_avro)
