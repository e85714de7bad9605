"""Live events for ``joblog ui``, read from the ``events`` topic, never by polling DuckDB.

* :func:`watch_messages`: a submission's (or one job's) events as server-sent events, from
  :func:`engine.watch.event_watch` (history, ``live``, then live events; the stream ends
  when the submission or job is done). Each message carries the event's history line and the
  job's view after it, folded with the core's read model (:class:`SubmissionView`), so a page
  redraws a node without asking anything else.
* :class:`EventTail`: one reader of every partition of ``events`` from its end, shared by
  every dashboard that shows live counts; each subscriber gets the status changes through a
  bounded queue (a subscriber that falls behind is told to resynchronise, it never slows the
  reader or the others).
* :class:`AsOf`: a submission as it was after a given event (by sequence number or time),
  its events folded up to there with :class:`SubmissionView` (time travel).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from typing import Any

from confluent_kafka import OFFSET_END, KafkaError, TopicPartition

from engine import kafka
from engine.client import cluster_metadata, topic_partitions
from engine.config import Settings
from engine.errors import JoblogError
from engine.lifecycle.describe import describe
from engine.lifecycle.records import Event
from engine.lifecycle.views import JobView, SubmissionView, status_after
from engine.topics import Topics
from engine.ui.http import ApiError, Sse
from engine.watch import LIVE, event_watch, events_consumer

log = logging.getLogger("joblog.ui")


def event_json(event: Event) -> dict[str, Any]:
    """An event for the API: identity, name, time, the status it leads to, its history line
    and its body."""
    status = status_after(event.body)
    return {
        "event_id": event.event_id,
        "submission_id": event.submission_id,
        "job_id": event.job_id,
        "seq": event.seq,
        "timestamp": event.timestamp,
        "event": event.name,
        "status": None if status is None else str(status),
        "description": describe(event),
        "body": vars(event.body),
    }


def job_json(job: JobView) -> dict[str, Any]:
    """A job view for the API (times as ISO 8601, durations in seconds)."""
    out = asdict(job)
    out["status"] = str(job.status)
    out["ref"] = job.ref
    out["fraction"] = job.fraction
    out["execution_duration"] = job.execution_duration
    return out


def submission_json(view: SubmissionView) -> dict[str, Any]:
    """A submission view for the API: its jobs, counts, outcome and rejection."""
    return {
        "submission_id": view.submission_id,
        "accepted": view.accepted,
        "done": view.done,
        "outcome": None if view.outcome is None else str(view.outcome),
        "rejection": None if view.rejection is None else vars(view.rejection),
        "counts": {str(status): n for status, n in view.counts().items()},
        "jobs": [job_json(job) for job in view.jobs.values()],
        "last_seq": None if view.last_event is None else view.last_event.seq,
    }


def watch_messages(
    settings: Settings,
    submission_id: str,
    job_id: str | None,
    *,
    stopping: threading.Event,
    keepalive_s: float,
    from_start: bool = True,
) -> tuple[Iterator[Sse | None], threading.Event]:
    """A submission's (or job's) events as server-sent events, and the event that ends them.

    Messages: ``event`` (an event, its job's view after it), ``live`` once where the history
    ends, ``end`` when the submission or job is done, ``error`` when the watch fails (an
    unknown id: ``not_found``). ``None`` (a keep-alive) after ``keepalive_s`` of quiet.
    """
    stop = threading.Event()
    items: queue.Queue[Sse | BaseException | None] = queue.Queue(maxsize=10_000)

    def put(item: Sse | BaseException | None) -> None:
        while not stop.is_set() and not stopping.is_set():
            try:
                items.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def read() -> None:
        view = SubmissionView(submission_id)
        try:
            for item in event_watch(
                submission_id,
                job_id,
                from_start=from_start,
                settings=settings,
                stop=stop,
                appear_timeout=30.0,
            ):
                if item is LIVE:
                    put(Sse("live", {"submission_id": submission_id, "job_id": job_id}))
                    continue
                assert isinstance(item, Event)
                _, after = view.apply(item)
                put(
                    Sse(
                        "event",
                        {
                            **event_json(item),
                            "job": None if after is None else job_json(after),
                            "outcome": None if view.outcome is None else str(view.outcome),
                        },
                        id=str(item.seq),
                    )
                )
            if not stop.is_set():
                put(Sse("end", submission_json(view) if job_id is None else _job_end(view, job_id)))
        except BaseException as exc:
            put(exc)
        finally:
            put(None)  # wakes the writer; it ends on the reader's end

    thread = threading.Thread(target=read, name=f"ui-watch-{submission_id}", daemon=True)

    def messages() -> Iterator[Sse | None]:
        thread.start()
        quiet_since = time.monotonic()
        while not stopping.is_set() and not stop.is_set():
            try:
                item = items.get(timeout=0.5)
            except queue.Empty:
                if time.monotonic() - quiet_since >= keepalive_s:
                    quiet_since = time.monotonic()
                    yield None
                continue
            quiet_since = time.monotonic()
            if item is None:
                if not thread.is_alive() and items.empty():
                    return
                continue
            if isinstance(item, BaseException):
                if isinstance(item, JoblogError | ApiError):
                    raise item
                raise JoblogError(f"watching {submission_id} failed: {item}") from item
            yield item

    return messages(), stop


def _job_end(view: SubmissionView, job_id: str) -> dict[str, Any]:
    job = view.jobs.get(job_id)
    return {"submission_id": view.submission_id, "job": None if job is None else job_json(job)}


class EventTail:
    """One reader of every partition of ``events`` from its end, shared by subscribers.

    Each subscriber gets ``change`` messages (submission, job, event, the status it leads to
    and the job's previous status when this tail saw it) through its own bounded queue. A
    subscriber whose queue is full gets ``resync`` (ask the projection for the counts again)
    instead of the changes it missed.

    Args:
        settings: cluster settings.
        stopping: set when the server stops.
        queue_size: messages a subscriber may fall behind by.
        remembered: job statuses kept (to say a change's previous status), most recent.
    """

    def __init__(
        self,
        settings: Settings,
        stopping: threading.Event,
        *,
        queue_size: int = 5_000,
        remembered: int = 200_000,
    ) -> None:
        self.settings = settings
        self.stopping = stopping
        self.queue_size = queue_size
        self.remembered = remembered
        self._subscribers: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._lagged: set[int] = set()
        self._statuses: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._next = 0
        self.ready = threading.Event()
        self.error: str = ""

    def subscribe(self) -> tuple[int, queue.Queue[dict[str, Any]]]:
        """A new subscriber's id and queue (starts the reader on first use)."""
        with self._lock:
            self._next += 1
            box: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=self.queue_size)
            self._subscribers[self._next] = box
            if self._thread is None:
                self.ready.clear()
                self._thread = threading.Thread(target=self._run, name="ui-tail", daemon=True)
                self._thread.start()
            return self._next, box

    def unsubscribe(self, subscriber: int) -> None:
        with self._lock:
            self._subscribers.pop(subscriber, None)
            self._lagged.discard(subscriber)

    def messages(self, keepalive_s: float) -> tuple[Iterator[Sse | None], int]:
        """The server-sent events of one subscriber, and its id (to unsubscribe)."""
        subscriber, box = self.subscribe()

        def iterate() -> Iterator[Sse | None]:
            quiet_since = time.monotonic()
            if self.ready.wait(10):
                yield Sse("live", {"reading": "events", "from": "end"})
            while not self.stopping.is_set():
                try:
                    item = box.get(timeout=0.5)
                except queue.Empty:
                    with self._lock:
                        lagged = subscriber in self._lagged
                        self._lagged.discard(subscriber)
                    if self.error:
                        break
                    if lagged:
                        yield Sse("resync", {"reason": "this stream fell behind the events"})
                    elif time.monotonic() - quiet_since >= keepalive_s:
                        quiet_since = time.monotonic()
                        yield None
                    continue
                quiet_since = time.monotonic()
                yield Sse("change", item)
            if self.error:
                raise JoblogError(self.error)

        return iterate(), subscriber

    def _publish(self, event: Event) -> None:
        status = status_after(event.body)
        if status is None and event.name not in (
            "JobDeleted",
            "SubmissionCompleted",
            "SubmissionAccepted",
            "JobProgressed",
        ):
            return
        key = (event.submission_id, event.job_id)
        previous = None
        if status is not None:
            previous = self._statuses.pop(key, None)
            if status.is_terminal:
                pass  # a terminal job changes no more: forget it
            else:
                self._statuses[key] = str(status)
                while len(self._statuses) > self.remembered:
                    self._statuses.popitem(last=False)
        message = {
            "submission_id": event.submission_id,
            "job_id": event.job_id,
            "seq": event.seq,
            "timestamp": event.timestamp,
            "event": event.name,
            "status": None if status is None else str(status),
            "previous": previous,
        }
        if event.name == "JobSubmitted":
            message["previous"] = None
        if event.name == "JobProgressed":
            body = vars(event.body)
            message.update(
                progress=body.get("value"),
                total=body.get("total"),
                status_line=body.get("status_line"),
            )
        with self._lock:
            for subscriber, box in self._subscribers.items():
                try:
                    box.put_nowait(message)
                except queue.Full:
                    self._lagged.add(subscriber)

    def _run(self) -> None:
        from engine import codec

        topic = Topics(self.settings.topic_prefix).events
        consumer = events_consumer(self.settings, **{"enable.partition.eof": False})
        try:
            metadata = cluster_metadata(consumer, self.settings, topic)
            count = topic_partitions(metadata, topic, self.settings)
            consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in range(count)])
            self.error = ""
            self.ready.set()
            while not self.stopping.is_set():
                with self._lock:
                    if not self._subscribers:
                        self._thread = None  # nobody listens: the next one starts a reader
                        return
                for message in consumer.consume(500, 0.5):
                    error = message.error()
                    if error is not None:
                        if kafka.consumer_fatal(error):
                            raise JoblogError(f"reading {topic} failed: {error.str()}")
                        if error.code() != KafkaError._PARTITION_EOF:
                            log.warning("reading %s: %s", topic, error.str())
                        continue
                    value = message.value()
                    if value is None:
                        continue
                    try:
                        event = codec.decode_event(value)
                    except JoblogError:
                        continue  # the projector dead-letters it; a dashboard skips it
                    self._publish(event)
        except JoblogError as exc:
            self.error = str(exc)
            log.warning("the ui's events reader stopped: %s", exc)
            with self._lock:
                self._thread = None
        finally:
            self.ready.set()
            consumer.close()


