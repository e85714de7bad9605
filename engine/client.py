"""Producing commands (submit, cancel, retry, delete) and learning the scheduler's decision.

Any Kafka client in any language can do the same with the schemas in ``schemas/``: produce a
``Command`` record (Avro single-object encoding) to ``<prefix>commands`` keyed by the
submission id, partitioned with murmur2 (the Java client's default).

Before a command is produced, the client checks it against the designed limits
(:mod:`engine.limits`): the job count, each job's JSON arguments and the encoded size of a
submission, raising :class:`~engine.errors.TooManyJobs`,
:class:`~engine.errors.ArgumentsTooLarge` or :class:`~engine.errors.SubmissionTooLarge` with
the limit and the variable that sets it. The first command also checks that the cluster
answers within :data:`CONNECT_TIMEOUT_S` (:class:`~engine.errors.KafkaUnreachable`).

The decision on a command is an event on ``events``, in the partition of its submission
(murmur2 of the submission id, :func:`engine.partitioning.partition_for`): a
``SubmissionAccepted`` naming the submit command, an event that shows the command took effect
(``JobCanceled``/``JobCancelRequested``/``JobAbandoned`` for a cancel, ``JobDispatched`` for a
retry, ``JobDeleted`` for a delete), or a ``CommandRejected`` naming the command id. A
:class:`CommandHandle` reads only that partition, from its end offset taken just before the
command was produced, so waiting for a decision costs the same on a log of any length.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from engine import codec, kafka
from engine.clock import now_ms
from engine.config import Settings
from engine.errors import (
    ArgumentsTooLarge,
    BrokerError,
    CommandRejectedError,
    DecisionTimeout,
    EngineBusy,
    JoblogError,
    JobNotCanceled,
    JobNotDeleted,
    JobNotRerun,
    JobNotRetried,
    KafkaAuthenticationFailed,
    KafkaUnreachable,
    LimitExceeded,
    NotificationNotChanged,
    QueueNotConfigured,
    ScheduleNotChanged,
    SubmissionTooLarge,
    TooManyJobs,
)
from engine.lifecycle.records import (
    AddNotification,
    CancelJobs,
    CancelMode,
    ChangeSchedule,
    Command,
    CommandRejected,
    ConfigureQueue,
    CreateSchedule,
    DeleteJobs,
    Event,
    JobAbandoned,
    JobCanceled,
    JobCancelRequested,
    JobDeleted,
    JobDispatched,
    JobHeld,
    JobRerun,
    JobSpec,
    Notification,
    NotificationAdded,
    NotificationRemoved,
    QueueConfigured,
    RemoveNotification,
    RerunJobs,
    RetryJob,
    ScheduleChanged,
    ScheduleCreated,
    ScheduleFired,
    SubmissionAccepted,
    SubmissionThrottled,
    SubmitJobs,
    is_queue_config,
    queue_config_id,
)
from engine.limits import KiB, Limits, MiB, describe_bytes, setting_name
from engine.logs import authentication_failure
from engine.partitioning import partition_for
from engine.topics import Topics

if TYPE_CHECKING:
    from confluent_kafka import Consumer

#: Longest wait for a first answer from the cluster before :class:`KafkaUnreachable`.
CONNECT_TIMEOUT_S = 5.0
#: Default wait for the scheduler's decision on a command.
DECISION_TIMEOUT_S = 15.0


class CommandNotSent(JoblogError):
    """The broker did not acknowledge a command."""


# --------------------------------------------------------------------------- ids

_MS_BITS = 48
_RANDOM_BITS = 80
_EARLIEST_ID_MS = 1_577_836_800_000  # 2020-01-01: older "times" are not ours
_ID_FUTURE_MS = 24 * 60 * 60 * 1000


def new_id(prefix: str = "") -> str:
    """A fresh id: ``prefix`` and 32 hex digits laid out as a UUIDv7.

    The first 48 bits are the creation time in epoch milliseconds, the rest random (with
    the UUID version and variant bits), so an id says when it was made
    (:func:`id_time_ms`) and a watcher can start reading near it instead of at offset 0.
    """
    value = (now_ms() & ((1 << _MS_BITS) - 1)) << _RANDOM_BITS
    value |= int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return f"{prefix}{value:032x}"


def id_time_ms(identifier: str) -> int | None:
    """When an id made by :func:`new_id` was created (epoch ms), or ``None`` for other ids.

    Ids given by users (``--submission-id``) or made by other clients are not trusted, and
    neither is a time before 2020 or more than a day ahead.
    """
    tail = identifier.rpartition("-")[2]
    if len(tail) != 32:
        return None
    try:
        value = int(tail, 16)
    except ValueError:
        return None
    if (value >> 76) & 0xF != 7 or (value >> 62) & 0x3 != 2:
        return None
    ms = value >> _RANDOM_BITS
    if ms < _EARLIEST_ID_MS or ms > now_ms() + _ID_FUTURE_MS:
        return None
    return ms


# --------------------------------------------------------------------------- reaching Kafka


class _HasMetadata(Protocol):
    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any: ...


_UNREACHABLE_CODES = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
        KafkaError._MSG_TIMED_OUT,
    }
)


def kafka_failure(exc: BaseException, settings: Settings, timeout: float) -> JoblogError:
    """One clear error for a failed Kafka call: unreachable, or the broker's own message."""
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    if isinstance(error, KafkaError):
        if error.code() == KafkaError._AUTHENTICATION:
            return KafkaAuthenticationFailed(settings.bootstrap_servers, error.str())
        if error.code() in _UNREACHABLE_CODES:
            refused = authentication_failure() or _refused_login(settings)
            if refused is not None:
                return KafkaAuthenticationFailed(settings.bootstrap_servers, refused)
            return KafkaUnreachable(settings.bootstrap_servers, timeout)
        return BrokerError(f"Kafka at {settings.bootstrap_servers} answered: {error.str()}")
    return BrokerError(f"Kafka at {settings.bootstrap_servers}: {exc}")


