"""Dispatch intake: the records a worker takes from ``dispatch.<queue>``, the ones it holds
back, pausing its partitions when full (backpressure), and the offsets it commits.

* Up to ``concurrency`` attempts run at once. Records fetched while every slot is taken are
  held (not claimed, not committed: redelivered if the worker dies); once ``max_held`` wait,
  the assigned partitions are paused, and resumed when the hold shrinks.
* Offsets are committed up to the lowest unfinished dispatch of each partition
  (:class:`~engine.worker.offsets.OffsetTracker`): at-least-once execution.
* A record that cannot be decoded is dead-lettered and done; one that runs here already (a
  redelivery after a rebalance) or finished here lately is done without running again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from engine import codec, kafka
from engine.errors import CodecError
from engine.lifecycle.records import Dispatch
from engine.worker.logs import kafka_log, log_event, log_event_to
from engine.worker.offsets import OffsetTracker, Partition
from engine.worker.outbox import FinishedDispatches
from engine.worker.supervision import Attempts, Slot


class DispatchIntake:
    """What a worker takes from its dispatch topic, and what it commits.

    Args:
        concurrency: attempts run at once.
        max_held: records held while full before the partitions are paused.
        attempts: the attempts running.
        finished: the dispatches finished here lately.
        start: runs a dispatch taken from ``(partition, offset)``.
        dead_letter: sends an undecodable record away.
        metrics: the worker's counters (``duplicates``).

    Attributes:
        ready: set once dispatch partitions are assigned.
        consumer: the dispatch consumer, once the clients are started.
    """

    def __init__(
        self,
        concurrency: int,
        max_held: int,
        attempts: Attempts,
        finished: FinishedDispatches,
        start: Callable[[Dispatch, Partition, int], None],
        dead_letter: Callable[[Message, Exception], None],
        metrics: Counter[str],
    ) -> None:
        self.concurrency = concurrency
        self.max_held = max_held
        self.attempts = attempts
        self.finished = finished
        self.metrics = metrics
        self.ready = threading.Event()
        self.consumer: Consumer | None = None
        self.held: list[Message] = []
        self.offsets = OffsetTracker()
        self.assigned: set[Partition] = set()
        self.last_commit = 0.0
        #: When dispatch partitions were first assigned (monotonic), ``None`` before.
        self.ready_at: float | None = None
        self._start = start
        self._dead_letter = dead_letter
        self._paused = False
        self._reapply_pause = False

    @property
    def full(self) -> bool:
        """Every slot is taken."""
        return len(self.attempts) >= self.concurrency

    def room(self) -> int:
        """How many more records may be fetched now: free slots plus free hold."""
        return max(0, self.concurrency - len(self.attempts)) + max(
            0, self.max_held - len(self.held)
        )

    # ------------------------------------------------------------------ records

    def on_message(self, message: Message, *, taking: bool) -> None:
        """Takes, holds or skips one consumed record.

        Raises:
            KafkaException: the consumer hit a fatal error (it would never deliver again).
        """
        error = message.error()
        if error is not None:
            if kafka.consumer_fatal(error):
                raise KafkaException(error)
            if error.code() != KafkaError._PARTITION_EOF:
                log_event_to(
                    kafka_log, logging.WARNING, "dispatch consume error", error=error.str()
                )
            return
        if not taking or self.full or self.held:
            # Fetched before the pause took effect: kept, not taken, so not committed.
            self.held.append(message)
            return
        self.take(message)

    def take_held(self) -> None:
        """Takes held records while slots are free, oldest first."""
        while self.held and not self.full:
            self.take(self.held.pop(0))

    def take(self, message: Message) -> None:
        """Decodes a record and starts its dispatch, unless it needs no work."""
        partition: Partition = (message.topic() or "", message.partition() or 0)
        offset = message.offset() or 0
        try:
            dispatch = codec.decode_dispatch(message.value() or b"")
        except CodecError as exc:
            self._dead_letter(message, exc)
            self.offsets.done(partition, offset)
            return
        running = self.attempts.get(dispatch.dispatch_id)
        if running is not None:
            # Redelivered while it runs here (the partition came back after a rebalance).
            self.offsets.taken(partition, offset)
            running.offsets.append((partition, offset))
            self.metrics["duplicates"] += 1
            return
        if dispatch.dispatch_id in self.finished:
            self.offsets.done(partition, offset)
            self.metrics["duplicates"] += 1
            log_event(logging.INFO, "dispatch already finished here", dispatch=dispatch.dispatch_id)
            return
        self.offsets.taken(partition, offset)
        self._start(dispatch, partition, offset)

    def ended(self, slot: Slot) -> None:
        """An attempt ended: its records may be committed, unless it was given back (then
        they stay uncommitted and are redelivered)."""
        if slot.abandoned:
            return
        for partition, offset in slot.offsets:
            self.offsets.finished(partition, offset)

    # ------------------------------------------------------------------ backpressure

    def apply_pause(self, taking: bool) -> None:
        """Pauses the partitions when not taking or full with a full hold; resumes else."""
        consumer = self.consumer
        assert consumer is not None
        # Pausing makes the consumer drop what it fetched ahead, and resuming costs a fetch
        # round trip (~0.1 s): a hold of fetched records lets a busy worker run on through it.
        want = not taking or (self.full and len(self.held) >= self.max_held)
        if want == self._paused and not self._reapply_pause:
            return
        assignment = consumer.assignment()
        try:
            if want:
                consumer.pause(assignment)
            else:
                consumer.resume(assignment)
        except KafkaException as exc:
            log_event(logging.WARNING, "pause/resume failed", error=exc)
            return
        if want != self._paused:
            log_event(
                logging.DEBUG,
                "paused" if want else "resumed",
                running=len(self.attempts),
                partitions=len(assignment),
            )
        self._paused = want
        self._reapply_pause = False

    # ------------------------------------------------------------------ offsets

    def commit(self, partitions: list[Partition] | None = None, *, wait: bool = False) -> None:
        """Commits what is safe to commit (of ``partitions``, else of all)."""
        consumer = self.consumer
        assert consumer is not None
        offsets = self.offsets.to_commit(partitions)
        if not offsets:
            return
        self.last_commit = time.monotonic()
        committing = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            if wait:
                consumer.commit(offsets=committing, asynchronous=False)
            else:
                consumer.commit(offsets=committing, asynchronous=True)
        except KafkaException as exc:
            log_event_to(
                kafka_log, logging.WARNING, "offset commit failed", error=exc.args[0].str()
            )
            return
        self.offsets.committed(offsets)

    def commit_if_due(self, interval_s: float) -> None:
        """Commits asynchronously when ``interval_s`` passed since the last commit."""
        if time.monotonic() - self.last_commit >= interval_s:
            self.commit()

    # ------------------------------------------------------------------ rebalances

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: partitions were assigned."""
        self._reapply_pause = True
        self.assigned.update((tp.topic, tp.partition) for tp in partitions)
        if self.assigned:
            if self.ready_at is None:
                self.ready_at = time.monotonic()
            self.ready.set()
        log_event(
            logging.INFO,
            "partitions assigned",
            partitions=",".join(str(tp.partition) for tp in partitions) or "-",
        )

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: partitions go to another member; what finished is committed."""
        revoked = [(tp.topic, tp.partition) for tp in partitions]
        self.commit(revoked, wait=True)
        self.release(revoked)
        log_event(
            logging.INFO,
            "partitions revoked",
            partitions=",".join(str(p) for _, p in revoked) or "-",
        )

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: partitions were lost (nothing can be committed for them)."""
        lost = [(tp.topic, tp.partition) for tp in partitions]
        self.release(lost)
        log_event(logging.WARNING, "partitions lost", partitions=",".join(str(p) for _, p in lost))

    def release(self, partitions: list[Partition]) -> None:
        """Forgets ``partitions``: their held records and their offsets."""
        # Attempts taken from these partitions keep running; their offsets are another
        # member's business now (it will redeliver them, and the scheduler picks one claim).
        gone = set(partitions)
        self.assigned -= gone
        self.offsets.forget(gone)
        self.held = [m for m in self.held if (m.topic(), m.partition()) not in gone]
        for slot in self.attempts.slots():
            slot.offsets = [item for item in slot.offsets if item[0] not in gone]
