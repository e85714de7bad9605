"""The exceptions joblog raises. Every one derives from :class:`JoblogError`."""

from __future__ import annotations


class JoblogError(Exception):
    """Root of every error joblog raises on purpose."""


class ConfigurationError(JoblogError):
    """A setting is missing or malformed; the message names the setting to fix."""


class BrokerError(JoblogError):
    """The local Kafka broker could not be resolved, started, reached or stopped."""


class CodecError(JoblogError):
    """A record could not be encoded or decoded.

    Attributes:
        raw: the bytes that failed to decode (kept so they can be dead-lettered).
    """

    def __init__(self, message: str, raw: bytes | None = None) -> None:
        super().__init__(message)
        self.raw = raw


class UnknownSchemaError(CodecError):
    """The record's schema fingerprint matches none of the schemas joblog ships."""


class CorruptRecordError(CodecError):
    """The record is not valid Avro single-object encoding for its schema."""


class ValidationError(JoblogError):
    """A command is well-formed Avro but breaks a lifecycle rule."""
