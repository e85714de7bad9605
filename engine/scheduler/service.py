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
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from engine import codec, kafka
from engine.admin import ensure_topics
from engine.clock import now_ms
from engine.config import Settings
from engine.errors import BrokerError, CodecError, JoblogError, SchemaRegistryUnreachable
from engine.lifecycle.admission import AdmissionLimits
from engine.lifecycle.decide import DEFAULT_POLICY, Policy
from engine.lifecycle.records import (
    CommandRejected,
    Control,
    Dispatch,
    Finished,
    Heartbeat,
    Input,
    Outcome,
    SubmissionThrottled,
    Tick,
    Unprocessable,
    WorkerLeft,
)
from engine.limits import describe_bytes
from engine.metrics import SCHEDULER_COUNTS, Telemetry, class_families, gauge
from engine.scheduler.book import Book, Decision
from engine.scheduler.deadlines import BoundedCalls, CallStuck
from engine.scheduler.load import LoadMonitor
from engine.scheduler.rebuild import CHECKPOINT_KEY, RebuildStats, checkpoint_record, rebuild
from engine.scheduler.snapshots import Written, snapshot_headers, snapshot_records
from engine.topics import Topics

log = logging.getLogger("joblog.scheduler")

#: The scheduler producer's retry backoff, first and longest (librdkafka's defaults are 100 and
#: 1,000 ms). It paces every retried request, most often the CONCURRENT_TRANSACTIONS answer to
#: a transaction begun while the last one's markers are still being written; a produce to a
#: broker that is down backs off exponentially from the first to the longest.
TRANSACTION_RETRY_BACKOFF_MS = 5
TRANSACTION_RETRY_BACKOFF_MAX_MS = 250


@dataclass(frozen=True)
class SchedulerConfig:
    """How one scheduler instance runs.

    Attributes:
        instance_id: stable across restarts of the same instance: its transactional id is
            derived from it, so a restarted instance fences its crashed predecessor and
            aborts its open transaction at once.
        batch_size: most records consumed into one transaction.
        poll_timeout_s: longest wait for the first record of a batch (also the timer
            resolution when no timer is due sooner).
        linger_s: once a record came, how long the batch waits for more before it is
            decided (records already fetched are taken at once, up to ``batch_size``): a
            quiet partition's record is decided within this, a busy one's batches fill up
            by themselves.
        snapshot_every_events: snapshot a submission after this many events.
        snapshot_max_age_ms: snapshot a submission whose oldest unsnapshotted event is older.
        snapshot_done_delay_ms: finished submissions are snapshotted together once the
            oldest of them finished this long ago (0: each in the transaction it finished
            in); a rebuild replays their events meanwhile.
        transaction_timeout_ms: how long a crashed instance's open transaction can hold up
            readers before the broker aborts it.
        retain_done: finished submissions kept in memory per partition.
        session_timeout_ms: how long the group waits for a silent instance before handing
            its partitions to the others. Instances are static members of the group
            (``group.instance.id`` is the instance id), so a restarted instance gets its
            partitions back at once instead of waiting this long.
        call_timeout_s: the deadline of each transactional call (init, commit, abort); a
            call that overruns it is abandoned with its producer.
        offsets_timeout_s: the deadline of ``send_offsets_to_transaction``, which takes
            milliseconds unless the group's coordinator is gone: librdkafka then waits for a
            coordinator it never looks up again when the broker that was it left the cluster
            (confluentinc/librdkafka#5511, #5456), so the call is abandoned sooner than the
            others and the transaction retried on a new producer.
        admission: the limits within which new submissions are admitted; over one, a submit
            is answered ``SubmissionThrottled`` (:mod:`engine.lifecycle.admission`).
        load_interval_s: how often the dispatch backlogs and the projection lag are sampled
            (only when a limit needs them).
    """

    instance_id: str = field(default_factory=lambda: socket.gethostname())
    batch_size: int = 2000
    poll_timeout_s: float = 0.05
    linger_s: float = 0.005
    snapshot_every_events: int = 500
    snapshot_max_age_ms: int = 5000
    snapshot_done_delay_ms: int = 1000
    transaction_timeout_ms: int = 30_000
    retain_done: int = 50_000
    session_timeout_ms: int = 10_000
    call_timeout_s: float = 30.0
    offsets_timeout_s: float = 8.0
    admission: AdmissionLimits = field(default_factory=AdmissionLimits)
    load_interval_s: float = 2.0


