"""Watching jobs on the ``events`` topic: history first, then live, without polling a database.

A watch reads only the partition of ``events`` that holds the submission (the partition
Kafka's murmur2 partitioner picks for its id, :func:`engine.partitioning.partition_for`), with
``isolation.level=read_committed`` so that it sees exactly the events the scheduler committed,
and keeps the records whose key is the submission id.

:func:`event_watch` yields the submission's (or one job's) events in order. Once the history
that was in the log when the watch started has been read, it yields the :data:`LIVE` sentinel,
exactly once; everything after it happened while watching. The watch ends when the
submission is done (or the watched job reached its terminal status) and everything already in
the log has been yielded, or when its ``timeout`` expires (:class:`WatchTimeout`). A watch
from the live end (``from_start=False``) still reads the history, without yielding it, so a
finished submission yields :data:`LIVE` and ends at once. An id with no events raises
:class:`~engine.errors.UnknownSubmission` once the history is read (or ``appear_timeout``
seconds later), instead of waiting for ever.

Where a watch starts reading: the offset a handle took before its command was sent, or, for
ids made by :func:`engine.client.new_id` (time-ordered), the first record written
:data:`ID_CLOCK_MARGIN_MS` before the id's time (``offsets_for_times``); other ids from
offset 0. Every Kafka call has a deadline; the first answers within
:data:`~engine.client.CONNECT_TIMEOUT_S` or raises :class:`~engine.errors.KafkaUnreachable`.

On top of it: :func:`event_wait` (Flux's ``event_wait``: joblog's and Flux's event names,
:class:`JobException` for a fatal exception that ends the job, :class:`EventNotFound`, an
``OSError`` with ``errno.ENODATA``, when the log ends without the event),
:func:`event_watch_async` (Flux's future, :class:`JobEventWatchFuture`),
:func:`wait_until_done`, and :class:`Watcher`, which calls ``on_state_changed``,
``on_job_completed``, ``on_submission_completed``, ``on_progress`` and each job's own
``on_completed`` from a thread, under joblog's names or an HPC scheduler's
(``task_state_changed``, ``task_completed``, ``job_completed``, ``task_progress_updated``).
A ``eventlog=`` selector keeps the events of one of Flux's eventlogs
(:data:`~engine.lifecycle.names.EVENTLOGS`). They all fold with the core's read model,
:class:`SubmissionView` and :class:`JobView` (:mod:`engine.lifecycle.views`), re-exported here
with the event names. Flux's own call shapes are in :mod:`engine.flux`.
"""

from __future__ import annotations

import errno
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Final, Generic, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from engine import kafka
from engine.client import (
    CONNECT_TIMEOUT_S,
    cluster_metadata,
    id_time_ms,
    kafka_failure,
    topic_partitions,
)
from engine.config import Settings
from engine.errors import CommandRejectedError, JoblogError, UnknownSubmission
from engine.lifecycle.names import (
    EVENT_NAMES,
    event_name,
    event_names,
    eventlog_names,
    names_of,
    snake_name,
)
from engine.lifecycle.records import (
    CommandRejected,
    Event,
    JobDeleted,
    JobExceptionRaised,
    JobProgressed,
    JobRetryScheduled,
    JobStatus,
    SubmissionAccepted,
    SubmissionCompleted,
)
from engine.lifecycle.views import JobView, SubmissionView, status_after, to_datetime
from engine.partitioning import partition_for
from engine.topics import Topics

log = logging.getLogger("joblog.watch")

# --------------------------------------------------------------------------- errors


class WatchTimeout(JoblogError, TimeoutError):
    """Nothing that ends the wait arrived within the timeout."""


class EventNotFound(JoblogError, OSError, LookupError):
    """The job (or submission) ended without the awaited event.

    An ``OSError`` with ``errno.ENODATA``, as Flux's ``event_wait`` raises (``ENOENT`` for a
    job the submission does not have), and a ``LookupError`` as before.

    Attributes:
        errno: ``errno.ENODATA`` (the log ended without the event) or ``errno.ENOENT`` (no
            such job).
        strerror: the message.
    """

    def __init__(self, message: str, code: int = errno.ENODATA) -> None:
        super().__init__(code, message)

    def __str__(self) -> str:
        return str(self.strerror)


class SubmissionRejected(CommandRejectedError):
    """The scheduler rejected the submission; nothing of it will run.

    Attributes:
        submission_id: the submission.
        code: machine-readable reason (a :class:`~engine.lifecycle.records.RejectionCode`),
            e.g. ``cycle``, ``unknown_dependency``, ``duplicate_submission``.
        reason: what to fix.
        command_id: the rejected submit command, when known.
    """

    def __init__(self, submission_id: str, code: str, reason: str, *, command_id: str = "") -> None:
        super().__init__(
            f"submission {submission_id} was rejected ({code}): {reason}",
            command_type="SubmitJobs",
            command_id=command_id,
            submission_id=submission_id,
            job_id=None,
            code=code,
            reason=reason,
        )


