"""joblog's wire format: Avro single-object encoding of every record on every topic.

A record value is ``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint of the writer
schema's Parsing Canonical Form, then the Avro binary body (DESIGN.md §7). The schemas are the
``.avsc`` files of :data:`SCHEMA_DIR`, parsed once at import; records written with an older
version of a schema decode with the current one by Avro's resolution rules, as long as
:data:`REGISTRY` knows the older version (``schemas/history/``).

Every ``decode_*`` function raises only :class:`~engine.errors.CodecError` subclasses, which
carry the raw bytes for the dead-letter topic.
"""

from engine.codec.commands import decode_command, encode_command
from engine.codec.control import decode_control, encode_control
from engine.codec.deadletter import DeadLetter, decode_deadletter, encode_deadletter
from engine.codec.dispatch import decode_dispatch, encode_dispatch
from engine.codec.events import decode_event, encode_event
from engine.codec.exceptions import WrongKindError
from engine.codec.reports import decode_report, encode_report
from engine.codec.schemas import (
    REGISTRY,
    SCHEMA_DIR,
    TOPIC_SCHEMAS,
    SchemaRegistry,
    WriterSchema,
    bundle,
    find_schema_dir,
    fingerprint,
)
from engine.codec.snapshots import (
    SnapshotRecord,
    decode_snapshot,
    decode_snapshot_record,
    encode_job_snapshot,
    encode_snapshot,
    encode_snapshot_header,
    job_record_key,
)

__all__ = [
    "REGISTRY",
    "SCHEMA_DIR",
    "TOPIC_SCHEMAS",
    "DeadLetter",
    "SchemaRegistry",
    "SnapshotRecord",
    "WriterSchema",
    "WrongKindError",
    "bundle",
    "decode_command",
    "decode_control",
    "decode_deadletter",
    "decode_dispatch",
    "decode_event",
    "decode_report",
    "decode_snapshot",
    "decode_snapshot_record",
    "encode_command",
    "encode_control",
    "encode_deadletter",
    "encode_dispatch",
    "encode_event",
    "encode_job_snapshot",
    "encode_report",
    "encode_snapshot",
    "encode_snapshot_header",
    "find_schema_dir",
    "fingerprint",
    "job_record_key",
]
