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
from dataclasses import dataclass
from typing import NamedTuple

from confluent_kafka import Consumer

from engine import codec, kafka
from engine.collector import collection_paused
from engine.config import Settings
from engine.errors import CodecError
from engine.lifecycle.state import SubmissionState
from engine.scheduler.book import PartitionBook, Replay
from engine.scheduler.snapshots import dormant_seq
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


class StateRead(NamedTuple):
    """One partition of ``state``, read to its end."""

    #: the checkpoint's events offset (0 without one)
    checkpoint: int
    #: the latest value of every other key (``None``: a tombstone)
    latest: dict[bytes, bytes | None]
    #: how many records were read
    records: int
    #: keys whose latest record marks a dormant submission -> its seq
    dormant: dict[bytes, int]


def read_state(reader: Consumer, topics: Topics, partition: int, timeout_s: float) -> StateRead:
    """Reads one partition of ``state`` to its end.

    Raises:
        BrokerError: the end was not reached within ``timeout_s``.
    """
    checkpoint = 0
    records = 0
    latest: dict[bytes, bytes | None] = {}
    dormant: dict[bytes, int] = {}
    for message in kafka.read_to_end(reader, topics.state, partition, 0, timeout_s):
        records += 1
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
        headers = message.headers()
        seq = dormant_seq(headers) if isinstance(headers, list) else None
        if seq is not None:
            dormant[key] = seq
        elif dormant:
            dormant.pop(key, None)  # a later record of the key: no longer dormant
    return StateRead(checkpoint, latest, records, dormant)


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
    with collection_paused(freeze=True):
        return _rebuild(settings, partition, timeout_s)


def _rebuild(
    settings: Settings, partition: int, timeout_s: float
) -> tuple[RebuildStats, PartitionBook]:
    started = time.monotonic()
    topics = Topics(settings.topic_prefix)
    reader = kafka.consumer(
        settings,
        f"{settings.topic_prefix}scheduler-rebuild-{uuid.uuid4().hex[:8]}",
        {"enable.partition.eof": True, "fetch.wait.max.ms": 50},
    )
    try:
        checkpoint, latest, state_records, dormant = read_state(
            reader, topics, partition, timeout_s
        )
        replay = Replay(partition, latest, dormant)
        events_from = replay.events_from(checkpoint)
        end = events_from
        for message in kafka.read_to_end(reader, topics.events, partition, events_from, timeout_s):
            offset = message.offset() or 0
            end = offset + 1
            try:
                event = codec.decode_event(message.value() or b"")
            except CodecError:
                continue
            replay.event(offset, event)
        book = replay.end(max(end, kafka.watermarks(reader, topics.events, partition)[1]))
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
