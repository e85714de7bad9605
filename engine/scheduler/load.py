"""What admission control measures on the brokers: dispatch backlogs and the projection lag.

A :class:`LoadMonitor` samples, every ``interval_s`` in a thread of its own (never on the
scheduler's hot path), the end offsets of every dispatch topic and of ``events`` and the
offsets committed by each queue's workers' group and by the projector's group, and keeps
what lies between as a :class:`~engine.lifecycle.admission.Load`. Every call has a
deadline; a sample that fails keeps the previous one (an engine that cannot measure its load
admits as it did a moment ago, and says so in the log).

A dispatch backlog is counted in records, not offsets: every transaction of the scheduler
leaves a marker after its records on each partition it wrote, so at one job per transaction
half the offsets are markers, and a workers' group that never committed, or committed the
offset after its last record (the marker's), would look twice as far behind as it is. The
monitor reads, with a read_committed consumer, the records between the group's offset and
the last stable offset (up to :data:`MAX_COUNTED` of them a queue; past that it
extrapolates from the share of records among the offsets it read). The projection lag
stays in offsets (its limits are in the thousands of events, written many to a
transaction, and reading them would add load exactly when the engine is behind).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # no __all__ in the stubs
    AdminClient,
    OffsetSpec,
)

from engine import kafka
from engine.config import Settings
from engine.lifecycle.admission import NO_LOAD, AdmissionLimits, Load
from engine.topics import Topics

log = logging.getLogger("joblog.scheduler.load")

#: The end offset of a partition the brokers did not report.
_NO_OFFSET = 0
_LATEST: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]
_EARLIEST: OffsetSpec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
#: The most dispatch records of one queue a sample reads to count its backlog; a bigger
#: backlog is extrapolated from what was read (it is far past any useful limit by then).
MAX_COUNTED = 5_000


@dataclass(frozen=True)
class _Reading:
    """Offsets not yet committed, and offsets committed, over some partitions, with the
    span ``[from, to)`` of each partition that is not committed."""

    behind: int
    committed: int
    spans: dict[int, tuple[int, int]]


class LoadMonitor:
    """Samples the brokers' offsets for admission control.

    Args:
        settings: cluster and topic settings.
        limits: which figures to sample (a limit that is off is not measured).
        interval_s: time between samples.
        timeout_s: the deadline of each admin call.
        projector_group: the projector's consumer group (default ``<prefix>projector``).
    """

    def __init__(
        self,
        settings: Settings,
        limits: AdmissionLimits,
        *,
        interval_s: float = 2.0,
        timeout_s: float = 5.0,
        projector_group: str | None = None,
    ) -> None:
        self.settings = settings
        self.limits = limits
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.topics = Topics(settings.topic_prefix)
        self.projector_group = projector_group or f"{settings.topic_prefix}projector"
        self.latest: Load = NO_LOAD
        self._previous: dict[str, tuple[int, float]] = {}
        self._admin: AdminClient | None = None
        self._reader: Consumer | None = None

    def run(self, stop: threading.Event) -> None:
        """Samples until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.latest = self.sample()
            except Exception as exc:
                log.warning("load sample failed (admission uses the last one): %s", exc)
                self._admin = None
                self.close()
            stop.wait(self.interval_s)
        self.close()

    def close(self) -> None:
        """Closes the reader that counts dispatch records (the next sample opens another)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def start(self, stop: threading.Event) -> threading.Thread:
        """Runs :meth:`run` in a daemon thread."""
        thread = threading.Thread(target=self.run, args=(stop,), name="joblog-load", daemon=True)
        thread.start()
        return thread

    def sample(self) -> Load:
        """One sample of every figure a limit needs."""
        if self._admin is None:
            self._admin = kafka.admin_client(self.settings)
        admin = self._admin
        metadata = admin.list_topics(timeout=self.timeout_s)
        topics = metadata.topics
        now = time.monotonic()
        backlog: dict[str, int] = {}
        drain: dict[str, float] = {}
        if self.limits.max_dispatch_backlog:
            prefix = self.topics.dispatch("")
            for name, topic in sorted(topics.items()):
                if not name.startswith(prefix) or not topic.partitions:
                    continue
                queue = name[len(prefix) :]
                group = f"{self.settings.topic_prefix}workers.{queue}"
                reading = self._read(
                    admin, group, name, topic.partitions, IsolationLevel.READ_COMMITTED
                )
                counted = self._count(name, reading.spans) if reading.behind else 0
                backlog[queue] = counted
                # committed offsets move over markers too: the drain in records is the
                # offsets' drain at the share of records among the offsets behind
                share = counted / reading.behind if reading.behind else 1.0
                drain[queue] = share * self._rate(f"dispatch:{queue}", reading.committed, now)
        lag, lag_drain = 0, 0.0
        events = topics.get(self.topics.events)
        if self.limits.max_projection_lag and events is not None:
            reading = self._read(admin, self.projector_group, self.topics.events, events.partitions)
            if reading.committed:  # a projector has committed: there is a projection
                lag = reading.behind
                lag_drain = self._rate("projection", reading.committed, now)
        return Load(
            dispatch_backlog=backlog,
            dispatch_drain=drain,
            projection_lag=lag,
            projection_drain=lag_drain,
            sampled_at=int(time.time() * 1000),
        )

    def _read(
        self,
        admin: AdminClient,
        group: str,
        topic: str,
        partitions: Iterable[int],
        isolation: IsolationLevel = IsolationLevel.READ_UNCOMMITTED,
    ) -> _Reading:
        """How far ``group`` is behind the end of ``topic`` (from the start of what is kept
        where it never committed), and the sum of its committed offsets.

        Args:
            isolation: ``READ_COMMITTED`` ends at the last stable offset (before the first
                record of a transaction still open), which is as far as a read_committed
                consumer can read.
        """
        wanted = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = self._offsets(admin, wanted, _LATEST, isolation)
        request = [ConsumerGroupTopicPartitions(group, wanted)]
        answer = admin.list_consumer_group_offsets(request, request_timeout=self.timeout_s)
        committed = {
            tp.partition: tp.offset
            for tp in answer[group].result(self.timeout_s).topic_partitions or []
            if tp.error is None
        }
        never = [tp for tp in wanted if committed.get(tp.partition, -1) < 0]
        starts = self._offsets(admin, never, _EARLIEST) if never else {}
        behind = 0
        total = 0
        spans: dict[int, tuple[int, int]] = {}
        for tp in wanted:
            end = ends.get(tp.partition, _NO_OFFSET)
            at = committed.get(tp.partition, -1)
            if at < 0:
                at = starts.get(tp.partition, end)
            else:
                total += at
            behind += max(0, end - at)
            if end > at:
                spans[tp.partition] = (at, end)
        return _Reading(behind, total, spans)

    def _offsets(
        self,
        admin: AdminClient,
        partitions: list[TopicPartition],
        spec: OffsetSpec,
        isolation: IsolationLevel = IsolationLevel.READ_UNCOMMITTED,
    ) -> dict[int, int]:
        futures = admin.list_offsets(
            {tp: spec for tp in partitions},
            isolation_level=isolation,
            request_timeout=self.timeout_s,
        )
        return {
            tp.partition: future.result(self.timeout_s).offset for tp, future in futures.items()
        }

    def _count(self, topic: str, spans: dict[int, tuple[int, int]]) -> int:
        """The committed records of ``topic`` in ``spans`` (``{partition: (from, to)}``).

        Transaction markers and aborted records take offsets but are not records; a
        read_committed reader skips them. It stops after :data:`MAX_COUNTED` records or
        ``timeout_s``, and then adds the offsets left to read at the share of records among
        the offsets it read.

        Raises:
            KafkaException: the reader hit a fatal error.
        """
        if self._reader is None:
            self._reader = kafka.consumer(
                self.settings,
                f"{self.settings.topic_prefix}load-{uuid.uuid4().hex[:8]}",
                # a committed offset the retention deleted since: count from the start kept
                {
                    "enable.partition.eof": True,
                    "fetch.wait.max.ms": 50,
                    "auto.offset.reset": "earliest",
                },
            )
        reader = self._reader
        reached = {p: start for p, (start, _) in spans.items()}
        reader.assign([TopicPartition(topic, p, start) for p, (start, _) in spans.items()])
        counted = 0
        deadline = time.monotonic() + self.timeout_s
        try:
            while counted < MAX_COUNTED and time.monotonic() < deadline:
                open_ = [p for p, at in reached.items() if at < spans[p][1]]
                if not open_:
                    break
                for message in reader.consume(min(500, MAX_COUNTED - counted), timeout=0.1):
                    partition, offset = message.partition() or 0, message.offset() or 0
                    if partition not in reached:
                        continue  # (not one of this count's partitions)
                    error = message.error()
                    if error is not None:
                        if kafka.consumer_fatal(error):
                            raise KafkaException(error)
                        if error.code() == KafkaError._PARTITION_EOF:
                            reached[partition] = max(reached[partition], offset)
                        continue
                    if offset < spans[partition][1]:
                        counted += 1
                    reached[partition] = max(reached[partition], offset + 1)
                for tp in reader.position([TopicPartition(topic, p) for p in open_]):
                    if tp.offset >= 0:  # past markers and aborted records it skipped
                        reached[tp.partition] = max(reached[tp.partition], tp.offset)
        finally:
            reader.unassign()
        read = sum(min(reached[p], end) - start for p, (start, end) in spans.items())
        left = sum(max(0, end - reached[p]) for p, (_, end) in spans.items())
        if left and read:
            counted += round(left * counted / read)
        elif left:
            counted += left
        return counted

    def _rate(self, key: str, committed: int, now: float) -> float:
        """Records committed per second since the previous sample of ``key``."""
        previous = self._previous.get(key)
        self._previous[key] = (committed, now)
        if previous is None or now <= previous[1]:
            return 0.0
        return max(0.0, (committed - previous[0]) / (now - previous[1]))
