"""The worker process: takes dispatch records of one queue and runs them (DESIGN.md §5).

:class:`Worker` is the coordinator: one loop in the calling thread moves records between the
pieces it composes, each the one home of its concern:

=======================================  ===================================================
:mod:`engine.worker.intake`              dispatch records taken, held and paused for
                                         (backpressure), offsets committed up to the lowest
                                         unfinished dispatch (at-least-once), rebalances
:mod:`engine.worker.supervision`         the attempts running, each on a kept thread
                                         (:mod:`engine.worker.threads`), and how they end
:mod:`engine.worker.isolation`           the task template and the pool of children Python
                                         tasks run in, started again when it dies
:mod:`engine.worker.outbox`              reports (size limit, a full producer queue) and
                                         dead letters; dispatches finished here lately
:mod:`engine.worker.control`             kills addressed to this worker
:mod:`engine.worker.leases`              heartbeats every lease/3, ``WorkerLeft`` at stop
:mod:`engine.worker.clients`             the Kafka clients, started once the cluster
                                         answers, closed within a deadline
=======================================  ===================================================

Topics: ``dispatch.<queue>`` (consumer group ``<prefix>workers.<queue>``, auto-commit off,
read_committed), ``reports`` (an idempotent producer, every report of an attempt keyed by its
submission id), ``control`` (every partition, from the end at start-up) and ``deadletter``
(dispatch and control records that cannot be decoded, with the reason).

Shutdown (``stop`` set, e.g. by SIGTERM): stop taking work, let running attempts finish until
the drain deadline, then report the rest in ``WorkerLeft`` (the scheduler retries them), stop
their processes, commit only what finished, and leave the group. Every step has a deadline
(the final commit and the consumers' close run in a helper thread the worker stops waiting
for), so the worker is gone within about ``drain_timeout_s + stop_grace_ms + 12 s`` from any
state, also while the cluster is unreachable.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import Message
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from engine.admin import ensure_topics
from engine.config import Settings
from engine.lifecycle.records import AttemptRef, AttemptReport, Dispatch
from engine.metrics import WORKER_COUNTS, Count, Telemetry, count_families, gauge
from engine.topics import Topics
from engine.worker import leases
from engine.worker.attempt import AttemptOptions
from engine.worker.clients import (
    STARTUP_TRY_S,
    Clients,
    assign_from_end,
    build_clients,
    until_reachable,
    within,
)
from engine.worker.context import wall_ms
from engine.worker.control import KILL, ControlHandler, read_controls
from engine.worker.intake import DispatchIntake
from engine.worker.isolation import (
    ISOLATIONS,
    POOL,
    PROCESS_PER_ATTEMPT,
    THREAD,
    Isolation,
    TaskProcesses,
    pool_options,
)
from engine.worker.logs import kafka_log, log, log_event
from engine.worker.offsets import Partition
from engine.worker.outbox import FinishedDispatches, Outbox
from engine.worker.pool import ChildPool
from engine.worker.supervision import Attempts, Slot
from engine.worker.tasks import TaskRegistry

__all__ = [
    "ISOLATIONS",
    "KILL",
    "POOL",
    "PROCESS_PER_ATTEMPT",
    "THREAD",
    "Isolation",
    "Worker",
    "WorkerOptions",
    "default_worker_id",
    "kafka_log",
    "log",
]

_FLUSH_S = 3.0

_RESTARTS = {
    "restarts": Count(
        "joblog_restarts_total",
        "Times the service replaced its clients (and the scheduler its book).",
        {"service": "worker", "what": "task_template"},
    ),
}
_POOL_COUNTS = {
    "": Count(
        "joblog_worker_pool_children_total",
        "Child processes of the task pool by event (forked, warm, reused, retired.<reason>).",
        label="event",
    ),
}


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker runs, besides its queue and concurrency.

    Attributes:
        drain_timeout_s: on stop, how long running attempts may go on before they are
            reported unfinished.
        stop_grace_ms: SIGTERM-to-SIGKILL time for the processes of unfinished attempts at
            the end of the drain.
        default_lease_ms: the heartbeat period (÷3) when no dispatch said otherwise.
        poll_timeout_s: longest wait for a dispatch record in one loop (also the latency of
            kills and of resuming after a slot frees).
        session_timeout_ms: the group session timeout: how soon a crashed worker's
            partitions go to another worker.
        commit_interval_s: shortest time between two asynchronous offset commits.
        max_held: dispatch records fetched ahead while every slot is taken (not claimed, not
            committed: redelivered if the worker dies); once this many wait, the worker pauses
            its partitions until the hold empties below it.
        attempt: progress interval, output limits, kill steps and memory limit of attempts.
        create_topics: create joblog's topics and this queue's dispatch topic at start-up
            when they are missing.
        isolation: ``"pool"`` runs each Python task attempt in a warm child process, reused
            for later attempts (killable, crash- and leak-proof; module state can carry over
            from one attempt to the next in one child); ``"process-per-attempt"`` forks a
            fresh child for each attempt (nothing carries over, ~14x the cost); ``"thread"``
            runs it on a worker thread (a kill is only the cooperative flag and a crash takes
            the worker down).
        max_attempts_per_child: in pool mode, a child is replaced after this many attempts
            (0: never for their number).
        close_timeout_s: longest wait for the final offset commit, and for closing the
            consumers, at shutdown (both block while the cluster is unreachable).
        max_jobs: once it claimed this many attempts, the worker takes no more, lets them
            end (no drain deadline: their run timeouts hold), and leaves (0: no end). A
            one-shot worker (``max_jobs=1``) is cgkit's ``runNextAvailableJob``.
        idle_exit_s: the worker leaves when it claimed nothing for this long since its
            dispatch partitions were assigned (0: never).
    """

    drain_timeout_s: float = 30.0
    stop_grace_ms: int = 2_000
    default_lease_ms: int = 30_000
    poll_timeout_s: float = 0.05
    session_timeout_ms: int = 10_000
    commit_interval_s: float = 0.2
    max_held: int = 256
    attempt: AttemptOptions = field(default_factory=AttemptOptions)
    create_topics: bool = True
    isolation: Isolation = POOL
    max_attempts_per_child: int = 1_000
    close_timeout_s: float = 3.0
    max_jobs: int = 0
    idle_exit_s: float = 0.0