def _refused_login(settings: Settings, timeout: float = 3.0) -> str | None:
    """Why the cluster refused this client's SASL login, if that is why it looked unreachable.

    librdkafka reports a refused login only to the error callback, which a client serves in
    its own ``poll()``; so a probe that is polled at once asks again.
    """
    if not any(key.startswith("sasl.") for key in settings.kafka):
        return None
    probe = kafka.admin_client(settings)
    with contextlib.suppress(KafkaException):
        probe.list_topics(timeout=timeout)
    probe.poll(0)
    return authentication_failure()


def cluster_metadata(
    client: _HasMetadata,
    settings: Settings,
    topic: str | None = None,
    *,
    timeout: float = CONNECT_TIMEOUT_S,
) -> Any:
    """The cluster's metadata (of one topic, or all), within ``timeout`` seconds.

    Raises:
        KafkaUnreachable: no broker answered in time.
        BrokerError: the cluster answered with an error (authorization, ...).
    """
    try:
        return client.list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        raise kafka_failure(exc, settings, timeout) from None


def topic_partitions(metadata: Any, topic: str, settings: Settings) -> int:
    """The partition count of ``topic`` in ``metadata``.

    Raises:
        JoblogError: the topic does not exist.
    """
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        raise JoblogError(
            f"topic {topic} does not exist at {settings.bootstrap_servers}; "
            "create the topics with `joblog topics create`"
        )
    return len(described.partitions)


# --------------------------------------------------------------------------- limits


def _limit_text(limit: int) -> str:
    if limit % MiB == 0:
        return f"{limit // MiB} MiB"
    if limit % KiB == 0:
        return f"{limit // KiB} KiB"
    return describe_bytes(limit)


