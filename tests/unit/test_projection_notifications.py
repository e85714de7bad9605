"""The projection's ``notifications`` view: a submission's declared webhooks and emails."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb

from engine.lifecycle.records import (
    Event,
    JobSpec,
    JobSubmitted,
    Notification,
    NotificationAdded,
    NotificationRemoved,
    SubmissionAccepted,
)
from projections.fold import Fold
from projections.schema import create_schema


def test_the_view_shows_each_notification_with_its_removal() -> None:
    events = [
        Event("s:1", "s", "", 1, 1000, SubmissionAccepted("c", "", (), ("a",))),
        Event(
            "s:2",
            "s",
            "",
            2,
            1000,
            NotificationAdded(Notification("once", "ops@x.org", "FINISHED", False, "a"), "c", "me"),
        ),
        Event(
            "s:3",
            "s",
            "",
            3,
            1000,
            NotificationAdded(Notification("kept", "https://x.org/h", "*", True), "c", "me"),
        ),
        Event("s:4", "s", "a", 4, 1500, JobSubmitted(JobSpec("a", task="t"))),
        Event("s:5", "s", "", 5, 2000, NotificationRemoved("once", "fired", 4)),
    ]
    fold = Fold()
    for event in events:
        fold.event(event)
    rows = fold.take().job_events
    connection = duckdb.connect()
    create_schema(connection)
    columns = list(rows[0])
    names = ", ".join(f'"{name}"' for name in columns)
    for row in rows:
        values = [
            datetime.fromtimestamp(v / 1000, UTC).replace(tzinfo=None) if k == "timestamp" else v
            for k, v in row.items()
        ]
        connection.execute(
            f"INSERT INTO job_events ({names}) VALUES ({', '.join('?' * len(columns))})", values
        )
    found = connection.execute(
        "SELECT notification_id, job_id, event, persistent, fired_seq, active "
        "FROM notifications ORDER BY notification_id"
    ).fetchall()
    assert found == [
        ("kept", None, "*", True, None, True),
        ("once", "a", "FINISHED", False, 4, False),
    ]