class JobException(JoblogError):
    """An exception event of a job (Flux's ``JobException``), raised by :func:`event_wait`.

    Task code ends its own attempt with :class:`engine.worker.FatalException` instead (whose
    former name, ``engine.worker.JobException``, is kept as an alias of it, not of this).

    Attributes:
        type: what kind of exception, e.g. ``cancel``, ``timeout`` or a Python exception type.
        note: a brief human-readable explanation.
        severity: 0 is fatal to the attempt; anything else is recorded and the job goes on.
        timestamp: when the scheduler recorded it (UTC).
        submission_id / job_id / attempt: where it happened.
        traceback: the task's traceback, when there is one.
    """

    def __init__(self, event: Event) -> None:
        body = event.body
        if not isinstance(body, JobExceptionRaised):
            raise TypeError(f"not an exception event: {event.name}")
        super().__init__(
            f"job {event.job_id} raised {body.type} (severity {body.severity}): {body.note}"
        )
        self.event = event
        self.type = body.type
        self.note = body.note
        self.severity = body.severity
        self.timestamp = to_datetime(event.timestamp)
        self.submission_id = event.submission_id
        self.job_id = event.job_id
        self.attempt = body.attempt
        self.traceback = body.traceback


# --------------------------------------------------------------------------- names


class Live:
    """The type of :data:`LIVE`: the point where history ends and live events begin."""

    _instance: Live | None = None

    def __new__(cls) -> Live:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "LIVE"


#: Yielded once by :func:`event_watch` between the history and the live events.
LIVE: Final = Live()


# --------------------------------------------------------------------------- the stream


class _Idle:
    """Yielded by :func:`_stream` when a poll returned nothing (lets callers tick)."""


_IDLE: Final = _Idle()


def events_consumer(settings: Settings, **extra: object) -> Consumer:
    """A consumer for reading ``events`` by assignment: read_committed, no group commits.

    Built by :func:`engine.kafka.consumer` (the shared settings); ``extra`` overrides this
    reader's own settings (such as ``enable.partition.eof``).
    """
    return kafka.consumer(
        settings,
        f"{settings.topic_prefix}watch-{uuid.uuid4().hex}",
        {
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
            **extra,
        },
    )


def events_partition(
    consumer: Consumer,
    settings: Settings,
    submission_id: str,
    *,
    timeout: float = CONNECT_TIMEOUT_S,
) -> TopicPartition:
    """The partition of ``events`` that holds a submission.

    Raises:
        KafkaUnreachable: the cluster did not answer within ``timeout``.
        JoblogError: the topic does not exist.
    """
    topic = Topics(settings.topic_prefix).events
    metadata = cluster_metadata(consumer, settings, topic, timeout=timeout)
    count = topic_partitions(metadata, topic, settings)
    return TopicPartition(topic, partition_for(submission_id, count))


#: How far before an id's creation time (:func:`engine.client.id_time_ms`) a watch starts
#: reading: the clocks of clients and schedulers must agree within this margin.
ID_CLOCK_MARGIN_MS = 10 * 60 * 1000


def history_start(
    consumer: Consumer,
    partition: TopicPartition,
    submission_id: str,
    *,
    start_offset: int | None = None,
    timeout: float = CONNECT_TIMEOUT_S,
    settings: Settings,
) -> int:
    """The offset of ``partition`` where the history of a submission can begin.

    ``start_offset`` when given (a handle knows the end offset before its submit was sent);
    for an id made by :func:`engine.client.new_id`, the first record written within
    :data:`ID_CLOCK_MARGIN_MS` before the id's time; otherwise the beginning of the log.

    Raises:
        KafkaUnreachable: the cluster did not answer within ``timeout``.
    """
    if start_offset is not None:
        return start_offset
    created = id_time_ms(submission_id)
    if created is None:
        return OFFSET_BEGINNING
    query = TopicPartition(partition.topic, partition.partition, created - ID_CLOCK_MARGIN_MS)
    try:
        (found,) = consumer.offsets_for_times([query], timeout=timeout)
        if found.error is None and found.offset >= 0:
            return int(found.offset)
        # Nothing that recent: every record is older than the submission, so its history
        # (if any) starts at the end.
        _, high = consumer.get_watermark_offsets(partition, timeout=timeout)
    except KafkaException as exc:
        raise kafka_failure(exc, settings, timeout) from None
    return int(high)


