"""The two framings of a record value, and the Avro body between them and the records.

* Avro single-object encoding, the default: ``C3 01``, the writer schema's 8-byte
  CRC-64-AVRO fingerprint, the Avro body. The fingerprint names one of the schemas the
  package ships (:data:`~engine.codec.schemas.REGISTRY`).
* The Confluent wire format, written when a schema registry is configured: byte ``00``, the
  writer schema's id in the registry as a 4-byte big-endian integer, the same Avro body. The
  writer schema is fetched by id from a :class:`SchemaSource` (the registry), once per id.

:func:`decode` reads both, whatever the process writes, so a topic that holds records of
either framing (a migration to or from a registry) reads as one. :func:`encode` writes the
single-object encoding; a producer that writes to a registry swaps the header with
:func:`reframe` (the body is the same bytes). The per-kind modules map records to and from
plain dicts. Whatever goes wrong while decoding surfaces as a
:class:`~engine.errors.CodecError` carrying the raw bytes, so a consumer can dead-letter the
record and carry on.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any, Protocol, TypeVar

from fastavro import schemaless_reader, schemaless_writer

from engine.codec.exceptions import WrongKindError
from engine.codec.schemas import (
    HEADER_SIZE,
    MAGIC,
    NAMESPACE,
    REGISTRY,
    TOPIC_SCHEMAS,
    WriterSchema,
    schema_fingerprint,
)
from engine.errors import (
    CodecError,
    CorruptRecordError,
    JoblogError,
    SchemaLookupError,
    UnknownSchemaError,
    UnknownSchemaIdError,
)

#: First byte of a record in the Confluent wire format; the schema id follows.
CONFLUENT_MAGIC = 0
#: The Confluent header: the magic byte and the 4-byte big-endian schema id.
CONFLUENT_HEADER_SIZE = 5

T = TypeVar("T")


class SchemaSource(Protocol):
    """Where the writer schemas of Confluent-framed records are looked up: a schema registry."""

    def schema(self, schema_id: int) -> dict[str, Any] | None:
        """The schema registered under ``schema_id`` as JSON-like data, ``None`` if there is
        none.

        Raises:
            JoblogError: the registry could not be asked (no answer in time, an error).
        """
        ...


_source: SchemaSource | None = None
# schema id -> the version of a topic schema it is; filled by lookups and by producers that
# registered a schema (they know its id without asking)
_by_id: dict[int, WriterSchema] = {}


def use_schema_source(source: SchemaSource | None) -> None:
    """Sets where the writer schemas of Confluent-framed records are looked up.

    Ids are a registry's own, so the ids learned from the previous source are forgotten.

    Args:
        source: the schema registry, or ``None``: a Confluent-framed record is then an
            :class:`~engine.errors.UnknownSchemaIdError`.
    """
    global _source
    if source is not _source:
        _source = source
        _by_id.clear()


def schema_source() -> SchemaSource | None:
    """The source set by :func:`use_schema_source`, if any."""
    return _source


def learn_schema_id(schema_id: int, writer: WriterSchema) -> None:
    """Records that the registry's ``schema_id`` is ``writer`` (the producer registered it)."""
    _by_id[schema_id] = writer


def confluent_header(schema_id: int) -> bytes:
    """The Confluent header of records written with the registry's schema ``schema_id``.

    Raises:
        CodecError: the id does not fit four bytes.
    """
    if not 0 <= schema_id < 2**31:
        raise CodecError(f"schema id {schema_id} does not fit the Confluent header")
    return bytes([CONFLUENT_MAGIC]) + schema_id.to_bytes(4, "big")


def reframe(raw: bytes, header: bytes) -> bytes:
    """The record ``raw`` (single-object encoded) with the Confluent ``header`` instead.

    The Avro body is the same: both framings carry the body of the same writer schema.
    """
    return header + raw[HEADER_SIZE:]


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
    try:
        record = to_avro(value)
        fast = schema.fast_writer
        if fast is not None:
            try:
                return fast(schema.header, record)
            except Exception:
                pass  # fastavro writes it, or says what is wrong with it
        buffer = BytesIO()
        buffer.write(schema.header)
        schemaless_writer(buffer, schema.parsed, record)
    except Exception as exc:
        raise CodecError(f"cannot encode {type(value).__name__} as {schema.name}: {exc}") from exc
    return buffer.getvalue()