class AsOf:
    """Submissions as they were after a past event (time travel), from their events.

    A submission's history is read from the ``events`` topic once and kept (the most recent
    ``cached`` submissions that are done: their history no longer changes), then folded with
    :class:`SubmissionView` up to the asked point.

    Args:
        settings: cluster settings.
        max_events: the most events of one submission it reads (a larger one is a 413).
        cached: finished submissions whose history is kept.
    """

    def __init__(self, settings: Settings, *, max_events: int, cached: int = 8) -> None:
        self.settings = settings
        self.max_events = max_events
        self.cached = cached
        self._cache: OrderedDict[str, list[Event]] = OrderedDict()
        self._lock = threading.Lock()

    def events(self, submission_id: str) -> list[Event]:
        """The submission's events so far.

        Raises:
            UnknownSubmission: the id has no events.
            ApiError: 413 when it has more than ``max_events`` events.
        """
        with self._lock:
            if submission_id in self._cache:
                self._cache.move_to_end(submission_id)
                return self._cache[submission_id]
        history: list[Event] = []
        view = SubmissionView(submission_id)
        for item in event_watch(submission_id, timeout=60.0, settings=self.settings):
            if item is LIVE:
                break
            assert isinstance(item, Event)
            history.append(item)
            view.apply(item)
            if len(history) > self.max_events:
                raise ApiError(
                    413,
                    "limit_exceeded",
                    f"submission {submission_id} has more than {self.max_events} events, the "
                    "most the time-travel fold reads; use `joblog projections rebuild --as-of` "
                    "for it",
                )
        if view.done:
            with self._lock:
                self._cache[submission_id] = history
                while len(self._cache) > self.cached:
                    self._cache.popitem(last=False)
        return history

    def at(
        self, submission_id: str, *, seq: int | None = None, at: datetime | None = None
    ) -> dict[str, Any]:
        """The submission after event ``seq`` (or after the last event at or before ``at``).

        Returns:
            The folded submission (:func:`submission_json`) with ``as_of_seq``,
            ``as_of_time`` (ms), ``event`` (the last event folded in), ``first_seq``,
            ``last_seq``, ``first_time`` and ``last_time`` (the slider's range).
        """
        history = self.events(submission_id)
        view = SubmissionView(submission_id)
        cutoff_ms = None if at is None else round(at.timestamp() * 1000)
        last: Event | None = None
        for event in history:
            if seq is not None and event.seq > seq:
                break
            if cutoff_ms is not None and event.timestamp > cutoff_ms:
                break
            view.apply(event)
            last = event
        out = submission_json(view)
        out.update(
            as_of_seq=None if last is None else last.seq,
            as_of_time=None if last is None else last.timestamp,
            event=None if last is None else event_json(last),
            first_seq=history[0].seq if history else None,
            last_seq=history[-1].seq if history else None,
            first_time=history[0].timestamp if history else None,
            last_time=history[-1].timestamp if history else None,
        )
        return out