def _stream(
    settings: Settings,
    submission_id: str,
    job_id: str | None,
    *,
    from_start: bool,
    timeout: float | None,
    stop: threading.Event | None,
    idle_every: float | None = None,
    until_done: bool = True,
    appear_timeout: float | None = 0.0,
    start_offset: int | None = None,
) -> Iterator[Event | Live | _Idle]:
    from engine import codec

    started = time.monotonic()
    deadline = None if timeout is None else started + timeout

    def budget() -> float:
        if deadline is None:
            return CONNECT_TIMEOUT_S
        return max(0.1, min(CONNECT_TIMEOUT_S, deadline - time.monotonic()))

    what = f"job {submission_id}/{job_id}" if job_id else submission_id
    key = submission_id.encode()
    view = SubmissionView(submission_id)
    consumer = events_consumer(settings)
    try:
        partition = events_partition(consumer, settings, submission_id, timeout=budget())
        partition.offset = history_start(
            consumer,
            partition,
            submission_id,
            start_offset=start_offset,
            timeout=budget(),
            settings=settings,
        )
        consumer.assign([partition])
        live = False
        appear_by: float | None = None
        last_yield = time.monotonic()
        while stop is None or not stop.is_set():
            wait = 0.2
            now = time.monotonic()
            if deadline is not None:
                remaining = deadline - now
                if remaining <= 0:
                    if not live:
                        raise WatchTimeout(
                            f"{what}: reading its history from {partition.topic}"
                            f"[{partition.partition}] did not finish within {timeout:g} s"
                        )
                    raise WatchTimeout(f"{what}: nothing ended the watch within {timeout:g} s")
                wait = min(wait, remaining)
            if appear_by is not None and not view.known and now >= appear_by:
                raise UnknownSubmission(submission_id, partition.topic, throttled=view.throttled)
            message = consumer.poll(wait)
            if message is None:
                if idle_every is not None and time.monotonic() - last_yield >= idle_every:
                    last_yield = time.monotonic()
                    yield _IDLE
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    if not live:
                        live = True
                        if not view.known:
                            if appear_timeout is not None and appear_timeout <= 0:
                                raise UnknownSubmission(
                                    submission_id, partition.topic, throttled=view.throttled
                                )
                            if appear_timeout is not None:
                                appear_by = time.monotonic() + appear_timeout
                        yield LIVE
                    if until_done and _finished(view, job_id):
                        return
                    continue
                if kafka.consumer_fatal(error):
                    raise JoblogError(f"reading {partition.topic} failed: {error.str()}")
                log.warning("reading %s: %s", partition.topic, error.str())
                continue
            if message.key() != key:
                continue
            value = message.value()
            if value is None:
                continue
            try:
                event = codec.decode_event(value)
            except JoblogError as exc:
                log.warning(
                    "skipping undecodable event at %s[%s]@%s: %s",
                    partition.topic,
                    message.partition(),
                    message.offset(),
                    exc,
                )
                continue
            view.apply(event)
            if job_id is not None:
                if isinstance(event.body, SubmissionAccepted) and job_id not in event.body.job_ids:
                    raise EventNotFound(
                        f"submission {submission_id} has no job {job_id!r}", errno.ENOENT
                    )
                if event.job_id != job_id and not (
                    isinstance(event.body, CommandRejected) and view.rejection is event.body
                ):
                    continue
            if not live and not from_start:
                continue  # history is folded, not yielded
            last_yield = time.monotonic()
            yield event
            if until_done and live and _finished(view, job_id):
                return
    finally:
        consumer.close()


def _finished(view: SubmissionView, job_id: str | None) -> bool:
    if view.rejection is not None:
        return True
    if job_id is None:
        return view.outcome is not None
    job = view.jobs.get(job_id)
    return job is not None and job.is_terminal


def event_watch(
    submission_id: str,
    job_id: str | None = None,
    *,
    from_start: bool = True,
    timeout: float | None = None,
    settings: Settings | None = None,
    stop: threading.Event | None = None,
    until_done: bool = True,
    appear_timeout: float | None = 0.0,
    start_offset: int | None = None,
    eventlog: str | None = None,
) -> Iterator[Event | Live]:
    """Yields the events of a submission, or of one of its jobs: history, :data:`LIVE`, live.

    An id with no events raises :class:`~engine.errors.UnknownSubmission` once the history
    is read (or ``appear_timeout`` seconds later). With ``from_start=False`` the history is
    read but not yielded: a finished submission yields :data:`LIVE` and ends at once.

    Example::

        for event in event_watch(submission.id):
            if event is LIVE:
                print("-- now live --")
            else:
                print(event.name, event.job_id)

    Args:
        submission_id: the submission.
        job_id: only this job's events (and the rejection of the submission, if any).
        from_start: yield the history, then :data:`LIVE`, then live events; ``False``
            folds the history silently and yields :data:`LIVE` first (and nothing else if
            the submission is already done).
        timeout: seconds the whole watch may last; ``None`` waits for ever.
        settings: cluster settings (``Settings.from_env()`` when omitted).
        stop: set it (from another thread) to end the watch quietly.
        until_done: end the watch once the submission is done (or the job terminal) and the
            history is read; ``False`` keeps watching (for deletions, late rejections).
        appear_timeout: seconds an id with no events yet may take to appear after the history
            is read (``0``: fail at once; ``None``: wait, e.g. for a submission just sent).
        start_offset: read the submission's partition from this offset (one before its first
            event, such as :attr:`engine.client.CommandHandle.start_offset`); by default a
            watch starts near the id's creation time for ids made by joblog
            (:func:`engine.client.new_id`), else at offset 0.
        eventlog: only the events of one of Flux's eventlogs
            (:data:`~engine.lifecycle.names.EVENTLOGS`): ``"eventlog"`` (everything but
            command output), ``"guest.exec.eventlog"`` (assigned, started, ended) or
            ``"guest.output"`` (the ``JobOutput`` chunks); ``None``: every event.

    Yields:
        Events in log order, and :data:`LIVE` once where the history ends.

    Raises:
        ValueError: ``eventlog`` names no eventlog.
        UnknownSubmission: the id has no events (see ``appear_timeout``).
        WatchTimeout: the watch did not end within ``timeout``.
        EventNotFound: the submission has no job ``job_id`` (``errno.ENOENT``).
        KafkaUnreachable: the cluster did not answer.
        JoblogError: the ``events`` topic is missing or cannot be read.
    """
    kept = None if eventlog is None else eventlog_names(eventlog)
    return _selected(
        _stream(
            settings or Settings.from_env(),
            submission_id,
            job_id,
            from_start=from_start,
            timeout=timeout,
            stop=stop,
            until_done=until_done,
            appear_timeout=appear_timeout,
            start_offset=start_offset,
        ),
        kept,
    )


