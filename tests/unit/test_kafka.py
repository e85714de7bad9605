"""The Kafka plumbing every service uses (engine.kafka), without a broker: client settings,
how consumer errors are judged, dead letters, and reading a partition to its end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from engine import codec, kafka
from engine.clock import now_ms
from engine.config import Settings
from engine.errors import BrokerError, CorruptRecordError, JoblogError
from engine.notify import Notifier, SubscriptionSet
from engine.worker import TaskRegistry
from engine.worker.worker import Worker

UNREACHABLE = Settings(bootstrap_servers="127.0.0.1:1", topic_prefix="unit.")


def fatal_record() -> Message:
    # what consume() returns once the group fenced this static member: code _FATAL,
    # fatal() False
    return Message(error=KafkaError(KafkaError._FATAL, "Static consumer fenced by other consumer"))


# ------------------------------------------------------------------ client settings


def test_every_consumer_reads_committed_records_and_never_commits_by_itself() -> None:
    config = kafka.consumer_config(UNREACHABLE, "g", {"fetch.wait.max.ms": 20})
    assert config["group.id"] == "g"
    assert config["enable.auto.commit"] is False
    assert config["isolation.level"] == "read_committed"
    assert config["fetch.wait.max.ms"] == 20
    assert config["bootstrap.servers"] == "127.0.0.1:1"
    assert config["logger"] is not None  # librdkafka's lines go to Python logging


def test_the_passthrough_overrides_tunables_but_not_what_a_consumer_relies_on() -> None:
    settings = Settings(
        bootstrap_servers="127.0.0.1:1",
        kafka={"session.timeout.ms": "6000", "isolation.level": "read_uncommitted"},
    )
    config = kafka.consumer_config(
        settings,
        "g",
        {"auto.offset.reset": "earliest"},
        overridable={"session.timeout.ms": 45_000, "fetch.wait.max.ms": 100},
    )
    assert config["session.timeout.ms"] == "6000"
    assert config["fetch.wait.max.ms"] == 100
    assert config["isolation.level"] == "read_committed"
    assert config["auto.offset.reset"] == "earliest"


def test_clients_are_built_without_a_broker() -> None:
    consumer = kafka.consumer(UNREACHABLE, "unit.g", {"enable.partition.eof": True})
    consumer.close()
    producer = kafka.producer(UNREACHABLE, {"enable.idempotence": True, "linger.ms": 5})
    assert producer.flush(0) == 0
    admin = kafka.admin_client(UNREACHABLE)
    assert admin is not None


def test_a_client_setting_librdkafka_does_not_know_is_refused() -> None:
    with pytest.raises(KafkaException):
        kafka.consumer(UNREACHABLE, "g", {"no.such.setting": 1})


# ------------------------------------------------------------------ consumer errors


def test_a_fatal_error_delivered_as_a_record_is_fatal_though_its_flag_is_not_set() -> None:
    error = fatal_record().error()
    assert error is not None and not error.fatal()
    assert kafka.consumer_fatal(error)


def test_a_flagged_fatal_error_is_fatal() -> None:
    assert kafka.consumer_fatal(KafkaError(KafkaError._FENCED, "fenced", fatal=True))


def test_transient_consumer_errors_are_not_fatal() -> None:
    for code in (
        KafkaError._PARTITION_EOF,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    ):
        assert not kafka.consumer_fatal(KafkaError(code))


def test_the_worker_stops_on_a_fatal_consumer_error_instead_of_polling_a_dead_consumer() -> None:
    worker = Worker(UNREACHABLE, "q", 1, TaskRegistry(), worker_id="w")
    with pytest.raises(KafkaException):
        worker._on_dispatch_message(fatal_record(), taking=True)
    worker._on_dispatch_message(Message(error=KafkaError(KafkaError._TRANSPORT)), taking=True)


def test_the_notifier_stops_on_a_fatal_consumer_error(tmp_path: Path) -> None:
    notifier = Notifier(UNREACHABLE, SubscriptionSet([]), deliveries=tmp_path / "d.jsonl")
    try:
        with pytest.raises(KafkaException):
            notifier._on_message(fatal_record())
        notifier._on_message(Message(error=KafkaError(KafkaError._TRANSPORT)))
    finally:
        notifier.deliveries.close()


# ------------------------------------------------------------------ dead letters


def consumed(value: bytes | None = b"\x00bad", key: bytes | None = b"s-1") -> Message:
    return Message(topic="unit.events", partition=3, offset=42, key=key, value=value)


def test_a_dead_letter_keeps_the_record_as_it_was_with_the_reason() -> None:
    before = now_ms()
    error = CorruptRecordError("corrupt Event: truncated", b"\x00bad")
    letter = kafka.dead_letter(consumed(), error, "unit.projector")
    assert letter == codec.DeadLetter(
        topic="unit.events",
        partition=3,
        offset=42,
        key=b"s-1",
        value=b"\x00bad",
        error_type="CorruptRecordError",
        error_message="corrupt Event: truncated",
        consumer="unit.projector",
        failed_at=letter.failed_at,
    )
    assert before <= letter.failed_at <= now_ms()
    assert codec.decode_deadletter(codec.encode_deadletter(letter)) == letter


def test_a_dead_letter_takes_the_bytes_a_codec_error_kept() -> None:
    letter = kafka.dead_letter(consumed(b"outer"), CorruptRecordError("x", b"inner"), "c")
    assert letter.value == b"inner"
    letter = kafka.dead_letter(consumed(None, key=None), JoblogError("misrouted"), "c")
    assert (letter.value, letter.key, letter.error_type) == (b"", None, "JoblogError")


def test_a_dead_letter_can_say_more_than_its_error_and_cut_its_value_to_fit() -> None:
    letter = kafka.dead_letter(
        consumed(b"x" * 100), ValueError("no"), "c", note="cannot fold: no", max_value_bytes=10
    )
    assert letter.value == b"x" * 10
    assert letter.error_type == "ValueError"
    assert letter.error_message == "cannot fold: no [value cut to its first 10 of 100 bytes]"
    assert kafka.dead_letter(consumed(b"short"), ValueError(), "c", max_value_bytes=10).value == (
        b"short"
    )


class Produced:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.records.append((topic, kwargs))


def test_a_dead_letter_is_produced_keyed_as_the_original_record() -> None:
    sink = Produced()
    letter = kafka.dead_letter(consumed(), ValueError("no"), "c")
    kafka.send_dead_letter(cast(Producer, sink), "unit.deadletter", letter)
    kafka.send_dead_letter(
        cast(Producer, sink), "unit.deadletter", letter, on_delivery=lambda error, message: None
    )
    (topic, first), (_, second) = sink.records
    assert topic == "unit.deadletter"
    assert first == {"key": b"s-1", "value": codec.encode_deadletter(letter)}
    assert set(second) == {"key", "value", "on_delivery"}
    assert codec.decode_deadletter(first["value"]) == letter


# ------------------------------------------------------------------ read_to_end


class Partition:
    """A reader over one partition's records, as a consumer that is only assigned."""

    def __init__(self, records: list[Message], low: int, high: int, eof: bool = True) -> None:
        self.records = records
        self.low, self.high = low, high
        self.eof = eof
        self.assigned: list[TopicPartition] = []
        self.next = low

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        return self.low, self.high

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions
        self.next = partitions[0].offset

    def unassign(self) -> None:
        self.assigned = []

    def consume(self, n: int, timeout: float) -> list[Message]:
        batch = [m for m in self.records if (m.offset() or 0) >= self.next][:n]
        if batch:
            self.next = (batch[-1].offset() or 0) + 1
            return batch
        if self.eof:
            return [Message(offset=self.high, error=KafkaError(KafkaError._PARTITION_EOF))]
        return []

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition("t", 0, self.next)]


