"""The exceptions joblog raises. Every one derives from :class:`JoblogError`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.lifecycle.records import SubmissionThrottled


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


class UnknownSchemaIdError(UnknownSchemaError):
    """A Confluent-framed record names a schema id the registry does not know (or no schema
    registry is configured to ask).

    Attributes:
        schema_id: the id in the record's header.
    """

    def __init__(self, message: str, raw: bytes | None, schema_id: int) -> None:
        super().__init__(message, raw)
        self.schema_id = schema_id


class SchemaLookupError(UnknownSchemaError):
    """The writer schema of a Confluent-framed record could not be fetched: the registry did
    not answer in time, or answered with an error.

    Attributes:
        schema_id: the id in the record's header.
    """

    def __init__(self, message: str, raw: bytes | None, schema_id: int) -> None:
        super().__init__(message, raw)
        self.schema_id = schema_id


class SchemaRegistryError(JoblogError):
    """The schema registry refused a request, or answered something unexpected.

    Attributes:
        url: the registry's URL (``JOBLOG_SCHEMA_REGISTRY_URL``).
        status: the HTTP status, ``None`` when there was no answer.
        error_code: the registry's own ``error_code``, when it gave one.
    """

    def __init__(
        self, message: str, *, url: str, status: int | None = None, error_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.error_code = error_code


class SchemaRegistryUnreachable(SchemaRegistryError):
    """The schema registry did not answer within its timeout, or answered with a server
    error; trying again later may work."""


class IncompatibleSchemaError(SchemaRegistryError):
    """The registry refuses joblog's schema for a subject under the subject's compatibility
    level (the schema change breaks readers or writers of the records already there).

    Attributes:
        subject: the subject, e.g. ``joblog.events-value``.
        level: the subject's compatibility level, when known.
        messages: what the registry said is incompatible.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str,
        subject: str,
        level: str | None,
        messages: tuple[str, ...] = (),
        status: int | None = None,
        error_code: int | None = None,
    ) -> None:
        super().__init__(message, url=url, status=status, error_code=error_code)
        self.subject = subject
        self.level = level
        self.messages = messages


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


class KafkaUnreachable(BrokerError):
    """No broker of the cluster answered within the client's connect timeout.

    Attributes:
        bootstrap_servers: the servers that were tried.
        timeout: seconds waited.
    """

    def __init__(self, bootstrap_servers: str, timeout: float, detail: str = "") -> None:
        super().__init__(
            f"cannot reach Kafka at {bootstrap_servers} (JOBLOG_BOOTSTRAP_SERVERS) within "
            f"{timeout:g} s{f': {detail}' if detail else ''}; is a broker running "
            "(`joblog broker start`)?"
        )
        self.bootstrap_servers = bootstrap_servers
        self.timeout = timeout


class KafkaAuthenticationFailed(BrokerError):
    """The cluster refused the client's SASL credentials (or its TLS handshake).

    Attributes:
        bootstrap_servers: the servers that refused.
        reason: librdkafka's words.
    """

    def __init__(self, bootstrap_servers: str, reason: str) -> None:
        super().__init__(
            f"Kafka at {bootstrap_servers} refused this client's credentials ({reason}); check "
            "JOBLOG_KAFKA_SECURITY_PROTOCOL, JOBLOG_KAFKA_SASL_MECHANISMS, "
            "JOBLOG_KAFKA_SASL_USERNAME and JOBLOG_KAFKA_SASL_PASSWORD"
        )
        self.bootstrap_servers = bootstrap_servers
        self.reason = reason


class JobNotFound(JoblogError, LookupError):
    """No job (or submission) with that id is known."""


class UnknownSubmission(JobNotFound):
    """The ``events`` topic holds nothing of this submission: no such id was ever submitted,
    or its submit was only ever throttled (admission control) and not sent again.

    Attributes:
        submission_id: the id asked for.
        throttled: the last throttle of a submit of this id (``cause``, ``detail``), if any.
    """

    def __init__(
        self, submission_id: str, topic: str, *, throttled: SubmissionThrottled | None = None
    ) -> None:
        text = f"no submission {submission_id} in {topic}"
        if throttled is not None:
            text += (
                f": its submit was throttled, the engine was busy ({throttled.cause}: "
                f"{throttled.detail}); submit it again"
            )
        super().__init__(text)
        self.submission_id = submission_id
        self.throttled = throttled


