"""The names of the events, derived from the :data:`~engine.lifecycle.records.EventBody` union.

An event's name is its body's class name (:attr:`Event.name`, e.g. ``JobCompleted``). The
union is the one list of event types: :data:`EVENT_TYPES` is it in order (the order of the
Avro union in ``schemas/Event.avsc``), :data:`EVENT_NAMES` its names, and
:func:`event_name` reads the forms people type (``job_completed``, ``completed``).
Nothing else spells an event name as a string.

Flux's names live here too, in one table: :data:`FLUX_EVENTS` maps each event of Flux's job
eventlogs (RFC 21: ``submit``, ``depend``, ``alloc``, ``start``, ``finish``, ``clean``,
``exception``, ...) to the joblog events that record the same fact. One Flux event may
stand for several joblog events (``finish`` is ``JobCompleted``, ``JobFailed`` or
``JobCanceled``, as Flux's ``finish`` carries the status either way), so
:func:`event_names` answers with a set. The Flux events joblog has no fact for
(:data:`FLUX_UNMAPPED`) are refused with the reason. :data:`EVENTLOGS` maps Flux's eventlog
paths (``eventlog``, ``guest.exec.eventlog``, ``guest.output``) to the events each holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, get_args

from engine.lifecycle.records import (
    CommandRejected,
    EventBody,
    JobAbandoned,
    JobAssigned,
    JobBlocked,
    JobCanceled,
    JobCompleted,
    JobExceptionRaised,
    JobFailed,
    JobOutput,
    JobPending,
    JobProgressed,
    JobSkipped,
    JobStarted,
    JobSubmitted,
)

#: Every event body class, in the order of the union (and of the Avro union).
EVENT_TYPES: Final[tuple[type[EventBody], ...]] = get_args(EventBody)
#: Every event name (the event body's class name), in lifecycle order.
EVENT_NAMES: Final[tuple[str, ...]] = tuple(body.__name__ for body in EVENT_TYPES)

_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")


def names_of(*types: type[EventBody]) -> frozenset[str]:
    """The names of some event body classes: ``names_of(JobCompleted, JobFailed)``."""
    return frozenset(body.__name__ for body in types)


def snake_name(name: str) -> str:
    """``JobCompleted`` -> ``job_completed``."""
    return _SNAKE.sub("_", name).lower()


def _aliases() -> dict[str, str]:
    aliases: dict[str, str] = {}
    for name in EVENT_NAMES:
        aliases[name.lower()] = name
        aliases[snake_name(name)] = name
        if name.startswith("Job"):
            aliases[snake_name(name[3:])] = name
    aliases.update(exception=JobExceptionRaised.__name__, progress=JobProgressed.__name__)
    return aliases


_ALIASES: Final = _aliases()


# --------------------------------------------------------------------------- Flux

#: The end of an attempt that ran (or of a job canceled before it ran): Flux's ``finish``.
_ENDED = names_of(JobCompleted, JobFailed, JobCanceled)
#: Every terminal event: the job is inactive (Flux's ``clean``).
_INACTIVE = _ENDED | names_of(JobAbandoned, JobSkipped)

#: Flux's job eventlog events (RFC 21, and the exec and output eventlogs) and the joblog
#: events that record the same fact.
FLUX_EVENTS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        # main eventlog
        "submit": names_of(JobSubmitted),
        "validate": names_of(JobSubmitted),  # joblog validates before the job exists
        "invalidate": names_of(CommandRejected),
        "dependency-add": names_of(JobBlocked),
        "depend": names_of(JobPending),  # dependencies satisfied: runnable
        "priority": names_of(JobPending),  # queued for a worker (Flux's SCHED)
        "alloc": names_of(JobAssigned),  # a worker holds it
        "start": names_of(JobStarted),
        "exception": names_of(JobExceptionRaised),
        "finish": _ENDED,
        "release": _ENDED,  # the worker's slot is free when the attempt ended
        "free": _ENDED,
        "clean": _INACTIVE,
        # guest.exec.eventlog
        "init": names_of(JobAssigned),
        "starting": names_of(JobStarted),
        "shell.init": names_of(JobStarted),
        "shell.start": names_of(JobStarted),
        "complete": _ENDED,
        "done": _ENDED,
        # guest.output
        "data": names_of(JobOutput),
    }
)

#: Flux events without a joblog counterpart, and why.
FLUX_UNMAPPED: Final[Mapping[str, str]] = MappingProxyType(
    {
        "urgency": "a job's priority is fixed in its spec; joblog has no urgency change",
        "set": "joblog job attributes are fixed at submission",
        "jobspec-update": "a job's spec is fixed at submission",
        "resource-update": "joblog allocates worker slots, not resources",
        "dependency-remove": "dependencies are fixed at submission",
        "memo": "joblog has no memo events",
        "flux-restart": "joblog schedulers rebuild from the log; no event marks a restart",
        "prolog-start": "joblog runs no prolog",
        "prolog-finish": "joblog runs no prolog",
        "epilog-start": "joblog runs no epilog",
        "epilog-finish": "joblog runs no epilog",
        "header": "command output has no header event; JobOutput chunks carry their stream",
        "redirect": "command output is never redirected",
        "log": "shell log lines are not events; a task reports a status line (JobProgressed)",
    }
)

#: The main eventlog: every event except the output chunks.
MAIN_EVENTLOG: Final = "eventlog"
#: Flux's eventlog paths and the joblog events each one holds; ``exec`` and ``output`` are
#: short for the two ``guest.`` paths.
EVENTLOGS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        MAIN_EVENTLOG: frozenset(EVENT_NAMES) - names_of(JobOutput),
        "guest.exec.eventlog": names_of(JobAssigned, JobStarted) | _ENDED,
        "exec": names_of(JobAssigned, JobStarted) | _ENDED,
        "guest.output": names_of(JobOutput),
        "output": names_of(JobOutput),
    }
)

#: The Flux event that names each joblog event that has one (``JobCompleted`` -> ``finish``):
#: the first, in eventlog order, of the main eventlog's events that stand for it.
_FLUX_PRIMARY: Final = (
    "submit", "invalidate", "dependency-add", "priority", "alloc", "start", "exception",
    "finish", "clean", "data",
)  # fmt: skip
FLUX_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {name: flux for flux in reversed(_FLUX_PRIMARY) for name in FLUX_EVENTS[flux]}
)


def event_name(name: str) -> str:
    """The canonical event name for ``name``.

    Accepts the class name (``JobCompleted``), its snake case (``job_completed``), for job
    events the short form (``completed``, ``started``, ``exception``, ``progress``), and the
    Flux events that stand for one joblog event (``submit``, ``alloc``, ``start``).

    Raises:
        ValueError: no event has that name, or it is a Flux event that stands for several
            joblog events (``finish``; :func:`event_names` reads those).
    """
    names = event_names(name)
    if len(names) > 1:
        raise ValueError(
            f"{name!r} stands for several events ({', '.join(_ordered(names))}); name one of them"
        )
    (only,) = names
    return only


def event_names(name: str) -> frozenset[str]:
    """The canonical names of the events ``name`` stands for.

    Every form :func:`event_name` reads gives one name; a Flux event may give several
    (``finish``: ``JobCompleted``, ``JobFailed`` and ``JobCanceled``).

    Raises:
        ValueError: no event has that name (the message lists the known ones), or it is a
            Flux event joblog has no counterpart for (the message says why).
    """
    key = name.strip().lower()
    found = _ALIASES.get(key)
    if found is not None:
        return frozenset((found,))
    flux = FLUX_EVENTS.get(key)
    if flux is not None:
        return flux
    unmapped = FLUX_UNMAPPED.get(key)
    if unmapped is not None:
        raise ValueError(f"Flux's {key!r} event has no joblog counterpart: {unmapped}")
    raise ValueError(
        f"unknown event name {name!r}; known: {', '.join(EVENT_NAMES)}, "
        f"and Flux's {', '.join(FLUX_EVENTS)}"
    )


def eventlog_names(eventlog: str) -> frozenset[str]:
    """The names of the events in one of Flux's eventlogs (:data:`EVENTLOGS`).

    Raises:
        ValueError: no such eventlog (the message lists them).
    """
    try:
        return EVENTLOGS[eventlog.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown eventlog {eventlog!r}; known: {', '.join(EVENTLOGS)}") from None


def _ordered(names: frozenset[str]) -> list[str]:
    return [name for name in EVENT_NAMES if name in names]


__all__ = [
    "EVENTLOGS",
    "EVENT_NAMES",
    "EVENT_TYPES",
    "FLUX_EVENTS",
    "FLUX_NAMES",
    "FLUX_UNMAPPED",
    "MAIN_EVENTLOG",
    "event_name",
    "event_names",
    "eventlog_names",
    "names_of",
    "snake_name",
]