def _selected(
    items: Iterator[Event | Live | _Idle], kept: frozenset[str] | None
) -> Iterator[Event | Live]:
    for item in items:
        if isinstance(item, _Idle):
            continue
        if kept is None or isinstance(item, Live) or item.name in kept:
            yield item


#: How long the waiting helpers (:func:`event_wait`, :func:`wait_until_done`,
#: :class:`Watcher`) let a submission with no events take to appear: long enough for a
#: scheduler to decide one just sent, short enough to name a mistyped id.
APPEAR_TIMEOUT_S: Final = 30.0

#: Events that can come after a job is terminal: waiting for them outlives the job.
_AFTER_THE_END = names_of(JobDeleted, CommandRejected)


def event_wait(
    submission_id: str,
    job_id: str | None,
    name: str,
    timeout: float | None = None,
    *,
    raise_job_exception: bool = True,
    settings: Settings | None = None,
    appear_timeout: float | None = APPEAR_TIMEOUT_S,
    start_offset: int | None = None,
    eventlog: str | None = None,
) -> Event:
    """Waits for a job's (or the submission's) event called ``name`` and returns it.

    Reads the history first, so an event that already happened is returned at once.

    ``name`` is a joblog name (``JobStarted``, ``job_started``, ``started``) or one of Flux's
    (``submit``, ``depend``, ``alloc``, ``start``, ``exception``, ``finish``, ``clean``, ...:
    :data:`~engine.lifecycle.names.FLUX_EVENTS`); a Flux name that stands for several joblog
    events is met by the first of them (``finish``: ``JobCompleted``, ``JobFailed`` or
    ``JobCanceled``).

    A fatal exception (severity 0) raises :class:`JobException` when it ends the job: when
    the attempt it failed is the last one. One followed by a retry (``JobRetryScheduled``)
    does not end the job, and the wait goes on.

    Args:
        submission_id: the submission.
        job_id: the job; ``None`` for submission events such as ``SubmissionCompleted``.
        name: the event name (see above).
        timeout: longest wait in seconds (``None``: for ever).
        raise_job_exception: raise :class:`JobException` when a fatal exception that ends
            the job arrives before the awaited event (Flux's ``raiseJobException``).
        settings: cluster settings (``Settings.from_env()`` when omitted).
        appear_timeout / start_offset: as for :func:`event_watch`; by default a submission
            with no events may take :data:`APPEAR_TIMEOUT_S` to appear (one just sent).
        eventlog: look only in one of Flux's eventlogs (see :func:`event_watch`); ``name``
            must have an event there.

    Returns:
        The first matching event.

    Raises:
        ValueError: no event has that name (or none in ``eventlog``).
        JobException: a fatal exception ended the job first (``type``, ``note``,
            ``severity``).
        EventNotFound: the job or submission ended without such an event: an ``OSError``
            with ``errno.ENODATA`` (waits for ``JobDeleted`` and ``CommandRejected`` go on
            after the end, until ``timeout``).
        SubmissionRejected: the submission was rejected.
        UnknownSubmission: no such submission appeared.
        WatchTimeout: nothing came within ``timeout``.
    """
    wanted = event_names(name)
    if eventlog is not None:
        held = eventlog_names(eventlog)
        if not wanted & held:
            raise ValueError(f"eventlog {eventlog!r} has no {name!r} event")
        wanted &= held
    saw_rejection: CommandRejected | None = None
    fatal = FatalExceptions(job_id)
    for item in event_watch(
        submission_id,
        job_id,
        from_start=True,
        timeout=timeout,
        settings=settings,
        until_done=not wanted <= _AFTER_THE_END,
        appear_timeout=appear_timeout,
        start_offset=start_offset,
    ):
        if isinstance(item, Live):
            continue
        ended_by = fatal.see(item)
        if raise_job_exception and ended_by is not None:
            raise JobException(ended_by)
        if item.name in wanted and (job_id is None or item.job_id == job_id):
            return item
        body = item.body
        if isinstance(body, CommandRejected) and body.command_type == "SubmitJobs":
            saw_rejection = body
    if raise_job_exception and fatal.open:
        raise JobException(fatal.open[0])
    if saw_rejection is not None:
        raise SubmissionRejected(submission_id, saw_rejection.code, saw_rejection.reason)
    what = f"job {submission_id}/{job_id}" if job_id else f"submission {submission_id}"
    raise EventNotFound(f"{what}: its eventlog ended before event={name}")


