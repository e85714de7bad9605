"""Job monitoring in Tapis's words: declared notifications from user input, and polling.

Tapis offers two ways to follow a job: webhooks (and emails) declared with the job, and
polling the job's status with an exponential backoff. This module reads the first from what
users write (``{"url": ..., "event": ..., "persistent": ...}`` in a submission file, a Python
mapping, a :class:`~engine.lifecycle.records.Notification`) and runs the second
(:func:`poll_status`, behind :meth:`engine.api.Joblog.poll_status` and
``joblog status --poll``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import JoblogError
from engine.lifecycle.notifications import notification_problem
from engine.lifecycle.records import Notification
from engine.lifecycle.views import JobView, SubmissionView

_FIELDS = frozenset({"url", "event", "persistent", "id", "notification_id", "job", "job_id"})
#: What a notification may be given as.
NotificationLike = Notification | Mapping[str, Any] | str


class InvalidNotification(JoblogError, ValueError):
    """A notification is malformed (checked before anything is sent)."""


class PollTimeout(JoblogError, TimeoutError):
    """The job (or submission) did not end within the polling timeout.

    Attributes:
        last: what the last poll saw.
    """

    def __init__(self, message: str, last: JobView | SubmissionView | None) -> None:
        super().__init__(message)
        self.last = last


def to_notification(
    value: NotificationLike, *, job_id: str = "", where: str = "notification"
) -> Notification:
    """A notification from a :class:`Notification`, a Tapis-style mapping or a bare URL.

    A mapping has ``url`` and optionally ``event`` (default ``*``), ``persistent`` (default
    ``false``, Tapis's), ``id`` and ``job`` (the job it watches). ``job_id`` is the default
    job (a handle on one job).

    Raises:
        InvalidNotification: a field is unknown or has the wrong type, or the notification
            breaks a rule the scheduler would reject it for.
    """
    if isinstance(value, Notification):
        notification = value
    elif isinstance(value, str):
        notification = Notification("", value, job_id=job_id)
    elif isinstance(value, Mapping):
        unknown = set(value) - _FIELDS
        if unknown:
            raise InvalidNotification(
                f"{where}: unknown fields {sorted(unknown)}; expected url, event, persistent, "
                "id, job"
            )
        persistent = value.get("persistent", False)
        if not isinstance(persistent, bool):
            raise InvalidNotification(f"{where}: persistent must be true or false")
        url = value.get("url")
        if not isinstance(url, str):
            raise InvalidNotification(f"{where}: needs a url (an http(s) URL or an email)")
        notification = Notification(
            notification_id=str(value.get("id") or value.get("notification_id") or ""),
            url=url,
            event=str(value.get("event") or "*"),
            persistent=persistent,
            job_id=str(value.get("job") or value.get("job_id") or job_id),
        )
    else:
        raise InvalidNotification(f"{where}: expected a mapping with a url, or a URL")
    problem = notification_problem(notification)
    if problem is not None:
        raise InvalidNotification(f"{where}: {problem}")
    return notification


def to_notifications(values: Sequence[NotificationLike] | None) -> tuple[Notification, ...]:
    """Several notifications (see :func:`to_notification`)."""
    if values is None:
        return ()
    if isinstance(values, str | Mapping | Notification):
        values = [values]
    return tuple(
        to_notification(value, where=f"notifications[{index}]")
        for index, value in enumerate(values)
    )


def notifications_from_data(data: Any) -> tuple[Notification, ...]:
    """The ``notifications`` list of a submission file's content (none if it has none)."""
    if not isinstance(data, Mapping) or data.get("notifications") is None:
        return ()
    items = data["notifications"]
    if not isinstance(items, list):
        raise InvalidNotification("notifications must be a list of {url, event, persistent}")
    return to_notifications(items)


def load_notifications(path: str | Path) -> tuple[Notification, ...]:
    """The notifications of a YAML or JSON submission file.

    Raises:
        InvalidNotification: the file cannot be read or a notification is malformed.
    """
    import json

    import yaml

    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise InvalidNotification(f"cannot read submission file {file}: {exc}") from exc
    return notifications_from_data(data)


# --------------------------------------------------------------------------- polling


@dataclass(frozen=True)
class Backoff:
    """The waits between polls: Tapis's advice, an exponential backoff.

    Each poll that finds the status unchanged waits ``factor`` times longer than the one
    before, up to ``max_interval``; a change starts again from ``initial``.

    Attributes:
        initial: seconds before the second poll.
        factor: growth of the wait per unchanged poll (at least 1).
        max_interval: the longest wait.
        jitter: fraction drawn at random (±), so many pollers do not poll in step.
    """

    initial: float = 1.0
    factor: float = 2.0
    max_interval: float = 60.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.max_interval < self.initial:
            raise ValueError("backoff: initial must be > 0 and max_interval >= initial")
        if self.factor < 1 or not 0 <= self.jitter < 1:
            raise ValueError("backoff: factor must be >= 1 and jitter in [0, 1)")

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The waits after each unchanged poll, in order (endless)."""
        delay = self.initial
        while True:
            spread = (rng or random).uniform(-self.jitter, self.jitter) if self.jitter else 0.0
            yield delay * (1 + spread)
            delay = min(self.max_interval, delay * self.factor)


Observed = JobView | SubmissionView


def _signature(observed: Observed) -> tuple[Any, ...]:
    if isinstance(observed, JobView):
        return (observed.status, observed.attempt)
    return (observed.outcome, tuple(sorted(observed.counts().items())))


def _done(observed: Observed) -> bool:
    if isinstance(observed, JobView):
        return observed.status.is_terminal
    return observed.done


def poll_status(
    read: Callable[[], Observed],
    *,
    backoff: Backoff | None = None,
    timeout: float | None = None,
    on_status: Callable[[Observed], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Observed:
    """Polls ``read`` until what it returns has ended, waiting longer while nothing changes.

    Args:
        read: one poll (a job's view, or a submission's).
        backoff: the waits between polls.
        timeout: seconds in all (``None``: no limit).
        on_status: called with the first poll's answer and each one whose status changed.
        sleep / clock: how to wait and tell the time.

    Returns:
        The last answer, whose job (or submission) has ended.

    Raises:
        PollTimeout: it had not ended within ``timeout`` (``last`` says where it was).
    """
    policy = backoff or Backoff()
    deadline = None if timeout is None else clock() + timeout
    delays = policy.delays()
    last: Observed | None = None
    while True:
        observed = read()
        if last is None or _signature(observed) != _signature(last):
            if on_status is not None:
                on_status(observed)
            if last is not None:
                delays = policy.delays()  # something moved: poll soon again
        last = observed
        if _done(observed):
            return observed
        wait = next(delays)
        if deadline is not None:
            left = deadline - clock()
            if left <= 0:
                raise PollTimeout(f"still {_describe(observed)} after {timeout:g} s", observed)
            wait = min(wait, left)
        sleep(wait)


def _describe(observed: Observed) -> str:
    if isinstance(observed, JobView):
        return f"{observed.ref} {observed.status}"
    counts = ", ".join(f"{n} {status}" for status, n in sorted(observed.counts().items()))
    return f"{observed.submission_id} ({counts or 'no jobs yet'})"


__all__ = [
    "Backoff",
    "InvalidNotification",
    "NotificationLike",
    "PollTimeout",
    "load_notifications",
    "notifications_from_data",
    "poll_status",
    "to_notification",
    "to_notifications",
]
