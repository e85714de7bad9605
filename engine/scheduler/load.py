"""What admission control measures on the brokers: dispatch backlogs and the projection lag.

A :class:`LoadMonitor` samples, every ``interval_s`` in a thread of its own (never on the
scheduler's hot path), the end offsets of every dispatch topic and of ``events`` and the
offsets committed by each queue's workers' group and by the projector's group, and keeps the
difference as a :class:`~engine.lifecycle.admission.Load`. Every call has a deadline; a
sample that fails keeps the previous one (an engine that cannot measure its load admits as
it did a moment ago, and says so in the log).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
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


@dataclass(frozen=True)
class _Reading:
    """Records not yet committed, and records committed, over some partitions."""

    behind: int
    committed: int


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

    def run(self, stop: threading.Event) -> None:
        """Samples until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.latest = self.sample()
            except Exception as exc:
                log.warning("load sample failed (admission uses the last one): %s", exc)
                self._admin = None
            stop.wait(self.interval_s)

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
                reading = self._read(admin, group, name, topic.partitions)
                backlog[queue] = reading.behind
                drain[queue] = self._rate(f"dispatch:{queue}", reading.committed, now)
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
        self, admin: AdminClient, group: str, topic: str, partitions: Iterable[int]
    ) -> _Reading:
        """How far ``group`` is behind the end of ``topic`` (from the start of what is kept
        where it never committed), and the sum of its committed offsets."""
        wanted = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = self._offsets(admin, wanted, _LATEST)
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
        for tp in wanted:
            end = ends.get(tp.partition, _NO_OFFSET)
            at = committed.get(tp.partition, -1)
            if at < 0:
                at = starts.get(tp.partition, end)
            else:
                total += at
            behind += max(0, end - at)
        return _Reading(behind, total)

    def _offsets(
        self, admin: AdminClient, partitions: list[TopicPartition], spec: OffsetSpec
    ) -> dict[int, int]:
        futures = admin.list_offsets(
            {tp: spec for tp in partitions}, request_timeout=self.timeout_s
        )
        return {
            tp.partition: future.result(self.timeout_s).offset for tp, future in futures.items()
        }

    def _rate(self, key: str, committed: int, now: float) -> float:
        """Records committed per second since the previous sample of ``key``."""
        previous = self._previous.get(key)
        self._previous[key] = (committed, now)
        if previous is None or now <= previous[1]:
            return 0.0
        return max(0.0, (committed - previous[0]) / (now - previous[1]))