class FatalExceptions:
    """Tells which fatal exceptions end their job, from the events in log order (pure).

    A fatal exception (``JobExceptionRaised`` with severity 0) fails its attempt; the
    scheduler writes the attempt's outcome right after it: ``JobRetryScheduled`` when another
    attempt follows (the job goes on), else the job's failure. :meth:`see` holds each fatal
    exception until the next status event of its job says which.

    Args:
        job_id: only this job's exceptions; ``None``: every job's.
    """

    def __init__(self, job_id: str | None = None) -> None:
        self.job_id = job_id
        self._held: dict[str, Event] = {}

    @property
    def open(self) -> list[Event]:
        """The fatal exceptions whose outcome no event has said yet."""
        return list(self._held.values())

    def see(self, event: Event) -> Event | None:
        """Folds one event; returns the fatal exception it shows ended its job, if any."""
        if self.job_id is not None and event.job_id != self.job_id:
            return None
        body = event.body
        if isinstance(body, JobExceptionRaised):
            if body.severity == 0:
                self._held[event.job_id] = event
            return None
        if status_after(body) is None:
            return None
        held = self._held.pop(event.job_id, None)
        if held is None or isinstance(body, JobRetryScheduled):
            return None
        return held


# --------------------------------------------------------------------------- the future

T = TypeVar("T")


class _End:
    """Queued by a :class:`JobEventWatchFuture` once its watch ended."""


_END: Final = _End()


class JobEventWatchFuture(Generic[T]):
    """A watch running on a thread, read one event at a time (Flux's ``JobEventWatchFuture``).

    :meth:`get_event` returns the next event, blocking until it comes, and ``None`` once the
    stream ended (the job is done, or :meth:`cancel` was called); an error that ended the
    watch (an unknown id, a timeout, an unreachable cluster) is raised by the call that
    reaches it. :meth:`then` runs a callback on the watch's thread each time an event
    arrives (and once at the end), from which :meth:`get_event` returns it at once.

    Built by :func:`event_watch_async` (joblog's :class:`Event` values) and
    :func:`engine.flux.event_watch_async` (Flux's ``EventLogEvent`` values).

    Args:
        items: makes the stream, given the event that stops it.
        name: the thread's name.
    """

    def __init__(
        self, items: Callable[[threading.Event], Generator[T, None, None]], *, name: str
    ) -> None:
        self._items = items
        self._stop = threading.Event()
        self._queue: queue.Queue[T | _End] = queue.Queue()
        self._current: T | _End | None = None
        self._error: BaseException | None = None
        self._callbacks: list[tuple[Callable[..., object], tuple[object, ...]]] = []
        self._lock = threading.Lock()  # the reader's: get_event, reset
        self._callbacks_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def get_event(self, autoreset: bool = True, timeout: float | None = None) -> T | None:
        """The next event, or ``None`` once the stream ended.

        Args:
            autoreset: take the event, so that the next call waits for the one after it
                (Flux's default); ``False`` leaves it, and the next call returns it again
                until :meth:`reset`.
            timeout: longest wait in seconds (``None``: until the next event or the end).

        Raises:
            WatchTimeout: no event within ``timeout`` (the watch goes on).
            JoblogError: whatever ended the watch (``UnknownSubmission``,
                ``WatchTimeout``, ``KafkaUnreachable``, ...), once the events before it
                were read.
        """
        with self._lock:
            if self._current is None:
                try:
                    self._current = self._queue.get(timeout=timeout)
                except queue.Empty:
                    raise WatchTimeout(f"no event within {timeout:g} s") from None
            current = self._current
            if isinstance(current, _End):
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                return None
            if autoreset:
                self._current = None
            return current

    def reset(self) -> None:
        """Lets the next :meth:`get_event` wait for the next event (after ``autoreset=False``)."""
        with self._lock:
            if not isinstance(self._current, _End):
                self._current = None

    def is_ready(self) -> bool:
        """Whether :meth:`get_event` would return (an event or the end) without waiting."""
        return self._current is not None or not self._queue.empty()

    def cancel(self) -> None:
        """Ends the stream: the watch stops within a fraction of a second, the events that
        already arrived can still be read, then :meth:`get_event` returns ``None``."""
        self._stop.set()

    def then(self, callback: Callable[..., object], *args: object) -> JobEventWatchFuture[T]:
        """Calls ``callback(future, *args)`` on the watch's thread after each event arrives
        and once when the stream ends; returns the future. A callback that raises ends the
        watch, and :meth:`get_event` raises its error."""
        with self._callbacks_lock:
            self._callbacks.append((callback, args))
        if self.is_ready():
            callback(self, *args)
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Waits for the watch's thread to end; returns whether it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        items = self._items(self._stop)
        try:
            for item in items:
                self._put(item)
        except BaseException as exc:  # handed to the reader by get_event
            self._error = exc
        finally:
            items.close()  # closes the watch's consumer now, not when collected
            try:
                self._put(_END)
            except Exception:
                log.exception("a callback of a finished event watch failed")

    def _put(self, item: T | _End) -> None:
        self._queue.put(item)
        with self._callbacks_lock:
            callbacks = list(self._callbacks)
        for callback, args in callbacks:
            callback(self, *args)