def check_submission(command: SubmitJobs, limits: Limits) -> None:
    """Checks a submit command's job count and each job's arguments against ``limits``.

    Raises:
        TooManyJobs: more jobs than ``JOBLOG_MAX_JOBS``.
        ArgumentsTooLarge: a job's JSON arguments exceed ``JOBLOG_MAX_ARGS_BYTES``.
    """
    count = len(command.jobs)
    if count > limits.max_jobs:
        setting = setting_name("max_jobs")
        raise TooManyJobs(
            f"submission {command.submission_id} has {count:,} jobs, the limit is "
            f"{limits.max_jobs:,} ({setting}); split it into several submissions",
            size=count,
            limit=limits.max_jobs,
            setting=setting,
        )
    for spec in command.jobs:
        size = len(spec.args.encode("utf-8"))
        if size > limits.max_args_bytes:
            setting = setting_name("max_args_bytes")
            raise ArgumentsTooLarge(
                f"job {spec.job_id!r} arguments are {describe_bytes(size)}, the limit is "
                f"{_limit_text(limits.max_args_bytes)} ({setting}); pass a reference "
                "(a path or URL) to large data instead",
                size=size,
                limit=limits.max_args_bytes,
                setting=setting,
            )


def check_encoded(command: Command, encoded: bytes, limits: Limits) -> None:
    """Checks the size of an encoded command: a submission against ``JOBLOG_MAX_SUBMIT_BYTES``,
    any other command against ``JOBLOG_MAX_RECORD_BYTES``.

    Raises:
        SubmissionTooLarge: an encoded submission is too large.
        LimitExceeded: another command is larger than a record may be.
    """
    size = len(encoded)
    if isinstance(command, SubmitJobs):
        if size > limits.max_submit_bytes:
            setting = setting_name("max_submit_bytes")
            raise SubmissionTooLarge(
                f"submission {command.submission_id} is {describe_bytes(size)} encoded "
                f"({len(command.jobs):,} jobs), the limit is "
                f"{_limit_text(limits.max_submit_bytes)} ({setting}); split it into "
                "several submissions",
                size=size,
                limit=limits.max_submit_bytes,
                setting=setting,
            )
    elif size > limits.max_record_bytes:
        setting = setting_name("max_record_bytes")
        raise LimitExceeded(
            f"{type(command).__name__} {command.command_id} is {describe_bytes(size)} encoded, "
            f"the limit is {_limit_text(limits.max_record_bytes)} ({setting})",
            size=size,
            limit=limits.max_record_bytes,
            setting=setting,
        )


# --------------------------------------------------------------------------- decisions


def decision_of(command: Command, event: Event) -> bool | None:
    """What ``event`` says of ``command``: ``True`` accepted, ``False`` rejected, else ``None``.

    Exact for a submit (``SubmissionAccepted`` names its command) and for every rejection
    (``CommandRejected`` names the command); a cancel, retry or delete is taken as accepted
    at the first event of its submission that shows such a command took effect.
    """
    if event.submission_id != command.submission_id:
        return None
    body = event.body
    if isinstance(body, CommandRejected | SubmissionThrottled):
        return False if body.command_id == command.command_id else None
    if isinstance(command, SubmitJobs):
        accepted = isinstance(body, SubmissionAccepted) and body.command_id == command.command_id
    elif isinstance(command, CancelJobs):
        accepted = isinstance(body, JobCanceled | JobCancelRequested | JobAbandoned)
    elif isinstance(command, RetryJob):
        accepted = isinstance(body, JobDispatched | JobHeld) and event.job_id == command.job_id
    elif isinstance(command, RerunJobs):
        accepted = isinstance(body, JobRerun) and body.command_id == command.command_id
    elif isinstance(command, ConfigureQueue):
        accepted = isinstance(body, QueueConfigured) and body.command_id == command.command_id
    elif isinstance(command, CreateSchedule):
        accepted = isinstance(body, ScheduleCreated) and body.command_id == command.command_id
    elif isinstance(command, ChangeSchedule):
        accepted = (
            isinstance(body, ScheduleChanged | ScheduleFired)
            and body.command_id == command.command_id
        )
    elif isinstance(command, AddNotification | RemoveNotification):
        accepted = (
            isinstance(body, NotificationAdded | NotificationRemoved)
            and body.command_id == command.command_id
        )
    else:
        accepted = isinstance(body, JobDeleted) and (
            command.job_id is None or event.job_id == command.job_id
        )
    return True if accepted else None


def _ref(command: Command) -> str:
    if isinstance(command, CreateSchedule | ChangeSchedule):
        return f"schedule {command.submission_id.removeprefix('#schedule-')}"
    job_id = getattr(command, "job_id", None)
    return f"{command.submission_id}/{job_id}" if job_id else command.submission_id


