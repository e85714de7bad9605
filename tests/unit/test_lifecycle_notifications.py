"""Notifications declared by a submission (Tapis's ``notifications``): given / when / then.

A submission declares webhooks and emails with its jobs, adds and removes them later, and
every change is an event of the scheduler; one that is not persistent is removed right after
the first event it fires for.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given as given_
from hypothesis import settings
from hypothesis import strategies as st

from engine.lifecycle import records as ev
from engine.lifecycle.notifications import (
    ALL_EVENTS,
    MAX_NOTIFICATION_URL_BYTES,
    MAX_NOTIFICATIONS,
    STATUS_NAMES,
    TAPIS_EVENTS,
    fires,
    is_email,
    notification_events,
    notification_problem,
)
from engine.lifecycle.records import (
    AddNotification,
    CommandRejected,
    Event,
    JobStatus,
    Notification,
    NotificationAdded,
    NotificationRemoved,
    RejectionCode,
    RemoveNotification,
    SubmissionAccepted,
    SubmitJobs,
)
from engine.lifecycle.views import SubmissionView, status_after
from tests.unit.fixtures.strategies import event_bodies_by_class
from tests.unit.lifecycle_dsl import SUB, given, job, on, succeeded

HOOK = "https://example.com/hook?job=${JOB_ID}&status=${EVENT}"


def submit_with(*notifications: Notification, jobs: tuple[str, ...] = ("a",)) -> SubmitJobs:
    return SubmitJobs(
        command_id="submit-1",
        submission_id=SUB,
        jobs=tuple(job(job_id) for job_id in jobs),
        submitted_by="alice",
        notifications=notifications,
    )


def add(notification: Notification, command_id: str = "add-1") -> AddNotification:
    return AddNotification(command_id, SUB, notification, requested_by="bob")


def remove(notification_id: str, command_id: str = "remove-1") -> RemoveNotification:
    return RemoveNotification(command_id, SUB, notification_id, requested_by="bob")


def hook(notification_id: str = "", event: str = "*", **changes: object) -> Notification:
    return replace(Notification(notification_id, HOOK, event), **changes)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- declared at submit


def test_a_submission_declares_its_notifications_right_after_it_is_accepted() -> None:
    scenario = given().when(
        submit_with(hook("done", "FINISHED", persistent=True), hook(event="failed"))
    )
    names = [event.name for event in scenario.last]
    assert names[:3] == ["SubmissionAccepted", "NotificationAdded", "NotificationAdded"]
    first, second = (e.body for e in scenario.last[1:3])
    assert isinstance(first, NotificationAdded) and isinstance(second, NotificationAdded)
    assert first.notification == hook("done", "FINISHED", persistent=True)
    assert (first.command_id, first.requested_by) == ("submit-1", "alice")
    # declared without an id: named after the seq of its event
    assert second.notification.notification_id == "n3"
    assert scenario.state is not None
    assert [n.notification_id for n in scenario.state.notifications] == ["done", "n3"]


@pytest.mark.parametrize(
    ("notification", "code"),
    [
        (Notification("", "ftp://example.com/x"), RejectionCode.BAD_NOTIFICATION),
        (Notification("", "https://"), RejectionCode.BAD_NOTIFICATION),
        (Notification("", "https://example.com/${NOPE}"), RejectionCode.BAD_NOTIFICATION),
        (Notification("", "https://example.com/a b"), RejectionCode.BAD_NOTIFICATION),
        (Notification("", "not an email@"), RejectionCode.BAD_NOTIFICATION),
        (Notification("", ""), RejectionCode.BAD_NOTIFICATION),
        (Notification("", HOOK, "JobExploded"), RejectionCode.BAD_NOTIFICATION),
        (Notification("", HOOK, "ARCHIVING"), RejectionCode.BAD_NOTIFICATION),
        (Notification("", HOOK, "NotificationAdded"), RejectionCode.BAD_NOTIFICATION),
        (Notification("n7", HOOK), RejectionCode.BAD_NOTIFICATION),
        (Notification("-x", HOOK), RejectionCode.BAD_NOTIFICATION),
        (Notification("", HOOK, job_id="zz"), RejectionCode.BAD_NOTIFICATION),
        (
            Notification("", "https://example.com/" + "x" * MAX_NOTIFICATION_URL_BYTES),
            RejectionCode.BAD_NOTIFICATION,
        ),
    ],
)
def test_a_submission_with_a_bad_notification_is_rejected_whole(
    notification: Notification, code: RejectionCode
) -> None:
    scenario = given().when(submit_with(notification)).then_rejected(code)
    assert scenario.state is not None and not scenario.state.accepted
    body = scenario.last[0].body
    assert isinstance(body, CommandRejected) and body.reason.startswith("notifications[0]")


def test_two_notifications_with_one_id_and_too_many_are_rejected() -> None:
    given().when(submit_with(hook("x"), hook("x"))).then_rejected(
        RejectionCode.DUPLICATE_NOTIFICATION
    )
    many = tuple(hook(f"h{i}") for i in range(MAX_NOTIFICATIONS + 1))
    given().when(submit_with(*many)).then_rejected(RejectionCode.TOO_MANY_NOTIFICATIONS)


# --------------------------------------------------------------------------- Tapis's persistent


def test_a_notification_that_is_not_persistent_goes_right_after_the_first_event_it_fires_for() -> (
    None
):
    scenario = given(submit_with(hook("once", "RUNNING", job_id="a")))
    scenario.when(succeeded("a")[0])  # claimed: ASSIGNED, does not fire
    assert [event.name for event in scenario.last] == ["JobAssigned"]
    scenario.when(succeeded("a")[1])  # started: RUNNING fires it
    started, removed = scenario.last
    assert started.name == "JobStarted"
    assert removed.body == NotificationRemoved(
        "once", reason="fired for JobStarted and is not persistent", fired_seq=started.seq
    )
    assert removed.seq == started.seq + 1 and removed.job_id == ""
    assert scenario.state is not None and scenario.state.notifications == ()


def test_a_star_notification_declared_at_submit_fires_once_for_the_first_job_event() -> None:
    scenario = given().when(submit_with(hook("first")))
    names = [event.name for event in scenario.last]
    assert names[:4] == [
        "SubmissionAccepted",
        "NotificationAdded",
        "JobSubmitted",
        ("NotificationRemoved"),
    ]
    assert scenario.last[3].body == NotificationRemoved(
        "first", reason="fired for JobSubmitted and is not persistent", fired_seq=3
    )


def test_a_persistent_notification_stays_after_it_fired() -> None:
    scenario = given(submit_with(hook("always", "*", persistent=True)), *succeeded("a"))
    assert not any(isinstance(e.body, NotificationRemoved) for e in scenario.sequenced())
    assert scenario.state is not None
    assert [n.notification_id for n in scenario.state.notifications] == ["always"]


def test_a_job_notification_does_not_fire_for_another_job() -> None:
    scenario = given(submit_with(hook("b-only", "COMPLETED", job_id="b"), jobs=("a", "b")))
    scenario.when(succeeded("a")[2])
    assert not any(isinstance(e.body, NotificationRemoved) for e in scenario.last)
    scenario.step(*succeeded("b"))
    removed = [e for e in scenario.last if isinstance(e.body, NotificationRemoved)]
    assert len(removed) == 1 and removed[0].body.notification_id == "b-only"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- added, removed later


def test_a_notification_added_later_is_an_event_and_remove_takes_it_away() -> None:
    scenario = given(submit_with())
    scenario.when(add(hook("later", "FAILED", persistent=True)))
    scenario.then(NotificationAdded(hook("later", "FAILED", persistent=True), "add-1", "bob"))
    scenario.when(remove("later")).then(
        NotificationRemoved(
            "later", reason="removed by bob", command_id="remove-1", requested_by="bob"
        )
    )
    assert scenario.state is not None and scenario.state.notifications == ()
    scenario.when(remove("later", "remove-2")).then_rejected(RejectionCode.UNKNOWN_NOTIFICATION)


def test_an_added_notification_without_an_id_gets_one_from_its_seq() -> None:
    scenario = given(submit_with()).when(add(hook(persistent=True)))
    (added,) = scenario.last
    assert isinstance(added.body, NotificationAdded)
    assert added.body.notification.notification_id == f"n{added.seq}"


@pytest.mark.parametrize(
    ("setup", "command", "code"),
    [
        ("none", add(hook("x")), RejectionCode.UNKNOWN_SUBMISSION),
        ("none", remove("x"), RejectionCode.UNKNOWN_SUBMISSION),
        ("live", add(hook("x", job_id="zz")), RejectionCode.UNKNOWN_JOB),
        ("live", add(Notification("x", "gopher://x")), RejectionCode.BAD_NOTIFICATION),
        ("live", add(hook("x", "STAGING_INPUTS")), RejectionCode.BAD_NOTIFICATION),
        ("hooked", add(hook("x")), RejectionCode.DUPLICATE_NOTIFICATION),
        ("done", add(hook("y")), RejectionCode.ALREADY_TERMINAL),
        ("done", add(hook("y", job_id="a")), RejectionCode.ALREADY_TERMINAL),
    ],
)
def test_adding_or_removing_against_the_rules_is_rejected(
    setup: str, command: AddNotification | RemoveNotification, code: RejectionCode
) -> None:
    if setup == "none":
        scenario = given()
    elif setup == "live":
        scenario = given(submit_with())
    elif setup == "hooked":
        scenario = given(submit_with(hook("x", persistent=True)))
    else:
        scenario = given(submit_with(), *succeeded("a"))
    scenario.when(command).then_rejected(
        code, job_id=getattr(command, "notification", hook()).job_id
    )


def test_too_many_notifications_added_are_rejected() -> None:
    many = tuple(hook(f"h{i}", persistent=True) for i in range(MAX_NOTIFICATIONS))
    given(submit_with(*many)).when(add(hook("one-more"))).then_rejected(
        RejectionCode.TOO_MANY_NOTIFICATIONS
    )


def test_the_notifications_survive_a_replay_of_the_events() -> None:
    scenario = given(
        submit_with(hook("keep", persistent=True), hook("once", "RUNNING")),
        add(hook("added", "COMPLETED", persistent=True)),
        *succeeded("a"),
    )
    assert scenario.state is not None
    assert scenario.replayed().notifications == scenario.state.notifications
    assert [n.notification_id for n in scenario.state.notifications] == ["keep", "added"]


# --------------------------------------------------------------------------- names and matching


_STATUS_OF_NAME = [(status, name) for status, names in STATUS_NAMES.items() for name in names]


@settings(max_examples=50)
@given_(st.sampled_from(_STATUS_OF_NAME), st.data())
def test_status_names_fire_on_the_events_after_which_the_job_has_that_status(
    pair: tuple[JobStatus, str], data: st.DataObject
) -> None:
    status, name = pair
    body = data.draw(event_bodies_by_class[getattr(ev, name)])
    assert status_after(body) is status
    assert set(STATUS_NAMES) == set(JobStatus)


@pytest.mark.parametrize(
    ("event", "names"),
    [
        ("*", ALL_EVENTS),
        ("COMPLETED", {"JobCompleted"}),
        ("completed", {"JobCompleted"}),
        ("JobCompleted", {"JobCompleted"}),
        ("job_completed", {"JobCompleted"}),
        ("FINISHED", {"JobCompleted"}),
        ("KILLED", {"JobCanceled"}),
        ("STOPPED", {"JobCanceled"}),
        ("CREATED", {"JobSubmitted"}),
        ("PENDING", {"JobPending", "JobRetryScheduled"}),
        ("RUNNING", {"JobStarted"}),
        ("DELETED", {"JobDeleted"}),
        ("progress", {"JobProgressed"}),
        ("finish", {"JobCompleted", "JobFailed", "JobCanceled"}),
    ],
)
def test_a_notification_event_names_joblog_events_statuses_or_tapis_statuses(
    event: str, names: set[str]
) -> None:
    assert notification_events(event) == names


def test_star_leaves_out_the_engines_bookkeeping() -> None:
    assert "NotificationAdded" not in ALL_EVENTS
    assert "NotificationRemoved" not in ALL_EVENTS
    assert "IdempotencyKeyDecided" not in ALL_EVENTS
    assert {"JobSubmitted", "JobOutput", "SubmissionCompleted"} <= ALL_EVENTS
    assert set(TAPIS_EVENTS) >= {"FINISHED", "KILLED", "QUEUED"}


def test_an_email_address_as_url_is_an_email() -> None:
    assert is_email("ops@example.com") and is_email("mailto:ops@example.com")
    assert not is_email("https://user@example.com/hook")
    assert notification_problem(Notification("", "ops@example.com", "FINISHED")) is None
    assert notification_problem(Notification("", "mailto:ops@example.com")) is None


def test_fires_checks_the_job_and_the_event() -> None:
    done = Event("s:5", "s", "a", 5, 0, ev.JobCompleted(1))
    accepted = Event("s:1", "s", "", 1, 0, SubmissionAccepted("c", "", (), ("a",)))
    assert fires(Notification("x", HOOK, "FINISHED"), done)
    assert fires(Notification("x", HOOK, "FINISHED", job_id="a"), done)
    assert not fires(Notification("x", HOOK, "FINISHED", job_id="b"), done)
    assert not fires(Notification("x", HOOK, "FAILED"), done)
    assert fires(Notification("x", HOOK, "*"), accepted)
    assert not fires(Notification("x", HOOK, "*", job_id="a"), accepted)


def test_the_submission_view_folds_the_notifications_in_place() -> None:
    scenario = given(
        submit_with(hook("keep", persistent=True), hook("once", "RUNNING")),
        *succeeded("a"),
    )
    view = SubmissionView(SUB)
    for event in scenario.sequenced():
        view.apply(event)
    assert list(view.notifications) == ["keep"]
    assert view.jobs["a"].status is JobStatus.COMPLETED
    assert "" not in view.jobs


def test_a_rejected_submit_declares_nothing() -> None:
    scenario = given().when(submit_with(hook("x", "NOPE")))
    assert all(isinstance(event.body, CommandRejected) for event in scenario.last)
    scenario.then_includes(on("", CommandRejected))