def record(offset: int) -> Message:
    return Message(topic="t", partition=0, offset=offset, value=str(offset).encode())


def read(reader: Partition, start: int = 0, timeout_s: float = 5.0) -> Iterator[Message]:
    return kafka.read_to_end(cast(Consumer, reader), "t", 0, start, timeout_s)


def test_read_to_end_reads_from_the_start_to_the_end_as_of_the_call() -> None:
    reader = Partition([record(o) for o in range(2, 8)], low=2, high=8)
    assert [m.offset() for m in read(reader, start=0)] == [2, 3, 4, 5, 6, 7]
    assert reader.assigned == []  # unassigned after the read
    assert [m.offset() for m in read(reader, start=5)] == [5, 6, 7]
    assert list(read(Partition([], low=3, high=3))) == []


def test_read_to_end_stops_at_the_end_of_a_log_ending_in_a_transaction_marker() -> None:
    # offset 4 is a commit marker: never delivered, the end-of-partition event says the end
    reader = Partition([record(o) for o in range(4)], low=0, high=5)
    assert [m.offset() for m in read(reader)] == [0, 1, 2, 3]


def test_read_to_end_gives_up_when_the_end_cannot_be_reached_in_time() -> None:
    reader = Partition([record(0)], low=0, high=5, eof=False)
    with pytest.raises(BrokerError, match="could not be read to offset 5"):
        list(read(reader, timeout_s=0.3))


def test_read_to_end_raises_a_fatal_consumer_error() -> None:
    reader = Partition([record(0)], low=0, high=5, eof=False)
    reader.consume = lambda n, timeout: [fatal_record()]  # type: ignore[method-assign]
    with pytest.raises(KafkaException):
        list(read(reader))


class _Queue:
    """The two calls of a consumer that next_batch uses, over a list of fetched records."""

    def __init__(self, fetched: list[str], arriving: list[str]) -> None:
        self.fetched = fetched
        self.arriving = arriving
        self.calls: list[tuple[str, float]] = []

    def consume(self, num: int, timeout: float) -> list[str]:
        self.calls.append(("consume", timeout))
        if not self.fetched and timeout > 0:
            self.fetched, self.arriving = self.arriving, []
        out, self.fetched = self.fetched[:num], self.fetched[num:]
        return out

    def poll(self, timeout: float) -> str | None:
        self.calls.append(("poll", timeout))
        if self.arriving:
            return self.arriving.pop(0)
        return None


def test_a_batch_takes_what_is_fetched_without_waiting() -> None:
    from engine.kafka import next_batch

    queue = _Queue(["a", "b", "c"], [])
    assert next_batch(queue, 2, 0.05, 0.005) == ["a", "b"]  # type: ignore[arg-type]
    assert queue.calls == [("consume", 0)]


def test_a_quiet_batch_waits_for_its_first_record_then_lingers_briefly() -> None:
    from engine.kafka import next_batch

    queue = _Queue([], ["a", "b"])
    assert next_batch(queue, 10, 0.05, 0.005) == ["a", "b"]  # type: ignore[arg-type]
    assert queue.calls == [("consume", 0), ("poll", 0.05), ("consume", 0.005)]
    assert next_batch(_Queue([], []), 10, 0.05, 0.005) == []  # type: ignore[arg-type]
    one = _Queue([], ["a", "b"])
    assert next_batch(one, 1, 0.05, 0.005) == ["a"]  # type: ignore[arg-type]