def rejection_error(command: Command, body: CommandRejected) -> CommandRejectedError:
    """The typed error for a rejected command (a subclass per command type)."""
    if isinstance(command, SubmitJobs):
        from engine.watch import SubmissionRejected

        return SubmissionRejected(
            command.submission_id, body.code, body.reason, command_id=command.command_id
        )
    kind: type[CommandRejectedError]
    verb, kind = {
        CancelJobs: ("cancel", JobNotCanceled),
        RetryJob: ("retry", JobNotRetried),
        DeleteJobs: ("delete", JobNotDeleted),
        RerunJobs: ("rerun", JobNotRerun),
        ConfigureQueue: ("configuring", QueueNotConfigured),
        CreateSchedule: ("creating", ScheduleNotChanged),
        ChangeSchedule: ("changing", ScheduleNotChanged),
        AddNotification: ("adding a notification to", NotificationNotChanged),
        RemoveNotification: ("removing a notification of", NotificationNotChanged),
    }[type(command)]
    return kind(
        f"{verb} of {_ref(command)} was rejected ({body.code}): {body.reason}",
        command_type=body.command_type,
        command_id=command.command_id,
        submission_id=command.submission_id,
        job_id=getattr(command, "job_id", None),
        code=body.code,
        reason=body.reason,
    )


def throttled_error(command: Command, body: SubmissionThrottled) -> EngineBusy:
    """The error for a submit the engine was too busy to take now."""
    return EngineBusy(
        submission_id=command.submission_id,
        command_id=command.command_id,
        cause=body.cause,
        retry_after=body.retry_after_ms / 1000,
        queue=body.queue,
        load=body.load,
        limit=body.limit,
        detail=body.detail,
    )


class DecisionReader:
    """Reads decisions from one partition of ``events`` at a time, from a given offset.

    One consumer (assigned, never in a group) serves every command of a client; waits from
    several threads take turns.

    Args:
        settings: cluster and topic settings.
        partitions: the partition count of ``events``, when already known.
    """

    def __init__(self, settings: Settings, partitions: int | None = None) -> None:
        self.settings = settings
        self.topic = Topics(settings.topic_prefix).events
        self._partitions = partitions
        self._consumer: Consumer | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> Consumer:
        if self._consumer is None:
            from engine.watch import events_consumer

            self._consumer = events_consumer(self.settings, **{"enable.partition.eof": False})
        return self._consumer

    def start(self, submission_id: str, timeout: float = CONNECT_TIMEOUT_S) -> TopicPartition:
        """The partition of a submission and its end offset now: where a decision on a
        command produced after this call will be found.

        Raises:
            KafkaUnreachable: the cluster did not answer within ``timeout``.
            JoblogError: the ``events`` topic does not exist.
        """
        with self._lock:
            consumer = self._ensure()
            if self._partitions is None:
                metadata = cluster_metadata(consumer, self.settings, self.topic, timeout=timeout)
                self._partitions = topic_partitions(metadata, self.topic, self.settings)
            number = (
                queue_config_partition(submission_id)
                if is_queue_config(submission_id)
                else partition_for(submission_id, self._partitions)
            )
            partition = TopicPartition(self.topic, number)
            try:
                _, high = consumer.get_watermark_offsets(partition, timeout=timeout)
            except KafkaException as exc:
                raise kafka_failure(exc, self.settings, timeout) from None
            partition.offset = high
            return partition

    def wait(self, command: Command, start: TopicPartition, timeout: float) -> Event:
        """The event that decides ``command``, read from ``start`` for at most ``timeout`` s.

        Raises:
            CommandRejectedError: the scheduler rejected it (a subclass per command type).
            EngineBusy: a submit the engine was too busy to take now.
            DecisionTimeout: no decision came in time.
        """
        deadline = time.monotonic() + timeout
        key = command.submission_id.encode()
        with self._lock:
            consumer = self._ensure()
            consumer.assign([TopicPartition(start.topic, start.partition, start.offset)])
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                message = consumer.poll(min(0.2, remaining))
                if message is None or message.error() is not None or message.key() != key:
                    continue
                value = message.value()
                if value is None:
                    continue
                try:
                    event = codec.decode_event(value)
                except JoblogError:
                    continue
                verdict = decision_of(command, event)
                if verdict is None:
                    continue
                if verdict:
                    return event
                if isinstance(event.body, SubmissionThrottled):
                    raise throttled_error(command, event.body)
                assert isinstance(event.body, CommandRejected)
                raise rejection_error(command, event.body)
        raise DecisionTimeout(
            f"no decision on {type(command).__name__} {command.command_id} for {_ref(command)} "
            f"within {timeout:g} s; the command is in Kafka and waits for a scheduler "
            "(is `joblog scheduler` running?)",
            command_id=command.command_id,
            submission_id=command.submission_id,
            timeout=timeout,
        )

    def close(self) -> None:
        """Closes the consumer."""
        with self._lock:
            consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()