@dataclass
class Metrics:
    """Counters of what the scheduler did, for logs, tests and ``/metrics``.

    ``inputs`` and ``event_types`` count by class (the cheapest key on the hot path).
    """

    counts: Counter[str] = field(default_factory=Counter)
    rebuilds: list[RebuildStats] = field(default_factory=list)
    inputs: Counter[type] = field(default_factory=Counter)
    event_types: Counter[type] = field(default_factory=Counter)

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
        self.book = self._new_book()
        self.load = (
            LoadMonitor(settings, self.config.admission, interval_s=self.config.load_interval_s)
            if self.config.admission.sampled
            else None
        )
        self.assigned: set[int] = set()
        self.ready = threading.Event()
        self.telemetry = Telemetry("scheduler", ready=self.ready.is_set)
        self.telemetry.counts(lambda: self.metrics.counts, SCHEDULER_COUNTS)
        self.telemetry.collect(self._metric_families)
        self._step_seconds = self.telemetry.histogram(
            "joblog_scheduler_transaction_seconds",
            "Time of the transaction's last steps: send_offsets and commit.",
            ["step"],
        )
        self._queues: set[str] = set()
        self._delivered: list[tuple[int, str, int, int]] = []
        # the checkpoint records of the open transaction: (partition, events offset)
        self._checkpoints: list[tuple[int, int]] = []
        self._consumer: Consumer | None = None
        # clients whose call got stuck: kept so they are never destroyed under that call
        self.abandoned: list[object] = []
        self._calls = BoundedCalls(f"scheduler-{self.config.instance_id}-kafka")
        self._delivery_errors: list[KafkaError] = []
        self._fences: list[float] = []
        # poison isolation (see _Poison): the most records per batch while a failed batch is
        # bisected, the offsets that must be passed before full batches resume, and the
        # records found to be poison, with how often each was answered
        self._batch_limit: int | None = None
        self._suspects: dict[tuple[str, int], int] = {}
        self._poison: dict[tuple[str, int, int], tuple[str, int]] = {}

    # ----------------------------------------------------------------- lifecycle

    def run(self, stop: threading.Event) -> None:
        """Runs until ``stop`` is set; a failed transaction restarts the loop on a fresh book.

        Raises:
            JoblogError: the producer was fenced by another instance with the same id, or a
                fatal Kafka error occurred.
        """
        self._calls.stop = stop
        sampling = threading.Event()
        if self.load is not None:
            self.load.start(sampling)
        try:
            self._run(stop)
        finally:
            sampling.set()

    def _run(self, stop: threading.Event) -> None:
        backoff = 0.2
        while not stop.is_set():
            committed = self.metrics["transactions"]
            try:
                self._run_once(stop)
            except _Poison as poison:
                self._isolate(poison)
            except (_Restart, KafkaException, JoblogError) as exc:
                if isinstance(exc, KafkaException) and self._fenced_for_good(exc.args[0]):
                    raise JoblogError(
                        f"scheduler {self.config.instance_id!r} cannot go on: "
                        f"{exc.args[0].str()} (another instance with the same id fenced it out?)"
                    ) from exc
                if isinstance(exc, JoblogError) and not isinstance(
                    exc, BrokerError | SchemaRegistryUnreachable
                ):
                    raise
                if self.metrics["transactions"] > committed:
                    backoff = 0.2  # it ran for a while: a new outage starts the backoff over
                log.warning("scheduler restarting on a fresh book in %.1f s: %s", backoff, exc)
                self.metrics.counts["restarts"] += 1
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            else:
                continue
            self.book = self._new_book()
            self.assigned = set()

    def _new_book(self) -> Book:
        return Book(
            self.policy, retain_done=self.config.retain_done, admission=self.config.admission
        )

    def _run_once(self, stop: threading.Event) -> None:
        settings = self.settings
        transactional_id = f"{settings.topic_prefix}scheduler.{self.config.instance_id}"
        timeout = self.config.call_timeout_s
        producer = kafka.producer(
            settings,
            {
                "transactional.id": transactional_id,
                "transaction.timeout.ms": self.config.transaction_timeout_ms,
                "linger.ms": 5,
                "batch.num.messages": 10_000,
                "compression.type": "lz4",
                # a 100,000-job submission is decided in one transaction
                "queue.buffering.max.messages": 2_000_000,
                "on_delivery": self._on_delivery,
                # Right after a commit the coordinator is still writing the markers and
                # answers the next transaction's first request CONCURRENT_TRANSACTIONS; at
                # librdkafka's default backoff (100 ms) that made every back-to-back
                # transaction ~100 ms longer (BENCHMARKS.md, "The retry backoff").
                "retry.backoff.ms": TRANSACTION_RETRY_BACKOFF_MS,
                "retry.backoff.max.ms": TRANSACTION_RETRY_BACKOFF_MAX_MS,
            },
            writes=(
                self.topics.events,
                self.topics.control,
                self.topics.state,
                self.topics.commands,
                self.topics.deadletter,
            ),
        )
        try:
            self._calls.call(
                "init_transactions", lambda: producer.init_transactions(timeout), timeout
            )
        except CallStuck:
            self.abandoned.append(producer)
            raise
        consumer = kafka.consumer(
            settings,
            f"{settings.topic_prefix}scheduler",
            {
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                # range keeps partition p of every subscribed topic on one member: the
                # co-partitioning that lets one instance own a submission's whole story.
                "partition.assignment.strategy": "range",
                "fetch.wait.max.ms": 20,
                # static membership: a restarted instance takes its partitions back at
                # once; a dead one is replaced after the session timeout
                "group.instance.id": self.config.instance_id,
                "session.timeout.ms": self.config.session_timeout_ms,
                "heartbeat.interval.ms": max(500, self.config.session_timeout_ms // 5),
                **self.telemetry.lag.consumer_config(),
            },
        )
        self._consumer = consumer
        # admission control's share of a cluster-wide limit per partition (asked here, never
        # from inside a rebalance callback of the same client)
        try:
            metadata = consumer.list_topics(self.topics.commands, timeout=10)
            self.book.partitions_total = len(metadata.topics[self.topics.commands].partitions)
        except (KafkaException, KeyError) as exc:
            log.warning("partition count of %s unknown: %s", self.topics.commands, exc)
        consumer.subscribe(
            [self.topics.commands, self.topics.reports],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        stuck = False
        try:
            self._loop(stop, consumer, producer)
        except CallStuck:
            stuck = True
            raise
        finally:
            self.ready.clear()
            self._close(consumer, producer, stuck)

    def _close(self, consumer: Consumer, producer: Producer, stuck: bool) -> None:
        """Closes both clients within bounded time; abandons what does not close."""
        try:
            self._calls.call("consumer close", consumer.close, 5)
        except CallStuck as exc:
            log.warning("%s", exc)
            self.abandoned.append(consumer)
        except KafkaException as exc:
            log.warning("closing the consumer failed: %s", exc)
        if stuck:
            self.abandoned.append(producer)
            return
        try:
            self._calls.call("producer flush", lambda: producer.flush(3), 3)
        except CallStuck as exc:
            log.warning("%s", exc)
            self.abandoned.append(producer)

    def _loop(self, stop: threading.Event, consumer: Consumer, producer: Producer) -> None:
        last_sweep = 0
        while not stop.is_set():
            now = now_ms()
            wait = self.config.poll_timeout_s
            next_due = self.book.next_due()
            if next_due is not None:
                wait = max(0.0, min(wait, (next_due - now) / 1000))
            batch = self.config.batch_size
            if self._batch_limit is not None:
                batch = min(batch, self._batch_limit)
            messages = kafka.next_batch(consumer, batch, wait, self.config.linger_s)
            self.telemetry.health.beat()
            if self.load is not None:
                self.book.load = self.load.latest
            if messages:
                self.telemetry.lag.seen(messages)
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
        self._delivery_errors = []
        self._checkpoints = []
        snapshots: list[tuple[int, str, Written, bool]] = []
        try:
            producer.begin_transaction()
            for message in messages:
                error = message.error()
                if error is not None:
                    if kafka.consumer_fatal(error):
                        # e.g. the group fenced this consumer's stale member after a broker
                        # crash: the consumer is unusable, a new one rejoins in its place
                        raise KafkaException(error)
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("consume error: %s", error)
                    continue
                topic, partition = message.topic() or "", message.partition() or 0
                if partition not in self.book.partitions:
                    continue  # fetched before a revocation: its new owner decides it
                offsets[(topic, partition)] = (message.offset() or 0) + 1
                for submission_id, given in self._inputs(producer, message, now):
                    self.metrics.inputs[type(given)] += 1
                    decision = self.book.apply(partition, submission_id, given, now)
                    self._write(producer, partition, decision)
                    touched.setdefault(partition, set()).add(submission_id)
                    for woken in decision.woken:  # a queue resumed: its held jobs go on
                        self._write(
                            producer, partition, self.book.apply(partition, woken, Tick(), now)
                        )
                        touched[partition].add(woken)
            self.metrics.inputs[Tick] += len(due)
            for partition, submission_id in due:
                self.metrics.counts["timers"] += 1
                decision = self.book.apply(partition, submission_id, Tick(), now)
                self._write(producer, partition, decision)
                touched.setdefault(partition, set()).add(submission_id)
            for partition in sorted(set(touched) | (set(self.book.partitions) if sweep else set())):
                snapshots.extend(self._snapshots(producer, partition, now, touched.get(partition)))
            timeout = self.config.call_timeout_s
            started = time.perf_counter()
            if offsets:
                positions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
                metadata = consumer.consumer_group_metadata()
                within = self.config.offsets_timeout_s
                self._calls.call(
                    "send_offsets_to_transaction",
                    lambda: producer.send_offsets_to_transaction(positions, metadata, within),
                    within,
                )
                sent = time.perf_counter()
                self._step_seconds.labels("send_offsets").observe(sent - started)
                started = sent
            self._calls.call(
                "commit_transaction", lambda: producer.commit_transaction(timeout), timeout
            )
            self._step_seconds.labels("commit").observe(time.perf_counter() - started)
        except (KafkaException, _RecordFault) as exc:
            error = exc.args[0] if isinstance(exc, KafkaException) else None
            if error is not None and _fenced(error):
                raise  # the producer is unusable: run() decides whether to replace it
            if error is None or not error.fatal():
                self._abort(producer)
            # else: the producer is unusable; the restart's new one aborts the transaction
            fault = exc if isinstance(exc, _RecordFault) else self._record_fault(error)
            if fault is not None:
                raise _Poison(self._batch_offsets(messages), str(fault)) from exc
            raise _Restart(error.str() if error is not None else str(exc)) from exc
        self.metrics.counts["transactions"] += 1
        self._passed(offsets)
        for partition, submission_id, offset, seq in self._delivered:
            self.book.delivered(partition, submission_id, offset, seq)
        for partition, submission_id, written, deleted in snapshots:
            self.book.snapshotted(partition, submission_id, written, deleted)
        for partition, checkpoint in self._checkpoints:
            part = self.book.partitions.get(partition)
            if part is not None:
                part.checkpoint_written = checkpoint

    def _inputs(self, producer: Producer, message: Message, now: int) -> list[tuple[str, Input]]:
        """Decodes one record into ``(submission_id, input)`` pairs; dead-letters what fails."""
        where = (message.topic() or "", message.partition() or 0, message.offset() or 0)
        if where in self._poison:
            return self._answer_poison(producer, message, where, now)
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
        return [(report.ref.submission_id, report)]

    def _write(self, producer: Producer, partition: int, decision: Decision) -> None:
        topics = self.topics
        if decision.stale:
            self.metrics.counts["stale_reports"] += 1
        for event in decision.events:
            self.metrics.counts["events"] += 1
            self.metrics.event_types[type(event.body)] += 1
            if isinstance(event.body, CommandRejected):
                self.metrics.counts["rejections"] += 1
            elif isinstance(event.body, SubmissionThrottled):
                self.metrics.counts["throttled"] += 1
            producer.produce(
                topics.events,
                key=event.submission_id.encode(),
                value=self._fits(codec.encode_event(event), f"event {event.event_id}"),
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
                    value=self._fits(
                        codec.encode_dispatch(effect), f"dispatch {effect.dispatch_id}"
                    ),
                )
            elif isinstance(effect, Control):
                self.metrics.counts["controls"] += 1
                producer.produce(
                    topics.control,
                    key=effect.worker_id.encode(),
                    value=codec.encode_control(effect),
                )
            else:
                # traffic to another (pseudo-)submission, whichever scheduler owns it, in
                # this transaction: a key's or a limit's ledger (a claim or release), a job's
                # submission (an answer), a schedule (a run ended), a schedule's run (its
                # submission)
                self.metrics.counts["key_commands"] += 1
                producer.produce(
                    topics.commands,
                    key=effect.submission_id.encode(),
                    value=self._fits(codec.encode_command(effect), f"command {effect.command_id}"),
                )
        self._poll(producer)

    def _fits(self, value: bytes, what: str) -> bytes:
        limit = self.settings.limits.max_record_bytes
        if len(value) > limit:
            raise _RecordFault(
                f"{what} is {describe_bytes(len(value))}, larger than the record limit "
                f"{describe_bytes(limit)} (JOBLOG_MAX_RECORD_BYTES)"
            )
        return value

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._delivery_errors.append(error)

    def _record_fault(self, error: KafkaError | None) -> str | None:
        """Why the batch cannot be written whatever happens to the broker, if it cannot."""
        for candidate in [error, *self._delivery_errors]:
            if candidate is not None and candidate.code() in _RECORD_FAULTS:
                return candidate.str()
        return None

    def _fenced_for_good(self, error: KafkaError) -> bool:
        """Whether another live instance has this instance's id.

        A producer can also be fenced without a rival: a broker that crashed mid-transaction
        bumps the producer epoch when it recovers, and the group can fence the stale member
        of this very consumer. So fenced clients are replaced (their successors fence any
        rival in turn), and only a fence that keeps coming back (three in two minutes) stops
        the instance.
        """
        if not _fenced(error):
            return False
        now = time.monotonic()
        self._fences = [t for t in self._fences if now - t < 120] + [now]
        return len(self._fences) >= 3

    def _abort(self, producer: Producer) -> None:
        timeout = self.config.call_timeout_s
        try:
            # what is in flight settles first: an abort racing the records' registration
            # with the coordinator can fail the producer for good
            self._calls.call("flush before abort", lambda: producer.flush(timeout), timeout)
        except KafkaException as exc:
            log.warning("flush before abort failed: %s", exc)
        try:
            self._calls.call(
                "abort_transaction", lambda: producer.abort_transaction(timeout), timeout
            )
        except KafkaException as exc:
            log.warning("abort failed: %s", exc)

    def _metric_families(self) -> list[Metric]:
        """What ``/metrics`` shows besides the counts (read at each scrape)."""
        rebuilds = list(self.metrics.rebuilds)
        return [
            class_families(
                "joblog_scheduler_decisions_total",
                "Inputs decided, by kind (a command, a report, a timer's Tick).",
                "input",
                dict(self.metrics.inputs),
            ),
            class_families(
                "joblog_scheduler_events_total",
                "Events decided, by event name.",
                "event",
                dict(self.metrics.event_types),
            ),
            gauge("joblog_scheduler_partitions", "Partitions owned.", len(self.assigned)),
            gauge(
                "joblog_scheduler_submissions",
                "Submissions held in the book (live ones and recently finished ones).",
                sum(book.held for book in list(self.book.partitions.values())),
            ),
            CounterMetricFamily(
                "joblog_scheduler_rebuilds_total", "Partition rebuilds.", len(rebuilds)
            ),
            CounterMetricFamily(
                "joblog_scheduler_rebuild_seconds_total",
                "Time spent rebuilding partitions.",
                sum(stats.seconds for stats in rebuilds),
            ),
            *self._load_families(),
        ]

    def _load_families(self) -> list[Metric]:
        """Admission control's figures: pending jobs per queue, and what the monitor saw."""
        pending = GaugeMetricFamily(
            "joblog_scheduler_pending_jobs",
            "PENDING jobs in the partitions this instance owns, per queue.",
            labels=["queue"],
        )
        counts: Counter[str] = Counter()
        for book in list(self.book.partitions.values()):
            counts.update(book.pending.by_queue)
        for queue, count in sorted(counts.items()):
            pending.add_metric([queue], count)
        families: list[Metric] = [pending]
        if self.load is not None:
            load = self.load.latest
            backlog = GaugeMetricFamily(
                "joblog_dispatch_backlog",
                "Dispatch records of a queue its workers' group has not committed.",
                labels=["queue"],
            )
            for queue, count in sorted(load.dispatch_backlog.items()):
                backlog.add_metric([queue], count)
            families.append(backlog)
            families.append(
                gauge(
                    "joblog_projection_lag_events",
                    "Events the projector's group has not committed.",
                    load.projection_lag,
                )
            )
        return families

    # ----------------------------------------------------------------- poison isolation

    @staticmethod
    def _batch_offsets(messages: list[Message]) -> list[tuple[str, int, int]]:
        return [
            (m.topic() or "", m.partition() or 0, m.offset() or 0)
            for m in messages
            if m.error() is None
        ]

    def _isolate(self, poison: _Poison) -> None:
        """Narrows a batch that cannot be written down to the record that causes it.

        The batch was aborted; the loop starts over on a rebuilt book and consumes it again
        in halves (``_batch_limit``) until the failing batch is one record: that record is
        poison. It is then answered instead of decided (:meth:`_answer_poison`): dead-lettered
        with the reason, and a rejection or a failed attempt written in its place, so that no
        input can stop the scheduler and every other submission goes on.
        """
        self.metrics.counts["poison_batches"] += 1
        if len(poison.offsets) == 1:
            (where,) = poison.offsets
            reason, tries = self._poison.get(where, (poison.reason, 0))
            self._poison[where] = (reason, tries + 1)
            log.warning("poison record %s[%d]@%d: %s", *where, poison.reason)
            return
        if not poison.offsets:
            raise JoblogError(f"a transaction without inputs cannot be written: {poison.reason}")
        self._batch_limit = max(1, len(poison.offsets) // 2)
        for topic, partition, offset in poison.offsets:
            key = (topic, partition)
            self._suspects[key] = max(self._suspects.get(key, -1), offset)
        log.warning(
            "a batch of %d records cannot be written (%s): retrying it in batches of %d",
            len(poison.offsets),
            poison.reason,
            self._batch_limit,
        )

    def _passed(self, offsets: dict[tuple[str, int], int]) -> None:
        """After a committed batch: full batches resume once every suspect was passed."""
        if not self._suspects:
            return
        for key, next_offset in offsets.items():
            if self._suspects.get(key, next_offset) < next_offset:
                del self._suspects[key]
        if not self._suspects:
            self._batch_limit = None

    def _answer_poison(
        self, producer: Producer, message: Message, where: tuple[str, int, int], now: int
    ) -> list[tuple[str, Input]]:
        """Dead-letters a poison record and gives the input to decide in its place."""
        reason, tries = self._poison[where]
        if tries > 2:
            return []  # neither its answer nor its dead letter could be written: passed over
        self._dead_letter(producer, message, _RecordFault(reason))
        if tries > 1:
            return []  # its answer could not be written: the dead letter is all
        raw = message.value() or b""
        note = f"the scheduler cannot write what this input decides: {reason}"
        try:
            if message.topic() == self.topics.commands:
                command = codec.decode_command(raw)
                return [(command.submission_id, Unprocessable(command, note))]
            report = codec.decode_report(raw)
        except CodecError:
            return []
        if isinstance(report, Heartbeat | WorkerLeft):
            return []
        failed = Finished(
            report.ref, Outcome.FAILED, error_type="Unprocessable", error_note=note, sent_at=now
        )
        return [(report.ref.submission_id, failed)]

    def _on_event_delivery(
        self, partition: int, submission_id: str, seq: int
    ) -> Callable[[KafkaError | None, Message], None]:
        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is None and seq > 0:
                self._delivered.append((partition, submission_id, message.offset() or 0, seq))

        return delivered

    def _snapshots(
        self, producer: Producer, partition: int, now: int, touched: set[str] | None
    ) -> list[tuple[int, str, Written, bool]]:
        book = self.book.partitions.get(partition)
        if book is None:
            return []
        states = self.book.to_snapshot(
            partition,
            now,
            self.config.snapshot_max_age_ms,
            self.config.snapshot_every_events,
            touched or set(),
            self.config.snapshot_done_delay_ms,
        )
        out: list[tuple[int, str, Written, bool]] = []
        for state in states:
            records, written = snapshot_records(state, book.written.get(state.submission_id))
            headers = snapshot_headers(state, written)
            for key, value in records:
                if value is not None:
                    self._fits(value, f"snapshot {key.decode('utf-8', 'replace')}")
                producer.produce(
                    self.topics.state, key=key, value=value, partition=partition, headers=headers
                )
                self._poll(producer)
            self.metrics.counts["snapshots"] += 1
            self.metrics.counts["snapshot_records"] += len(records)
            out.append((partition, state.submission_id, written, state.deleted))
        # Committed with the snapshots, the checkpoint counts them as written. It moves only
        # when snapshots are written (or, with nothing left unsnapshotted, when events
        # were); a record that repeats the last one is left out, so a transaction that
        # snapshots nothing does not write the partition at all.
        checkpoint = book.checkpoint({state.submission_id for state in states})
        if checkpoint != book.checkpoint_written:
            producer.produce(
                self.topics.state,
                key=CHECKPOINT_KEY,
                value=checkpoint_record(partition, checkpoint),
                partition=partition,
            )
            self._checkpoints.append((partition, checkpoint))
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
        # a record can only be dead-lettered whole if the envelope still fits a record
        letter = kafka.dead_letter(
            message,
            error,
            f"{self.settings.topic_prefix}scheduler/{self.config.instance_id}",
            max_value_bytes=self.settings.limits.max_record_bytes - 64 * 1024,
        )
        kafka.send_dead_letter(producer, self.topics.deadletter, letter)

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


class _RecordFault(Exception):
    """A record of the batch can never be written (too large, or refused by the broker)."""


class _Poison(Exception):
    """The batch was aborted because a record in it can never be written.

    Attributes:
        offsets: ``(topic, partition, offset)`` of every input record of the batch.
        reason: what the broker or the size check said.
    """

    def __init__(self, offsets: list[tuple[str, int, int]], reason: str) -> None:
        super().__init__(reason)
        self.offsets = offsets
        self.reason = reason


def _fenced(error: KafkaError) -> bool:
    """Another instance with this instance's id took over: stop, do not fight it."""
    return error.code() in (
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.FENCED_INSTANCE_ID,
    )


#: Errors that no retry fixes: the record itself is at fault.
_RECORD_FAULTS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
    }
)


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
