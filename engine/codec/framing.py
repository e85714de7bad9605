"""Avro single-object encoding: ``C3 01``, the schema's 8-byte fingerprint, the Avro body.

The per-kind modules map records to and from plain dicts; this module frames and unframes
them. Whatever goes wrong while decoding surfaces as a :class:`~engine.errors.CodecError`
carrying the raw bytes, so a consumer can dead-letter the record and carry on.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any, TypeVar

from fastavro import schemaless_reader, schemaless_writer

from engine.codec.exceptions import WrongKindError
from engine.codec.schemas import HEADER_SIZE, MAGIC, REGISTRY, WriterSchema
from engine.errors import CodecError, CorruptRecordError, UnknownSchemaError

T = TypeVar("T")


def encode(schema: WriterSchema, to_avro: Callable[[T], Any], value: T) -> bytes:
    """Frame ``value`` as a record of ``schema``.

    Args:
        schema: the current version of the topic schema.
        to_avro: maps the value to the dict fastavro writes.
        value: the record.

    Returns:
        The single-object encoded bytes.

    Raises:
        CodecError: the value is not of the kind, or does not fit the schema.
    """
    buffer = BytesIO()
    buffer.write(schema.header)
    try:
        schemaless_writer(buffer, schema.parsed, to_avro(value))
    except Exception as exc:
        raise CodecError(f"cannot encode {type(value).__name__} as {schema.name}: {exc}") from exc
    return buffer.getvalue()


def decode(name: str, raw: bytes, from_avro: Callable[[Any], T]) -> T:
    """Unframe and decode a record of topic schema ``name``.

    Args:
        name: the topic schema expected, e.g. ``"Event"``.
        raw: the bytes of a Kafka record value.
        from_avro: builds the record from the dict fastavro read.

    Returns:
        The record.

    Raises:
        UnknownSchemaError: no single-object header, or a fingerprint of no known schema.
        WrongKindError: the record is of another topic schema than ``name``.
        CorruptRecordError: the body does not decode with its schema.
    """
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise CorruptRecordError(f"{name} value must be bytes, not {type(raw).__name__}", None)
    if len(raw) < HEADER_SIZE or raw[:2] != MAGIC:
        raise UnknownSchemaError(
            f"not a joblog {name}: {len(raw)} bytes without the Avro single-object header "
            f"(C3 01 + fingerprint); was it written by another producer?",
            bytes(raw),
        )
    fingerprint = bytes(raw[2:HEADER_SIZE])
    writer = REGISTRY.get(fingerprint)
    if writer is None:
        raise UnknownSchemaError(
            f"unknown schema fingerprint {fingerprint.hex()} for a {name}; if a newer joblog "
            "wrote it, upgrade the readers first",
            bytes(raw),
        )
    if writer.name != name:
        raise WrongKindError(
            f"the record is a joblog {writer.name}, not a {name}; it was produced to the wrong "
            "topic",
            bytes(raw),
            expected=name,
            actual=writer.name,
        )
    buffer = BytesIO(raw)
    buffer.seek(HEADER_SIZE)
    try:
        # a union of records reads as (record name, fields); no other union needs the name
        record = schemaless_reader(buffer, writer.parsed, writer.reader, return_record_name=True)
        if buffer.tell() != len(raw):
            raise ValueError(f"{len(raw) - buffer.tell()} bytes left over after the record")
        return from_avro(record)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise CorruptRecordError(
            f"corrupt {name} (schema {fingerprint.hex()}, {len(raw)} bytes): {reason}; "
            "the record was truncated or damaged after it was written",
            bytes(raw),
        ) from exc