class CommandHandle:
    """A command the broker acknowledged, and the scheduler's decision on it once read.

    Attributes:
        command: the command record.
        command_id / submission_id / job_id: what it names.
        partition / start_offset: where in ``events`` its decision will be (the partition's
            end offset just before the command was produced).
        sent: where the command itself was written.
    """

    def __init__(
        self,
        command: Command,
        reader: DecisionReader,
        start: TopicPartition,
        sent: Sent | None,
    ) -> None:
        self.command = command
        self.command_id = command.command_id
        self.submission_id = command.submission_id
        self.job_id: str | None = getattr(command, "job_id", None)
        self.partition: int = start.partition
        self.start_offset: int = start.offset
        self.sent = sent
        self._reader = reader
        self._start = start
        self._event: Event | None = None
        self._rejection: CommandRejectedError | None = None
        self._throttled: EngineBusy | None = None

    def __repr__(self) -> str:
        state = (
            "accepted"
            if self._event is not None
            else "rejected"
            if self._rejection is not None
            else "throttled"
            if self._throttled is not None
            else "undecided"
        )
        return f"CommandHandle({type(self.command).__name__} {_ref(self.command)}, {state})"

    @property
    def decided(self) -> bool:
        """Whether the decision has been read."""
        return self._event is not None or self._rejection is not None or self.throttled

    @property
    def throttled(self) -> bool:
        """Whether the engine was too busy to take this submit (send it again later)."""
        return self._throttled is not None

    @property
    def rejection(self) -> CommandRejectedError | None:
        """The rejection, once read (``None`` while undecided or when accepted)."""
        return self._rejection

    def result(self, timeout: float = DECISION_TIMEOUT_S) -> Event:
        """Waits for the decision; returns the event that shows the command took effect.

        Args:
            timeout: longest wait in seconds.

        Raises:
            CommandRejectedError: the scheduler rejected the command, with ``code`` and
                ``reason``: :class:`~engine.watch.SubmissionRejected`,
                :class:`~engine.errors.JobNotCanceled`, :class:`~engine.errors.JobNotRetried`
                or :class:`~engine.errors.JobNotDeleted`.
            EngineBusy: a submit the engine was too busy to take now; nothing of it is
                kept (:meth:`engine.api.Submission.result` sends it again by itself).
            DecisionTimeout: no decision within ``timeout`` (the command stays in Kafka and
                may still be decided; call again to keep waiting).
        """
        if self._event is not None:
            return self._event
        if self._rejection is not None:
            raise self._rejection
        if self._throttled is not None:
            raise self._throttled
        try:
            self._event = self._reader.wait(self.command, self._start, timeout)
        except EngineBusy as exc:
            self._throttled = exc
            raise
        except CommandRejectedError as exc:
            self._rejection = exc
            raise
        return self._event

    def accepted(self, timeout: float = DECISION_TIMEOUT_S) -> bool:
        """Waits for the decision: ``True`` if accepted, ``False`` if rejected.

        Raises:
            DecisionTimeout: no decision within ``timeout``.
        """
        try:
            self.result(timeout)
        except CommandRejectedError:
            return False
        return True


# --------------------------------------------------------------------------- producing


@dataclass(frozen=True)
class Sent:
    """A command the broker acknowledged."""

    command_id: str
    submission_id: str
    partition: int
    offset: int