def decode(name: str, raw: bytes, from_avro: Callable[[Any], T]) -> T:
    """Unframe and decode a record of topic schema ``name``, in either framing.

    Args:
        name: the topic schema expected, e.g. ``"Event"``.
        raw: the bytes of a Kafka record value.
        from_avro: builds the record from the dict fastavro read.

    Returns:
        The record.

    Raises:
        UnknownSchemaError: neither header, or a fingerprint of no known schema.
        UnknownSchemaIdError: a Confluent schema id the registry does not know, or no
            registry is configured.
        SchemaLookupError: the registry could not be asked for the schema id.
        WrongKindError: the record is of another topic schema than ``name``.
        CorruptRecordError: the body does not decode with its schema.
    """
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise CorruptRecordError(f"{name} value must be bytes, not {type(raw).__name__}", None)
    if len(raw) >= HEADER_SIZE and raw[:2] == MAGIC:
        fingerprint = bytes(raw[2:HEADER_SIZE])
        writer = REGISTRY.get(fingerprint)
        if writer is None:
            raise UnknownSchemaError(
                f"unknown schema fingerprint {fingerprint.hex()} for a {name}; if a newer "
                "joblog wrote it, upgrade the readers first",
                bytes(raw),
            )
        start, origin = HEADER_SIZE, f"schema {fingerprint.hex()}"
    elif len(raw) >= CONFLUENT_HEADER_SIZE and raw[0] == CONFLUENT_MAGIC:
        schema_id = int.from_bytes(raw[1:CONFLUENT_HEADER_SIZE], "big")
        writer = _by_id.get(schema_id) or _look_up(name, schema_id, bytes(raw))
        start, origin = CONFLUENT_HEADER_SIZE, f"schema id {schema_id}"
    else:
        raise UnknownSchemaError(
            f"not a joblog {name}: {len(raw)} bytes with neither the Avro single-object header "
            "(C3 01 + fingerprint) nor the Confluent header (00 + schema id); was it written "
            "by another producer?",
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
    try:
        record = None
        fast = writer.fast_reader
        if fast is not None:
            try:
                record, end = fast(raw, start)
            except Exception:
                record = None  # fastavro reads it, or says what is wrong with it
            else:
                if end != len(raw):
                    record = None
        if record is None:
            buffer = BytesIO(raw)
            buffer.seek(start)
            # a union of records reads as (record name, fields); no other union needs the name
            record = schemaless_reader(
                buffer, writer.parsed, writer.reader, return_record_name=True
            )
            if buffer.tell() != len(raw):
                raise ValueError(f"{len(raw) - buffer.tell()} bytes left over after the record")
        return from_avro(record)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise CorruptRecordError(
            f"corrupt {name} ({origin}, {len(raw)} bytes): {reason}; "
            "the record was truncated or damaged after it was written",
            bytes(raw),
        ) from exc


def _look_up(name: str, schema_id: int, raw: bytes) -> WriterSchema:
    source = _source
    if source is None:
        raise UnknownSchemaIdError(
            f"a {name} in the Confluent wire format (schema id {schema_id}), but no schema "
            "registry is configured to look the id up; set JOBLOG_SCHEMA_REGISTRY_URL",
            raw,
            schema_id,
        )
    try:
        schema = source.schema(schema_id)
    except JoblogError as exc:
        raise SchemaLookupError(
            f"the writer schema of a {name} (schema id {schema_id}) could not be fetched: {exc}",
            raw,
            schema_id,
        ) from exc
    if schema is None:
        raise UnknownSchemaIdError(
            f"the schema registry has no schema id {schema_id} (a {name} was expected); was "
            "the record written against another registry, or the schema deleted?",
            raw,
            schema_id,
        )
    writer = _writer_of(name, schema_id, schema, raw)
    if source is _source:
        _by_id[schema_id] = writer
    return writer


def _writer_of(name: str, schema_id: int, schema: dict[str, Any], raw: bytes) -> WriterSchema:
    """The version of a topic schema that a registry's schema is, made known if it is new."""
    try:
        known = REGISTRY.get(schema_fingerprint(schema))
        if known is not None:
            return known
        record = str(schema.get("name", ""))
        full = record if "." in record else f"{schema.get('namespace', NAMESPACE)}.{record}"
        kind = full.removeprefix(f"{NAMESPACE}.")
        if kind not in TOPIC_SCHEMAS or full != f"{NAMESPACE}.{kind}":
            raise UnknownSchemaIdError(
                f"schema id {schema_id} is {full or 'not a record'}, not a joblog topic schema "
                f"(a {name} was expected); was the record produced to the wrong topic?",
                raw,
                schema_id,
            )
        # a version this package does not ship: resolved to the current one by Avro's rules
        return REGISTRY.get(REGISTRY.register(kind, schema)) or REGISTRY.current(kind)
    except UnknownSchemaIdError:
        raise
    except Exception as exc:
        raise UnknownSchemaIdError(
            f"schema id {schema_id} is not a usable Avro schema for a {name}: {exc}",
            raw,
            schema_id,
        ) from exc
