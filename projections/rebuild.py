"""Rebuilding a projection from offset 0, now or as of a past point.

:func:`rebuild` reads the whole ``events`` topic (and the heartbeats on ``reports``) into a
fresh temporary file next to the target, with the same fold and the same writer as the
projector, then renames it over the target in one step: readers see the old projection or
the new one, never half of one.

``as_of`` builds the tables as they were at a past point of the log (:class:`AsOf`):

* an offset bound: ``"1200"`` (every partition of ``events`` up to, not including, offset
  1200) or ``"0:1200,3:980"`` (per partition; partitions not named are not read). The file's
  ``projection_offsets`` then holds exactly these bounds, the same numbers a live projector
  stores, so a live file and an as-of file of its offsets compare row for row;
* a time bound: an ISO-8601 time (``"2024-05-01T12:00:00Z"``; no zone means UTC): every
  event the scheduler decided at or before it. Once one event of a submission is past the
  bound, its later events are left out too, so a submission never has a gap.

Worker heartbeats are read up to the newest event time the as-of file includes. An as-of
file is marked frozen: a projector refuses to advance it.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from engine import kafka
from engine.config import Settings
from engine.lifecycle.records import Event, Heartbeat, WorkerLeft
from engine.topics import Topics
from projections.batch import Record, decode, fold_records
from projections.errors import ProjectionError
from projections.fold import Fold, PartitionKey, Position
from projections.isolate import isolate
from projections.server import Endpoint
from projections.store import ProjectionStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AsOf:
    """A past point of the log: offset bounds of ``events`` partitions, or an event time.

    Attributes:
        every_partition: one exclusive offset bound for every partition.
        partitions: exclusive offset bounds per partition (others are not read).
        timestamp_ms: the latest event time included (epoch ms).
        text: the bound as given, recorded in the file.
    """

    every_partition: int | None = None
    partitions: dict[int, int] | None = None
    timestamp_ms: int | None = None
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> AsOf:
        """Reads ``"1200"``, ``"0:1200,3:980"`` or an ISO-8601 time.

        Raises:
            ProjectionError: the text is none of these.
        """
        value = text.strip()
        if value.isdigit():
            return cls(every_partition=int(value), text=value)
        if value and all(_is_bound(part) for part in value.split(",")):
            bounds: dict[int, int] = {}
            for part in value.split(","):
                partition, offset = part.split(":")
                bounds[int(partition)] = int(offset)
            return cls(partitions=bounds, text=value)
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ProjectionError(
                f"--as-of {text!r}: give an offset (1200), offsets per partition "
                "(0:1200,1:980) or an ISO-8601 time (2024-05-01T12:00:00Z)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return cls(timestamp_ms=int(moment.timestamp() * 1000), text=value)

    def bound(self, partition: int) -> int | None:
        """The exclusive offset bound of an ``events`` partition (``None``: no bound)."""
        if self.every_partition is not None:
            return self.every_partition
        if self.partitions is not None:
            return self.partitions.get(partition, 0)
        return None


@dataclass
class RebuildResult:
    """What a rebuild wrote.

    Attributes:
        path: the file written.
        events: events folded in.
        heartbeats: heartbeats and departures folded in.
        dead_records: records that did not decode, or could not be folded or written
            (skipped; the live projector dead-letters them).
        offsets: the next offset of each (topic, partition) stored in the file.
        seconds: how long it took.
    """

    path: Path
    events: int = 0
    heartbeats: int = 0
    dead_records: int = 0
    offsets: dict[PartitionKey, int] = field(default_factory=dict)
    seconds: float = 0.0


def default_as_of_path(db_path: str | Path) -> Path:
    """Where an as-of rebuild goes unless told: ``<db stem>.as-of.duckdb`` beside ``db_path``."""
    path = Path(db_path)
    return path.with_name(f"{path.stem}.as-of{path.suffix or '.duckdb'}")


def rebuild(
    settings: Settings,
    db_path: str | Path,
    *,
    as_of: AsOf | str | None = None,
    out: str | Path | None = None,
    workers: bool = True,
    batch_size: int = 10_000,
    timeout: float = 600.0,
) -> RebuildResult:
    """Rebuilds a projection from offset 0 into a fresh file and renames it into place.

    Args:
        settings: cluster and topic settings.
        db_path: the projection file to replace (a plain rebuild) or to name the as-of file
            after.
        as_of: build the state at a past point (see the module doc).
        out: write here instead (default: ``db_path``, or :func:`default_as_of_path` with
            ``as_of``).
        workers: also fold heartbeats into ``workers``.
        batch_size: records per DuckDB transaction.
        timeout: give up when the end of the log is not reached within this many seconds.

    Returns:
        What was written.

    Raises:
        ProjectionError: a projector holds the target file, or the log's end was not
            reached in time.
    """
    started = time.monotonic()
    bound = AsOf.parse(as_of) if isinstance(as_of, str) else as_of
    if out is not None:
        target = Path(out)
    elif bound is not None:
        target = default_as_of_path(db_path)
    else:
        target = Path(db_path)
    _refuse_if_held(target)
    temporary = target.with_name(f".{target.name}.rebuild-{os.getpid()}.tmp")
    _remove_database(temporary)
    result = RebuildResult(path=target)
    try:
        with ProjectionStore(
            temporary, topic_prefix=settings.topic_prefix, allow_frozen=True
        ) as store:
            reader = _LogReader(settings, store, bound, batch_size, started + timeout, result)
            newest = reader.read_events()
            if workers:
                limit = newest if bound is not None else None
                reader.read_reports(limit)
            if bound is not None:
                store.set_meta(as_of=bound.text)
            store.set_meta(rebuilt_at=datetime.now(UTC).isoformat(timespec="seconds"))
            result.offsets = store.offsets()
        # The target's WAL belongs to the old file: replayed onto the new one it would
        # corrupt it, so it goes first (the old file is being replaced anyway).
        Path(f"{target}.wal").unlink(missing_ok=True)
        os.replace(temporary, target)
    finally:
        _remove_database(temporary)
    result.seconds = time.monotonic() - started
    log.info(
        "rebuilt %s: %d events, %d heartbeats in %.1fs",
        target,
        result.events,
        result.heartbeats,
        result.seconds,
    )
    return result


class _LogReader:
    def __init__(
        self,
        settings: Settings,
        store: ProjectionStore,
        bound: AsOf | None,
        batch_size: int,
        deadline: float,
        result: RebuildResult,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.store = store
        self.bound = bound
        self.batch_size = batch_size
        self.deadline = deadline
        self.result = result
        self.fold = Fold()

    def read_events(self) -> int | None:
        """Folds the events topic up to its end (or the bound); returns the newest time."""
        bound = self.bound
        cut: set[str] = set()
        newest: int | None = None

        def keep(event: Event) -> bool:
            nonlocal newest
            until = bound.timestamp_ms if bound is not None else None
            if until is not None and (event.submission_id in cut or event.timestamp > until):
                cut.add(event.submission_id)
                return False
            newest = event.timestamp if newest is None else max(newest, event.timestamp)
            return True

        def limit(partition: int) -> int | None:
            return bound.bound(partition) if bound is not None else None

        self._read(self.topics.events, limit, keep_event=keep)
        return newest

    def read_reports(self, until_ms: int | None) -> None:
        """Folds the heartbeats of ``reports`` (sent at or before ``until_ms``, if given)."""

        def keep(report: Heartbeat | WorkerLeft) -> bool:
            return until_ms is None or report.sent_at <= until_ms

        self._read(self.topics.reports, lambda _: None, keep_report=keep)

    def _read(
        self,
        topic: str,
        limit: Callable[[int], int | None],
        *,
        keep_event: Callable[[Event], bool] | None = None,
        keep_report: Callable[[Heartbeat | WorkerLeft], bool] | None = None,
    ) -> None:
        consumer = kafka.consumer(
            self.settings,
            f"{self.settings.topic_prefix}projector-rebuild-{uuid.uuid4().hex}",
            {
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            },
        )
        try:
            ends = self._ends(consumer, topic, limit)
            positions = {p: start for p, (start, _) in ends.items()}
            pending = {p for p, (start, end) in ends.items() if end > start}
            if pending:
                consumer.assign([TopicPartition(topic, p, ends[p][0]) for p in sorted(pending)])
            while pending:
                if time.monotonic() > self.deadline:
                    raise ProjectionError(
                        f"rebuild did not reach the end of {topic} in time; partitions "
                        f"{sorted(pending)} stopped at {[positions[p] for p in sorted(pending)]}"
                    )
                messages = consumer.consume(self.batch_size, timeout=0.5)
                self._fold(topic, messages, ends, positions, pending, keep_event, keep_report)
        finally:
            consumer.close()
        # Every partition is stored at its end (or bound), past any trailing transaction
        # marker, so the file states exactly the point it was built to.
        for p, (_, end) in ends.items():
            if end > 0:
                self.fold.advance(Position(topic, p, end - 1))
        self.store.write(self.fold.take())

    def _ends(
        self, consumer: Consumer, topic: str, limit: Callable[[int], int | None]
    ) -> dict[int, tuple[int, int]]:
        metadata = consumer.list_topics(topic, timeout=30)
        if metadata.topics[topic].error is not None:
            raise ProjectionError(f"cannot read {topic}: {metadata.topics[topic].error}")
        ends: dict[int, tuple[int, int]] = {}
        for p in sorted(metadata.topics[topic].partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            bound = limit(p)
            end = high if bound is None else min(high, bound)
            ends[p] = (low, max(low, end))
        return ends

    def _fold(
        self,
        topic: str,
        messages: list[Message],
        ends: dict[int, tuple[int, int]],
        positions: dict[int, int],
        pending: set[int],
        keep_event: Callable[[Event], bool] | None,
        keep_report: Callable[[Heartbeat | WorkerLeft], bool] | None,
    ) -> None:
        records: list[Record] = []
        events_topic = self.topics.events
        for message in messages:
            error = message.error()
            partition, offset = message.partition(), message.offset()
            assert partition is not None and offset is not None
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    if offset >= ends[partition][1]:
                        pending.discard(partition)
                    continue
                raise KafkaException(error)
            end = ends[partition][1]
            if partition not in pending or offset >= end:
                pending.discard(partition)
                continue
            positions[partition] = offset + 1
            if offset + 1 >= end:
                pending.discard(partition)
            record = decode(message, events_topic)
            if record.error is not None:
                self.result.dead_records += 1
            elif not _kept(record, keep_event, keep_report):
                record = record.passed_over()
            records.append(record)
        if records:
            # The live projector's rule: a record that cannot be folded or written is found
            # and left out (the projector dead-letters it), the rest of the batch goes in.
            isolate(records, self._commit, self._skip)
        else:
            changes = self.fold.take()
            if changes:
                self.store.write(changes)

    def _commit(self, records: Sequence[Record]) -> Exception | None:
        fold = self.fold
        folded = fold.stats.events
        try:
            fold_records(fold, records, self.store)
            changes = fold.take()
            if changes:
                self.store.write(changes)
        except duckdb.IOException:
            raise
        except Exception as exc:
            fold.forget()
            return exc
        self.result.events += fold.stats.events - folded
        self.result.heartbeats += sum(r.report is not None for r in records)
        return None

    def _skip(self, record: Record, error: Exception) -> None:
        log.warning(
            "rebuild leaves out %s[%d]@%d, which cannot be projected: %r",
            record.position.topic,
            record.position.partition,
            record.position.offset,
            error,
        )
        self.result.dead_records += 1
        self.fold.advance(record.position)
        self.store.write(self.fold.take())


def _kept(
    record: Record,
    keep_event: Callable[[Event], bool] | None,
    keep_report: Callable[[Heartbeat | WorkerLeft], bool] | None,
) -> bool:
    """Whether a decoded record is folded (else the rebuild only moves past it)."""
    if record.event is not None:
        return keep_event is not None and keep_event(record.event)
    if record.report is not None:
        return keep_report is not None and keep_report(record.report)
    return False


def _is_bound(part: str) -> bool:
    pieces = part.strip().split(":")
    return len(pieces) == 2 and all(piece.strip().isdigit() for piece in pieces)


def _refuse_if_held(target: Path) -> None:
    endpoint = Endpoint.read(target)
    held = f"{target} is held by a running projector"
    if endpoint is not None and _alive(endpoint.pid):
        raise ProjectionError(
            f"{held} (pid {endpoint.pid}); stop it first, or rebuild into another file with --out"
        )
    if not target.exists():
        return
    try:
        duckdb.connect(str(target)).close()
    except duckdb.Error as exc:
        raise ProjectionError(
            f"{held} or another process ({exc}); stop it first, or use --out"
        ) from exc


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_database(path: Path) -> None:
    path.unlink(missing_ok=True)
    Path(f"{path}.wal").unlink(missing_ok=True)
