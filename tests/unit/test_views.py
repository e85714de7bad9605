"""The core's read model: event names, status changes, durations and the names users import."""

from __future__ import annotations

from typing import Any, get_args

from hypothesis import given, settings
from hypothesis import strategies as st

import engine
import engine.watch
import engine.worker
from engine.codec import events as codec_events
from engine.lifecycle.durations import durations, job_times, moves_times
from engine.lifecycle.names import EVENT_NAMES, EVENT_TYPES, names_of
from engine.lifecycle.records import (
    Event,
    EventBody,
    FailureReason,
    JobBlocked,
    JobCompleted,
    JobPending,
    JobRetryScheduled,
    JobSpec,
    JobStarted,
    JobSubmitted,
)
from engine.lifecycle.views import (
    STATUS_EVENTS,
    SUBMISSION_EVENTS,
    JobView,
    StatusChange,
    SubmissionChange,
    SubmissionView,
    status_after,
)
from engine.notify.subscriptions import DEFAULT_EVENTS
from tests.unit.fixtures import strategies as s

quick = settings(max_examples=40, deadline=None)
T0 = 1_700_000_000_000
SID = "s-1"


def ev(seq: int, job_id: str, body: EventBody, at: int = 0) -> Event:
    return Event(f"{SID}:{seq}", SID, job_id, seq, T0 + at, body)


# --------------------------------------------------------------------------- names


def test_event_names_are_the_union_in_its_order() -> None:
    assert get_args(EventBody) == EVENT_TYPES
    assert tuple(cls.__name__ for cls in get_args(EventBody)) == EVENT_NAMES
    assert "IdempotencyKeyDecided" in EVENT_NAMES


def test_the_codec_lists_the_bodies_in_the_unions_order() -> None:
    assert tuple(cls for cls, *_ in codec_events._BODIES) == EVENT_TYPES


def test_derived_name_sets_keep_their_members() -> None:
    assert {
        "JobSubmitted",
        "JobBlocked",
        "JobPending",
        "JobAssigned",
        "JobStarted",
        "JobRetryScheduled",
        "JobCompleted",
        "JobFailed",
        "JobCanceled",
        "JobAbandoned",
        "JobSkipped",
        "JobRerun",
        "SubmissionCompleted",
    } == DEFAULT_EVENTS
    assert {"SubmissionAccepted", "SubmissionCompleted", "CommandRejected"} == SUBMISSION_EVENTS
    assert names_of(JobStarted, JobCompleted) == {"JobStarted", "JobCompleted"}


# --------------------------------------------------------------------------- status changes


@given(st.data())
@quick
def test_status_changes_are_the_events_status_after_maps(data: st.DataObject) -> None:
    for cls, bodies in s.event_bodies_by_class.items():
        body = data.draw(bodies, label=cls.__name__)
        assert (status_after(body) is not None) == isinstance(body, StatusChange), cls
        assert (cls.__name__ in STATUS_EVENTS) == (status_after(body) is not None)


@given(st.data())
@quick
def test_submission_events_make_no_job_in_the_view(data: st.DataObject) -> None:
    for cls in get_args(SubmissionChange):
        body = data.draw(s.event_bodies_by_class[cls], label=cls.__name__)
        assert SubmissionView(SID).apply(ev(1, "", body)) == (None, None)


# --------------------------------------------------------------------------- durations


@given(st.data())
@quick
def test_events_that_move_no_time_leave_job_times_alone(data: st.DataObject) -> None:
    start = [ev(1, "a", JobSubmitted(JobSpec(job_id="a", task="t"))), ev(2, "a", JobBlocked(()))]
    for cls, bodies in s.event_bodies_by_class.items():
        body: Any = data.draw(bodies, label=cls.__name__)
        if not moves_times(body):
            assert job_times([*start, ev(3, "a", body, 500)]) == job_times(start), cls


def test_a_views_durations_are_the_cores() -> None:
    events = [
        ev(1, "a", JobSubmitted(JobSpec(job_id="a", task="t")), 0),
        ev(2, "a", JobBlocked(("b",)), 10),
        ev(3, "a", JobPending(1, "q", "d1", 0), 400),
        ev(4, "a", JobStarted(1, "w1"), 1_000),
        ev(5, "a", JobRetryScheduled(1, FailureReason.ERROR, "E", "", 2, 0, "d2", "q"), 1_500),
        ev(6, "a", JobStarted(2, "w1"), 2_250),
        ev(7, "a", JobCompleted(2), 5_000),
    ]
    view = SubmissionView(SID)
    for event in events:
        view.apply(event)
    job = view.jobs["a"]
    spans = durations(events)
    assert (spans.execution_ms, spans.pending_ms, spans.blocked_ms) == (2_750, 750, 390)
    assert (job.execution_duration, job.pending_duration, job.blocked_duration) == (
        2.75,
        0.75,
        0.39,
    )


# --------------------------------------------------------------------------- public names


def test_moved_names_are_importable_where_users_import_them() -> None:
    assert engine.JobView is engine.watch.JobView is JobView
    assert engine.SubmissionView is engine.watch.SubmissionView is SubmissionView
    assert engine.watch.status_after is status_after
    assert engine.watch.EVENT_NAMES is EVENT_NAMES


def test_the_two_exceptions_have_two_names() -> None:
    assert engine.JobException is engine.watch.JobException
    assert engine.worker.JobException is engine.worker.FatalException
    assert engine.worker.FatalException is not engine.JobException
