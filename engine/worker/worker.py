"""The worker process: takes dispatch records of one queue and runs them (DESIGN.md §5).

One loop in the calling thread moves records; each attempt is supervised by a thread of its
own (a daemon thread kept for the next attempt once this one ended). A Python task runs in a
child process of the worker's pool (:mod:`engine.worker.pool`: warm children forked from the
template of :mod:`engine.worker.forkserver`, which is started before the Kafka clients; or a
fresh fork per attempt), or in the attempt thread itself in thread mode; a command job runs
as a child process:

* ``dispatch.<queue>``: consumer group ``<prefix>workers.<queue>``, auto-commit off,
  read_committed. Up to ``concurrency`` attempts run at once; when all slots are taken and
  ``max_held`` more records wait, the assigned partitions are paused, and resumed when the
  hold shrinks (backpressure).
* Offsets are committed up to the lowest unfinished dispatch of each partition
  (:mod:`engine.worker.offsets`), so a crash redelivers unfinished work: at-least-once.
* ``reports``: an idempotent producer, every report of an attempt keyed by its submission id
  (the scheduler instance that owns the submission sees them in order). Heartbeats go out
  every lease/3: one per submission with running attempts, and one keyed by the worker id.
* ``control``: every partition assigned (no group), from the end at start-up; kills addressed
  to this worker stop the attempt (cooperative flag, then SIGTERM/SIGKILL for processes).
* ``deadletter``: dispatch and control records that cannot be decoded, with the reason.

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
import queue
import socket
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from engine import codec, kafka
from engine.admin import ensure_topics
from engine.config import Settings
from engine.errors import BrokerError, CodecError
from engine.lifecycle.records import (
    AttemptRef,
    AttemptReport,
    Claimed,
    Control,
    Dispatch,
    Finished,
    Heartbeat,
    Outcome,
    WorkerLeft,
)
from engine.logs import RepeatLimiter
from engine.topics import Topics
from engine.worker.attempt import AttemptOptions, AttemptRun
from engine.worker.context import wall_ms
from engine.worker.forkserver import ForkServer, ForkServerError
from engine.worker.offsets import OffsetTracker, Partition
from engine.worker.pool import PER_ATTEMPT, ChildPool, PoolOptions
from engine.worker.tasks import TaskRegistry

log = logging.getLogger("joblog.worker")
#: The worker's lines that a broker outage repeats (consume errors, undelivered reports, failed
#: commits): the first passes, then fewer and fewer, each saying how many were held back.
kafka_log = logging.getLogger("joblog.worker.kafka")
kafka_log.addFilter(RepeatLimiter())

#: Where a Python task runs: a warm child process of the pool (the default), a fresh child
#: process per attempt, or a worker thread.
Isolation = Literal["pool", "process-per-attempt", "thread"]
POOL: Isolation = "pool"
PROCESS_PER_ATTEMPT: Isolation = "process-per-attempt"
THREAD: Isolation = "thread"
ISOLATIONS: tuple[Isolation, ...] = (POOL, PROCESS_PER_ATTEMPT, THREAD)

KILL = "kill"
_RECENTLY_FINISHED = 10_000
_PRODUCE_BLOCK_S = 10.0
_STARTUP_TRY_S = 5.0
_FLUSH_S = 3.0
_FORK_RETRY_S = 5.0


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


@dataclass
class _Slot:
    """One attempt running on this worker."""

    run: AttemptRun
    lease_ms: int
    offsets: list[tuple[Partition, int]]
    ended: threading.Event = field(default_factory=threading.Event)
    abandoned: bool = False  # reported in WorkerLeft: its later reports are dropped


class _AttemptThreads:
    """Daemon threads that run attempts, one attempt at a time each, kept for the next one.

    Starting a thread per attempt made the loop wait for each new thread to get the GIL
    (about a millisecond while other attempts hold it); handing work to a kept thread is a
    queue put. A thread is started only when none is idle, so there are about as many
    threads as attempts ever ran at once.
    """

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._started = 0

    def run(self, work: Callable[[], None]) -> None:
        with self._lock:
            start = self._idle == 0
            if start:
                self._started += 1
            else:
                self._idle -= 1
        if start:
            threading.Thread(
                target=self._serve, name=f"joblog-attempt-{self._started}", daemon=True
            ).start()
        self._work.put(work)

    def _serve(self) -> None:
        while (work := self._work.get()) is not None:
            work()
            with self._lock:
                self._idle += 1

    def close(self) -> None:
        """Lets every thread end once it is done with its attempt."""
        for _ in range(self._started):
            self._work.put(None)


def _shrunk(report: Finished, size: int, limit: int) -> Finished:
    return replace(
        report,
        outcome=Outcome.FAILED,
        result=None,
        traceback="",
        error_type="ReportTooLarge",
        error_note=(
            f"the attempt's Finished report is {size} bytes, above the record limit of {limit} "
            "bytes (JOBLOG_MAX_RECORD_BYTES); raise it or lower the other JOBLOG_MAX_* limits"
        )[:2000],
        status_line=None,
    )


def default_worker_id() -> str:
    """``host-pid-random``: unique per process, readable in logs."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _fields(**fields: object) -> str:
    return " ".join(f"{key}={value}" for key, value in fields.items())