class CommandProducer:
    """Sends commands to the ``commands`` topic with an idempotent producer.

    Args:
        settings: cluster and topic settings.
        connect_timeout: longest wait for the cluster's first answer, in seconds.
    """

    def __init__(self, settings: Settings, *, connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.connect_timeout = connect_timeout
        self._producer = kafka.producer(
            settings, {"enable.idempotence": True, "linger.ms": 2}, writes=[self.topics.commands]
        )
        self._partitions: int | None = None
        self._decisions: DecisionReader | None = None
        self._lock = threading.Lock()

    def partitions(self) -> int:
        """The partition count of ``commands`` (read once; this also checks the cluster
        answers and the topic exists).

        Raises:
            KafkaUnreachable: no broker answered within ``connect_timeout``.
            JoblogError: the topic does not exist.
        """
        if self._partitions is None:
            # All topics, not just one: a producer's request for one topic could make a
            # broker with auto.create.topics.enable create it with the wrong settings.
            metadata = cluster_metadata(self._producer, self.settings, timeout=self.connect_timeout)
            self._partitions = topic_partitions(metadata, self.topics.commands, self.settings)
        return self._partitions

    @property
    def decisions(self) -> DecisionReader:
        """The reader of decisions on ``events``, created on first use."""
        with self._lock:
            if self._decisions is None:
                self._decisions = DecisionReader(self.settings, self._partitions)
            return self._decisions

    def send(self, command: Command, *, wait: bool = True, timeout: float = 30.0) -> Sent | None:
        """Produces one command keyed by its submission id.

        Args:
            command: the command.
            wait: block until the broker acknowledged it.
            timeout: longest wait for the acknowledgement, in seconds.

        Returns:
            Where the command was written, or ``None`` when not waiting.

        Raises:
            TooManyJobs / ArgumentsTooLarge / SubmissionTooLarge / LimitExceeded: the command
                breaks a designed limit (checked before anything is sent).
            KafkaUnreachable: the cluster did not answer (first command only).
            CommandNotSent: the broker refused it or did not answer in time.
        """
        value = self._encode(command)
        self.partitions()
        return self._produce(command, value, wait=wait, timeout=timeout)

    def _encode(self, command: Command) -> bytes:
        limits = self.settings.limits
        if isinstance(command, SubmitJobs):
            check_submission(command, limits)
        elif isinstance(command, CreateSchedule):  # each run is a submission of its jobs
            check_submission(
                SubmitJobs(command.command_id, command.schedule_id, command.jobs), limits
            )
        value = codec.encode_command(command)
        check_encoded(command, value, limits)
        return value

    def _produce(
        self, command: Command, value: bytes, *, wait: bool, timeout: float
    ) -> Sent | None:
        outcome: list[Sent | KafkaError] = []

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                outcome.append(error)
            else:
                outcome.append(
                    Sent(
                        command.command_id,
                        command.submission_id,
                        message.partition() or 0,
                        message.offset() or 0,
                    )
                )

        deadline = time.monotonic() + timeout
        while True:
            try:
                if isinstance(command, ConfigureQueue):
                    # one record per partition, to the partition its key names
                    self._producer.produce(
                        self.topics.commands,
                        key=command.submission_id.encode(),
                        value=value,
                        partition=queue_config_partition(command.submission_id),
                        on_delivery=delivered,
                    )
                else:
                    self._producer.produce(
                        self.topics.commands,
                        key=command.submission_id.encode(),
                        value=value,
                        on_delivery=delivered,
                    )
                break
            except BufferError:
                # The local queue is full: let deliveries drain it, up to the deadline.
                if time.monotonic() >= deadline:
                    raise CommandNotSent(
                        f"command {command.command_id} not sent: the producer's queue stayed "
                        f"full for {timeout:g} s; is Kafka at {self.settings.bootstrap_servers} "
                        "keeping up?"
                    ) from None
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise CommandNotSent(
                    f"command {command.command_id} not sent: {_kafka_text(exc)}"
                ) from None
        if not wait:
            self._producer.poll(0)
            return None
        self._producer.flush(max(0.0, deadline - time.monotonic()))
        if not outcome:
            raise CommandNotSent(
                f"no acknowledgement for command {command.command_id} within {timeout:g} s; "
                f"is Kafka reachable at {self.settings.bootstrap_servers}?"
            )
        result = outcome[0]
        if isinstance(result, KafkaError):
            hint = ""
            if result.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                hint = (
                    f"; the topic {self.topics.commands} takes smaller records than "
                    "JOBLOG_MAX_RECORD_BYTES: `joblog topics create` raises its max.message.bytes"
                )
            raise CommandNotSent(
                f"command {command.command_id} was refused by Kafka: {result.str()}{hint}"
            )
        return result

    def send_tracked(self, command: Command, *, timeout: float = 30.0) -> CommandHandle:
        """Sends a command and returns a handle on the scheduler's decision.

        The end offset of the submission's partition of ``events`` is read before producing,
        so the decision is read from there on (:meth:`CommandHandle.result`).

        Raises:
            the errors of :meth:`send`.
        """
        value = self._encode(command)
        self.partitions()
        reader = self.decisions
        start = reader.start(command.submission_id, self.connect_timeout)
        sent = self._produce(command, value, wait=True, timeout=timeout)
        return CommandHandle(command, reader, start, sent)

    def flush(self, timeout: float = 30.0) -> int:
        """Waits for every command sent without waiting; returns how many are still queued."""
        return int(self._producer.flush(timeout))

    def close(self, timeout: float = 30.0) -> int:
        """Flushes what is queued and closes the decision reader; returns what stayed queued."""
        left = self.flush(timeout)
        with self._lock:
            reader, self._decisions = self._decisions, None
        if reader is not None:
            reader.close()
        return left

    def submit(
        self,
        jobs: JobSpec | Sequence[JobSpec],
        *,
        submission_id: str | None = None,
        submitted_by: str = "",
        labels: Iterable[tuple[str, str]] = (),
        wait: bool = True,
    ) -> SubmitJobs:
        """Submits one job, a graph or a tree of jobs as one submission; returns the command."""
        command = submit_command(
            jobs, submission_id=submission_id, submitted_by=submitted_by, labels=labels
        )
        self.send(command, wait=wait)
        return command

    def cancel(
        self,
        submission_id: str,
        job_id: str | None = None,
        *,
        mode: CancelMode = CancelMode.KILL,
        reason: str = "",
        requested_by: str = "",
        wait: bool = True,
    ) -> CancelJobs:
        """Cancels a job (and its sub-jobs) or every unfinished job of a submission."""
        command = cancel_command(
            submission_id, job_id, mode=mode, reason=reason, requested_by=requested_by
        )
        self.send(command, wait=wait)
        return command

    def retry(self, submission_id: str, job_id: str, *, wait: bool = True) -> RetryJob:
        """Runs a job that waits for its retry backoff now."""
        command = retry_command(submission_id, job_id)
        self.send(command, wait=wait)
        return command

    def delete(
        self,
        submission_id: str,
        job_id: str | None = None,
        *,
        force: bool = False,
        wait: bool = True,
    ) -> DeleteJobs:
        """Deletes a finished job or submission (``force`` cancels unfinished jobs first)."""
        command = delete_command(submission_id, job_id, force=force)
        self.send(command, wait=wait)
        return command

    def rerun(
        self, submission_id: str, job_id: str | None = None, *, wait: bool = True
    ) -> RerunJobs:
        """Runs a failed, canceled or abandoned job (or every such job) of a submission again."""
        command = rerun_command(submission_id, job_id)
        self.send(command, wait=wait)
        return command

    def configure_queue(
        self,
        queue: str,
        *,
        paused: bool | None = None,
        max_running: int | None = None,
        rate_limit: int | None = None,
        rate_period_ms: int | None = None,
        requested_by: str = "",
    ) -> list[CommandHandle]:
        """Sets a queue's settings in every partition (one command each); returns a handle
        on the decision of each."""
        commands = configure_queue_commands(
            queue,
            self.partitions(),
            paused=paused,
            max_running=max_running,
            rate_limit=rate_limit,
            rate_period_ms=rate_period_ms,
            requested_by=requested_by,
        )
        return [self.send_tracked(command) for command in commands]


def _kafka_text(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)


# --------------------------------------------------------------------------- command records


def submit_command(
    jobs: JobSpec | Sequence[JobSpec],
    *,
    submission_id: str | None = None,
    submitted_by: str = "",
    labels: Iterable[tuple[str, str]] = (),
    notifications: Iterable[Notification] = (),
) -> SubmitJobs:
    """A submit command with fresh ids (the submission id unless given)."""
    specs = (jobs,) if isinstance(jobs, JobSpec) else tuple(jobs)
    return SubmitJobs(
        command_id=new_id("c-"),
        submission_id=submission_id or new_id("s-"),
        jobs=specs,
        submitted_by=submitted_by,
        labels=tuple(labels),
        issued_at=now_ms(),
        notifications=tuple(notifications),
    )


def add_notification_command(
    submission_id: str, notification: Notification, *, requested_by: str = ""
) -> AddNotification:
    """An add-notification command with a fresh id."""
    return AddNotification(
        command_id=new_id("c-"),
        submission_id=submission_id,
        notification=notification,
        requested_by=requested_by,
        issued_at=now_ms(),
    )


def remove_notification_command(
    submission_id: str, notification_id: str, *, requested_by: str = ""
) -> RemoveNotification:
    """A remove-notification command with a fresh id."""
    return RemoveNotification(
        command_id=new_id("c-"),
        submission_id=submission_id,
        notification_id=notification_id,
        requested_by=requested_by,
        issued_at=now_ms(),
    )


def cancel_command(
    submission_id: str,
    job_id: str | None = None,
    *,
    mode: CancelMode = CancelMode.KILL,
    reason: str = "",
    requested_by: str = "",
) -> CancelJobs:
    """A cancel command with a fresh id."""
    return CancelJobs(
        command_id=new_id("c-"),
        submission_id=submission_id,
        job_id=job_id,
        mode=mode,
        reason=reason,
        requested_by=requested_by,
        issued_at=now_ms(),
    )


def retry_command(submission_id: str, job_id: str, *, requested_by: str = "") -> RetryJob:
    """A retry command with a fresh id."""
    return RetryJob(
        command_id=new_id("c-"),
        submission_id=submission_id,
        job_id=job_id,
        requested_by=requested_by,
        issued_at=now_ms(),
    )


def rerun_command(
    submission_id: str, job_id: str | None = None, *, requested_by: str = ""
) -> RerunJobs:
    """A rerun command with a fresh id."""
    return RerunJobs(
        command_id=new_id("c-"),
        submission_id=submission_id,
        job_id=job_id,
        requested_by=requested_by,
        issued_at=now_ms(),
    )


def configure_queue_commands(
    queue: str,
    partitions: int,
    *,
    paused: bool | None = None,
    max_running: int | None = None,
    rate_limit: int | None = None,
    rate_period_ms: int | None = None,
    requested_by: str = "",
) -> list[ConfigureQueue]:
    """The commands that set a queue's settings: one for each partition of ``commands``."""
    command_id = new_id("c-")
    issued_at = now_ms()
    return [
        ConfigureQueue(
            command_id=f"{command_id}@{partition}",
            submission_id=queue_config_id(queue, partition),
            queue=queue,
            paused=paused,
            max_running=max_running,
            rate_limit=rate_limit,
            rate_period_ms=rate_period_ms,
            requested_by=requested_by,
            issued_at=issued_at,
        )
        for partition in range(partitions)
    ]


def queue_config_partition(config_id: str) -> int:
    """The partition a queue's settings id names (``#queue-<queue>@<partition>``)."""
    return int(config_id.rpartition("@")[2])


def delete_command(
    submission_id: str,
    job_id: str | None = None,
    *,
    force: bool = False,
    requested_by: str = "",
) -> DeleteJobs:
    """A delete command with a fresh id."""
    return DeleteJobs(
        command_id=new_id("c-"),
        submission_id=submission_id,
        job_id=job_id,
        force=force,
        requested_by=requested_by,
        issued_at=now_ms(),
    )
