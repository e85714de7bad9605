"""The notifier: consume ``events``, deliver webhooks and emails, commit what is settled.

Delivery is **at least once**. The loop consumes ``events`` (read_committed, in its own
consumer group), folds each event into a small per-submission view (for the template
variables), and hands every matching (event, subscription) message to a thread pool. A failed
attempt is retried with exponential backoff from a bounded retry queue; the consumer never
waits for an endpoint.

Commit order, per partition: the committed offset is the lowest offset that still has a
message not *settled* (delivered, or given up after its last attempt); with nothing
outstanding it is the next offset to read. So a crash redelivers exactly the messages that
were not settled, plus possibly some that were (receivers drop those by ``webhook-id``).

Ordered per key (:meth:`Subscription.order_key`: a subscription and a job, or a subscription
and a submission): one message of a key is attempted at a time, in event order, and a failed
one is retried before the next of its key is sent, for at most ``max_hold_s``; other keys go
on in parallel. No single event stops the others: a fold, a rendering or a deliveries-log
write that raises is logged and counted, and the loop goes on.

Bounded: when ``max_pending`` messages are outstanding the notifier pauses its partitions
(it keeps polling, so it stays in the group) until half of them are settled.

On assignment it replays the partition from up to ``replay_max`` records before its start
offset without delivering anything, so that ``${JOB_SUBMIT_TIME}`` and friends are known for
jobs submitted before it started. A group that never committed starts delivering at the end
of the log (or at its beginning with ``from_beginning``).

An event that cannot be decoded is logged and skipped: the projector, which reads every
event too, is the one that dead-letters it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import uuid
from collections import Counter, OrderedDict, deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from engine import codec, kafka
from engine.config import Settings
from engine.errors import BrokerError, CodecError
from engine.lifecycle.records import Event
from engine.metrics import NOTIFIER_COUNTS, Telemetry
from engine.notify.declared import DeclaredNotifications, DeclaredSettings
from engine.notify.delivery import (
    AttemptResult,
    DeliveryRetry,
    attempt,
    backoff_s,
    build_message,
)
from engine.notify.delivery import Message as Notification
from engine.notify.egress import EgressPolicy
from engine.notify.log import DeliveryLog
from engine.notify.subscriptions import Subscription, SubscriptionSet
from engine.scheduler.rebuild import read_state
from engine.scheduler.snapshots import restore_snapshots
from engine.topics import Topics
from engine.watch import JobView, SubmissionView

log = logging.getLogger("joblog.notifier")


@dataclass(frozen=True)
class NotifierOptions:
    """How the notifier runs.

    Attributes:
        group_id: its consumer group (default ``<prefix>notifier``).
        retry: backoff of failed deliveries (a subscription's ``max_attempts`` wins).
        timeout_s: seconds one attempt may take (a subscription's ``timeout`` wins).
        concurrency: attempts made at once.
        max_pending: messages outstanding before the partitions are paused.
        from_beginning: a new group delivers the whole history instead of starting at the end.
        replay_max: records replayed (not delivered) before the start offset, for the fold.
        commit_interval_s: how often settled offsets are committed.
        drain_timeout_s: how long a stop waits for attempts in flight.
        fold_capacity: submissions kept in the fold (least recently used ones are dropped).
        max_hold_s: longest a failing message holds back the later messages of its key
            (:attr:`Subscription.order_key`); past it, it goes on retrying on its own and the
            next message of the key is sent.
        api_url: the base URL of the REST API (``joblog ui``), for ``${JOB_URL}``; empty:
            ``${JOB_URL}`` is empty.
        declared: the signing secret and delivery settings of the notifications submissions
            declare (:mod:`engine.notify.declared`).
        seed_timeout_s: longest read of a partition's ``state`` snapshots on assignment,
            for the declared notifications in place.
        declared_capacity: submissions whose declared notifications are kept (least recently
            used ones are dropped).
        egress: the addresses webhooks may reach (:mod:`engine.notify.egress`,
            ``JOBLOG_WEBHOOK_ALLOW``); a target outside it is recorded ``refused``.
    """

    group_id: str | None = None
    retry: DeliveryRetry = field(default_factory=DeliveryRetry)
    timeout_s: float = 10.0
    concurrency: int = 8
    max_pending: int = 1000
    from_beginning: bool = False
    replay_max: int = 100_000
    commit_interval_s: float = 1.0
    drain_timeout_s: float = 10.0
    fold_capacity: int = 10_000
    max_hold_s: float = 60.0
    api_url: str = ""
    declared: DeclaredSettings = field(default_factory=DeclaredSettings)
    declared_capacity: int = 100_000
    seed_timeout_s: float = 30.0
    egress: EgressPolicy = field(default_factory=EgressPolicy)


@dataclass(eq=False)
class _Delivery:
    message: Notification
    partition: int
    offset: int
    generation: int
    max_attempts: int
    timeout_s: float
    key: tuple[str, ...] = ()
    attempts: int = 0
    holding_since: float | None = None  # when it became the first of its key
    detached: bool = False  # no longer holds its key back (held too long)


class Notifier:
    """Delivers the notifications of ``subscriptions`` for the events of one cluster.

    Args:
        settings: cluster and topic settings.
        subscriptions: what to send where.
        deliveries: the deliveries log (a :class:`DeliveryLog`, a JSON-lines path, or
            ``None`` to keep records in memory only).
        options: how it runs.

    Attributes:
        ready: set once the notifier has partitions assigned and replayed up to its start.
        metrics: counts of ``events``, ``messages``, ``delivered``, ``retries``, ``gave_up``.
        telemetry: its Prometheus metrics and health (:mod:`engine.metrics`).
        deliveries: the deliveries log.
    """

    def __init__(
        self,
        settings: Settings,
        subscriptions: SubscriptionSet,
        *,
        deliveries: DeliveryLog | str | Path | None = None,
        options: NotifierOptions | None = None,
    ) -> None:
        self.settings = settings
        self.subscriptions = subscriptions
        self.options = options or NotifierOptions()
        self.topics = Topics(settings.topic_prefix)
        self.deliveries = (
            deliveries if isinstance(deliveries, DeliveryLog) else DeliveryLog(deliveries)
        )
        self.ready = threading.Event()
        self.metrics: Counter[str] = Counter()
        self.telemetry = Telemetry("notifier", ready=self.ready.is_set)
        self.telemetry.counts(lambda: self.metrics, NOTIFIER_COUNTS)
        self._consumer: Consumer | None = None
        self._pool = ThreadPoolExecutor(
            max_workers=self.options.concurrency, thread_name_prefix="joblog-notify"
        )
        self._inflight: dict[Future[AttemptResult], _Delivery] = {}
        self._retries: list[tuple[float, int, _Delivery]] = []
        self._tiebreak = itertools.count()
        self._generations = itertools.count(1)
        self._pending: dict[int, Counter[int]] = {}
        self._consumed: dict[int, int] = {}
        self._start: dict[int, int] = {}
        self._committed: dict[int, int] = {}
        self._generation: dict[int, int] = {}
        self._replaying: set[int] = set()
        self._views: OrderedDict[str, tuple[int, SubmissionView]] = OrderedDict()
        self.declared = DeclaredNotifications(self.options.declared, self.options.declared_capacity)
        # Per ordering key, the messages not settled yet, in event order: the first is being
        # attempted (or waits for its retry), the others wait for it.
        self._lanes: dict[tuple[str, ...], deque[_Delivery]] = {}
        self._paused = False
        self._last_commit = 0.0

    @property
    def group_id(self) -> str:
        return self.options.group_id or f"{self.settings.topic_prefix}notifier"

    @property
    def outstanding(self) -> int:
        """Messages handed out and not settled yet."""
        return sum(sum(counts.values()) for counts in self._pending.values())

    # ----------------------------------------------------------------- the loop

    def run(self, stop: threading.Event) -> None:
        """Runs until ``stop`` is set, then waits for attempts in flight and commits.

        Raises:
            KafkaException: the consumer hit a fatal error (it would never deliver again).
        """
        consumer = kafka.consumer(
            self.settings,
            self.group_id,
            {
                "enable.auto.offset.store": False,
                "auto.offset.reset": "latest",
                "fetch.wait.max.ms": 100,
                "enable.partition.eof": True,
                **self.telemetry.lag.consumer_config(),
            },
        )
        self._consumer = consumer
        consumer.subscribe(
            [self.topics.events],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info(
            "notifier started: group %s, %d subscription(s)",
            self.group_id,
            len(self.subscriptions.subscriptions),
        )
        try:
            while not stop.is_set():
                self._collect(0)
                self._start_due_retries()
                self._apply_pause()
                messages = consumer.consume(500, self._poll_timeout())
                self.telemetry.health.beat()
                self.telemetry.lag.seen(messages)
                for message in messages:
                    self._on_message(message)
                self._commit_if_due()
            self._drain()
        finally:
            self._commit(force=True)
            consumer.close()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self.deliveries.close()
            log.info("notifier stopped: %s", dict(self.metrics))

    def _poll_timeout(self) -> float:
        timeout = 0.1
        if self._inflight:
            timeout = 0.02
        if self._retries:
            timeout = min(timeout, max(0.0, self._retries[0][0] - time.monotonic()))
        return timeout

    def _on_message(self, message: Message) -> None:
        error = message.error()
        partition = message.partition() or 0
        if error is not None:
            if kafka.consumer_fatal(error):
                raise KafkaException(error)
            if error.code() == KafkaError._PARTITION_EOF:
                self._replayed(partition)
            else:
                log.warning("reading %s: %s", self.topics.events, error.str())
            return
        offset = message.offset() or 0
        self._consumed[partition] = offset + 1
        value = message.value()
        if value is None:
            return
        try:
            event = codec.decode_event(value)
        except CodecError as exc:
            log.warning(
                "skipping undecodable event at %s[%d]@%d: %s",
                self.topics.events,
                partition,
                offset,
                exc,
            )
            return
        try:
            job = self._fold(partition, event)
        except Exception:
            # A fold that cannot take the event must not stop the others: the job's view
            # stays as it was before it.
            log.exception("cannot fold %s into the notifier's view", event.event_id)
            self.metrics["fold_errors"] += 1
            entry = self._views.get(event.submission_id)
            job = entry[1].jobs.get(event.job_id) if entry is not None else None
        if offset < self._start.get(partition, 0):
            return
        self._replayed(partition)
        self.metrics["events"] += 1
        declared = self.declared.of(event.submission_id)
        for subscription in (*self.subscriptions.subscriptions, *declared):
            try:
                if not subscription.matches(event, job):
                    continue
                notification = build_message(subscription, event, job, api_url=self.options.api_url)
            except Exception as exc:
                log.exception("cannot render %s for %s", subscription.id, event.event_id)
                self.metrics["render_errors"] += 1
                self._record_unrenderable(subscription, event, exc)
                continue
            delivery = _Delivery(
                notification,
                partition,
                offset,
                self._generation.get(partition, 0),
                subscription.max_attempts or self.options.retry.max_attempts,
                subscription.timeout or self.options.timeout_s,
                key=subscription.order_key(event),
            )
            self._pending.setdefault(partition, Counter())[offset] += 1
            self.metrics["messages"] += 1
            self._enqueue(delivery)

    def _record_unrenderable(
        self, subscription: Subscription, event: Event, exc: Exception
    ) -> None:
        try:
            self.deliveries.record_unrenderable(subscription, event, f"{type(exc).__name__}: {exc}")
        except Exception:
            log.exception("cannot write to the deliveries log")
            self.metrics["log_errors"] += 1

    def _fold(self, partition: int, event: Event) -> JobView | None:
        entry = self._views.get(event.submission_id)
        if entry is None:
            view = SubmissionView(event.submission_id)
            self._views[event.submission_id] = (partition, view)
            while len(self._views) > self.options.fold_capacity:
                self._views.popitem(last=False)
        else:
            view = entry[1]
            self._views.move_to_end(event.submission_id)
        last = view.last_event
        if last is not None and 0 < event.seq <= last.seq:
            return view.jobs.get(event.job_id)  # already folded (a re-read after a seek)
        self.declared.apply(partition, event)
        _, after = view.apply(event)
        return after

    # ----------------------------------------------------------------- delivering

    def _enqueue(self, delivery: _Delivery) -> None:
        """Sends at once if its key is idle, else after the messages of the key before it."""
        lane = self._lanes.setdefault(delivery.key, deque())
        lane.append(delivery)
        if len(lane) == 1:
            self._begin(delivery)

    def _begin(self, delivery: _Delivery) -> None:
        if delivery.holding_since is None:
            delivery.holding_since = time.monotonic()
        self._submit(delivery)

    def _release(self, delivery: _Delivery) -> None:
        """``delivery`` no longer holds its key: the next message of the key is sent."""
        if delivery.detached:
            return
        delivery.detached = True
        lane = self._lanes.get(delivery.key)
        if not lane or lane[0] is not delivery:
            return
        lane.popleft()
        while lane and self._generation.get(lane[0].partition) != lane[0].generation:
            lane.popleft()  # its partition moved to another notifier, which redelivers it
        if lane:
            self._begin(lane[0])
        else:
            del self._lanes[delivery.key]

    def _submit(self, delivery: _Delivery) -> None:
        future = self._pool.submit(
            attempt,
            delivery.message,
            timeout=delivery.timeout_s,
            smtp=self.subscriptions.smtp,
            egress=self.options.egress,
        )
        self._inflight[future] = delivery

    def _collect(self, timeout: float) -> None:
        if not self._inflight:
            return
        done, _ = wait(list(self._inflight), timeout=timeout, return_when=FIRST_COMPLETED)
        for future in done:
            delivery = self._inflight.pop(future)
            try:
                result = future.result()
            except Exception as exc:  # attempt() handles delivery errors; this is a bug guard
                result = AttemptResult(ok=False, error=f"{type(exc).__name__}: {exc}")
            self._settle_attempt(delivery, result)

    def _settle_attempt(self, delivery: _Delivery, result: AttemptResult) -> None:
        delivery.attempts += 1
        current = self._generation.get(delivery.partition) == delivery.generation
        if result.ok:
            self._record(delivery, result, outcome="delivered")
            self.metrics["delivered"] += 1
            self._settle(delivery, current)
            return
        if result.permanent or delivery.attempts >= delivery.max_attempts or not current:
            outcome = ("refused" if result.refused else "gave_up") if current else "revoked"
            self._record(delivery, result, outcome=outcome)
            self.metrics[outcome] += 1
            log.warning(
                "%s %s to %s after %d attempt(s): %s",
                {"revoked": "dropped (partition revoked)", "refused": "refused"}.get(
                    outcome, "gave up delivering"
                ),
                delivery.message.message_id,
                delivery.message.target,
                delivery.attempts,
                result.error,
            )
            self._settle(delivery, current)
            return
        delay = backoff_s(self.options.retry, delivery.attempts)
        self._record(
            delivery,
            result,
            outcome="retrying",
            next_attempt_at=datetime.now(UTC) + timedelta(seconds=delay),
        )
        self.metrics["retries"] += 1
        now = time.monotonic()
        if (
            not delivery.detached
            and delivery.holding_since is not None
            and now + delay - delivery.holding_since > self.options.max_hold_s
            and len(self._lanes.get(delivery.key, ())) > 1
        ):
            # Held back its key long enough: it goes on retrying on its own, out of order.
            log.warning(
                "%s has held back later messages of its key for %.0f s: sending them",
                delivery.message.message_id,
                now - delivery.holding_since,
            )
            self.metrics["released"] += 1
            self._release(delivery)
        heapq.heappush(self._retries, (now + delay, next(self._tiebreak), delivery))

    def _record(
        self,
        delivery: _Delivery,
        result: AttemptResult,
        *,
        outcome: str,
        next_attempt_at: datetime | None = None,
    ) -> None:
        """Writes an attempt to the deliveries log; a log that fails stops no delivery."""
        try:
            self.deliveries.record(
                delivery.message,
                delivery.attempts,
                result,
                outcome=outcome,
                next_attempt_at=next_attempt_at,
            )
        except Exception:
            log.exception("cannot write to the deliveries log")
            self.metrics["log_errors"] += 1

    def _settle(self, delivery: _Delivery, current: bool) -> None:
        self._release(delivery)
        if not current:
            return
        counts = self._pending.get(delivery.partition)
        if counts is None:
            return
        counts[delivery.offset] -= 1
        if counts[delivery.offset] <= 0:
            del counts[delivery.offset]

    def _start_due_retries(self) -> None:
        now = time.monotonic()
        while self._retries and self._retries[0][0] <= now:
            _, _, delivery = heapq.heappop(self._retries)
            if self._generation.get(delivery.partition) != delivery.generation:
                self._release(delivery)
                continue  # its partition moved to another notifier, which redelivers it
            self._submit(delivery)

    def _drain(self) -> None:
        deadline = time.monotonic() + self.options.drain_timeout_s
        while self._inflight and time.monotonic() < deadline:
            self._collect(max(0.0, deadline - time.monotonic()))
        if self._inflight or self._retries:
            log.info(
                "stopping with %d attempt(s) in flight and %d retry(ies) queued; "
                "they are redelivered on restart",
                len(self._inflight),
                len(self._retries),
            )

    def _apply_pause(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        outstanding = self.outstanding
        if not self._paused and outstanding >= self.options.max_pending:
            consumer.pause(consumer.assignment())
            self._paused = True
            log.info("paused: %d messages outstanding", outstanding)
        elif self._paused and outstanding <= self.options.max_pending // 2:
            consumer.resume(consumer.assignment())
            self._paused = False
            log.info("resumed: %d messages outstanding", outstanding)

    # ----------------------------------------------------------------- offsets

    def _committable(self, partition: int) -> int | None:
        counts = self._pending.get(partition)
        if counts:
            offset = min(counts)
        elif partition in self._consumed:
            offset = self._consumed[partition]
        else:
            return None
        return max(offset, self._start.get(partition, 0))

    def _commit_if_due(self) -> None:
        if time.monotonic() - self._last_commit >= self.options.commit_interval_s:
            self._commit()

    def _commit(self, *, force: bool = False, partitions: list[int] | None = None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        self._last_commit = time.monotonic()
        offsets = []
        for partition in partitions if partitions is not None else list(self._generation):
            offset = self._committable(partition)
            if offset is None or offset <= self._committed.get(partition, -1):
                continue
            offsets.append(TopicPartition(self.topics.events, partition, offset))
        if not offsets:
            return
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as exc:
            if force:
                log.warning("final commit failed: %s", exc)
            else:
                log.warning("commit failed (retried at the next interval): %s", exc)
            return
        for item in offsets:
            self._committed[item.partition] = item.offset

    # ----------------------------------------------------------------- rebalancing

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=15)
        for tp in committed:
            partition = tp.partition
            low, high = consumer.get_watermark_offsets(tp, timeout=15)
            if tp.offset >= 0:
                start = tp.offset
                self._committed[partition] = tp.offset
            else:
                start = low if self.options.from_beginning else high
                self._committed[partition] = -1
            replay_from = max(low, start - self.options.replay_max)
            self._start[partition] = start
            self._consumed[partition] = replay_from
            self._pending[partition] = Counter()
            self._generation[partition] = next(self._generations)
            for sid in [s for s, (p, _) in self._views.items() if p == partition]:
                del self._views[sid]
            self.declared.forget({partition})
            self._seed_declared(partition)
            if replay_from < start:
                self._replaying.add(partition)
            tp.offset = replay_from
            log.info(
                "assigned %s[%d]: delivering from offset %d (replaying from %d)",
                tp.topic,
                partition,
                start,
                replay_from,
            )
        consumer.assign(committed)
        self._paused = False
        self._check_ready()

    def _seed_declared(self, partition: int) -> None:
        """Takes the declared notifications of the partition's unfinished submissions from
        their latest snapshots in ``state``, so that those declared before the replay window
        are not forgotten by a restarted notifier; the replay adds what came after."""
        topics = Topics(self.settings.topic_prefix)
        reader = kafka.consumer(
            self.settings,
            f"{self.settings.topic_prefix}notifier-seed-{uuid.uuid4().hex[:8]}",
            {"enable.partition.eof": True, "fetch.wait.max.ms": 50},
        )
        try:
            read = read_state(reader, topics, partition, self.options.seed_timeout_s)
        except BrokerError as exc:
            log.warning("declared notifications of partition %d not seeded: %s", partition, exc)
            return
        finally:
            reader.close()
        # finished submissions need no seeding: the dormant ones are not even decoded
        restored = restore_snapshots(read.latest, read.dormant)
        taken = self.declared.seed(partition, restored.states.values())
        if taken:
            log.info("partition %d: %d declared notifications from snapshots", partition, taken)

    def _replayed(self, partition: int) -> None:
        if partition in self._replaying:
            self._replaying.discard(partition)
            self._check_ready()

    def _check_ready(self) -> None:
        if not self._replaying:
            self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in partitions]
        self._commit(partitions=numbers)
        self._forget(numbers)
        consumer.unassign()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget([tp.partition for tp in partitions])

    def _forget(self, partitions: list[int]) -> None:
        gone = set(partitions)
        for key in list(self._lanes):
            lane = deque(d for d in self._lanes[key] if d.partition not in gone)
            if lane:
                self._lanes[key] = lane
            else:
                del self._lanes[key]
        self.declared.forget(gone)
        for partition in partitions:
            self._generation.pop(partition, None)
            self._pending.pop(partition, None)
            self._consumed.pop(partition, None)
            self._start.pop(partition, None)
            self._committed.pop(partition, None)
            self._replaying.discard(partition)
