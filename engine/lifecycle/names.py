"""The names of the events, derived from the :data:`~engine.lifecycle.records.EventBody` union.

An event's name is its body's class name (:attr:`Event.name`, e.g. ``JobCompleted``). The
union is the one list of event types: :data:`EVENT_TYPES` is it in order (the order of the
Avro union in ``schemas/Event.avsc``), :data:`EVENT_NAMES` its names, and
:func:`event_name` reads the forms people type (``job_completed``, ``completed``).
Nothing else spells an event name as a string.
"""

from __future__ import annotations

import re
from typing import Final, get_args

from engine.lifecycle.records import EventBody, JobExceptionRaised, JobProgressed

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


def event_name(name: str) -> str:
    """The canonical event name for ``name``.

    Accepts the class name (``JobCompleted``), its snake case (``job_completed``) or, for job
    events, the short form (``completed``, ``started``, ``exception``, ``progress``).

    Raises:
        ValueError: no event has that name.
    """
    try:
        return _ALIASES[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown event name {name!r}; known: {', '.join(EVENT_NAMES)}") from None


__all__ = ["EVENT_NAMES", "EVENT_TYPES", "event_name", "names_of", "snake_name"]