def default_worker_id() -> str:
    """``host-pid-random``: unique per process, readable in logs."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Worker:
    """A worker of one queue, running up to ``concurrency`` attempts at once.

    Args:
        settings: cluster and topic settings.
        queue: the queue whose dispatch topic it consumes.
        concurrency: attempts run at once (threads for tasks, processes for commands).
        registry: the tasks it can run.
        worker_id: its id in reports and controls (default :func:`default_worker_id`).
        options: timings and limits.

    Attributes:
        ready: set once the worker has dispatch partitions assigned.
        metrics: counts of what it did (``claimed``, ``finished.COMPLETED``, ...).
        telemetry: its Prometheus metrics and health (serve them with
            :func:`engine.metrics.serving`).
    """

    def __init__(
        self,
        settings: Settings,
        queue: str,
        concurrency: int,
        registry: TaskRegistry,
        worker_id: str | None = None,
        *,
        options: WorkerOptions | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency={concurrency} must be at least 1")
        given = options or WorkerOptions()
        if given.max_jobs < 0 or given.idle_exit_s < 0:
            raise ValueError(
                f"max_jobs={given.max_jobs} and idle_exit_s={given.idle_exit_s} must be 0 "
                "(no end) or more"
            )
        self.settings = settings
        self.queue = queue
        self.concurrency = concurrency
        self.registry = registry
        self.worker_id = worker_id or default_worker_id()
        self.options = options = given
        self.topics = Topics(settings.topic_prefix)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.metrics: Counter[str] = Counter()
        self._finished = FinishedDispatches()
        self._outbox: Outbox | None = None
        self._clients: Clients | None = None
        self._attempts = Attempts(
            self.worker_id,
            registry,
            options.attempt,
            settings.limits,
            self._send_attempt_report,
            self.metrics,
            self.host,
            self.pid,
        )
        self._intake = DispatchIntake(
            concurrency,
            options.max_held,
            self._attempts,
            self._finished,
            self._start,
            self._dead_letter,
            self.metrics,
        )
        self._controls = ControlHandler(self.worker_id, self._attempts, self.metrics)
        self._heartbeats = leases.HeartbeatClock(
            leases.WorkerIdentity(self.worker_id, queue, self.host, self.pid, concurrency),
            options.default_lease_ms,
        )
        self._processes = TaskProcesses(
            registry,
            options.isolation,
            pool_options(
                options.isolation,
                concurrency,
                options.max_attempts_per_child,
                options.attempt.memory_limit_bytes,
            ),
        )
        self._hurry = threading.Event()
        self.telemetry = Telemetry("worker", ready=self._intake.ready.is_set)
        self.telemetry.counts(lambda: self.metrics, WORKER_COUNTS)
        self.telemetry.collect(self._metric_families)

    # ------------------------------------------------------------------ what it shows

    @property
    def ready(self) -> threading.Event:
        """Set once the worker has dispatch partitions assigned."""
        return self._intake.ready

    @property
    def max_running(self) -> int:
        """The most attempts it ran at once."""
        return self._attempts.max_running

    @property
    def pool(self) -> ChildPool | None:
        """The child processes Python tasks run in (``None`` in thread mode)."""
        return self._processes.pool

    @property
    def assigned(self) -> list[int]:
        """The dispatch partitions this worker owns now."""
        return sorted(partition for _, partition in self._intake.assigned)

    @property
    def running(self) -> list[AttemptRef]:
        """The attempts running now."""
        return self._attempts.refs()

    def hurry(self) -> None:
        """Ends the drain at once (a second stop signal): what runs is reported unfinished."""
        self._hurry.set()

    # ------------------------------------------------------------------ lifecycle

    def run(self, stop: threading.Event) -> None:
        """Runs until ``stop`` is set, then drains and leaves (see the module docstring).

        Raises:
            KafkaException: a client could not be created or the cluster is unreachable,
                or a consumer hit a fatal error (it would never deliver again).
        """
        try:
            # The template is forked before any Kafka client exists: no librdkafka thread,
            # socket or buffer is copied into it or into the task processes forked from it.
            self._processes.start()
            if not self._start_clients(stop):
                return  # stopped while the cluster was unreachable
            log_event(
                logging.INFO,
                "worker started",
                worker=self.worker_id,
                queue=self.queue,
                concurrency=self.concurrency,
                isolation=self.options.isolation,
                tasks=",".join(self.registry.names()) or "-",
            )
            while not stop.is_set():
                taking = not self._claimed_enough()
                self._step(taking=taking)
                if not taking and not len(self._attempts):
                    break  # ran its max_jobs
                if self._idle_too_long():
                    log_event(logging.INFO, "idle, leaving", idle_s=self.options.idle_exit_s)
                    break
            self._drain()
        finally:
            self._leave()

    def _claimed_enough(self) -> bool:
        return 0 < self.options.max_jobs <= self.metrics["claimed"]

    def _idle_too_long(self) -> bool:
        limit = self.options.idle_exit_s
        if limit <= 0 or self.metrics["claimed"] or len(self._attempts):
            return False
        ready_at = self._intake.ready_at
        return ready_at is not None and time.monotonic() - ready_at >= limit

    def _start_clients(self, stop: threading.Event) -> bool:
        """Creates the clients; ``False`` if ``stop`` was set before the cluster answered."""
        settings = self.settings
        if self.options.create_topics and not until_reachable(
            stop, lambda: ensure_topics(settings, queues=[self.queue], timeout=STARTUP_TRY_S)
        ):
            return False
        self._clients = clients = build_clients(
            settings,
            self.queue,
            self.worker_id,
            self.options.session_timeout_ms,
            self.telemetry.lag.consumer_config(),
        )
        self._outbox = Outbox(
            clients.producer,
            self.topics.reports,
            self.topics.deadletter,
            settings.limits.max_record_bytes,
            f"{settings.topic_prefix}worker/{self.worker_id}",
            self.metrics,
            self._finished,
        )
        self._intake.consumer = clients.dispatch
        if not until_reachable(stop, lambda: assign_from_end(clients.control, self.topics.control)):
            return False
        clients.dispatch.subscribe(
            [self.topics.dispatch(self.queue)],
            on_assign=self._intake.on_assign,
            on_revoke=self._intake.on_revoke,
            on_lost=self._intake.on_lost,
        )
        return True

    # ------------------------------------------------------------------ the loop

    def _step(self, *, taking: bool) -> None:
        clients = self._clients
        assert clients is not None and self._outbox is not None
        intake = self._intake
        self.telemetry.health.beat()
        self._reap()
        self._processes.check()
        intake.apply_pause(taking)
        if taking:
            intake.take_held()
        # Paused partitions return nothing, but polling keeps the worker in its group. One
        # blocking poll returns as soon as a record is there; the rest of the free slots (and
        # of the hold) are filled from what is already fetched. With every slot taken, the
        # poll does not block: the loop waits for an attempt to end instead, so a freed slot
        # is refilled at once.
        full = taking and intake.full
        message = clients.dispatch.poll(0 if full else self.options.poll_timeout_s)
        if message is not None:
            self.telemetry.lag.seen((message,))
            intake.on_message(message, taking=taking)
            room = intake.room() if taking else 0
            if room > 0:
                for more in clients.dispatch.consume(room, 0):
                    intake.on_message(more, taking=taking)
        elif full:
            self._attempts.wait_for_an_end(self.options.poll_timeout_s)
        self._reap()
        read_controls(clients.control, self._controls, self._dead_letter)
        self._attempts.pump()
        self._heartbeat_if_due()
        intake.commit_if_due(self.options.commit_interval_s)
        clients.producer.poll(0)

    def _metric_families(self) -> list[Metric]:
        """What ``/metrics`` shows besides the counts (read at each scrape)."""
        running = len(self._attempts)
        slots = GaugeMetricFamily(
            "joblog_worker_slots", "Attempt slots of the worker.", labels=["state"]
        )
        slots.add_metric(["total"], self.concurrency)
        slots.add_metric(["busy"], min(running, self.concurrency))
        pool = self._processes.pool
        return [
            slots,
            gauge("joblog_worker_attempts_running", "Attempts running now.", running),
            gauge(
                "joblog_worker_held_dispatches",
                "Dispatch records fetched and held while every slot is taken.",
                len(self._intake.held),
            ),
            *count_families({"restarts": self._processes.restarts}, _RESTARTS),
            *count_families(dict(pool.stats) if pool else {}, _POOL_COUNTS),
        ]

    def _on_dispatch_message(self, message: Message, *, taking: bool) -> None:
        self._intake.on_message(message, taking=taking)

    def _start(self, dispatch: Dispatch, partition: Partition, offset: int) -> None:
        lease_ms = dispatch.lease_ms if dispatch.lease_ms > 0 else self.options.default_lease_ms
        self._attempts.start(dispatch, partition, offset, lease_ms, self._processes.pool)
        if self._intake.full:
            self._intake.apply_pause(taking=True)

    def _reap(self) -> None:
        for slot in self._attempts.reap():
            self._intake.ended(slot)

    # ------------------------------------------------------------------ what it sends

    def _send_attempt_report(self, report: AttemptReport) -> None:
        assert self._outbox is not None
        self._outbox.send_attempt_report(report)

    def _dead_letter(self, message: Message, error: Exception) -> None:
        assert self._outbox is not None
        self._outbox.dead_letter(message, error)

    def _heartbeat_if_due(self) -> None:
        assert self._outbox is not None
        slots = self._attempts.slots()
        beats = self._heartbeats.due(
            time.monotonic(),
            [slot.lease_ms for slot in slots],
            [slot.run.ref for slot in slots if not slot.abandoned],
            wall_ms(),
        )
        for key, heartbeat in beats:
            self._outbox.send(key, heartbeat)
        if beats:
            self.metrics["heartbeats"] += 1

    # ------------------------------------------------------------------ shutdown

    def _drain(self) -> None:
        deadline = time.monotonic() + self.options.drain_timeout_s
        log_event(
            logging.INFO,
            "draining",
            running=len(self._attempts),
            deadline_s=self.options.drain_timeout_s,
        )
        self._intake.held.clear()
        while time.monotonic() < deadline and not self._hurry.is_set():
            self._step(taking=False)
            if not len(self._attempts):
                return

    def _leave(self) -> None:
        clients, outbox = self._clients, self._outbox
        try:
            if clients is not None and outbox is not None:
                self._reap()
                unfinished = self._attempts.slots()
                self._send_left(outbox, unfinished)
                grace = self.options.stop_grace_ms
                self._attempts.stop(
                    unfinished, "worker stopping", grace, time.monotonic() + grace / 1000 + 1.0
                )
                self._reap()
                within(
                    self.options.close_timeout_s,
                    "final commit",
                    lambda: self._intake.commit(wait=True),
                )
                remaining = clients.producer.flush(_FLUSH_S)
                if remaining:
                    log_event(logging.ERROR, "reports not delivered at exit", count=remaining)
        finally:
            if clients is not None:

                def close_all() -> None:
                    clients.dispatch.close()
                    clients.control.close()

                within(self.options.close_timeout_s, "consumer close", close_all)
            self._processes.close()
            self._intake.ready.clear()
            self._attempts.close()
            self._clients = self._outbox = self._intake.consumer = None
            pool = self._processes.pool
            pool_stats = {} if pool is None else pool.stats
            log_event(
                logging.INFO,
                "worker stopped",
                worker=self.worker_id,
                **dict(self.metrics),
                **{f"pool.{key}": value for key, value in pool_stats.items()},
            )

    def _send_left(self, outbox: Outbox, unfinished: list[Slot]) -> None:
        for slot in unfinished:
            slot.abandoned = True
        refs = [slot.run.ref for slot in unfinished]
        for key, report in leases.left(self.worker_id, refs, wall_ms()):
            outbox.send(key, report)
        if unfinished:
            log_event(
                logging.WARNING,
                "left unfinished",
                attempts=",".join(f"{ref.job_id}#{ref.attempt}" for ref in refs),
            )
