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


class LimitExceeded(JoblogError):
    """An input is larger than one of joblog's designed limits (:mod:`engine.limits`).

    Attributes:
        size: the size of the input (bytes, or a count for :class:`TooManyJobs`).
        limit: the limit it broke.
        setting: the environment variable that sets the limit.
    """

    def __init__(self, message: str, *, size: int, limit: int, setting: str) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit
        self.setting = setting


class ArgumentsTooLarge(LimitExceeded):
    """A job's JSON arguments are larger than ``JOBLOG_MAX_ARGS_BYTES``."""


class ResultTooLarge(LimitExceeded):
    """A task's JSON result is larger than ``JOBLOG_MAX_RESULT_BYTES``."""


class SubmissionTooLarge(LimitExceeded):
    """An encoded submit command is larger than ``JOBLOG_MAX_SUBMIT_BYTES``."""


class TooManyJobs(LimitExceeded):
    """A submission has more jobs than ``JOBLOG_MAX_JOBS``."""
