"""Scheduler recovery: the time to rebuild one partition's book from ``state`` and ``events``.

The event log is the real decider's (:func:`engine.lifecycle.workload.simulate`: every kind of
story, ~12 events per submission). A long log is made by tiling one simulated log with fresh
submission ids: ids have a fixed length, so the encoded bytes are copied with the id swapped
(no re-encoding). Two cases per log size:

* **with snapshots**, as a running scheduler leaves them: a snapshot of every submission as
  of 95 % of the log and the checkpoint there; a rebuild reads the snapshots and replays the
  last 5 %;
* **without snapshots**: an empty ``state`` topic; every event is replayed from offset 0.

The time covers :func:`engine.scheduler.rebuild.rebuild` and the adoption of the book
(leases and timers re-armed), what a scheduler does on partition assignment.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer

from engine import codec
from engine.admin import ensure_topics
from engine.config import Settings
from engine.lifecycle.decide import Policy
from engine.lifecycle.evolve import evolve
from engine.lifecycle.records import Event, is_key_ledger
from engine.lifecycle.state import SubmissionState
from engine.lifecycle.workload import simulate
from engine.scheduler.book import Book
from engine.scheduler.rebuild import CHECKPOINT_KEY, checkpoint_record, rebuild
from engine.scheduler.snapshots import Headers, Written, snapshot_headers
from engine.topics import Topics

_SEED = 1
_ID = f"sub-{_SEED}-".encode()
_TILES = "123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass
class Tile:
    """One simulated log, encoded, and the final snapshot of each of its submissions."""

    events: list[tuple[bytes, bytes]]
    decoded: list[Event]
    finals: dict[bytes, _Snapshot]

    @classmethod
    def make(cls, submissions: int) -> Tile:
        workload = simulate(submissions, seed=_SEED)
        # Idempotency-key ledgers are left out: their ids are hashes of their keys, which a
        # tile cannot make fresh, so every tile would repeat the first one's ledger events.
        kept = [e for e in workload.events if not is_key_ledger(e.submission_id)]
        events = [(e.submission_id.encode(), codec.encode_event(e)) for e in kept]
        finals = {sid.encode(): _snapshot(state) for sid, state in workload.states.items()}
        return cls(events, kept, finals)


#: A snapshot record as the scheduler writes it: the value and the Kafka headers.
_Snapshot = tuple[bytes | None, Headers | None]


def _snapshot(state: SubmissionState) -> _Snapshot:
    if state.deleted:
        return None, None
    return codec.encode_snapshot(state), snapshot_headers(state, Written(state.seq))


def _swap(raw: bytes, tile: int) -> bytes:
    return raw if tile == 0 else raw.replace(_ID, f"sub-{_TILES[tile]}-".encode())


def history(tile: Tile, events: int) -> Iterator[tuple[bytes, bytes]]:
    """``events`` encoded events: the tile repeated with fresh submission ids."""
    count = 0
    for index in range(len(_TILES)):
        for key, value in tile.events:
            if count >= events:
                return
            yield _swap(key, index), _swap(value, index)
            count += 1
    raise ValueError(f"{events} events need more than {len(_TILES)} tiles")


def snapshots(tile: Tile, events: int, cut: int) -> Iterator[_Record]:
    """Snapshots of every submission that began before event ``cut``, as of that event, with
    the headers the scheduler gives them (a finished plain submission's marks it dormant)."""
    size = len(tile.events)
    whole, rest = divmod(cut, size)
    for index in range(whole):
        for key, (value, headers) in tile.finals.items():
            yield _swap(key, index), None if value is None else _swap(value, index), headers
    states: dict[str, SubmissionState] = {}
    for event in tile.decoded[:rest]:
        states[event.submission_id] = evolve(states.get(event.submission_id), event)
    for sid, state in states.items():
        value, headers = _snapshot(state)
        yield _swap(sid.encode(), whole), None if value is None else _swap(value, whole), headers


#: A record to produce: key, value, headers.
_Record = tuple[bytes, bytes | None, Headers | None]


def _produce(
    producer: Producer, topic: str, records: Iterator[_Record] | Iterator[tuple[bytes, bytes]]
) -> int:
    count = 0
    for key, value, *rest in records:
        headers = rest[0] if rest else None
        while True:
            try:
                producer.produce(topic, key=key, value=value, partition=0, headers=headers)
                break
            except BufferError:
                producer.poll(0.01)
        count += 1
    producer.flush(300)
    return count


def prepare(bootstrap_servers: str, tile: Tile, events: int, with_snapshots: bool) -> Settings:
    """A fresh one-partition prefix holding the log (and the snapshots) of ``events`` events."""
    settings = Settings.from_env(
        bootstrap_servers=bootstrap_servers,
        topic_prefix=f"r{uuid.uuid4().hex[:8]}.",
        partitions=1,
    )
    ensure_topics(settings)
    topics = Topics(settings.topic_prefix)
    producer = Producer(
        settings.producer_config(
            **{"linger.ms": 20, "batch.num.messages": 10_000, "compression.type": "lz4"}
        )
    )
    _produce(producer, topics.events, history(tile, events))
    if with_snapshots:
        cut = int(events * 0.95)
        written = _produce(producer, topics.state, snapshots(tile, events, cut))
        del written
        producer.produce(
            topics.state, key=CHECKPOINT_KEY, value=checkpoint_record(0, cut), partition=0
        )
        producer.flush(60)
    return settings


def recover(settings: Settings) -> dict[str, Any]:
    """Rebuilds partition 0 and adopts the book, as a scheduler does on assignment."""
    started = time.perf_counter()
    stats, partition_book = rebuild(settings, 0, timeout_s=900)
    rebuilt = time.perf_counter()
    Book(Policy()).adopt(partition_book, int(time.time() * 1000))
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rebuild_seconds": rebuilt - started,
        "adopt_seconds": seconds - (rebuilt - started),
        "snapshots": stats.snapshots,
        "state_records": stats.state_records,
        "events_from": stats.events_from,
        "events_replayed": stats.events_replayed,
        "events_skipped": stats.events_skipped,
        "submissions": partition_book.held,
        "dormant": len(partition_book.dormant),
    }