def event_watch_async(
    submission_id: str,
    job_id: str | None = None,
    *,
    from_start: bool = True,
    timeout: float | None = None,
    settings: Settings | None = None,
    appear_timeout: float | None = APPEAR_TIMEOUT_S,
    start_offset: int | None = None,
    eventlog: str | None = None,
) -> JobEventWatchFuture[Event]:
    """Watches a submission (or one job) on a thread: Flux's ``event_watch_async``.

    Example::

        future = event_watch_async(submission.id, "render")
        while (event := future.get_event()) is not None:
            print(event.name)

    Args:
        submission_id / job_id / from_start / timeout / settings / start_offset / eventlog:
            as for :func:`event_watch` (there is no :data:`LIVE` in the future's events).
        appear_timeout: as for :func:`event_watch`; by default a submission with no events
            may take :data:`APPEAR_TIMEOUT_S` to appear (one just sent).

    Returns:
        The running future; :meth:`JobEventWatchFuture.get_event` reads it.

    Raises:
        ValueError: ``eventlog`` names no eventlog.
    """
    kept = None if eventlog is None else eventlog_names(eventlog)
    resolved = settings or Settings.from_env()

    def items(stop: threading.Event) -> Generator[Event, None, None]:
        for item in _selected(
            _stream(
                resolved,
                submission_id,
                job_id,
                from_start=from_start,
                timeout=timeout,
                stop=stop,
                appear_timeout=appear_timeout,
                start_offset=start_offset,
            ),
            kept,
        ):
            if isinstance(item, Event):
                yield item

    return JobEventWatchFuture(items, name=f"joblog-event-watch-{submission_id}")


# --------------------------------------------------------------------------- callbacks

ProgressCallback = Callable[[SubmissionView], object]
JobCallback = Callable[[JobView], object]
StateCallback = Callable[[JobView, JobStatus | None], object]
SubmissionCallback = Callable[[SubmissionView], object]
EventCallback = Callable[[Event], object]
_C = TypeVar("_C", StateCallback, JobCallback, SubmissionCallback)


def wait_until_done(
    submission_id: str,
    *,
    progress: ProgressCallback | None = None,
    timeout: float | None = None,
    interval: float = 1.0,
    settings: Settings | None = None,
    appear_timeout: float | None = APPEAR_TIMEOUT_S,
    start_offset: int | None = None,
) -> SubmissionView:
    """Blocks until every job of the submission is terminal.

    Args:
        submission_id: the submission.
        progress: called with the current :class:`SubmissionView` after every state change or
            progress event, and every ``interval`` seconds in between (so it can refresh a
            display or check a flag; raise from it to stop waiting).
        timeout: longest wait in seconds (``None``: for ever).
        interval: the longest pause between two calls of ``progress``.
        settings: cluster settings (``Settings.from_env()`` when omitted).
        appear_timeout / start_offset: as for :func:`event_watch`; by default a submission
            with no events may take :data:`APPEAR_TIMEOUT_S` to appear (one just sent).

    Returns:
        The final view; ``view.outcome`` says how the submission ended.

    Raises:
        SubmissionRejected: the scheduler rejected the submission.
        UnknownSubmission: no such submission appeared.
        WatchTimeout: it was not done within ``timeout``.
    """
    view = SubmissionView(submission_id)
    for item in _stream(
        settings or Settings.from_env(),
        submission_id,
        None,
        from_start=True,
        timeout=timeout,
        stop=None,
        idle_every=interval if progress is not None else None,
        appear_timeout=appear_timeout,
        start_offset=start_offset,
    ):
        if isinstance(item, Event):
            before, after = view.apply(item)
            changed = after is not None and (
                before is None
                or before.status != after.status
                or isinstance(item.body, JobProgressed)
            )
            if progress is not None and (changed or view.done):
                progress(view)
        elif isinstance(item, _Idle) and progress is not None:
            progress(view)
    if view.rejection is not None:
        raise SubmissionRejected(submission_id, view.rejection.code, view.rejection.reason)
    return view


#: Progress callbacks of a :class:`Watcher` come at most once per job per this many seconds
#: (the HPC scheduler's 200 ms; the log itself holds at most one progress event per job per
#: 200 ms of the scheduler's clock, and a watcher replaying history would otherwise call on
#: every one of them at once).
PROGRESS_INTERVAL_S: Final = 0.2


class ProgressThrottle:
    """At most one progress call per job per ``interval`` seconds, the last value wins (pure:
    the caller passes the clock).

    :meth:`offer` says whether a job's progress is due now or held; :meth:`due` hands out
    the held values whose interval has passed; :meth:`take` hands out a job's held value
    ahead of time (before its status changes, so progress is never reported after the end).

    Args:
        interval: seconds between two calls for one job; ``0`` lets every update through.
    """

    def __init__(self, interval: float = PROGRESS_INTERVAL_S) -> None:
        if interval < 0:
            raise ValueError(f"progress interval must be 0 or more seconds, not {interval}")
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, JobView] = {}

    def offer(self, job: JobView, now: float) -> JobView | None:
        """``job`` when its progress is due now, else ``None`` (held until :meth:`due`)."""
        last = self._last.get(job.job_id)
        if last is None or now - last >= self.interval:
            self._last[job.job_id] = now
            self._held.pop(job.job_id, None)
            return job
        self._held[job.job_id] = job
        return None

    def due(self, now: float) -> list[JobView]:
        """The held values whose interval has passed, taken."""
        ready = [
            job for job_id, job in self._held.items() if now - self._last[job_id] >= self.interval
        ]
        for job in ready:
            del self._held[job.job_id]
            self._last[job.job_id] = now
        return ready

    def take(self, job_id: str, now: float) -> JobView | None:
        """The held value of one job, taken (``None`` if nothing is held)."""
        job = self._held.pop(job_id, None)
        if job is not None:
            self._last[job_id] = now
        return job

    def take_all(self, now: float) -> list[JobView]:
        """Every held value, taken."""
        held = list(self._held.values())
        for job in held:
            self._last[job.job_id] = now
        self._held.clear()
        return held


