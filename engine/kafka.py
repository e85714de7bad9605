"""One home for joblog's Kafka plumbing: building clients, judging consumer errors, dead
letters, and reading a partition to its end.

The services call these and never construct a ``Consumer``, ``Producer`` or ``DeadLetter``
of their own:

* :func:`consumer`, :func:`producer` and :func:`admin_client` build clients on the shared
  settings (:meth:`Settings.client_config`, :meth:`Settings.producer_config`); a consumer
  also always reads committed records only and never commits by itself. With a schema
  registry configured, a producer writes the Confluent wire format (a
  :class:`RegistryProducer`) and every consumer's records decode in either framing.
* :func:`consumer_fatal` says whether an error that ``consume()`` handed back means the
  consumer is dead (every consumer loop asks it).
* :func:`dead_letter` builds the record for the ``deadletter`` topic from the consumed record,
  byte for byte, with one clock; :func:`send_dead_letter` produces it.
* :func:`watermarks` and :func:`read_to_end` read one partition up to its current end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from engine import codec
from engine.clock import now_ms
from engine.config import Settings
from engine.errors import BrokerError, CodecError
from engine.registry import Registry, connect
from engine.topics import Topics

#: What every joblog consumer shares: offsets are committed (or stored) by the service when
#: it has done its part, and records of aborted transactions are never seen.
CONSUMER_SETTINGS: Mapping[str, object] = {
    "enable.auto.commit": False,
    "isolation.level": "read_committed",
}


def consumer_config(
    settings: Settings,
    group_id: str,
    config: Mapping[str, object] | None = None,
    *,
    overridable: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """The configuration of a joblog consumer.

    Later settings win: ``overridable``, then the shared client settings (bootstrap, logging,
    the ``JOBLOG_KAFKA_*`` passthrough), then :data:`CONSUMER_SETTINGS`, the group and
    ``config``.

    Args:
        settings: cluster settings.
        group_id: the consumer group (a unique one for a reader that only assigns).
        config: the consumer's own librdkafka settings.
        overridable: defaults that the ``JOBLOG_KAFKA_*`` passthrough may override (tunables).
    """
    return {
        **(overridable or {}),
        **settings.client_config(**{**CONSUMER_SETTINGS, "group.id": group_id, **(config or {})}),
    }


def consumer(
    settings: Settings,
    group_id: str,
    config: Mapping[str, object] | None = None,
    *,
    overridable: Mapping[str, object] | None = None,
) -> Consumer:
    """A consumer on :func:`consumer_config`.

    Args:
        settings: cluster settings.
        group_id: the consumer group.
        config: the consumer's own librdkafka settings.
        overridable: defaults that the ``JOBLOG_KAFKA_*`` passthrough may override.

    With a schema registry configured, it is made the codec's source of writer schemas, so
    Confluent-framed records decode (single-object ones always do).

    Raises:
        KafkaException: librdkafka refused the configuration.
    """
    if settings.schema_registry is not None:
        connect(settings.schema_registry)
    return Consumer(consumer_config(settings, group_id, config, overridable=overridable))


class RegistryProducer(Producer):
    """A producer that writes joblog's records in the Confluent wire format.

    Every value produced passes :meth:`Registry.frame` on its way in: the single-object
    header is swapped for ``00`` + the schema id registered under the topic's subject (the
    Avro body stays as it is). Everything else is the plain producer's.

    Args:
        config: the librdkafka configuration.
        registry: the schema registry the ids come from.
    """

    def __init__(self, config: Mapping[str, object], registry: Registry) -> None:
        super().__init__(dict(config))
        self.registry = registry
        self._frame = registry.frame

    def produce(self, topic: str, value: Any = None, *args: Any, **kwargs: Any) -> None:
        """:meth:`Producer.produce` of the value in the Confluent wire format.

        Raises:
            IncompatibleSchemaError / SchemaRegistryError: the value's schema could not be
                registered under the topic's subject (its first record only).
            BufferError / KafkaException: as the plain producer's.
        """
        super().produce(topic, self._frame(topic, value), *args, **kwargs)


def producer(
    settings: Settings, config: Mapping[str, object] | None = None, *, writes: Iterable[str] = ()
) -> Producer:
    """A producer of keyed joblog records: :meth:`Settings.producer_config` plus ``config``.

    With a schema registry configured it is a :class:`RegistryProducer`, and the current
    schema of each topic in ``writes`` is registered under the topic's subject before it is
    returned, so that a schema the registry refuses stops the service at start-up; a topic
    not named there (a new queue's dispatch topic) is registered on its first record.

    Args:
        settings: cluster settings.
        config: the producer's own librdkafka settings.
        writes: the joblog topics the producer writes to.

    Raises:
        KafkaException: librdkafka refused the configuration.
        IncompatibleSchemaError: the registry refuses a schema; the error names the subject.
        SchemaRegistryUnreachable / SchemaRegistryError: the registry could not be asked.
    """
    full = settings.producer_config(**(config or {}))
    if settings.schema_registry is None:
        return Producer(full)
    registry = connect(settings.schema_registry)
    topics = Topics(settings.topic_prefix)
    registry.register_topics(
        (topic, schema) for topic in writes if (schema := topics.value_schema(topic)) is not None
    )
    return RegistryProducer(full, registry)


def admin_client(settings: Settings) -> AdminClient:
    """An admin client on the shared client settings."""
    return AdminClient(cast("dict[str, str | int | float | bool]", settings.client_config()))


def next_batch(consumer: Consumer, batch: int, wait: float, linger: float) -> list[Message]:
    """The records to handle together: what the consumer fetched already (up to ``batch``),
    else the first record to come within ``wait`` and what follows it within ``linger``.

    ``consume(batch, timeout=wait)`` alone would hold a quiet topic's records for ``wait``
    each (it returns early only with a full batch); never lingering would make a transaction
    of every record under a trickle of load. A busy topic's batches fill by themselves.
    """
    messages = consumer.consume(batch, timeout=0)
    if messages or wait <= 0:
        return messages
    first = consumer.poll(wait)
    if first is None:
        return []
    if batch <= 1:
        return [first]
    return [first, *consumer.consume(batch - 1, timeout=linger)]


def consumer_fatal(error: KafkaError) -> bool:
    """Whether an error that ``consume()`` or ``poll()`` handed back means the consumer is dead.

    A fatal consumer error (e.g. the group fenced this static member's stale twin after a
    broker crash) reaches the loop as a record whose error has the code ``_FATAL``; that error
    object's own ``fatal()`` is False (confluent-kafka sets the flag only on errors of client
    calls), so the code is what tells. Such a consumer never delivers again: close it and
    build a new one.
    """
    return error.fatal() or error.code() == KafkaError._FATAL


def dead_letter(
    message: Message,
    error: Exception,
    consumer: str,
    *,
    note: str | None = None,
    max_value_bytes: int | None = None,
) -> codec.DeadLetter:
    """The dead letter of a consumed record that its consumer gives up on.

    The record is kept as it was: its place, its key, and its value (the bytes a
    :class:`~engine.errors.CodecError` kept, else the message's value).

    Args:
        message: the consumed record.
        error: why it is given up on; its class is the letter's ``error_type``.
        consumer: the consumer group or component giving up.
        note: the letter's ``error_message`` (``str(error)`` when omitted).
        max_value_bytes: cut a longer value to this many bytes (and say so in the message),
            so that the letter still fits a record.
    """
    raw = error.raw if isinstance(error, CodecError) else None
    value = raw if isinstance(raw, bytes) else (message.value() or b"")
    text = str(error) if note is None else note
    if max_value_bytes is not None and len(value) > max_value_bytes:
        text = f"{text} [value cut to its first {max_value_bytes} of {len(value)} bytes]"
        value = value[:max_value_bytes]
    return codec.DeadLetter(
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=message.key(),
        value=value,
        error_type=type(error).__name__,
        error_message=text,
        consumer=consumer,
        failed_at=now_ms(),
    )


def send_dead_letter(
    producer: Producer,
    topic: str,
    letter: codec.DeadLetter,
    on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
) -> None:
    """Produces a dead letter to ``topic``, keyed as the original record was.

    Raises:
        CodecError: the letter does not fit the schema.
        BufferError: the producer's queue is full.
    """
    value = codec.encode_deadletter(letter)
    if on_delivery is None:
        producer.produce(topic, key=letter.key, value=value)
    else:
        producer.produce(topic, key=letter.key, value=value, on_delivery=on_delivery)


def watermarks(
    reader: Consumer, topic: str, partition: int, timeout_s: float = 30.0
) -> tuple[int, int]:
    """A partition's low and high watermarks, waiting out a leader election (a topic created
    a moment ago, or a broker restarting).

    Raises:
        BrokerError: the partition had no leader within ``timeout_s``.
        KafkaException: the broker refused for another reason.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            return int(low), int(high)
        except KafkaException as exc:
            if not exc.args[0].retriable() and exc.args[0].code() not in _ELECTING:
                raise
            if time.monotonic() > deadline:
                raise BrokerError(f"{topic}[{partition}] has no leader: {exc}") from exc
            time.sleep(0.2)


