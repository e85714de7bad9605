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

On top of it: :func:`event_wait` (Flux's ``event_wait``, raising :class:`JobException` for a
fatal exception), :func:`wait_until_done`, and :class:`Watcher`, which calls
``on_state_changed``, ``on_job_completed``, ``on_submission_completed`` and ``on_progress``
from a thread. They all fold with the core's read model, :class:`SubmissionView` and
:class:`JobView` (:mod:`engine.lifecycle.views`), re-exported here with the event names.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Final

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from engine.client import (
    CONNECT_TIMEOUT_S,
    cluster_metadata,
    id_time_ms,
    kafka_failure,
    topic_partitions,
)
from engine.config import Settings
from engine.errors import CommandRejectedError, JoblogError, UnknownSubmission
from engine.lifecycle.names import EVENT_NAMES, event_name, names_of, snake_name
from engine.lifecycle.records import (
    CommandRejected,
    Event,
    JobDeleted,
    JobExceptionRaised,
    JobProgressed,
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


class EventNotFound(JoblogError, LookupError):
    """The job (or submission) ended without the awaited event (Flux's ``ENODATA``)."""


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
    """A consumer for reading ``events`` by assignment: read_committed, no group commits."""
    return Consumer(
        settings.client_config(
            **{
                "group.id": f"joblog-watch-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 100,
                **extra,
            }
        )
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
                raise UnknownSubmission(submission_id, partition.topic)
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
                                raise UnknownSubmission(submission_id, partition.topic)
                            if appear_timeout is not None:
                                appear_by = time.monotonic() + appear_timeout
                        yield LIVE
                    if until_done and _finished(view, job_id):
                        return
                    continue
                if error.fatal():
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
                    raise EventNotFound(f"submission {submission_id} has no job {job_id!r}")
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

    Yields:
        Events in log order, and :data:`LIVE` once where the history ends.

    Raises:
        UnknownSubmission: the id has no events (see ``appear_timeout``).
        WatchTimeout: the watch did not end within ``timeout``.
        EventNotFound: the submission has no job ``job_id``.
        KafkaUnreachable: the cluster did not answer.
        JoblogError: the ``events`` topic is missing or cannot be read.
    """
    for item in _stream(
        settings or Settings.from_env(),
        submission_id,
        job_id,
        from_start=from_start,
        timeout=timeout,
        stop=stop,
        until_done=until_done,
        appear_timeout=appear_timeout,
        start_offset=start_offset,
    ):
        if not isinstance(item, _Idle):
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
) -> Event:
    """Waits for a job's (or the submission's) event called ``name`` and returns it.

    Reads the history first, so an event that already happened is returned at once.

    Args:
        submission_id: the submission.
        job_id: the job; ``None`` for submission events such as ``SubmissionCompleted``.
        name: the event name, e.g. ``JobStarted``, ``job_started`` or ``started``.
        timeout: longest wait in seconds (``None``: for ever).
        raise_job_exception: raise :class:`JobException` when a fatal exception event
            (severity 0) of the job arrives before the awaited event.
        settings: cluster settings (``Settings.from_env()`` when omitted).
        appear_timeout / start_offset: as for :func:`event_watch`; by default a submission
            with no events may take :data:`APPEAR_TIMEOUT_S` to appear (one just sent).

    Returns:
        The first matching event.

    Raises:
        JobException: a fatal exception came first (with ``type``, ``note``, ``severity``).
        EventNotFound: the job or submission ended without such an event (waits for
            ``JobDeleted`` and ``CommandRejected`` go on after the end, until ``timeout``).
        SubmissionRejected: the submission was rejected.
        UnknownSubmission: no such submission appeared.
        WatchTimeout: nothing came within ``timeout``.
    """
    wanted = event_name(name)
    saw_rejection: CommandRejected | None = None
    for item in event_watch(
        submission_id,
        job_id,
        from_start=True,
        timeout=timeout,
        settings=settings,
        until_done=wanted not in _AFTER_THE_END,
        appear_timeout=appear_timeout,
        start_offset=start_offset,
    ):
        if isinstance(item, Live):
            continue
        if item.name == wanted and (job_id is None or item.job_id == job_id):
            return item
        body = item.body
        if (
            raise_job_exception
            and isinstance(body, JobExceptionRaised)
            and body.severity == 0
            and (job_id is None or item.job_id == job_id)
        ):
            raise JobException(item)
        if isinstance(body, CommandRejected) and body.command_type == "SubmitJobs":
            saw_rejection = body
    if saw_rejection is not None:
        raise SubmissionRejected(submission_id, saw_rejection.code, saw_rejection.reason)
    what = f"job {submission_id}/{job_id}" if job_id else f"submission {submission_id}"
    raise EventNotFound(f"{what} ended without a {wanted} event")


# --------------------------------------------------------------------------- callbacks

ProgressCallback = Callable[[SubmissionView], object]
JobCallback = Callable[[JobView], object]
StateCallback = Callable[[JobView, JobStatus | None], object]
SubmissionCallback = Callable[[SubmissionView], object]
EventCallback = Callable[[Event], object]


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


class Watcher:
    """Runs callbacks for a submission's events on a background thread.

    The vocabulary of HPC job schedulers: ``on_state_changed`` (a job changed status),
    ``on_job_completed`` (a job reached a terminal status, whichever), ``on_progress`` (a
    job reported progress) and ``on_submission_completed`` (every job is terminal). With
    ``from_start=True`` (the default) the history is replayed through the callbacks first.

    Example::

        with Watcher(submission.id, on_progress=lambda job: print(job.job_id, job.progress)):
            submission.wait_until_done()

    Args:
        submission_id: the submission.
        settings: cluster settings (``Settings.from_env()`` when omitted).
        from_start: replay the history through the callbacks before the live events.
        on_state_changed: ``(job, previous_status)`` after each status change.
        on_job_completed: ``(job)`` when a job reaches a terminal status.
        on_submission_completed: ``(view)`` once every job is terminal.
        on_progress: ``(job)`` after each progress event.
        on_event: ``(event)`` for every event.
        appear_timeout / start_offset: as for :func:`event_watch` (an unknown id stops the
            thread with :class:`~engine.errors.UnknownSubmission` in :attr:`error`).

    Attributes:
        view: the fold of the events seen so far.
        error: the exception that stopped the thread (a callback's or the watch's), if any.
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
        appear_timeout: float | None = APPEAR_TIMEOUT_S,
        start_offset: int | None = None,
    ) -> None:
        self.submission_id = submission_id
        self.appear_timeout = appear_timeout
        self.start_offset = start_offset
        self.settings = settings or Settings.from_env()
        self.from_start = from_start
        self.on_state_changed = on_state_changed
        self.on_job_completed = on_job_completed
        self.on_submission_completed = on_submission_completed
        self.on_progress = on_progress
        self.on_event = on_event
        self.view = SubmissionView(submission_id)
        self.error: BaseException | None = None
        self.live = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"joblog-watcher-{submission_id}", daemon=True
        )

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
        try:
            for item in event_watch(
                self.submission_id,
                from_start=self.from_start,
                settings=self.settings,
                stop=self._stop,
                appear_timeout=self.appear_timeout,
                start_offset=self.start_offset,
            ):
                if isinstance(item, Live):
                    self.live.set()
                else:
                    self._dispatch(item)
        except BaseException as exc:  # kept for the owner of the watcher to inspect
            self.error = exc
            log.exception("watcher of %s stopped", self.submission_id)
        finally:
            self.live.set()

    def _dispatch(self, event: Event) -> None:
        before, after = self.view.apply(event)
        if self.on_event is not None:
            self.on_event(event)
        if after is not None:
            previous = None if before is None else before.status
            if before is None or before.status != after.status:
                if self.on_state_changed is not None:
                    self.on_state_changed(after, previous)
                if after.is_terminal and self.on_job_completed is not None:
                    self.on_job_completed(after)
            if isinstance(event.body, JobProgressed) and self.on_progress is not None:
                self.on_progress(after)
        if isinstance(event.body, SubmissionCompleted) and self.on_submission_completed:
            self.on_submission_completed(self.view)


__all__ = [
    "APPEAR_TIMEOUT_S",
    "EVENT_NAMES",
    "ID_CLOCK_MARGIN_MS",
    "LIVE",
    "EventCallback",
    "EventNotFound",
    "JobCallback",
    "JobException",
    "JobView",
    "Live",
    "ProgressCallback",
    "StateCallback",
    "SubmissionCallback",
    "SubmissionRejected",
    "SubmissionView",
    "WatchTimeout",
    "Watcher",
    "event_name",
    "event_wait",
    "event_watch",
    "events_consumer",
    "events_partition",
    "history_start",
    "snake_name",
    "status_after",
    "to_datetime",
    "wait_until_done",
]