class WatchedTask:
    """One job of a :class:`Watcher` (an HPC scheduler's *task*): its own ``on_completed``.

    Set :attr:`on_completed` to a ``(job)`` callback; it is called once, when the job reaches
    a terminal status, or at once if it already has.
    """

    def __init__(self, watcher: Watcher, job_id: str) -> None:
        self._watcher = watcher
        self.job_id = job_id

    @property
    def view(self) -> JobView | None:
        """The job as the watcher knows it so far (``None`` before its first event)."""
        return self._watcher.view.jobs.get(self.job_id)

    @property
    def on_completed(self) -> JobCallback | None:
        return self._watcher._on_completed.get(self.job_id)

    @on_completed.setter
    def on_completed(self, callback: JobCallback | None) -> None:
        self._watcher.on_completed(self.job_id, callback)


class Watcher:
    """Runs callbacks for a submission's events on a background thread.

    joblog's names, and an HPC scheduler's for the same callbacks (its *job* is a joblog
    submission and its *tasks* are the submission's jobs): ``on_state_changed`` /
    ``task_state_changed`` (a job changed status), ``on_job_completed`` / ``task_completed``
    (a job reached a terminal status, whichever), ``on_progress`` /
    ``task_progress_updated`` (a job reported progress; at most one call per job per
    ``progress_interval``, the last value wins; a value held back when the job changes
    status is given at once, before that change, so the final value is never lost),
    ``on_submission_completed`` / ``job_completed`` (every job is terminal), and each job's
    own ``on_completed`` (:meth:`task`). Each completion callback is called once per job and
    once per submission. With ``from_start=True`` (the default) the history is replayed
    through the callbacks first.

    Example (an HPC scheduler's progress pattern)::

        def update_progress(job: SubmissionView) -> None:
            done = sum(task.fraction or 0.0 for task in job.jobs.values())
            print(f"{100 * done / len(job.jobs):.0f}% done")

        with Watcher(submission.id, task_progress_updated=lambda task: print(task.job_id)):
            submission.wait_until_done(update_progress)

    Args:
        submission_id: the submission.
        settings: cluster settings (``Settings.from_env()`` when omitted).
        from_start: replay the history through the callbacks before the live events.
        on_state_changed / task_state_changed: ``(job, previous_status)`` after each status
            change.
        on_job_completed / task_completed: ``(job)`` when a job reaches a terminal status.
        on_submission_completed / job_completed: ``(view)`` once every job is terminal.
        on_progress / task_progress_updated: ``(job)`` after progress.
        on_event: ``(event)`` for every event.
        on_completed: ``{job_id: callback}``: each job's own ``(job)`` completion callback
            (also ``task(job_id).on_completed``).
        progress_interval: seconds between two progress calls for one job
            (:data:`PROGRESS_INTERVAL_S`; ``0``: one call per progress event).
        appear_timeout / start_offset: as for :func:`event_watch` (an unknown id stops the
            thread with :class:`~engine.errors.UnknownSubmission` in :attr:`error`).

    Raises:
        ValueError: a callback is given under both of its names, or ``progress_interval``
            is negative.

    Attributes:
        view: the fold of the events seen so far.
        error: the exception that stopped the thread (a callback's or the watch's), if any.
        live: set once the history has been replayed.
    """

    def __init__(
        self,
        submission_id: str,
        *,
        settings: Settings | None = None,
        from_start: bool = True,
        on_state_changed: StateCallback | None = None,
        on_job_completed: JobCallback | None = None,
        on_submission_completed: SubmissionCallback | None = None,
        on_progress: JobCallback | None = None,
        on_event: EventCallback | None = None,
        on_completed: Mapping[str, JobCallback] | None = None,
        task_state_changed: StateCallback | None = None,
        task_completed: JobCallback | None = None,
        job_completed: SubmissionCallback | None = None,
        task_progress_updated: JobCallback | None = None,
        progress_interval: float = PROGRESS_INTERVAL_S,
        appear_timeout: float | None = APPEAR_TIMEOUT_S,
        start_offset: int | None = None,
    ) -> None:
        self.submission_id = submission_id
        self.appear_timeout = appear_timeout
        self.start_offset = start_offset
        self.settings = settings or Settings.from_env()
        self.from_start = from_start
        self.on_state_changed = _one("on_state_changed", on_state_changed, task_state_changed)
        self.on_job_completed = _one("on_job_completed", on_job_completed, task_completed)
        self.on_submission_completed = _one(
            "on_submission_completed", on_submission_completed, job_completed
        )
        self.on_progress = _one("on_progress", on_progress, task_progress_updated)
        self.on_event = on_event
        self.view = SubmissionView(submission_id)
        self.error: BaseException | None = None
        self.live = threading.Event()
        self._throttle = ProgressThrottle(progress_interval)
        self._on_completed: dict[str, JobCallback] = dict(on_completed or {})
        self._completed: set[str] = set()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"joblog-watcher-{submission_id}", daemon=True
        )

    # An HPC scheduler's names for the same callbacks.

    @property
    def task_state_changed(self) -> StateCallback | None:
        """``on_state_changed`` under an HPC scheduler's name."""
        return self.on_state_changed

    @task_state_changed.setter
    def task_state_changed(self, callback: StateCallback | None) -> None:
        self.on_state_changed = callback

    @property
    def task_completed(self) -> JobCallback | None:
        """``on_job_completed`` under an HPC scheduler's name."""
        return self.on_job_completed

    @task_completed.setter
    def task_completed(self, callback: JobCallback | None) -> None:
        self.on_job_completed = callback

    @property
    def job_completed(self) -> SubmissionCallback | None:
        """``on_submission_completed`` under an HPC scheduler's name."""
        return self.on_submission_completed

    @job_completed.setter
    def job_completed(self, callback: SubmissionCallback | None) -> None:
        self.on_submission_completed = callback

    @property
    def task_progress_updated(self) -> JobCallback | None:
        """``on_progress`` under an HPC scheduler's name."""
        return self.on_progress

    @task_progress_updated.setter
    def task_progress_updated(self, callback: JobCallback | None) -> None:
        self.on_progress = callback

    def task(self, job_id: str) -> WatchedTask:
        """One job of the submission, to set its own ``on_completed`` callback."""
        return WatchedTask(self, job_id)

    def on_completed(self, job_id: str, callback: JobCallback | None) -> None:
        """Sets (or, with ``None``, removes) the completion callback of one job.

        Called once, when the job reaches a terminal status; at once, from this thread, if
        the watcher already saw it do so.
        """
        with self._lock:
            if callback is None:
                self._on_completed.pop(job_id, None)
                return
            self._on_completed[job_id] = callback
            job = self.view.jobs.get(job_id)
            if job is not None and job.is_terminal and job_id in self._completed:
                del self._on_completed[job_id]
                callback(job)

    def start(self) -> Watcher:
        """Starts the thread; returns the watcher."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Asks the thread to stop (it does within a fraction of a second)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Waits for the thread to end; returns whether it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> Watcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join(10)

    def _run(self) -> None:
        interval = self._throttle.interval
        try:
            for item in _stream(
                self.settings,
                self.submission_id,
                None,
                from_start=self.from_start,
                timeout=None,
                stop=self._stop,
                idle_every=interval if interval > 0 else None,
                appear_timeout=self.appear_timeout,
                start_offset=self.start_offset,
            ):
                with self._lock:
                    if isinstance(item, Live):
                        self.live.set()
                    elif isinstance(item, Event):
                        self._dispatch(item)
                    self._progress(self._throttle.due(time.monotonic()))
            with self._lock:
                self._progress(self._throttle.take_all(time.monotonic()))
        except BaseException as exc:  # kept for the owner of the watcher to inspect
            self.error = exc
            log.exception("watcher of %s stopped", self.submission_id)
        finally:
            self.live.set()

    def _progress(self, jobs: list[JobView]) -> None:
        if self.on_progress is not None:
            for job in jobs:
                self.on_progress(job)

    def _dispatch(self, event: Event) -> None:
        before, after = self.view.apply(event)
        if self.on_event is not None:
            self.on_event(event)
        if after is not None:
            now = time.monotonic()
            previous = None if before is None else before.status
            if before is None or before.status != after.status:
                held = self._throttle.take(after.job_id, now)
                self._progress([] if held is None else [held])
                if self.on_state_changed is not None:
                    self.on_state_changed(after, previous)
                if after.is_terminal and after.job_id not in self._completed:
                    self._completed.add(after.job_id)
                    if self.on_job_completed is not None:
                        self.on_job_completed(after)
                    own = self._on_completed.pop(after.job_id, None)
                    if own is not None:
                        own(after)
            if isinstance(event.body, JobProgressed):
                due = self._throttle.offer(after, now)
                self._progress([] if due is None else [due])
        if isinstance(event.body, SubmissionCompleted) and self.on_submission_completed:
            self.on_submission_completed(self.view)


def _one(name: str, joblog: _C | None, hpc: _C | None) -> _C | None:
    if joblog is not None and hpc is not None:
        raise ValueError(f"give {name} or its HPC scheduler name, not both")
    return joblog if joblog is not None else hpc


__all__ = [
    "APPEAR_TIMEOUT_S",
    "EVENT_NAMES",
    "ID_CLOCK_MARGIN_MS",
    "LIVE",
    "PROGRESS_INTERVAL_S",
    "EventCallback",
    "EventNotFound",
    "FatalExceptions",
    "JobCallback",
    "JobEventWatchFuture",
    "JobException",
    "JobView",
    "Live",
    "ProgressCallback",
    "ProgressThrottle",
    "StateCallback",
    "SubmissionCallback",
    "SubmissionRejected",
    "SubmissionView",
    "WatchTimeout",
    "WatchedTask",
    "Watcher",
    "event_name",
    "event_names",
    "event_wait",
    "event_watch",
    "event_watch_async",
    "events_consumer",
    "events_partition",
    "history_start",
    "snake_name",
    "status_after",
    "to_datetime",
    "wait_until_done",
]