_ELECTING = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,
    }
)


def read_to_end(
    reader: Consumer, topic: str, partition: int, start: int, timeout_s: float
) -> Iterator[Message]:
    """Every committed record of a partition from ``start`` to its end as of the call.

    The reader is assigned the partition for the read and unassigned after it; give it
    ``enable.partition.eof`` so that the end of a log ending in a transaction marker is seen.

    Args:
        reader: a consumer that is not subscribed.
        topic / partition: what to read.
        start: the first offset wanted (the low watermark if that is later).
        timeout_s: longest wait to reach the end.

    Raises:
        BrokerError: the end was not reached within ``timeout_s`` (a transaction left open
            by a crashed producer holds read_committed readers back until it aborts).
        KafkaException: the reader hit a fatal error.
    """
    low, high = watermarks(reader, topic, partition)
    start = max(start, low)
    if start >= high:
        return
    reader.assign([TopicPartition(topic, partition, start)])
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            messages = reader.consume(1000, timeout=0.2)
            for message in messages:
                error = message.error()
                if error is not None:
                    if consumer_fatal(error):
                        raise KafkaException(error)
                    if (
                        error.code() == KafkaError._PARTITION_EOF
                        and (message.offset() or 0) >= high
                    ):
                        return
                    continue
                yield message
                if (message.offset() or 0) + 1 >= high:
                    return
            position = reader.position([TopicPartition(topic, partition)])[0].offset
            if position >= high:
                return
        raise BrokerError(
            f"{topic}[{partition}] could not be read to offset {high} within {timeout_s}s "
            "(an open transaction of a crashed scheduler? it aborts after transaction.timeout.ms)"
        )
    finally:
        reader.unassign()


__all__ = [
    "CONSUMER_SETTINGS",
    "RegistryProducer",
    "admin_client",
    "consumer",
    "consumer_config",
    "consumer_fatal",
    "dead_letter",
    "producer",
    "read_to_end",
    "send_dead_letter",
    "watermarks",
]
