"""The scheduler service: the single writer of ``events``, exactly once, on Kafka transactions.

One loop: consume a batch of ``commands`` and ``reports`` -> decode (undecodable or
misrouted records go to ``deadletter``) -> decide with the pure core -> produce events,
dispatch and control records and snapshots -> commit the consumed offsets with them.

Commit order of one batch, all inside one Kafka transaction, so that a crash at any point
neither loses nor duplicates a decision:

1. the events of every input of the batch, in input order, to the input's partition;
2. the dispatch and control records those events call for;
3. dead letters of the records that could not be decoded;
4. snapshots of the submissions due for one, and the partition's checkpoint;
5. the consumed offsets (``send_offsets_to_transaction``), then commit.

If the transaction aborts, the in-memory book no longer matches the log: the loop starts
over, and the book is rebuilt from ``state`` and ``events`` as on any assignment.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from engine import codec
from engine.admin import ensure_topics
from engine.clock import now_ms
from engine.config import Settings
from engine.errors import BrokerError, CodecError, JoblogError
from engine.lifecycle.decide import DEFAULT_POLICY, Policy, is_stale
from engine.lifecycle.records import (
    Claimed,
    CommandRejected,
    Control,
    Dispatch,
    Heartbeat,
    Input,
    Tick,
    WorkerLeft,
)
from engine.lifecycle.state import SubmissionState
from engine.scheduler.book import Book, Decision
from engine.scheduler.rebuild import CHECKPOINT_KEY, RebuildStats, checkpoint_record, rebuild
from engine.topics import Topics

log = logging.getLogger("joblog.scheduler")


@dataclass(frozen=True)
class SchedulerConfig:
    """How one scheduler instance runs.

    Attributes:
        instance_id: stable across restarts of the same instance: its transactional id is
            derived from it, so a restarted instance fences its crashed predecessor and
            aborts its open transaction at once.
        batch_size: most records consumed into one transaction.
        poll_timeout_s: longest wait for a batch (also the timer resolution).
        snapshot_every_events: snapshot a submission after this many events.
        snapshot_max_age_ms: snapshot a submission whose oldest unsnapshotted event is older.
        transaction_timeout_ms: how long a crashed instance's open transaction can hold up
            readers before the broker aborts it.
        retain_done: finished submissions kept in memory per partition.
    """

    instance_id: str = field(default_factory=lambda: socket.gethostname())
    batch_size: int = 2000
    poll_timeout_s: float = 0.05
    snapshot_every_events: int = 500
    snapshot_max_age_ms: int = 5000
    transaction_timeout_ms: int = 30_000
    retain_done: int = 50_000


@dataclass
class Metrics:
    """Counters of what the scheduler did, for logs and tests."""

    counts: Counter[str] = field(default_factory=Counter)
    rebuilds: list[RebuildStats] = field(default_factory=list)

    def __getitem__(self, name: str) -> int:
        return self.counts[name]


class Scheduler:
    """One scheduler instance. Run several for scale-out: they share the partitions.

    Args:
        settings: cluster and topic settings.
        policy: lifecycle limits and timings.
        config: how this instance runs.
    """

    def __init__(
        self,
        settings: Settings,
        policy: Policy = DEFAULT_POLICY,
        config: SchedulerConfig | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.config = config or SchedulerConfig()
        self.topics = Topics(settings.topic_prefix)
        self.metrics = Metrics()
        self.book = Book(policy, retain_done=self.config.retain_done)
        self.assigned: set[int] = set()
        self._queues: set[str] = set()
        self._delivered: list[tuple[int, str, int, int]] = []
        self._consumer: Consumer | None = None
        self.ready = threading.Event()

    # ----------------------------------------------------------------- lifecycle

    def run(self, stop: threading.Event) -> None:
        """Runs until ``stop`` is set; a failed transaction restarts the loop on a fresh book.

        Raises:
            JoblogError: the producer was fenced by another instance with the same id, or a
                fatal Kafka error occurred.
        """
        while not stop.is_set():
            try:
                self._run_once(stop)
            except (_Restart, KafkaException, JoblogError) as exc:
                if isinstance(exc, KafkaException) and exc.args[0].fatal():
                    raise JoblogError(f"fatal Kafka error: {exc.args[0].str()}") from exc
                if isinstance(exc, JoblogError) and not isinstance(exc, BrokerError):
                    raise
                log.warning("scheduler restarting on a fresh book: %s", exc)
                self.metrics.counts["restarts"] += 1
                self.book = Book(self.policy, retain_done=self.config.retain_done)
                self.assigned = set()
                time.sleep(0.2)

    def _run_once(self, stop: threading.Event) -> None:
        settings = self.settings
        transactional_id = f"{settings.topic_prefix}scheduler.{self.config.instance_id}"
        producer = Producer(
            settings.producer_config(
                **{
                    "transactional.id": transactional_id,
                    "transaction.timeout.ms": self.config.transaction_timeout_ms,
                    "linger.ms": 5,
                    "batch.num.messages": 10_000,
                    "compression.type": "lz4",
                }
            )
        )
        producer.init_transactions(60)
        consumer = Consumer(
            settings.client_config(
                **{
                    "group.id": f"{settings.topic_prefix}scheduler",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "earliest",
                    # range keeps partition p of every subscribed topic on one member: the
                    # co-partitioning that lets one instance own a submission's whole story.
                    "partition.assignment.strategy": "range",
                    "fetch.wait.max.ms": 20,
                }
            )
        )
        self._consumer = consumer
        consumer.subscribe(
            [self.topics.commands, self.topics.reports],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        try:
            self._loop(stop, consumer, producer)
        finally:
            self.ready.clear()
            try:
                consumer.close()
            except KafkaException as exc:
                log.warning("closing the consumer failed: %s", exc)
            producer.flush(10)

    def _loop(self, stop: threading.Event, consumer: Consumer, producer: Producer) -> None:
        last_sweep = 0
        while not stop.is_set():
            now = now_ms()
            wait = self.config.poll_timeout_s
            next_due = self.book.next_due()
            if next_due is not None:
                wait = max(0.0, min(wait, (next_due - now) / 1000))
            messages = consumer.consume(self.config.batch_size, timeout=wait)
            if self.assigned:
                self.ready.set()
            now = now_ms()
            due = self.book.due(now)
            sweep = now - last_sweep >= 1000
            if not messages and not due and not sweep:
                continue
            if sweep:
                last_sweep = now
            self._transaction(consumer, producer, messages, due, now, sweep)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        wanted = {tp.partition for tp in partitions}
        for partition in self.assigned - wanted:
            self.book.drop(partition)
        for partition in sorted(wanted - self.assigned):
            stats, book = rebuild(self.settings, partition, timeout_s=60.0)
            self.metrics.rebuilds.append(stats)
            log.info(
                "partition %d rebuilt: %d snapshots, %d events replayed from offset %d in %.3fs",
                partition,
                stats.snapshots,
                stats.events_replayed,
                stats.events_from,
                stats.seconds,
            )
            self.book.adopt(book, now_ms())
        self.assigned = wanted

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # With the eager range protocol every rebalance revokes everything and assigns
        # anew; a partition that comes straight back keeps its book (nobody else can have
        # decided for it in between), so nothing is dropped until on_assign says so.
        self.ready.clear()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost (session timeout): another instance may already have decided for these.
        for partition in {tp.partition for tp in partitions}:
            self.book.drop(partition)
            self.assigned.discard(partition)

    # ----------------------------------------------------------------- one transaction

    def _transaction(
        self,
        consumer: Consumer,
        producer: Producer,
        messages: list[Message],
        due: list[tuple[int, str]],
        now: int,
        sweep: bool,
    ) -> None:
        offsets: dict[tuple[str, int], int] = {}
        touched: dict[int, set[str]] = {}
        self._delivered = []
        snapshots: list[tuple[int, SubmissionState]] = []
        try:
            producer.begin_transaction()
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("consume error: %s", error)
                    continue
                topic, partition = message.topic() or "", message.partition() or 0
                if partition not in self.book.partitions:
                    continue  # fetched before a revocation: its new owner decides it
                offsets[(topic, partition)] = (message.offset() or 0) + 1
                for submission_id, given in self._inputs(producer, message):
                    decision = self.book.apply(partition, submission_id, given, now)
                    self._write(producer, partition, decision)
                    touched.setdefault(partition, set()).add(submission_id)
            for partition, submission_id in due:
                self.metrics.counts["timers"] += 1
                decision = self.book.apply(partition, submission_id, Tick(), now)
                self._write(producer, partition, decision)
                touched.setdefault(partition, set()).add(submission_id)
            for partition in sorted(set(touched) | (set(self.book.partitions) if sweep else set())):
                snapshots.extend(self._snapshots(producer, partition, now, touched.get(partition)))
            if offsets:
                producer.send_offsets_to_transaction(
                    [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    consumer.consumer_group_metadata(),
                    30,
                )
            producer.commit_transaction(60)
        except KafkaException as exc:
            error = exc.args[0]
            if error.fatal():
                raise JoblogError(
                    f"scheduler {self.config.instance_id!r} cannot go on: {error.str()} "
                    "(another instance with the same id fenced it out?)"
                ) from exc
            try:
                producer.abort_transaction(30)
            except KafkaException as abort_exc:
                log.warning("abort failed: %s", abort_exc)
            raise _Restart(error.str()) from exc
        self.metrics.counts["transactions"] += 1
        for partition, submission_id, offset, seq in self._delivered:
            self.book.delivered(partition, submission_id, offset, seq)
        for partition, state in snapshots:
            self.book.snapshotted(partition, state)

    def _inputs(self, producer: Producer, message: Message) -> list[tuple[str, Input]]:
        """Decodes one record into ``(submission_id, input)`` pairs; dead-letters what fails."""
        raw = message.value() or b""
        key = (message.key() or b"").decode("utf-8", "replace")
        if message.topic() == self.topics.commands:
            try:
                command = codec.decode_command(raw)
            except CodecError as exc:
                self._dead_letter(producer, message, exc)
                return []
            if key != command.submission_id:
                self._dead_letter(
                    producer,
                    message,
                    JoblogError(
                        f"record key {key!r} is not the submission id {command.submission_id!r}; "
                        "key commands by submission id"
                    ),
                )
                return []
            self.metrics.counts["commands"] += 1
            return [(command.submission_id, command)]
        try:
            report = codec.decode_report(raw)
        except CodecError as exc:
            self._dead_letter(producer, message, exc)
            return []
        self.metrics.counts["reports"] += 1
        if isinstance(report, Heartbeat):
            return [(s, report) for s in sorted({ref.submission_id for ref in report.attempts})]
        if isinstance(report, WorkerLeft):
            return [(s, report) for s in sorted({ref.submission_id for ref in report.unfinished})]
        book = self.book.partitions[message.partition() or 0]
        state = book.submissions.get(report.ref.submission_id)
        if is_stale(state, report):
            self.metrics.counts["stale_reports"] += 1
            if isinstance(report, Claimed) and state is not None:
                # A redelivered dispatch of an attempt that already ended or was superseded:
                # tell the worker to stop it rather than let it run for nothing.
                self._stale_kill(producer, report)
        return [(report.ref.submission_id, report)]

    def _stale_kill(self, producer: Producer, claim: Claimed) -> None:
        ref = claim.ref
        control = Control(
            worker_id=ref.worker_id,
            action="kill",
            submission_id=ref.submission_id,
            job_id=ref.job_id,
            attempt=ref.attempt,
            dispatch_id=ref.dispatch_id,
            reason="stale dispatch: the attempt already ended or was superseded",
            grace_ms=self.policy.kill_grace_ms,
            sent_at=now_ms(),
        )
        self.metrics.counts["controls"] += 1
        producer.produce(
            self.topics.control, key=ref.worker_id.encode(), value=codec.encode_control(control)
        )

    def _write(self, producer: Producer, partition: int, decision: Decision) -> None:
        topics = self.topics
        for event in decision.events:
            self.metrics.counts["events"] += 1
            if isinstance(event.body, CommandRejected):
                self.metrics.counts["rejections"] += 1
            producer.produce(
                topics.events,
                key=event.submission_id.encode(),
                value=codec.encode_event(event),
                partition=partition,
                on_delivery=self._on_event_delivery(partition, event.submission_id, event.seq),
            )
        for effect in decision.effects:
            if isinstance(effect, Dispatch):
                self._ensure_queue(effect.spec.queue)
                self.metrics.counts["dispatches"] += 1
                producer.produce(
                    topics.dispatch(effect.spec.queue),
                    key=f"{effect.submission_id}/{effect.job_id}".encode(),
                    value=codec.encode_dispatch(effect),
                )
            elif isinstance(effect, Control):
                self.metrics.counts["controls"] += 1
                producer.produce(
                    topics.control,
                    key=effect.worker_id.encode(),
                    value=codec.encode_control(effect),
                )
        self._poll(producer)

    def _on_event_delivery(
        self, partition: int, submission_id: str, seq: int
    ) -> Callable[[KafkaError | None, Message], None]:
        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is None and seq > 0:
                self._delivered.append((partition, submission_id, message.offset() or 0, seq))

        return delivered

    def _snapshots(
        self, producer: Producer, partition: int, now: int, touched: set[str] | None
    ) -> list[tuple[int, SubmissionState]]:
        book = self.book.partitions.get(partition)
        if book is None:
            return []
        states = self.book.to_snapshot(
            partition,
            now,
            self.config.snapshot_max_age_ms,
            self.config.snapshot_every_events,
            touched or set(),
        )
        out: list[tuple[int, SubmissionState]] = []
        for state in states:
            value = None if state.deleted else codec.encode_snapshot(state)
            producer.produce(
                self.topics.state,
                key=state.submission_id.encode(),
                value=value,
                partition=partition,
            )
            self.metrics.counts["snapshots"] += 1
            out.append((partition, state.copy()))
        producer.produce(
            self.topics.state,
            key=CHECKPOINT_KEY,
            value=checkpoint_record(partition, book.checkpoint()),
            partition=partition,
        )
        return out

    def _dead_letter(self, producer: Producer, message: Message, error: Exception) -> None:
        self.metrics.counts["dead_letters"] += 1
        log.warning(
            "dead letter from %s[%d]@%d: %s",
            message.topic(),
            message.partition(),
            message.offset(),
            error,
        )
        letter = codec.DeadLetter(
            topic=message.topic() or "",
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            key=message.key(),
            value=message.value() or b"",
            error_type=type(error).__name__,
            error_message=str(error),
            consumer=f"{self.settings.topic_prefix}scheduler/{self.config.instance_id}",
            failed_at=now_ms(),
        )
        producer.produce(
            self.topics.deadletter, key=message.key(), value=codec.encode_deadletter(letter)
        )

    def _ensure_queue(self, queue: str) -> None:
        if queue in self._queues:
            return
        ensure_topics(self.settings, queues=[queue])
        self._queues.add(queue)

    @staticmethod
    def _poll(producer: Producer) -> None:
        try:
            producer.poll(0)
        except BufferError:
            producer.flush(5)


class _Restart(Exception):
    """The transaction was aborted; the loop must start over on a rebuilt book."""


def default_instance_id() -> str:
    """A stable id for this host and process slot (``JOBLOG_SCHEDULER_ID`` wins)."""
    return os.environ.get("JOBLOG_SCHEDULER_ID") or socket.gethostname()


__all__ = [
    "Metrics",
    "Scheduler",
    "SchedulerConfig",
    "default_instance_id",
    "now_ms",
]
