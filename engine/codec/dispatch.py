"""Records of the ``dispatch.<queue>`` topics: attempts for workers to run."""

from __future__ import annotations

from typing import Any

from engine.codec.framing import decode, encode
from engine.codec.mapping import restore, spec_from_avro, spec_to_avro
from engine.codec.schemas import REGISTRY
from engine.lifecycle.records import Dispatch

_SCHEMA = REGISTRY.current("Dispatch")


def _to_avro(d: Dispatch) -> dict[str, Any]:
    return {**vars(d), "spec": spec_to_avro(d.spec)}


def _from_avro(r: dict[str, Any]) -> Dispatch:
    r["spec"] = spec_from_avro(r["spec"])
    return restore(Dispatch, r)


def encode_dispatch(d: Dispatch) -> bytes:
    """Encode a dispatch record for a ``dispatch.<queue>`` topic.

    Args:
        d: the dispatch record.

    Returns:
        The record value: Avro single-object encoding of the ``Dispatch`` schema.

    Raises:
        CodecError: ``d`` is not a Dispatch or does not fit the schema.
    """
    return encode(_SCHEMA, _to_avro, d)


def decode_dispatch(raw: bytes) -> Dispatch:
    """Decode a record value of a ``dispatch.<queue>`` topic.

    Args:
        raw: the record value.

    Returns:
        The dispatch record.

    Raises:
        UnknownSchemaError: not single-object encoded, or written with an unknown schema.
        WrongKindError: the record is not a dispatch record.
        CorruptRecordError: the body does not decode.
    """
    return decode("Dispatch", raw, _from_avro)