class CommandRejectedError(JoblogError):
    """The scheduler rejected a command (a ``CommandRejected`` event); nothing changed.

    Attributes:
        command_type: ``SubmitJobs``, ``CancelJobs``, ``RetryJob`` or ``DeleteJobs``.
        command_id: the rejected command.
        submission_id / job_id: what it named (``job_id`` is ``None`` for a submission).
        code: machine-readable reason (a :class:`~engine.lifecycle.records.RejectionCode`).
        reason: what to fix.
    """

    def __init__(
        self,
        message: str,
        *,
        command_type: str,
        command_id: str,
        submission_id: str,
        job_id: str | None,
        code: str,
        reason: str,
    ) -> None:
        super().__init__(message)
        self.command_type = command_type
        self.command_id = command_id
        self.submission_id = submission_id
        self.job_id = job_id
        self.code = code
        self.reason = reason


class JobNotCanceled(CommandRejectedError):
    """A cancel was rejected (the job already ended, is unknown or was deleted)."""


class JobNotRetried(CommandRejectedError):
    """A retry was rejected (the job is not waiting for a retry backoff)."""


class JobNotDeleted(CommandRejectedError):
    """A delete was rejected (unfinished jobs without ``force``, or already deleted)."""


#: Taipy's name for a rejected delete (``delete_job(job)`` of an unfinished job without
#: ``force``): the same class as :class:`JobNotDeleted`.
JobNotDeletedException = JobNotDeleted


class JobNotRerun(CommandRejectedError):
    """A rerun was rejected (the job did not fail, was not canceled or abandoned, or was
    deleted)."""


class QueueNotConfigured(CommandRejectedError):
    """A queue's new settings were rejected (a limit out of its range)."""


class ScheduleNotChanged(CommandRejectedError):
    """Creating, pausing, resuming, triggering or deleting a schedule was rejected (a bad
    spec or job, an id in use or deleted before, an unknown schedule)."""


class NotificationNotChanged(CommandRejectedError):
    """Adding or removing a notification was rejected (a bad URL or event name, an unknown
    job or notification id, a finished submission, too many notifications)."""


class EngineBusy(JoblogError):
    """The engine was behind and did not take a submission now (a ``SubmissionThrottled``
    event, admission control); nothing of it was kept and its id is still free.

    :meth:`engine.api.Submission.result` submits it again after ``retry_after`` seconds
    (with jitter) until the client's ``throttle_wait`` is spent, and raises this only then.

    Attributes:
        submission_id / command_id: the throttled submit.
        cause: ``pending_jobs``, ``dispatch_backlog`` or ``projection_lag``.
        retry_after: seconds after which a new submit is likely to be taken.
        queue: the queue over its limit (empty for a projection lag).
        load / limit: the measured figure and the limit it is over.
        detail: the same, for a human.
    """

    def __init__(
        self,
        *,
        submission_id: str,
        command_id: str,
        cause: str,
        retry_after: float,
        queue: str = "",
        load: int = 0,
        limit: int = 0,
        detail: str = "",
    ) -> None:
        super().__init__(
            f"submission {submission_id} throttled, the engine is busy ({cause}): {detail}"
        )
        self.submission_id = submission_id
        self.command_id = command_id
        self.cause = cause
        self.retry_after = retry_after
        self.queue = queue
        self.load = load
        self.limit = limit
        self.detail = detail


class DecisionTimeout(JoblogError, TimeoutError):
    """No decision on a command reached the ``events`` topic in time.

    The command is in Kafka and will be decided when a scheduler gets to it.

    Attributes:
        command_id / submission_id: the command.
        timeout: seconds waited.
    """

    def __init__(
        self, message: str, *, command_id: str, submission_id: str, timeout: float
    ) -> None:
        super().__init__(message)
        self.command_id = command_id
        self.submission_id = submission_id
        self.timeout = timeout
