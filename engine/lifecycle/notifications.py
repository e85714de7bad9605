"""Notifications a submission declares (Tapis's ``notifications: [{url, event, persistent}]``).

A submission names its webhooks and emails in its ``SubmitJobs`` command, and adds or removes
them later (``AddNotification``, ``RemoveNotification``); every change is an event the
scheduler decides (``NotificationAdded``, ``NotificationRemoved``), so the notifier learns
them from the ``events`` topic it already reads and a restart loses none. This module holds
their rules, pure:

* what a notification's ``event`` may say (:func:`notification_events`): ``*``, a joblog
  event name in any form :func:`~engine.lifecycle.names.event_name` reads, a job status
  (the events after which the job has it), or one of Tapis's statuses (:data:`TAPIS_EVENTS`);
* what makes a notification valid (:func:`notification_problem`) and the designed limits;
* when it fires (:func:`fires`): a notification that is not ``persistent`` is removed by the
  scheduler right after the first event it fires for (Tapis's rule), in the same decision,
  so the notifier sends it exactly that event;
* the decisions on the two commands (:func:`decide_add_notification`,
  :func:`decide_remove_notification`) and on a submission's own list
  (:func:`submitted_notifications`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from engine.lifecycle import records as ev
from engine.lifecycle.names import EVENT_NAMES, event_names, names_of
from engine.lifecycle.records import (
    AddNotification,
    Event,
    JobStatus,
    Notification,
    RejectionCode,
    RemoveNotification,
)

if TYPE_CHECKING:
    from engine.lifecycle.draft import Draft

#: The most notifications one submission has at a time (its own and its jobs').
MAX_NOTIFICATIONS: Final = 100
#: The longest ``url`` (a URL template or an email address), in bytes (UTF-8).
MAX_NOTIFICATION_URL_BYTES: Final = 2048
#: The longest ``event``, in characters.
MAX_NOTIFICATION_EVENT_CHARS: Final = 64
#: A notification id: 1-64 letters, digits and ``._-``, starting with a letter or digit.
NOTIFICATION_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: The ids the scheduler gives notifications declared without one (``n`` + a seq).
_GIVEN_ID = re.compile(r"^n[0-9]+$")
_EMAIL = re.compile(r"^[^@\s/:]+@[^@\s/:]+$")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

#: Every template variable a notification's URL (and the notifier's templates) may use;
#: their values are made by :func:`engine.notify.templates.variables`.
TEMPLATE_VARIABLES: Final[tuple[str, ...]] = (
    "UUID",
    "EVENT",
    "EVENT_TIME",
    "EVENT_DESCRIPTION",
    "SUBMISSION_ID",
    "JOB_ID",
    "JOB_REF",
    "JOB_UUID",
    "JOB_NAME",
    "JOB_TASK",
    "JOB_QUEUE",
    "JOB_SYSTEM",
    "JOB_WORKER",
    "JOB_STATUS",
    "JOB_ATTEMPT",
    "JOB_PROGRESS",
    "JOB_STATUS_LINE",
    "JOB_SUBMIT_TIME",
    "JOB_START_TIME",
    "JOB_END_TIME",
    "JOB_URL",
    "JOB_ARCHIVE_PATH",
    "JOB_ARCHIVE_URL",
    "JOB_ERROR",
    "NOTIFICATION_ID",
)

#: Events ``*`` leaves out: the notifications' own bookkeeping and the ledgers' decisions.
_NOT_IN_ALL = names_of(
    ev.NotificationAdded,
    ev.NotificationRemoved,
    ev.IdempotencyKeyDecided,
    ev.SlotDecided,
    ev.QueueConfigured,
)
#: What ``*`` fires on.
ALL_EVENTS: Final[frozenset[str]] = frozenset(EVENT_NAMES) - _NOT_IN_ALL

#: The events after which a job has each status (what a status name fires on).
STATUS_NAMES: Final[Mapping[JobStatus, frozenset[str]]] = MappingProxyType(
    {
        JobStatus.SUBMITTED: names_of(ev.JobSubmitted),
        JobStatus.BLOCKED: names_of(ev.JobBlocked),
        JobStatus.PENDING: names_of(ev.JobPending, ev.JobRetryScheduled),
        JobStatus.ASSIGNED: names_of(ev.JobAssigned),
        JobStatus.RUNNING: names_of(ev.JobStarted),
        JobStatus.COMPLETED: names_of(ev.JobCompleted),
        JobStatus.FAILED: names_of(ev.JobFailed),
        JobStatus.CANCELED: names_of(ev.JobCanceled),
        JobStatus.SKIPPED: names_of(ev.JobSkipped),
        JobStatus.ABANDONED: names_of(ev.JobAbandoned),
    }
)

#: Tapis's job statuses that joblog has a fact for, and the events they fire on (Tapis's
#: PENDING, RUNNING and FAILED are joblog's statuses of the same name).
TAPIS_EVENTS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "CREATED": names_of(ev.JobSubmitted),
        "QUEUED": names_of(ev.JobPending, ev.JobDispatched, ev.JobRetryScheduled),
        "SUBMITTING": names_of(ev.JobAssigned),
        "FINISHED": names_of(ev.JobCompleted),
        "KILLED": names_of(ev.JobCanceled),
        "STOPPED": names_of(ev.JobCanceled),
        "DELETED": names_of(ev.JobDeleted),
    }
)
#: Tapis's statuses joblog has no fact for, and why: a notification on one is rejected.
TAPIS_UNMAPPED: Final[Mapping[str, str]] = MappingProxyType(
    {
        "UPDATED": "a job's spec never changes after its submission",
        "PERMISSION_GRANT": "joblog has no per-job permissions",
        "PERMISSION_REVOKE": "joblog has no per-job permissions",
        "PROCESSING_INPUTS": "joblog stages no inputs; a task reads its own",
        "STAGING_INPUTS": "joblog stages no inputs; a task reads its own",
        "STAGED": "joblog stages no inputs; a task reads its own",
        "STAGING_JOB": "joblog stages no inputs; a task reads its own",
        "CLEANING_UP": "a job's end is one event (COMPLETED, FAILED or CANCELED)",
        "ARCHIVING": "joblog archives nothing; a job names where its outputs go",
        "ARCHIVING_FINISHED": "joblog archives nothing; a job names where its outputs go",
        "ARCHIVING_FAILED": "joblog archives nothing; a job names where its outputs go",
        "PAUSED": "a joblog job cannot be paused",
        "HEARTBEAT": "heartbeats are workers' reports, not events of a job",
    }
)


@lru_cache(maxsize=1024)
def notification_events(event: str) -> frozenset[str]:
    """The event names a notification's ``event`` fires on.

    Args:
        event: ``*``; an event name (``JobCompleted``, ``job_completed``, ``completed``, a
            Flux name); a job status (``COMPLETED``: the events after which the job has it);
            or a Tapis status (:data:`TAPIS_EVENTS`). Case is ignored for statuses.

    Raises:
        ValueError: no event has that name, or it is a Tapis status joblog has no fact for.
    """
    text = event.strip()
    if text == "*":
        return ALL_EVENTS
    upper = text.upper()
    if upper in JobStatus.__members__:
        return STATUS_NAMES[JobStatus(upper)]
    if upper in TAPIS_EVENTS:
        return TAPIS_EVENTS[upper]
    if upper in TAPIS_UNMAPPED:
        raise ValueError(f"Tapis's {upper} has no joblog event: {TAPIS_UNMAPPED[upper]}")
    try:
        names = event_names(text)
    except ValueError:
        raise ValueError(
            f"unknown event {event!r}: give '*', an event name (JobCompleted, completed), "
            "a job status (COMPLETED, FAILED) or a Tapis status (FINISHED, KILLED)"
        ) from None
    unmatched = names & _NOT_IN_ALL
    if unmatched == names:
        raise ValueError(f"{event!r} is the engine's own bookkeeping; no notification fires on it")
    return names - unmatched


def is_email(url: str) -> bool:
    """Whether a notification's ``url`` is an email address (bare or ``mailto:``)."""
    return url.startswith("mailto:") or (not url.startswith(("http://", "https://")) and "@" in url)


