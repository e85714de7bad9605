"""The projector: consumes ``events`` (and worker heartbeats) into a DuckDB file, exactly once.

The loop moves bytes and nothing else: ``consume`` a batch, decode it, let the pure
:class:`~projections.fold.Fold` turn it into rows, and hand the rows to the
:class:`~projections.store.ProjectionStore`, which writes them with the batch's offsets in one
DuckDB transaction.

Exactly-once, in commit order:

1. Fold the batch in memory (no I/O) and copy its rows out as Arrow tables.
2. Send the batch's dead letters and wait for the broker to acknowledge them. A crash after
   this step sends them again on restart: dead letters are at-least-once, never lost.
3. One DuckDB transaction: every row of the batch, then the next offset of every partition
   the batch read, then COMMIT. Either the rows and the offsets are in the file or neither is.
   The transaction runs in a background thread while the next batch is consumed and folded;
   that batch's commit starts only after this one's, so the file moves from one batch
   boundary to the next. A failed commit restarts the loop from the offsets in the file.
4. Only then, for monitoring tools, commit the same offsets to Kafka (asynchronously).

A batch that cannot be folded or written (a record the fold raises on, a value DuckDB or
Arrow refuses) is written again in pieces by :func:`~projections.isolate.isolate`, each with
its own offsets; the record that fails alone is dead-lettered with the reason and its
offset committed by itself. An I/O error of the file is not a record's fault: it restarts
the loop from the offsets in the file.

Kafka's committed offsets are never read back: on start and on every partition assignment
the consumer is positioned at the offsets stored in the file (offset 0 for a partition the
file has not seen), and a record below the stored offset is skipped. The consumer reads with
``isolation.level=read_committed``, so events of aborted scheduler transactions never show.
A consumer that hits a fatal error (its stale static member fenced after a broker crash) is
closed and the loop starts over on a new one, from the offsets in the file.

From ``reports`` the projector folds only ``Heartbeat`` and ``WorkerLeft`` (the ``workers``
table); every other report is skipped, and an undecodable report is counted but not
dead-lettered: the scheduler, which owns that topic's reading, dead-letters it.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

import duckdb
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from engine import codec, kafka
from engine.config import Settings
from engine.metrics import PROJECTOR_COUNTS, Telemetry, serving
from engine.topics import Topics
from projections.batch import Record, decode, fold_records
from projections.errors import ProjectionError
from projections.fold import Fold, PartitionKey, Position
from projections.isolate import isolate
from projections.reader import ProjectionReader
from projections.server import Endpoint, QueryServer
from projections.store import PreparedBatch, ProjectionStore, prepare

log = logging.getLogger(__name__)


@dataclass
class ProjectorStats:
    """What a projector did since it started.

    Attributes:
        events: events folded in (duplicates excluded).
        duplicates: events skipped because their sequence number was already folded in.
        heartbeats: heartbeats and departures folded into ``workers``.
        reports_skipped: other reports, read and skipped.
        undecodable_reports: reports that did not decode (the scheduler dead-letters them).
        dead_letters: records sent to the dead-letter topic.
        batches: DuckDB transactions committed.
        restarts: times the loop restarted after a failed write or dead-letter delivery.
        positions: next offset of each ``topic[partition]`` in the file.
        started_at: when it started (seconds since the epoch).
        last_commit_at: when it last committed a batch.
    """

    events: int = 0
    duplicates: int = 0
    heartbeats: int = 0
    reports_skipped: int = 0
    undecodable_reports: int = 0
    dead_letters: int = 0
    batches: int = 0
    restarts: int = 0
    positions: dict[str, int] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    last_commit_at: float | None = None


@dataclass
class _Write:
    """A batch being committed: what to account for once it is in the file."""

    offsets: dict[PartitionKey, int]
    events: int
    duplicates: int
    heartbeats: int
    records: list[Record]
    thread: threading.Thread | None = None
    error: BaseException | None = None


class _Restart(Exception):
    """The batch could not be made durable: reposition from the file and read it again."""


class _ConsumerDied(_Restart):
    """The consumer hit a fatal error: a new consumer rejoins the group in its place."""


#: A consumer that dies this often within :data:`_DEATHS_WINDOW_S` is not restarted again.
_MAX_DEATHS = 3
_DEATHS_WINDOW_S = 120.0


class Projector:
    """Projects the log of one topic prefix into one DuckDB file.

    Args:
        settings: cluster and topic settings.
        db_path: the DuckDB file (created if missing).
        group: the consumer group (default ``<prefix>projector``). A projector needs every
            partition in its file: give each file its own group.
        from_beginning: empty the file first and project the whole log again.
        batch_size: most records per batch (one DuckDB transaction).
        poll_timeout: longest wait for the first record of a batch, in seconds.
        linger: once a record came, how long the batch waits for more (records already
            fetched are taken at once, up to ``batch_size``).
        workers: also read ``reports`` for the ``workers`` table.
        serve: answer read-only queries on 127.0.0.1 while running (see
            :mod:`projections.server`).
        max_rows: rows of each keyed table the fold keeps in memory.
        on_batch: called after each committed batch with the stats (benchmarks, tests).
        open_timeout: how long to wait for the file while another process holds it (a
            reader's read-only query), in seconds.
    """

    def __init__(
        self,
        settings: Settings,
        db_path: str | Path,
        *,
        group: str | None = None,
        from_beginning: bool = False,
        batch_size: int = 5_000,
        poll_timeout: float = 0.25,
        linger: float = 0.02,
        workers: bool = True,
        serve: bool = True,
        max_rows: int = 200_000,
        on_batch: Callable[[ProjectorStats], None] | None = None,
        open_timeout: float = 30.0,
    ) -> None:
        self.settings = settings
        self.db_path = Path(db_path)
        self.topics = Topics(settings.topic_prefix)
        self.group = group or f"{settings.topic_prefix}projector"
        self.from_beginning = from_beginning
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.linger = linger
        self.workers = workers
        self.serve = serve
        self.on_batch = on_batch
        self.open_timeout = open_timeout
        digest = hashlib.sha1(str(self.db_path.resolve()).encode()).hexdigest()[:12]
        self.instance_id = f"{self.group}.{digest}"
        self.stats = ProjectorStats()
        # The rows of the batch being committed must stay in memory while the next batch is
        # folded (a read from the file could miss them), hence the floor.
        self.fold = Fold(max_rows=max(max_rows, 4 * batch_size))
        self.endpoint: Endpoint | None = None
        #: Set once the first partitions are assigned (and positioned from the file).
        self.ready = threading.Event()
        self.telemetry = Telemetry("projector", ready=self.ready.is_set)
        self.telemetry.counts(lambda: vars(self.stats), PROJECTOR_COUNTS)
        self.telemetry.collect(self._metric_families)
        self._commit_seconds = self.telemetry.histogram(
            "joblog_projection_commit_seconds", "Time of one batch's DuckDB transaction."
        )
        self._positions: dict[PartitionKey, int] = {}
        self._store: ProjectionStore | None = None
        self._producer: Producer | None = None
        self._in_flight: _Write | None = None

    def run(self, stop: threading.Event) -> ProjectorStats:
        """Projects until ``stop`` is set, then finishes the batch in hand and returns.

        Raises:
            ProjectionError: the file belongs to another schema version or topic prefix,
                another process holds it for longer than ``open_timeout``, or the consumer
                hit a fatal Kafka error three times within two minutes (a consumer that
                hits one is replaced by a new one, which rejoins the group).
            ProjectionFrozenError: the file is a point-in-time projection.
        """
        store = self._open_store(stop)
        self._store = store
        server: QueryServer | None = None
        producer = kafka.producer(
            self.settings,
            {"enable.idempotence": True, "linger.ms": 5, "client.id": f"{self.group}-dlq"},
            writes=[self.topics.deadletter],
        )
        self._producer = producer
        try:
            if self.from_beginning:
                store.reset()
            self._positions = store.offsets()
            self._publish_positions()
            if self.serve:
                server = QueryServer(store.connection, self.db_path, status=self.status)
                self.endpoint = server.start()
            deaths: list[float] = []
            while not stop.is_set():
                try:
                    self._session(stop, store, producer)
                except _Restart as exc:
                    if isinstance(exc, _ConsumerDied):
                        now = time.monotonic()
                        deaths = [t for t in deaths if now - t < _DEATHS_WINDOW_S] + [now]
                        if len(deaths) >= _MAX_DEATHS:
                            raise ProjectionError(
                                f"{exc}, {len(deaths)} times within {_DEATHS_WINDOW_S:.0f} s: "
                                f"is another projector of group {self.group!r} running on a "
                                "file at the same path? Give each projector its own --group"
                            ) from exc
                    log.warning("projector restarting from the offsets in the file: %s", exc)
                    self.stats.restarts += 1
                    self.fold.forget()
                    stop.wait(0.5)
        finally:
            self.ready.clear()
            if server is not None:
                server.stop()
            producer.flush(10)
            store.close()
            self._store = None
            self._producer = None
        return self.stats

    def _open_store(self, stop: threading.Event) -> ProjectionStore:
        # A reader that opened the file read-only (no projector was serving) holds it for the
        # length of one query: wait for it rather than fail.
        deadline = time.monotonic() + self.open_timeout
        while True:
            try:
                return ProjectionStore(self.db_path, topic_prefix=self.settings.topic_prefix)
            except (duckdb.IOException, duckdb.ConnectionException) as exc:
                # IOException: another process; ConnectionException: a read-only reader in
                # this very process (DuckDB shares one instance per file and process).
                held = "lock" in str(exc).lower() or isinstance(exc, duckdb.ConnectionException)
                if not held:
                    raise
                if time.monotonic() > deadline or stop.is_set():
                    raise ProjectionError(
                        f"{self.db_path} is held by another process ({exc}); is another "
                        "projector running on it? Give each projector its own --db file"
                    ) from exc
                log.info("waiting for %s to be free: %s", self.db_path, exc)
                stop.wait(0.2)

    def status(self) -> dict[str, Any]:
        """The counters, for ``GET /status`` of the query endpoint."""
        return {"group": self.group, "db": str(self.db_path), **asdict(self.stats)}

    # ------------------------------------------------------------------ the loop

    def _session(self, stop: threading.Event, store: ProjectionStore, producer: Producer) -> None:
        consumer = kafka.consumer(
            self.settings,
            self.group,
            {
                # Static membership, one identity per file: a projector restarted on the
                # same file (after a crash, say) takes its partitions back at once
                # instead of waiting for the dead member's session to time out.
                "group.instance.id": self.instance_id,
                # An eager assignor: on_assign assigns the whole list it is given.
                "partition.assignment.strategy": "range",
                "client.id": f"{self.group}-{self.db_path.name}",
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 100,
                **self.telemetry.lag.consumer_config(),
            },
        )
        topics = [self.topics.events]
        if self.workers:
            topics.append(self.topics.reports)
        consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        try:
            idle_since = time.monotonic()
            while not stop.is_set():
                messages = kafka.next_batch(
                    consumer, self.batch_size, self.poll_timeout, self.linger
                )
                self.telemetry.health.beat()
                if messages:
                    self.telemetry.lag.seen(messages)
                    self._batch(consumer, producer, store, messages)
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= 1.0:
                    self._store_positions(consumer, store)
                    idle_since = time.monotonic()
        finally:
            try:
                self._finish_write(consumer)  # the last batch is in the file before we go
            finally:
                try:
                    consumer.close()
                except KafkaException as exc:
                    log.warning("closing the consumer failed: %s", exc)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._store is not None
        self._finish_write(consumer)
        # The file, not Kafka, says where each partition stands.
        self._positions = self._store.offsets()
        for tp in partitions:
            tp.offset = self._positions.get((tp.topic, tp.partition), OFFSET_BEGINNING)
        consumer.assign(partitions)
        log.info(
            "projector assigned %s",
            ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions),
        )
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Every consumed batch is folded before the next consume(); the one being committed
        # is waited for, so nothing is in flight when partitions go.
        self.ready.clear()
        self._finish_write(consumer)

    def _batch(
        self,
        consumer: Consumer,
        producer: Producer,
        store: ProjectionStore,
        messages: list[Message],
    ) -> None:
        records: list[Record] = []
        letters: list[codec.DeadLetter] = []
        events_topic = self.topics.events
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                if kafka.consumer_fatal(error):
                    # e.g. the group fenced this static member's stale twin after a broker
                    # crash: the consumer never delivers again, a new one rejoins instead
                    raise _ConsumerDied(f"the consumer hit a fatal Kafka error: {error.str()}")
                log.warning("consumer error: %s", error)
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            assert topic is not None and partition is not None and offset is not None
            if offset < self._positions.get((topic, partition), 0):
                continue  # already in the file (a fetch from before the last repositioning)
            record = decode(message, events_topic)
            if record.error is not None:
                if topic == events_topic:
                    letters.append(kafka.dead_letter(message, record.error, self.group))
                else:
                    self.stats.undecodable_reports += 1
            elif topic != events_topic and record.report is None:
                self.stats.reports_skipped += 1
            records.append(record)
        if letters:
            self._send_dead_letters(producer, letters)

        duplicates, folded = self.fold.stats.duplicates, self.fold.stats.events
        try:
            self._fold_records(records)
            self._advance_to_consumer_position(consumer)
            changes = self.fold.take()
            # The values are copied out of the fold before the next batch changes them.
            prepared = prepare(changes)
        except _Restart:
            raise
        except Exception as exc:
            # A record the fold or the Arrow conversion cannot take: find it (below).
            log.warning("batch of %d records could not be projected: %r", len(records), exc)
            self._finish_write(consumer)
            self._isolate(records)
            return
        if self._finish_write(consumer):
            # The batch before this one failed and was written again record by record; this
            # one was folded on top of rows that were dropped: fold and write it again too.
            self._isolate(records)
            return
        self._start_write(
            store,
            prepared,
            changes.offsets,
            records=records,
            events=self.fold.stats.events - folded,
            duplicates=self.fold.stats.duplicates - duplicates,
            heartbeats=sum(record.report is not None for record in records),
        )

    def _fold_records(self, records: Sequence[Record]) -> None:
        """Folds records in order (rows read first); raises what the fold raises."""
        try:
            fold_records(self.fold, records, self._require_store())
        except duckdb.Error as exc:
            raise _Restart(f"reading rows from {self.db_path} failed: {exc}") from exc

    def _isolate(self, records: list[Record]) -> None:
        """Writes a batch that failed in smaller and smaller pieces, to find what poisons it.

        Each piece is folded from the rows in the file and committed on its own (with its
        offsets, so exactly-once holds piece by piece). A piece that fails is split in two;
        a single record that fails twice is poison: it goes to the dead letters with the
        reason, then its offset alone is committed (a commit that also proves the file
        still takes writes: if it fails, the file is at fault and the loop restarts). The
        pieces keep the batch's order, so every partition still advances in offset order.
        """
        log.warning("isolating the record that fails in a batch of %d", len(records))
        self.fold.forget()
        isolate(records, self._commit_piece, self._poisoned)

    def _poisoned(self, record: Record, error: Exception) -> None:
        """Dead-letters a record that cannot be projected, then commits its offset alone."""
        what = f"event {record.event.event_id}" if record.event is not None else "record"
        letter = kafka.dead_letter(
            record.message,
            error,
            self.group,
            note=f"the projector cannot fold or write {what}: {error}",
        )
        self._send_dead_letters(self._require_producer(), [letter])
        self.fold.advance(record.position)
        offsets = self.fold.take()
        try:
            self._require_store().commit(prepare(offsets))
        except Exception as exc:
            self.fold.forget()
            raise _Restart(f"writing to {self.db_path} failed: {exc}") from exc
        self._positions.update(offsets.offsets)
        self._publish_positions()

    def _commit_piece(self, piece: Sequence[Record]) -> Exception | None:
        """Folds and commits one piece synchronously; the error, if it failed (fold dropped)."""
        fold = self.fold
        duplicates, folded = fold.stats.duplicates, fold.stats.events
        try:
            self._fold_records(piece)
            changes = fold.take()
            self._require_store().commit(prepare(changes))
        except _Restart:
            raise
        except duckdb.IOException as exc:
            raise _Restart(f"writing to {self.db_path} failed: {exc}") from exc
        except Exception as exc:
            fold.forget()
            return exc
        stats = self.stats
        stats.events += fold.stats.events - folded
        stats.duplicates += fold.stats.duplicates - duplicates
        stats.heartbeats += sum(record.report is not None for record in piece)
        stats.batches += 1
        stats.last_commit_at = time.time()
        self._positions.update(changes.offsets)
        self._publish_positions()
        return None

    def _require_store(self) -> ProjectionStore:
        assert self._store is not None
        return self._store

    def _require_producer(self) -> Producer:
        assert self._producer is not None
        return self._producer

    def _start_write(
        self,
        store: ProjectionStore,
        prepared: PreparedBatch,
        offsets: dict[PartitionKey, int],
        *,
        records: list[Record] | None = None,
        events: int = 0,
        duplicates: int = 0,
        heartbeats: int = 0,
    ) -> None:
        """Commits a batch in a background thread: DuckDB releases the GIL while it writes,
        so the next batch is decoded and folded meanwhile. One batch at most is in flight."""
        write = _Write(offsets, events, duplicates, heartbeats, records or [])

        def commit() -> None:
            started = time.perf_counter()
            try:
                store.commit(prepared)
            except BaseException as exc:
                write.error = exc
                return
            self._commit_seconds.observe(time.perf_counter() - started)
            # Counted as soon as the batch is in the file, so the counters never lag it.
            stats = self.stats
            stats.events += write.events
            stats.duplicates += write.duplicates
            stats.heartbeats += write.heartbeats
            stats.batches += 1
            stats.last_commit_at = time.time()
            stats.positions = _named({**self._positions, **offsets})

        write.thread = threading.Thread(target=commit, name="projection-commit", daemon=True)
        write.thread.start()
        self._in_flight = write

    def _finish_write(self, consumer: Consumer | None) -> bool:
        """Waits until the batch in flight is in the file, then does what follows a commit.

        Returns:
            True if the write failed on what the batch holds and the batch was written
            again piece by piece (:meth:`_isolate`), which drops the fold's rows.

        Raises:
            _Restart: the file could not be written (an I/O error, not the batch's rows).
        """
        write = self._in_flight
        if write is None:
            return False
        self._in_flight = None
        assert write.thread is not None
        write.thread.join()
        if write.error is not None:
            error = write.error
            if isinstance(error, duckdb.IOException) or not isinstance(error, Exception):
                raise _Restart(f"writing to {self.db_path} failed: {error}") from error
            log.warning("writing a batch to %s failed: %r", self.db_path, error)
            self._isolate(write.records)
            return True
        self._positions.update(write.offsets)
        if consumer is not None and write.offsets:
            try:
                consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in write.offsets.items()],
                    asynchronous=True,
                )
            except KafkaException as exc:
                log.debug("offset commit for monitoring failed: %s", exc)
        if self.on_batch is not None:
            self.on_batch(self.stats)
        return False

    def _advance_to_consumer_position(self, consumer: Consumer) -> None:
        # The consumer's position is past every record it returned and past the transaction
        # markers and aborted records it skipped, which it never returns. Storing it keeps
        # the file's offsets at the end of a quiet log (no lag of one marker per partition).
        for tp in consumer.position(consumer.assignment()):
            if tp.offset > self._positions.get((tp.topic, tp.partition), 0):
                self.fold.advance(Position(tp.topic, tp.partition, tp.offset - 1))

    def _store_positions(self, consumer: Consumer, store: ProjectionStore) -> None:
        """On a quiet log, stores positions that moved past markers only (offsets alone)."""
        self._finish_write(consumer)
        self._advance_to_consumer_position(consumer)
        changes = self.fold.take()
        if changes:
            self._start_write(store, prepare(changes), changes.offsets)
            self._finish_write(consumer)

    def _send_dead_letters(self, producer: Producer, letters: list[codec.DeadLetter]) -> None:
        failures: list[str] = []

        def delivered(error: KafkaError | None, _: Message) -> None:
            if error is not None:
                failures.append(error.str())

        for letter in letters:
            log.warning(
                "dead letter from %s[%s]@%s: %s: %s",
                letter.topic,
                letter.partition,
                letter.offset,
                letter.error_type,
                letter.error_message,
            )
            kafka.send_dead_letter(producer, self.topics.deadletter, letter, on_delivery=delivered)
        if producer.flush(30) > 0 or failures:
            raise _Restart(f"dead letters not delivered: {failures or 'flush timed out'}")
        self.stats.dead_letters += len(letters)

    def _publish_positions(self) -> None:
        self.stats.positions = _named(self._positions)

    def _metric_families(self) -> list[Metric]:
        """Jobs by status and how far the file is behind, for ``/metrics`` (at each scrape)."""
        families: list[Metric] = []
        behind: dict[str, int] = {}
        positions = self.stats.positions
        for (topic, partition), end in self.telemetry.lag.ends().items():
            position = positions.get(f"{topic}[{partition}]", 0)
            behind[topic] = behind.get(topic, 0) + max(0, end - position)
        records = GaugeMetricFamily(
            "joblog_projection_lag_records",
            "Records of each topic not yet in the projection file.",
            labels=["topic"],
        )
        seconds = GaugeMetricFamily(
            "joblog_projection_lag_seconds",
            "Age of the newest record read from each topic while the file is behind it.",
            labels=["topic"],
        )
        for topic, count in sorted(behind.items()):
            records.add_metric([topic], count)
            seconds.add_metric([topic], self.telemetry.lag.seconds_behind(topic, count))
        families += [records, seconds]
        store = self._store
        if store is not None:
            jobs = GaugeMetricFamily(
                "joblog_jobs",
                "Jobs in the projection by status (deleted excluded).",
                labels=["status"],
            )
            cursor = store.connection.cursor()
            try:
                rows = cursor.execute(
                    "SELECT status, count(*) FROM jobs WHERE NOT deleted GROUP BY status"
                ).fetchall()
            except duckdb.Error as exc:
                log.debug("jobs by status not read: %s", exc)
                rows = []
            finally:
                cursor.close()
            for status, count in sorted(rows):
                jobs.add_metric([str(status)], count)
            families.append(jobs)
        return families


def _named(positions: dict[PartitionKey, int]) -> dict[str, int]:
    return {f"{t}[{p}]": o for (t, p), o in sorted(positions.items())}


class PartitionLag(NamedTuple):
    """How far a projection file is behind one partition."""

    topic: str
    partition: int
    next_offset: int
    end_offset: int
    lag: int


def lag(settings: Settings, db_path: str | Path, *, timeout: float = 10.0) -> list[PartitionLag]:
    """The stored offsets of a projection against the end of each partition.

    Reads the offsets through :class:`~projections.reader.ProjectionReader` (so it works
    while the projector runs) and the ends from the broker (read-committed ends). Partitions
    of ``reports`` appear only once the projector has read heartbeats from them.

    Raises:
        ProjectionUnavailableError: the projection cannot be read.
    """
    stored = {
        (row["topic"], row["partition"]): int(row["next_offset"])
        for row in ProjectionReader(db_path).query(
            "SELECT topic, partition, next_offset FROM projection_offsets"
        )
    }
    topics = Topics(settings.topic_prefix)
    consumer = kafka.consumer(
        settings, f"{settings.topic_prefix}projector-status-{uuid.uuid4().hex}"
    )
    rows: list[PartitionLag] = []
    try:
        for topic in (topics.events, topics.reports):
            metadata = consumer.list_topics(topic, timeout=timeout)
            if topic == topics.reports and not any(t == topic for t, _ in stored):
                continue
            for p in sorted(metadata.topics[topic].partitions):
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=timeout
                )
                position = stored.get((topic, p), low)
                rows.append(PartitionLag(topic, p, position, high, max(0, high - position)))
    finally:
        consumer.close()
    return rows


def run_projector(
    settings: Settings,
    db_path: str | Path,
    stop_event: threading.Event | None = None,
    *,
    metrics_port: str | None = None,
    metrics_host: str | None = None,
    **options: Any,
) -> ProjectorStats:
    """Runs a :class:`Projector` until ``stop_event`` is set (or SIGTERM/SIGINT arrives).

    Usable in a thread (pass ``stop_event``) or as the body of a process. Without
    ``stop_event``, and on the main thread, SIGTERM and SIGINT stop it: the batch in hand is
    committed (or not at all), the consumer leaves its group, the query endpoint closes.

    Args:
        settings: cluster and topic settings.
        db_path: the DuckDB file.
        stop_event: set it to stop the projector.
        metrics_port: serve ``/metrics``, ``/healthz`` and ``/readyz`` on this port or the
            first free one of a range (:func:`engine.metrics.parse_ports`; none by default).
        metrics_host: the address of that endpoint.
        **options: keyword arguments of :class:`Projector` (``group``, ``from_beginning``,
            ``batch_size``, ``poll_timeout``, ``workers``, ``serve``, ``max_rows``,
            ``on_batch``, ``open_timeout``).

    Returns:
        The projector's counters.
    """
    stop = stop_event or threading.Event()
    projector = Projector(settings, db_path, **options)
    with (
        _stopped_by_signals(stop, enabled=stop_event is None),
        serving(projector.telemetry, metrics_port, metrics_host),
    ):
        return projector.run(stop)


@contextmanager
def _stopped_by_signals(stop: threading.Event, *, enabled: bool) -> Iterator[None]:
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: finishing the current batch", signum)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
