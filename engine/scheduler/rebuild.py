"""Rebuilding a partition's book from ``state`` (fast) and the tail of ``events``.

The ``state`` topic (compacted, co-partitioned) holds the latest snapshot of each
submission and one *checkpoint* record per partition (key :data:`CHECKPOINT_KEY`): the
``events`` offset before which every event is covered by a snapshot. A rebuild reads the
snapshots, then replays only the events from the checkpoint on, skipping those a snapshot
already covers (``seq <= snapshot.seq``). It never reprocesses history it already decided.

The checkpoint is written as a snapshot of a reserved pseudo-submission whose ``seq`` is
the offset, so the ``state`` topic carries a single Avro schema. This module only reads Kafka;
the fold is :class:`engine.scheduler.book.Replay`, unit-tested without a broker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from engine import codec
from engine.config import Settings
from engine.errors import BrokerError, CodecError
from engine.lifecycle.state import SubmissionState
from engine.scheduler.book import PartitionBook, Replay
from engine.topics import Topics

CHECKPOINT_KEY = b"__checkpoint__"


@dataclass(frozen=True)
class RebuildStats:
    """What a rebuild read: proof that it started from snapshots, not from offset 0."""

    partition: int
    snapshots: int
    state_records: int
    events_from: int
    events_replayed: int
    events_skipped: int
    seconds: float


def checkpoint_record(partition: int, events_offset: int) -> bytes:
    """The value of a partition's checkpoint record."""
    return codec.encode_snapshot(
        SubmissionState(submission_id=f"{CHECKPOINT_KEY.decode()}/{partition}", seq=events_offset)
    )


def rebuild(
    settings: Settings, partition: int, timeout_s: float = 60.0
) -> tuple[RebuildStats, PartitionBook]:
    """Reads ``state`` and the tail of ``events`` of one partition into a fresh book.

    Args:
        settings: cluster and topic settings.
        partition: the partition to rebuild.
        timeout_s: longest wait for the log to be readable up to its end (a crashed
            instance's open transaction holds read_committed readers back until it aborts).
    """
    started = time.monotonic()
    topics = Topics(settings.topic_prefix)
    reader = Consumer(
        settings.client_config(
            **{
                "group.id": f"{settings.topic_prefix}scheduler-rebuild-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 50,
            }
        )
    )
    try:
        checkpoint = 0
        state_records = 0
        latest: dict[bytes, bytes | None] = {}
        for message in _read_to_end(reader, topics.state, partition, 0, timeout_s):
            state_records += 1
            key = message.key() or b""
            if key == CHECKPOINT_KEY:
                value = message.value()
                if value is not None:
                    try:
                        checkpoint = codec.decode_snapshot(value).seq
                    except CodecError:
                        checkpoint = 0
                continue
            latest[key] = message.value()
        replay = Replay(partition, latest)
        events_from = replay.events_from(checkpoint)
        end = events_from
        for message in _read_to_end(reader, topics.events, partition, events_from, timeout_s):
            offset = message.offset() or 0
            end = offset + 1
            try:
                event = codec.decode_event(message.value() or b"")
            except CodecError:
                continue
            replay.event(offset, event)
        book = replay.end(max(end, _high_watermark(reader, topics.events, partition)))
        # A submission deleted after its last snapshot stays in the book until its deleted
        # header is written (the next sweep does it): then only its id is kept.
        stats = RebuildStats(
            partition=partition,
            snapshots=len(book.written),
            state_records=state_records,
            events_from=events_from,
            events_replayed=replay.replayed,
            events_skipped=replay.skipped,
            seconds=time.monotonic() - started,
        )
        return stats, book
    finally:
        reader.close()


def _high_watermark(reader: Consumer, topic: str, partition: int) -> int:
    return _watermarks(reader, topic, partition)[1]


def _watermarks(
    reader: Consumer, topic: str, partition: int, timeout_s: float = 30.0
) -> tuple[int, int]:
    """The partition's low and high watermarks, waiting out a leader election (a topic
    created a moment ago, or a broker restarting)."""
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


def _read_to_end(
    reader: Consumer, topic: str, partition: int, start: int, timeout_s: float
) -> Iterator[Message]:
    """Every committed record of a partition from ``start`` to its current end."""
    low, high = _watermarks(reader, topic, partition)
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