def email_address(url: str) -> str:
    """The address of an email notification's ``url``."""
    return url.removeprefix("mailto:")


def placeholders(template: str) -> list[str]:
    """The template variable names ``template`` uses, in order."""
    return _PLACEHOLDER.findall(template)


def notification_problem(notification: Notification) -> str | None:
    """What is wrong with a notification, or ``None`` (the job it names is checked by the
    decision, which knows the submission's jobs)."""
    n = notification
    if n.notification_id and not NOTIFICATION_ID.match(n.notification_id):
        return (
            f"notification id {n.notification_id!r} must be 1-64 letters, digits and ._- "
            "starting with a letter or digit"
        )
    if n.notification_id and _GIVEN_ID.match(n.notification_id):
        return (
            f"notification id {n.notification_id!r} is of the form n<number>, which the "
            "scheduler gives notifications declared without an id; choose another"
        )
    size = len(n.url.encode("utf-8"))
    if not n.url:
        return "a notification needs a url: an http(s):// URL or an email address"
    if size > MAX_NOTIFICATION_URL_BYTES:
        return (
            f"notification url is {size} bytes; the limit is {MAX_NOTIFICATION_URL_BYTES} "
            "(MAX_NOTIFICATION_URL_BYTES)"
        )
    if is_email(n.url):
        if not _EMAIL.match(email_address(n.url)):
            return f"{n.url!r} is not an email address (user@host)"
    else:
        problem = _url_problem(n.url)
        if problem is not None:
            return problem
    if len(n.event) > MAX_NOTIFICATION_EVENT_CHARS:
        return (
            f"notification event is {len(n.event)} characters; the limit is "
            f"{MAX_NOTIFICATION_EVENT_CHARS}"
        )
    try:
        notification_events(n.event)
    except ValueError as exc:
        return str(exc)
    return None