def _log(level: int, event: str, **fields: object) -> None:
    """Logs ``event`` with ``key=value`` fields (also kept on the record for JSON output)."""
    _log_to(log, level, event, **fields)


def _log_to(logger: logging.Logger, level: int, event: str, **fields: object) -> None:
    """:func:`_log` to another logger (:data:`kafka_log` for lines an outage repeats)."""
    if logger.isEnabledFor(level):
        logger.log(
            level, "%s %s", event, _fields(**fields), extra={"event": event, "fields": fields}
        )


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
        max_running: the most attempts it ran at once.
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
        self.settings = settings
        self.queue = queue
        self.concurrency = concurrency
        self.registry = registry
        self.worker_id = worker_id or default_worker_id()
        self.options = options or WorkerOptions()
        self.topics = Topics(settings.topic_prefix)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.ready = threading.Event()
        self.metrics: Counter[str] = Counter()
        self.max_running = 0
        self._running: dict[str, _Slot] = {}
        self._done: list[str] = []
        self._done_lock = threading.Lock()
        self._wake = threading.Event()
        self._held: list[Message] = []
        self._offsets = OffsetTracker()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._recent_lock = threading.Lock()
        self._paused = False
        self._assigned: set[Partition] = set()
        self._reapply_pause = False
        self._last_heartbeat = 0.0
        self._last_commit = 0.0
        self._hurry = threading.Event()
        self._threads = _AttemptThreads()
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._control: Consumer | None = None
        self._fork_server: ForkServer | None = None
        self._pool: ChildPool | None = None
        self._next_fork_try = 0.0

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
            self._start_fork_server()
            if not self._start_clients(stop):
                return  # stopped while the cluster was unreachable
            _log(
                logging.INFO,
                "worker started",
                worker=self.worker_id,
                queue=self.queue,
                concurrency=self.concurrency,
                isolation=self.options.isolation,
                tasks=",".join(self.registry.names()) or "-",
            )
            while not stop.is_set():
                self._step(taking=True)
            self._drain()
        finally:
            self._leave()

    def _pool_options(self) -> PoolOptions:
        if self.options.isolation == PROCESS_PER_ATTEMPT:
            return PER_ATTEMPT
        # A child that kept more than half the memory limit would leave its next attempt
        # less than half of it: replaced.
        return PoolOptions(
            size=self.concurrency,
            max_attempts_per_child=max(0, self.options.max_attempts_per_child),
            recycle_rss_bytes=self.options.attempt.memory_limit_bytes // 2,
        )

    def _start_fork_server(self, *, first: bool = True) -> None:
        """Forks the task template and the pool's warm children (process isolation).

        Raises:
            ForkServerError: the first template could not be forked (the worker does not
                start); a later failure only fails the attempts until a fork works again.
        """
        if self.options.isolation == THREAD or not len(self.registry):
            return
        from engine.worker.child import run_attempt_child

        registry = self.registry
        server = ForkServer(lambda sock, template: run_attempt_child(sock, template, registry))
        # Kept even if it did not start: its attempts then fail (WorkerChildDied) instead of
        # running unisolated on a thread, and the loop tries again.
        self._fork_server = server
        self._pool = pool = ChildPool(server, self._pool_options())
        try:
            server.start()
        except ForkServerError as exc:
            if first:
                raise
            _log(logging.ERROR, "task template not started", error=exc)
            return
        pool.start()
        _log(logging.DEBUG, "task template started", pid=server.pid, warm=len(pool.idle))

    def _check_fork_server(self) -> None:
        server = self._fork_server
        if server is None or server.alive or time.monotonic() < self._next_fork_try:
            return
        self._next_fork_try = time.monotonic() + _FORK_RETRY_S
        # Its children died with it (their attempts fail with WorkerChildDied); the next
        # attempts get a new template, forked from this thread as the first one was.
        if self._pool is not None:
            self._pool.close()
        if server.pid is not None:
            _log(logging.ERROR, "task template process ended; starting a new one", pid=server.pid)
            server.close(timeout=1.0)
        self._start_fork_server(first=False)

    @property
    def pool(self) -> ChildPool | None:
        """The child processes Python tasks run in (``None`` in thread mode)."""
        return self._pool

    def hurry(self) -> None:
        """Ends the drain at once (a second stop signal): what runs is reported unfinished."""
        self._hurry.set()

    @property
    def assigned(self) -> list[int]:
        """The dispatch partitions this worker owns now."""
        return sorted(partition for _, partition in self._assigned)

    @property
    def running(self) -> list[AttemptRef]:
        """The attempts running now."""
        return [slot.run.ref for slot in list(self._running.values())]

    def _start_clients(self, stop: threading.Event) -> bool:
        """Creates the clients; ``False`` if ``stop`` was set before the cluster answered."""
        settings = self.settings
        if self.options.create_topics and not self._until_reachable(
            stop, lambda: ensure_topics(settings, queues=[self.queue], timeout=_STARTUP_TRY_S)
        ):
            return False
        self._producer = kafka.producer(
            settings,
            {
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "client.id": f"joblog-worker-{self.worker_id}",
            },
        )
        tunable = {
            "session.timeout.ms": self.options.session_timeout_ms,
            "heartbeat.interval.ms": max(self.options.session_timeout_ms // 4, 500),
            "partition.assignment.strategy": "cooperative-sticky",
            # Dispatch records are small; a bounded prefetch keeps a paused worker lean.
            "queued.max.messages.kbytes": 1024,
            "fetch.wait.max.ms": 100,
        }
        self._consumer = kafka.consumer(
            settings,
            f"{settings.topic_prefix}workers.{self.queue}",
            {
                "client.id": f"joblog-worker-{self.worker_id}",
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
            },
            overridable=tunable,
        )
        self._control = kafka.consumer(
            settings,
            f"{settings.topic_prefix}worker-control.{self.worker_id}",
            {"fetch.wait.max.ms": 50},
        )
        if not self._until_reachable(stop, self._assign_control):
            return False
        self._consumer.subscribe(
            [self.topics.dispatch(self.queue)],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        return True

    def _until_reachable(self, stop: threading.Event, step: Callable[[], None]) -> bool:
        """Runs ``step`` until it works, retrying with backoff while the cluster is away.

        Returns:
            ``False`` when ``stop`` was set first.

        Raises:
            ConfigurationError: the cluster answered but the topics are wrong.
        """
        delay = 0.5
        while not stop.is_set():
            try:
                step()
                return True
            except (BrokerError, KafkaException) as exc:
                _log_to(kafka_log, logging.WARNING, "cluster not reachable, retrying", error=exc)
                stop.wait(delay)
                delay = min(delay * 2, 10.0)
        return False

    def _assign_control(self) -> None:
        # From the end: a kill can only be for an attempt this process claimed, and every
        # claim comes after this point.
        assert self._control is not None
        topic = self.topics.control
        metadata = self._control.list_topics(topic, timeout=_STARTUP_TRY_S)
        partitions = sorted(metadata.topics[topic].partitions) if topic in metadata.topics else []
        assignment = []
        for partition in partitions:
            try:
                _, high = self._control.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=_STARTUP_TRY_S
                )
            except KafkaException:
                high = OFFSET_END
            assignment.append(TopicPartition(topic, partition, high))
        if not assignment:
            _log(logging.WARNING, "control topic missing", topic=topic)
        self._control.assign(assignment)

    # ------------------------------------------------------------------ the loop

    def _step(self, *, taking: bool) -> None:
        assert self._consumer is not None and self._producer is not None
        self._reap()
        self._check_fork_server()
        self._apply_pause(taking)
        if taking:
            while self._held and len(self._running) < self.concurrency:
                self._take(self._held.pop(0))
        # Paused partitions return nothing, but polling keeps the worker in its group. One
        # blocking poll returns as soon as a record is there; the rest of the free slots (and
        # of the hold) are filled from what is already fetched. With every slot taken, the
        # poll does not block: the loop waits for an attempt to end instead, so a freed slot
        # is refilled at once.
        full = taking and len(self._running) >= self.concurrency
        message = self._consumer.poll(0 if full else self.options.poll_timeout_s)
        if message is not None:
            self._on_dispatch_message(message, taking=taking)
            room = (
                max(0, self.concurrency - len(self._running))
                + max(0, self.options.max_held - len(self._held))
                if taking
                else 0
            )
            if room > 0:
                for more in self._consumer.consume(room, 0):
                    self._on_dispatch_message(more, taking=taking)
        elif full:
            self._wait_for_a_free_slot()
        self._reap()
        self._read_controls()
        for slot in list(self._running.values()):
            slot.run.pump()
        self._heartbeat_if_due()
        if time.monotonic() - self._last_commit >= self.options.commit_interval_s:
            self._commit()
        self._producer.poll(0)

    def _wait_for_a_free_slot(self) -> None:
        self._wake.clear()
        with self._done_lock:
            ended = bool(self._done)
        if not ended:
            self._wake.wait(self.options.poll_timeout_s)

    def _apply_pause(self, taking: bool) -> None:
        assert self._consumer is not None
        # Pausing makes the consumer drop what it fetched ahead, and resuming costs a fetch
        # round trip (~0.1 s): a hold of fetched records lets a busy worker run on through it.
        want = not taking or (
            len(self._running) >= self.concurrency and len(self._held) >= self.options.max_held
        )
        if want == self._paused and not self._reapply_pause:
            return
        assignment = self._consumer.assignment()
        try:
            if want:
                self._consumer.pause(assignment)
            else:
                self._consumer.resume(assignment)
        except KafkaException as exc:
            _log(logging.WARNING, "pause/resume failed", error=exc)
            return
        if want != self._paused:
            _log(
                logging.DEBUG,
                "paused" if want else "resumed",
                running=len(self._running),
                partitions=len(assignment),
            )
        self._paused = want
        self._reapply_pause = False

    # ------------------------------------------------------------------ dispatch

    def _on_dispatch_message(self, message: Message, *, taking: bool) -> None:
        error = message.error()
        if error is not None:
            if kafka.consumer_fatal(error):
                raise KafkaException(error)  # the consumer never delivers again
            if error.code() != KafkaError._PARTITION_EOF:
                _log_to(kafka_log, logging.WARNING, "dispatch consume error", error=error.str())
            return
        if not taking or len(self._running) >= self.concurrency or self._held:
            # Fetched before the pause took effect: kept, not taken, so not committed.
            self._held.append(message)
            return
        self._take(message)

    def _take(self, message: Message) -> None:
        partition: Partition = (message.topic() or "", message.partition() or 0)
        offset = message.offset() or 0
        try:
            dispatch = codec.decode_dispatch(message.value() or b"")
        except CodecError as exc:
            self._dead_letter(message, exc)
            self._offsets.done(partition, offset)
            return
        running = self._running.get(dispatch.dispatch_id)
        if running is not None:
            # Redelivered while it runs here (the partition came back after a rebalance).
            self._offsets.taken(partition, offset)
            running.offsets.append((partition, offset))
            self.metrics["duplicates"] += 1
            return
        with self._recent_lock:
            already = dispatch.dispatch_id in self._recent
        if already:
            self._offsets.done(partition, offset)
            self.metrics["duplicates"] += 1
            _log(logging.INFO, "dispatch already finished here", dispatch=dispatch.dispatch_id)
            return
        self._offsets.taken(partition, offset)
        self._start(dispatch, partition, offset)

    def _start(self, dispatch: Dispatch, partition: Partition, offset: int) -> None:
        slot = _Slot(
            run=AttemptRun(
                dispatch,
                self.worker_id,
                self.registry,
                lambda report: self._send_attempt_report(slot, report),
                self.options.attempt,
                limits=self.settings.limits,
                pool=self._pool,
            ),
            lease_ms=dispatch.lease_ms if dispatch.lease_ms > 0 else self.options.default_lease_ms,
            offsets=[(partition, offset)],
        )
        self._running[dispatch.dispatch_id] = slot
        self.max_running = max(self.max_running, len(self._running))
        self.metrics["claimed"] += 1
        ref = slot.run.ref
        self._send_attempt_report(
            slot, Claimed(ref=ref, host=self.host, pid=self.pid, sent_at=wall_ms())
        )
        _log(
            logging.INFO,
            "attempt claimed",
            submission=ref.submission_id,
            job=ref.job_id,
            attempt=ref.attempt,
            kind=slot.run.kind,
            running=len(self._running),
        )
        self._threads.run(lambda: self._execute(slot))
        if len(self._running) >= self.concurrency:
            self._apply_pause(taking=True)

    def _execute(self, slot: _Slot) -> None:
        try:
            self._execute_attempt(slot)
        finally:
            slot.ended.set()

    def _execute_attempt(self, slot: _Slot) -> None:
        run = slot.run
        try:
            finished = run.execute()
        except Exception as exc:  # a bug of the worker itself: still end the attempt
            log.exception("attempt crashed the worker code")
            finished = Finished(
                ref=run.ref,
                outcome=Outcome.FAILED,
                error_type="WorkerError",
                error_note=f"{type(exc).__name__}: {exc}",
                sent_at=wall_ms(),
            )
            self._send_attempt_report(slot, finished)
        ref = run.ref
        _log(
            logging.INFO,
            "attempt finished",
            submission=ref.submission_id,
            job=ref.job_id,
            attempt=ref.attempt,
            outcome=finished.outcome.value,
            exit_code=finished.exit_code,
            error_type=finished.error_type or "-",
        )
        self.metrics[f"finished.{finished.outcome.value}"] += 1
        with self._done_lock:
            self._done.append(ref.dispatch_id)
        self._wake.set()

    def _reap(self) -> None:
        with self._done_lock:
            done, self._done = self._done, []
        for dispatch_id in done:
            slot = self._running.pop(dispatch_id, None)
            if slot is None or slot.abandoned:
                continue  # an abandoned attempt's dispatch stays uncommitted: redelivered
            for partition, offset in slot.offsets:
                self._offsets.finished(partition, offset)

    # ------------------------------------------------------------------ control

    def _read_controls(self) -> None:
        assert self._control is not None
        for message in self._control.consume(100, timeout=0):
            error = message.error()
            if error is not None:
                if kafka.consumer_fatal(error):
                    raise KafkaException(error)  # the consumer never delivers again
                if error.code() != KafkaError._PARTITION_EOF:
                    _log_to(
                        kafka_log,
                        logging.WARNING,
                        "control consume error",
                        error=error.str(),
                    )
                continue
            try:
                control = codec.decode_control(message.value() or b"")
            except CodecError as exc:
                self._dead_letter(message, exc)
                continue
            if control.worker_id == self.worker_id:
                self._on_control(control)

    def _on_control(self, control: Control) -> None:
        if control.action != KILL:
            _log(logging.WARNING, "unknown control action", action=control.action)
            return
        slot = self._find(control)
        if slot is None or slot.run.finished is not None:
            _log(
                logging.INFO,
                "kill for an attempt not running here",
                submission=control.submission_id,
                job=control.job_id,
                attempt=control.attempt,
            )
            return
        self.metrics["kills"] += 1
        _log(
            logging.INFO,
            "attempt kill",
            submission=control.submission_id,
            job=control.job_id,
            attempt=control.attempt,
            reason=control.reason,
            grace_ms=control.grace_ms,
        )
        slot.run.cancel(control.reason, control.grace_ms)

    def _find(self, control: Control) -> _Slot | None:
        if control.dispatch_id:
            return self._running.get(control.dispatch_id)
        for slot in self._running.values():
            ref = slot.run.ref
            if (ref.submission_id, ref.job_id, ref.attempt) == (
                control.submission_id,
                control.job_id,
                control.attempt,
            ):
                return slot
        return None

    # ------------------------------------------------------------------ reports

    def _send_attempt_report(self, slot: _Slot, report: AttemptReport) -> None:
        if slot.abandoned:
            return  # the scheduler was told this worker will not finish it
        on_delivery = None
        if isinstance(report, Finished):
            dispatch_id = report.ref.dispatch_id

            def on_delivery(error: KafkaError | None, _message: Message) -> None:
                if error is None:
                    self._remember_finished(dispatch_id)

        self._send(report.ref.submission_id, report, on_delivery)

    def _remember_finished(self, dispatch_id: str) -> None:
        with self._recent_lock:
            self._recent[dispatch_id] = None
            while len(self._recent) > _RECENTLY_FINISHED:
                self._recent.popitem(last=False)

    def _send(
        self,
        key: str,
        report: Any,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        producer = self._producer
        assert producer is not None
        try:
            value = codec.encode_report(report)
        except CodecError as exc:
            _log(logging.ERROR, "report not encodable", report=type(report).__name__, error=exc)
            return
        limit = self.settings.limits.max_record_bytes
        if len(value) > limit:
            # Cannot happen with limits that fit the record (engine.limits); a last guard so
            # a misconfiguration fails the attempt instead of losing its Finished.
            _log(
                logging.ERROR,
                "report larger than a record",
                report=type(report).__name__,
                size=len(value),
                limit=limit,
            )
            if not isinstance(report, Finished):
                return
            value = codec.encode_report(_shrunk(report, len(value), limit))
        callback = on_delivery or self._on_delivery
        deadline = time.monotonic() + _PRODUCE_BLOCK_S
        while True:
            try:
                producer.produce(
                    self.topics.reports, key=key.encode(), value=value, on_delivery=callback
                )
                return
            except BufferError:
                # The local queue is full (the cluster is away): let deliveries drain it, for
                # a while; a report dropped after that is made good by the lease.
                if time.monotonic() >= deadline:
                    _log_to(
                        kafka_log,
                        logging.ERROR,
                        "report dropped, the producer queue stays full",
                        report=type(report).__name__,
                    )
                    return
                producer.poll(0.1)
            except KafkaException as exc:
                _log_to(
                    kafka_log,
                    logging.ERROR,
                    "report not produced",
                    report=type(report).__name__,
                    error=exc,
                )
                return

    @staticmethod
    def _on_delivery(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            _log_to(kafka_log, logging.ERROR, "report not delivered", error=error.str())

    def _heartbeat_if_due(self) -> None:
        slots = list(self._running.values())
        lease_ms = min((slot.lease_ms for slot in slots), default=self.options.default_lease_ms)
        now = time.monotonic()
        if now - self._last_heartbeat < lease_ms / 3000:
            return
        self._last_heartbeat = now
        by_submission: dict[str, list[AttemptRef]] = {}
        for slot in slots:
            if not slot.abandoned:
                by_submission.setdefault(slot.run.ref.submission_id, []).append(slot.run.ref)
        sent_at = wall_ms()

        def heartbeat(attempts: tuple[AttemptRef, ...]) -> Heartbeat:
            return Heartbeat(
                worker_id=self.worker_id,
                queue=self.queue,
                host=self.host,
                pid=self.pid,
                slots_total=self.concurrency,
                slots_used=len(slots),
                attempts=attempts,
                lease_ms=lease_ms,
                sent_at=sent_at,
            )

        for submission_id, refs in by_submission.items():
            self._send(submission_id, heartbeat(tuple(refs)))
        self._send(self.worker_id, heartbeat(()))
        self.metrics["heartbeats"] += 1

    # ------------------------------------------------------------------ offsets

    def _commit(self, partitions: list[Partition] | None = None, *, wait: bool = False) -> None:
        consumer = self._consumer
        assert consumer is not None
        offsets = self._offsets.to_commit(partitions)
        if not offsets:
            return
        self._last_commit = time.monotonic()
        committing = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            if wait:
                consumer.commit(offsets=committing, asynchronous=False)
            else:
                consumer.commit(offsets=committing, asynchronous=True)
        except KafkaException as exc:
            _log_to(kafka_log, logging.WARNING, "offset commit failed", error=exc.args[0].str())
            return
        self._offsets.committed(offsets)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._reapply_pause = True
        self._assigned.update((tp.topic, tp.partition) for tp in partitions)
        if self._assigned:
            self.ready.set()
        _log(
            logging.INFO,
            "partitions assigned",
            partitions=",".join(str(tp.partition) for tp in partitions) or "-",
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = [(tp.topic, tp.partition) for tp in partitions]
        self._commit(revoked, wait=True)
        self._release(revoked)
        _log(
            logging.INFO,
            "partitions revoked",
            partitions=",".join(str(p) for _, p in revoked) or "-",
        )

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = [(tp.topic, tp.partition) for tp in partitions]
        self._release(lost)
        _log(logging.WARNING, "partitions lost", partitions=",".join(str(p) for _, p in lost))

    def _release(self, partitions: list[Partition]) -> None:
        # Attempts taken from these partitions keep running; their offsets are another
        # member's business now (it will redeliver them, and the scheduler picks one claim).
        gone = set(partitions)
        self._assigned -= gone
        self._offsets.forget(gone)
        self._held = [m for m in self._held if (m.topic(), m.partition()) not in gone]
        for slot in self._running.values():
            slot.offsets = [item for item in slot.offsets if item[0] not in gone]

    # ------------------------------------------------------------------ dead letters

    def _dead_letter(self, message: Message, error: Exception) -> None:
        self.metrics["dead_letters"] += 1
        _log(
            logging.WARNING,
            "dead letter",
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            error=error,
        )
        letter = kafka.dead_letter(
            message, error, f"{self.settings.topic_prefix}worker/{self.worker_id}"
        )
        assert self._producer is not None
        kafka.send_dead_letter(self._producer, self.topics.deadletter, letter)

    # ------------------------------------------------------------------ shutdown

    def _drain(self) -> None:
        deadline = time.monotonic() + self.options.drain_timeout_s
        _log(
            logging.INFO,
            "draining",
            running=len(self._running),
            deadline_s=self.options.drain_timeout_s,
        )
        self._held.clear()
        while time.monotonic() < deadline and not self._hurry.is_set():
            self._step(taking=False)
            if not self._running:
                return

    def _leave(self) -> None:
        consumer, control, producer = self._consumer, self._control, self._producer
        try:
            if producer is not None and consumer is not None:
                self._reap()
                unfinished = list(self._running.values())
                self._send_left(unfinished)
                self._stop_unfinished(unfinished)
                self._reap()
                self._within(
                    self.options.close_timeout_s, "final commit", lambda: self._commit(wait=True)
                )
                remaining = producer.flush(_FLUSH_S)
                if remaining:
                    _log(logging.ERROR, "reports not delivered at exit", count=remaining)
        finally:
            clients = [client for client in (consumer, control) if client is not None]

            def close_all() -> None:
                for client in clients:
                    client.close()

            if clients:
                self._within(self.options.close_timeout_s, "consumer close", close_all)
            if self._pool is not None:
                self._pool.close()
            if self._fork_server is not None:
                self._fork_server.close()
                self._fork_server = None
            self.ready.clear()
            self._threads.close()
            self._consumer = self._control = self._producer = None
            pool_stats = {} if self._pool is None else self._pool.stats
            _log(
                logging.INFO,
                "worker stopped",
                worker=self.worker_id,
                **dict(self.metrics),
                **{f"pool.{key}": value for key, value in pool_stats.items()},
            )

    @staticmethod
    def _within(timeout_s: float, what: str, step: Callable[[], object]) -> None:
        """Runs ``step`` in a helper thread and waits at most ``timeout_s`` for it: librdkafka's
        synchronous commit and consumer close have no deadline of their own and block while
        the cluster is unreachable."""
        failure: list[BaseException] = []

        def run() -> None:
            try:
                step()
            except (KafkaException, RuntimeError) as exc:
                failure.append(exc)

        helper = threading.Thread(target=run, name=f"joblog-{what.replace(' ', '-')}", daemon=True)
        helper.start()
        helper.join(timeout_s)
        if helper.is_alive():
            _log_to(
                kafka_log,
                logging.WARNING,
                f"{what} did not finish in time",
                timeout_s=timeout_s,
            )
        elif failure:
            _log_to(kafka_log, logging.WARNING, f"{what} failed", error=failure[0])

    def _send_left(self, unfinished: list[_Slot]) -> None:
        by_submission: dict[str, list[AttemptRef]] = {}
        for slot in unfinished:
            slot.abandoned = True
            by_submission.setdefault(slot.run.ref.submission_id, []).append(slot.run.ref)
        sent_at = wall_ms()
        for submission_id, refs in by_submission.items():
            self._send(
                submission_id,
                WorkerLeft(worker_id=self.worker_id, unfinished=tuple(refs), sent_at=sent_at),
            )
        self._send(self.worker_id, WorkerLeft(worker_id=self.worker_id, sent_at=sent_at))
        if unfinished:
            _log(
                logging.WARNING,
                "left unfinished",
                attempts=",".join(
                    f"{r.job_id}#{r.attempt}" for s in unfinished for r in [s.run.ref]
                ),
            )

    def _stop_unfinished(self, unfinished: list[_Slot]) -> None:
        """Terminates what is left so no process outlives the worker."""
        grace = self.options.stop_grace_ms
        for slot in unfinished:
            slot.run.cancel("worker stopping", grace)
        deadline = time.monotonic() + grace / 1000 + 1.0
        for slot in unfinished:
            slot.ended.wait(max(0.0, deadline - time.monotonic()))
