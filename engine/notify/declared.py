"""Notifications declared by submissions, as the notifier learns them from ``events``.

A submission's notifications (``SubmitJobs.notifications``, ``AddNotification``) are events of
the submission (``NotificationAdded``, ``NotificationRemoved``), decided by the scheduler
(:mod:`engine.lifecycle.notifications`). The notifier folds them as it reads the log, beside
its subscriptions file: each one becomes a :class:`~engine.notify.subscriptions.Subscription`
limited to its submission (and job), delivered with the same signing, retries and ordering.
A notification that is not persistent is removed by the scheduler right after the event it
fired for, so the fold sends it exactly that event.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from engine.lifecycle import records as ev
from engine.lifecycle.notifications import email_address, is_email, notification_events
from engine.lifecycle.records import Event, Notification
from engine.lifecycle.state import SubmissionState
from engine.notify.subscriptions import Subscription

log = logging.getLogger("joblog.notifier")

#: The subject of a declared email notification, after Tapis's job emails.
EMAIL_SUBJECT = "Job ${JOB_ID} ${JOB_STATUS}: ${JOB_NAME}"


@dataclass(frozen=True)
class DeclaredSettings:
    """What every declared notification of this notifier shares.

    Attributes:
        secret: the ``whsec_`` secret their webhooks are signed with (``None``: unsigned).
        max_attempts / timeout: as a subscription's (``None``: the notifier's defaults).
    """

    secret: str | None = None
    max_attempts: int | None = None
    timeout: float | None = None


def subscription_of(
    submission_id: str, notification: Notification, settings: DeclaredSettings
) -> Subscription:
    """The subscription that delivers one declared notification.

    Its id is ``<submission id>/<notification id>``: the ``webhook-id`` of its messages and
    the ``subscription`` of its deliveries-log lines.
    """
    email = email_address(notification.url) if is_email(notification.url) else ""
    return Subscription(
        id=f"{submission_id}/{notification.notification_id}",
        url="" if email else notification.url,
        email=email,
        secret=settings.secret,
        events=notification_events(notification.event),
        submissions=frozenset({submission_id}),
        jobs=frozenset({notification.job_id}) if notification.job_id else frozenset(),
        subject=EMAIL_SUBJECT,
        max_attempts=settings.max_attempts,
        timeout=settings.timeout,
        notification_id=notification.notification_id,
    )


class DeclaredNotifications:
    """The declared notifications in place, per submission, folded from events.

    Bounded: beyond ``capacity`` submissions with notifications, the least recently used
    one's are dropped (and logged), so a notifier's memory does not grow with the log.

    Args:
        settings: what their subscriptions share.
        capacity: submissions kept.
    """

    def __init__(self, settings: DeclaredSettings, capacity: int = 100_000) -> None:
        self.settings = settings
        self.capacity = capacity
        self.dropped = 0
        self._by_submission: OrderedDict[str, dict[str, Subscription]] = OrderedDict()
        self._partition: dict[str, int] = {}

    def __len__(self) -> int:
        return sum(len(items) for items in self._by_submission.values())

    def apply(self, partition: int, event: Event) -> None:
        """Folds one event of the log (only the notifications' own events change anything)."""
        body = event.body
        sid = event.submission_id
        if isinstance(body, ev.NotificationAdded):
            self._add(partition, sid, body.notification)
        elif isinstance(body, ev.NotificationRemoved):
            kept = self._by_submission.get(sid)
            if kept is not None:
                kept.pop(body.notification_id, None)
                if not kept:
                    del self._by_submission[sid]
                    self._partition.pop(sid, None)

    def seed(self, partition: int, states: Iterable[SubmissionState]) -> int:
        """Takes the notifications in place in snapshots of the partition's submissions
        (read from ``state`` when the partition is assigned), before its events are replayed.

        The replay folds whatever happened after a snapshot on top, so a notification
        declared longer ago than the replay window reaches back still reaches a restarted
        notifier. Finished submissions are left out: they send nothing more.

        Returns:
            How many notifications were taken.
        """
        taken = 0
        for state in states:
            if state.outcome is not None or not state.notifications:
                continue
            for notification in state.notifications:
                self._add(partition, state.submission_id, notification)
                taken += 1
        return taken

    def _add(self, partition: int, sid: str, notification: Notification) -> None:
        items = self._by_submission.setdefault(sid, {})
        self._by_submission.move_to_end(sid)
        self._partition[sid] = partition
        try:
            items[notification.notification_id] = subscription_of(sid, notification, self.settings)
        except ValueError as exc:  # the scheduler validated it; a name that went away
            log.warning("notification %s/%s ignored: %s", sid, notification.notification_id, exc)
        while len(self._by_submission) > self.capacity:
            gone, _ = self._by_submission.popitem(last=False)
            self._partition.pop(gone, None)
            self.dropped += 1
            log.warning("dropped the declared notifications of %s (capacity reached)", gone)

    def of(self, submission_id: str) -> list[Subscription]:
        """The subscriptions of a submission's notifications in place, in the order added."""
        items = self._by_submission.get(submission_id)
        return list(items.values()) if items else []

    def forget(self, partitions: set[int]) -> None:
        """Drops the submissions of partitions that are re-read (assigned again) or gone."""
        for sid in [s for s, p in self._partition.items() if p in partitions]:
            self._by_submission.pop(sid, None)
            del self._partition[sid]