def _url_problem(url: str) -> str | None:
    if not url.startswith(("http://", "https://")):
        return f"notification url {url!r} must start with http:// or https:// (or be an email)"
    if any(char.isspace() for char in url):
        return f"notification url {url!r} holds white space; percent-encode it"
    unknown = sorted({name for name in placeholders(url) if name not in TEMPLATE_VARIABLES})
    if unknown:
        return (
            f"notification url uses unknown template variable(s) {', '.join(unknown)}; "
            f"known: {', '.join(TEMPLATE_VARIABLES)}"
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"notification url {url!r} is not a URL: {exc}"
    if not parts.netloc:
        return f"notification url {url!r} names no host"
    return None


def fires(notification: Notification, event: Event) -> bool:
    """Whether ``notification`` fires for ``event``: its ``event`` names it, and it is an
    event of the notification's job (any event of the submission when it names none)."""
    if notification.job_id and event.job_id != notification.job_id:
        return False
    try:
        return event.name in notification_events(notification.event)
    except ValueError:
        return False  # validated when it was added; a name that went away fires on nothing


def fired_once(notifications: Iterable[Notification], event: Event) -> list[Notification]:
    """The notifications that are not persistent and fire for ``event`` (removed after it)."""
    return [n for n in notifications if not n.persistent and fires(n, event)]


def active_after(
    notifications: tuple[Notification, ...], body: ev.NotificationAdded | ev.NotificationRemoved
) -> tuple[Notification, ...]:
    """A submission's notifications after one of their events."""
    if isinstance(body, ev.NotificationAdded):
        return (*notifications, body.notification)
    return tuple(n for n in notifications if n.notification_id != body.notification_id)


# --------------------------------------------------------------------------- decisions


def submitted_problem(
    notifications: tuple[Notification, ...], job_ids: Iterable[str]
) -> tuple[RejectionCode, str] | None:
    """What is wrong with the notifications of a submission, or ``None``."""
    if len(notifications) > MAX_NOTIFICATIONS:
        return RejectionCode.TOO_MANY_NOTIFICATIONS, (
            f"{len(notifications)} notifications in one submission; the limit is "
            f"{MAX_NOTIFICATIONS}"
        )
    jobs = set(job_ids)
    ids: set[str] = set()
    for index, notification in enumerate(notifications):
        problem = notification_problem(notification)
        if problem is not None:
            return RejectionCode.BAD_NOTIFICATION, f"notifications[{index}]: {problem}"
        if notification.job_id and notification.job_id not in jobs:
            return RejectionCode.BAD_NOTIFICATION, (
                f"notifications[{index}]: the submission has no job {notification.job_id!r}"
            )
        if notification.notification_id in ids:
            return RejectionCode.DUPLICATE_NOTIFICATION, (
                f"notification id {notification.notification_id!r} appears twice"
            )
        if notification.notification_id:
            ids.add(notification.notification_id)
    return None


def emit_added(draft: Draft, notification: Notification, command_id: str, by: str) -> None:
    """Emits ``NotificationAdded``, naming a notification declared without an id."""
    if not notification.notification_id:
        notification = Notification(
            notification_id=f"n{draft.state.seq + 1}",
            url=notification.url,
            event=notification.event,
            persistent=notification.persistent,
            job_id=notification.job_id,
        )
    draft.emit("", ev.NotificationAdded(notification, command_id=command_id, requested_by=by))


def fire(draft: Draft, event: Event) -> None:
    """Removes the notifications that are not persistent and fired for ``event``."""
    for notification in fired_once(draft.state.notifications, event):
        draft.emit(
            "",
            ev.NotificationRemoved(
                notification.notification_id,
                reason=f"fired for {event.name} and is not persistent",
                fired_seq=event.seq,
            ),
        )


def decide_add_notification(draft: Draft, command: AddNotification) -> None:
    """Adds a notification to a live submission, or rejects the command with a reason."""
    state = draft.state
    notification = command.notification
    job_id = notification.job_id

    def reject(code: RejectionCode, reason: str) -> None:
        draft.reject(command.command_id, "AddNotification", code, reason, job_id)

    if not state.accepted:
        reject(RejectionCode.UNKNOWN_SUBMISSION, f"no submission {state.submission_id!r}")
        return
    problem = notification_problem(notification)
    if problem is not None:
        reject(RejectionCode.BAD_NOTIFICATION, problem)
        return
    if job_id:
        job = state.jobs.get(job_id)
        if job is None:
            reject(
                RejectionCode.UNKNOWN_JOB,
                f"submission {state.submission_id!r} has no job {job_id!r}",
            )
            return
        if job.deleted:
            reject(RejectionCode.DELETED, f"job {job_id!r} was deleted")
            return
        if job.is_terminal:
            reject(
                RejectionCode.ALREADY_TERMINAL,
                f"job {job_id!r} already ended {job.status}; nothing is left to notify",
            )
            return
    elif state.done:
        reject(
            RejectionCode.ALREADY_TERMINAL,
            f"submission {state.submission_id!r} already finished {state.outcome}; "
            "nothing is left to notify",
        )
        return
    if any(n.notification_id == notification.notification_id for n in state.notifications):
        reject(
            RejectionCode.DUPLICATE_NOTIFICATION,
            f"submission {state.submission_id!r} has a notification "
            f"{notification.notification_id!r}; remove it first or choose another id",
        )
        return
    if len(state.notifications) >= MAX_NOTIFICATIONS:
        reject(
            RejectionCode.TOO_MANY_NOTIFICATIONS,
            f"submission {state.submission_id!r} has {len(state.notifications)} "
            f"notifications; the limit is {MAX_NOTIFICATIONS}",
        )
        return
    emit_added(draft, notification, command.command_id, command.requested_by)


def decide_remove_notification(draft: Draft, command: RemoveNotification) -> None:
    """Removes a notification by its id, or rejects the command with a reason."""
    state = draft.state
    if not state.accepted:
        draft.reject(
            command.command_id,
            "RemoveNotification",
            RejectionCode.UNKNOWN_SUBMISSION,
            f"no submission {state.submission_id!r}",
        )
        return
    if not any(n.notification_id == command.notification_id for n in state.notifications):
        draft.reject(
            command.command_id,
            "RemoveNotification",
            RejectionCode.UNKNOWN_NOTIFICATION,
            f"submission {state.submission_id!r} has no notification "
            f"{command.notification_id!r} (one that is not persistent is removed once it fired)",
        )
        return
    by = f" by {command.requested_by}" if command.requested_by else ""
    draft.emit(
        "",
        ev.NotificationRemoved(
            command.notification_id,
            reason=f"removed{by}",
            command_id=command.command_id,
            requested_by=command.requested_by,
        ),
    )


__all__ = [
    "ALL_EVENTS",
    "MAX_NOTIFICATIONS",
    "MAX_NOTIFICATION_EVENT_CHARS",
    "MAX_NOTIFICATION_URL_BYTES",
    "STATUS_NAMES",
    "TAPIS_EVENTS",
    "TAPIS_UNMAPPED",
    "TEMPLATE_VARIABLES",
    "active_after",
    "decide_add_notification",
    "decide_remove_notification",
    "email_address",
    "emit_added",
    "fire",
    "fired_once",
    "fires",
    "is_email",
    "notification_events",
    "notification_problem",
    "placeholders",
    "submitted_problem",
]
