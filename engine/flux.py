"""Flux's job eventlog calls (``flux.job.event``) on joblog, with Flux's shapes.

A Flux program ports by its imports: the handle is a :class:`~engine.api.Joblog` (or
:class:`~engine.config.Settings`) instead of ``flux.Flux()``, and a job id is a joblog job
reference, ``"submission_id/job_id"`` (a bare submission id watches the whole submission)::

    from engine import Joblog
    from engine import flux as job

    jl = Joblog()
    submission = jl.submit(task="render_frame", args=["shot-010", 7])
    jobid = f"{submission.id}/render_frame"
    for event in job.event_watch(jl, jobid):
        print(f"{event.timestamp:.3f} {event.name} {event.context}")
    job.event_wait(jl, jobid, "clean")

The events are :class:`EventLogEvent` values: ``name`` is Flux's name for the event where
Flux has one (``submit``, ``alloc``, ``start``, ``finish``, ``clean``, ``exception``,
``data``, ...: :data:`~engine.lifecycle.names.FLUX_NAMES`), else joblog's; ``timestamp`` is
seconds since the epoch as a float; ``context`` is the event body's fields as a dict. The
joblog event stays at hand (:attr:`EventLogEvent.event`, and ``job_id``, ``submission_id``,
``seq``, ``body``). Waiting accepts Flux's names and joblog's (``JobCompleted``,
``completed``); the mapping is :data:`~engine.lifecycle.names.FLUX_EVENTS`, the eventlogs
:data:`~engine.lifecycle.names.EVENTLOGS`. docs/seeds.md says where joblog differs.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from engine.api import Joblog, Submission, resolve
from engine.config import Settings
from engine.lifecycle.names import FLUX_NAMES, MAIN_EVENTLOG, eventlog_names
from engine.lifecycle.records import Event, EventBody
from engine.watch import (
    APPEAR_TIMEOUT_S,
    EventNotFound,
    JobEventWatchFuture,
    JobException,
    Live,
)
from engine.watch import (
    event_wait as _event_wait,
)
from engine.watch import (
    event_watch as _event_watch,
)

Handle = Joblog | Settings | None
JobId = str | Submission | tuple[str, str]


@dataclass(frozen=True)
class EventLogEvent:
    """One entry of a job's eventlog, as Flux's ``EventLogEvent`` has it.

    Attributes:
        event: the joblog event it wraps.
    """

    event: Event

    @property
    def name(self) -> str:
        """Flux's name for the event (``finish``), or joblog's where Flux has none."""
        return FLUX_NAMES.get(self.event.name, self.event.name)

    @property
    def joblog_name(self) -> str:
        """joblog's name for the event (``JobCompleted``)."""
        return self.event.name

    @property
    def timestamp(self) -> float:
        """When the scheduler decided it: seconds since the epoch."""
        return self.event.timestamp / 1000

    @property
    def context(self) -> dict[str, Any]:
        """The event body's fields (nested records as dicts)."""
        return asdict(self.event.body)

    @property
    def submission_id(self) -> str:
        return self.event.submission_id

    @property
    def job_id(self) -> str:
        return self.event.job_id

    @property
    def seq(self) -> int:
        return self.event.seq

    @property
    def body(self) -> EventBody:
        return self.event.body

    def __str__(self) -> str:
        return f"{self.timestamp:.6f} {self.name} {self.context}"


def _target(handle: Handle, jobid: JobId) -> tuple[Settings, str, str | None]:
    settings = handle.settings if isinstance(handle, Joblog) else handle or Settings.from_env()
    submission_id, job_id = resolve(jobid)
    return settings, submission_id, job_id


def event_watch(
    flux_handle: Handle,
    jobid: JobId,
    eventlog: str = MAIN_EVENTLOG,
    *,
    timeout: float | None = None,
) -> Iterator[EventLogEvent]:
    """Yields the events of a job's eventlog, from its first, until the job is done.

    Args:
        flux_handle: a :class:`~engine.api.Joblog` or :class:`~engine.config.Settings`
            (``None``: ``Settings.from_env()``).
        jobid: ``"submission_id/job_id"``, or a submission id for all its jobs.
        eventlog: ``"eventlog"`` (every event but command output), ``"guest.exec.eventlog"``
            or ``"guest.output"`` (the output chunks).
        timeout: seconds the whole watch may last (``None``: until the job is done).

    Raises:
        ValueError: no such eventlog.
        UnknownSubmission: no such submission appeared within
            :data:`~engine.watch.APPEAR_TIMEOUT_S`.
        EventNotFound: the submission has no such job (``errno.ENOENT``).
    """
    settings, submission_id, job_id = _target(flux_handle, jobid)
    for item in _event_watch(
        submission_id,
        job_id,
        timeout=timeout,
        settings=settings,
        appear_timeout=APPEAR_TIMEOUT_S,
        eventlog=eventlog,
    ):
        if not isinstance(item, Live):
            yield EventLogEvent(item)


def event_wait(
    flux_handle: Handle,
    jobid: JobId,
    name: str,
    eventlog: str = MAIN_EVENTLOG,
    raiseJobException: bool = True,
    *,
    timeout: float | None = None,
) -> EventLogEvent:
    """Waits for the job's eventlog entry ``name`` and returns it.

    Args:
        flux_handle / jobid / eventlog: as for :func:`event_watch`.
        name: Flux's event name (``start``, ``finish``, ``clean``, ``exception``, ...) or
            joblog's (``JobStarted``, ``started``).
        raiseJobException: raise :class:`JobException` if a fatal exception (severity 0)
            ends the job before the event.
        timeout: longest wait in seconds (``None``: until the job is done).

    Raises:
        EventNotFound: the eventlog ended before the event: an ``OSError`` with
            ``errno.ENODATA``.
        JobException: a fatal exception ended the job first.
        ValueError: no event has that name (or none in ``eventlog``).
        WatchTimeout: nothing came within ``timeout``.
    """
    settings, submission_id, job_id = _target(flux_handle, jobid)
    return EventLogEvent(
        _event_wait(
            submission_id,
            job_id,
            name,
            timeout,
            raise_job_exception=raiseJobException,
            settings=settings,
            eventlog=eventlog,
        )
    )


def event_watch_async(
    flux_handle: Handle, jobid: JobId, eventlog: str = MAIN_EVENTLOG
) -> JobEventWatchFuture[EventLogEvent]:
    """Watches a job's eventlog on a thread; ``get_event()`` reads it (``None`` at the end).

    Args:
        flux_handle / jobid / eventlog: as for :func:`event_watch`.

    Returns:
        The running :class:`~engine.watch.JobEventWatchFuture`; ``then(callback)`` runs a
        callback as each event arrives, ``cancel()`` ends it.

    Raises:
        ValueError: no such eventlog.
    """
    settings, submission_id, job_id = _target(flux_handle, jobid)
    kept = eventlog_names(eventlog)  # a bad name fails here, not on the thread

    def items(stop: threading.Event) -> Generator[EventLogEvent, None, None]:
        for item in _event_watch(
            submission_id,
            job_id,
            settings=settings,
            stop=stop,
            appear_timeout=APPEAR_TIMEOUT_S,
        ):
            if not isinstance(item, Live) and item.name in kept:
                yield EventLogEvent(item)

    return JobEventWatchFuture(items, name=f"joblog-flux-watch-{submission_id}")


__all__ = [
    "EventLogEvent",
    "EventNotFound",
    "JobEventWatchFuture",
    "JobException",
    "event_wait",
    "event_watch",
    "event_watch_async",
]
