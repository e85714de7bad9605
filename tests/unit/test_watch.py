"""The fold behind watching, event names, and the client's job descriptions (no broker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.api import (
    InvalidJob,
    Job,
    job_key,
    jobs_from_data,
    resolve,
    to_specs,
)
from engine.lifecycle.records import (
    CommandRejected,
    Event,
    EventBody,
    FailureReason,
    JobAbandoned,
    JobAssigned,
    JobBlocked,
    JobCompleted,
    JobDeleted,
    JobExceptionRaised,
    JobPending,
    JobProgressed,
    JobRetryScheduled,
    JobSpec,
    JobStarted,
    JobStatus,
    JobSubmitted,
    RetryPolicy,
    SubmissionAccepted,
    SubmissionCompleted,
    SubmissionStatus,
)
from engine.watch import (
    EVENT_NAMES,
    LIVE,
    JobException,
    JobView,
    Live,
    SubmissionView,
    event_name,
    status_after,
)
from engine.worker import task
from projections.jobs import job_from_row

T0 = 1_700_000_000_000
SID = "s-1"


def ev(seq: int, job_id: str, body: EventBody, at: int = 0) -> Event:
    return Event(f"{SID}:{seq}", SID, job_id, seq, T0 + at, body)


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("JobCompleted", "JobCompleted"),
        ("job_completed", "JobCompleted"),
        ("completed", "JobCompleted"),
        ("started", "JobStarted"),
        ("exception", "JobExceptionRaised"),
        ("progress", "JobProgressed"),
        ("submission_completed", "SubmissionCompleted"),
    ],
)
def test_event_names_accept_short_forms(given: str, canonical: str) -> None:
    assert event_name(given) == canonical


def test_unknown_event_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="JobCompleted"):
        event_name("finish")
    assert "CommandRejected" in EVENT_NAMES


def test_live_is_a_singleton() -> None:
    assert Live() is LIVE
    assert repr(LIVE) == "LIVE"


def test_status_after() -> None:
    assert status_after(JobRetryScheduled(1, FailureReason.ERROR, "E", "", 2, 0, None, "q")) == (
        JobStatus.PENDING
    )
    assert status_after(JobProgressed(1, 1.0, 2.0, None)) is None


# --------------------------------------------------------------------------- the fold


def test_fold_follows_a_job_through_a_retry_to_completion() -> None:
    spec = JobSpec(job_id="a", task="t", retry=RetryPolicy(max_attempts=2))
    view = SubmissionView(SID)
    events = [
        ev(1, "", SubmissionAccepted("c", "me", (), ("a",))),
        ev(2, "a", JobSubmitted(spec)),
        ev(3, "a", JobPending(1, "default", "d1", 0), 10),
        ev(4, "a", JobAssigned(1, "d1", "w1", 30_000), 20),
        ev(5, "a", JobStarted(1, "w1"), 30),
        ev(6, "a", JobExceptionRaised(1, "Flaky", "first try", 0), 40),
        ev(
            7, "a", JobRetryScheduled(1, FailureReason.EXCEPTION, "Flaky", "x", 2, 0, "d2", "q"), 50
        ),
        ev(8, "a", JobStarted(2, "w2"), 1000),
        ev(9, "a", JobProgressed(2, 3.0, 4.0, "three of four"), 1500),
        ev(10, "a", JobCompleted(2, result="42"), 3000),
        ev(11, "", SubmissionCompleted(SubmissionStatus.COMPLETED, (("COMPLETED", 1),))),
    ]
    changes = [view.apply(event) for event in events]
    job = view.jobs["a"]
    assert view.accepted and view.done and view.outcome is SubmissionStatus.COMPLETED
    assert job.status is JobStatus.COMPLETED
    assert job.attempt == 2 and job.max_attempts == 2
    assert job.exceptions == 1
    assert job.result == "42"
    assert job.fraction == 0.75 and job.status_line == "three of four"
    assert job.execution_duration == pytest.approx(2.0)
    assert job.pending_duration == pytest.approx(0.95)
    before, after = changes[6]
    assert before is not None and after is not None
    assert (before.status, after.status) == (JobStatus.RUNNING, JobStatus.PENDING)
    assert changes[0] == (None, None)


def test_fold_of_a_blocked_job_that_is_abandoned() -> None:
    view = SubmissionView(SID)
    view.apply(ev(1, "b", JobSubmitted(JobSpec(job_id="b", task="t", depends_on=("a",)))))
    view.apply(ev(2, "b", JobBlocked(("a",)), 100))
    view.apply(ev(3, "b", JobAbandoned("a", JobStatus.CANCELED), 600))
    job = view.jobs["b"]
    assert job.status is JobStatus.ABANDONED
    assert job.blocked_duration == pytest.approx(0.5)
    assert "a ended CANCELED" in job.error
    view.apply(ev(4, "b", JobDeleted()))
    assert view.jobs["b"].deleted


def test_fold_starting_mid_stream_makes_bare_jobs() -> None:
    view = SubmissionView(SID)
    _, after = view.apply(ev(7, "x", JobStarted(1, "w")))
    assert after is not None and after.status is JobStatus.RUNNING and after.task is None


def test_rejected_submission_is_done() -> None:
    view = SubmissionView(SID)
    view.apply(ev(0, "", CommandRejected("c", "SubmitJobs", "cycle", "a -> b -> a")))
    assert view.done and view.rejection is not None and view.outcome is None


def test_running_durations_count_up_to_now() -> None:
    started = datetime.now(UTC) - timedelta(seconds=5)
    job = JobView(SID, "a", status=JobStatus.RUNNING, run_at=started, pending_at=started)
    assert job.execution_duration is not None and job.execution_duration >= 5
    assert job.pending_duration == 0


def test_job_exception_carries_flux_fields() -> None:
    error = JobException(ev(3, "a", JobExceptionRaised(1, "InputMissing", "no file", 0)))
    assert (error.type, error.note, error.severity) == ("InputMissing", "no file", 0)
    assert error.job_id == "a" and error.submission_id == SID
    with pytest.raises(TypeError):
        JobException(ev(3, "a", JobStarted(1, "w")))


# --------------------------------------------------------------------------- describing jobs


def test_tree_flattens_children_before_their_parent() -> None:
    tree = Job(
        "shot",
        task="assemble",
        children=[
            Job("f1", task="render", args=[1]),
            Job("f2", task="render", args=[2], children=[Job("f2-prep", task="prep")]),
        ],
    )
    specs = to_specs([tree])
    assert [s.job_id for s in specs] == ["f1", "f2-prep", "f2", "shot"]
    assert {s.job_id: s.parent for s in specs} == {
        "f1": "shot",
        "f2-prep": "f2",
        "f2": "shot",
        "shot": None,
    }
    assert specs[0].args == '{"args":[1],"kwargs":{}}'


def test_job_options_become_the_spec() -> None:
    (spec,) = Job(
        "a",
        command="echo 'hello world'",
        retries=2,
        retry_backoff=0.5,
        timeout=1.5,
        queue="io",
        env={"A": "1"},
    ).specs()
    assert spec.command == ("echo", "hello world")
    assert spec.retry.max_attempts == 3 and spec.retry.backoff_ms == 500
    assert spec.timeout_ms == 1500 and spec.queue == "io"
    assert spec.env == (("A", "1"),)
    assert spec.args == "{}"


def test_task_objects_give_defaults_that_jobs_override() -> None:
    @task(queue="render", retries=3, timeout=60)
    def render(frame: int) -> int:
        return frame

    (spec,) = Job("f", task=render, args=[1]).specs()
    assert (spec.task, spec.queue, spec.retry.max_attempts, spec.timeout_ms) == (
        "render",
        "render",
        4,
        60_000,
    )
    (spec,) = Job("f", task=render, queue="fast", retries=0).specs()
    assert (spec.queue, spec.retry.max_attempts) == ("fast", 1)


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ([Job("a")], "exactly one of"),
        ([Job("a", task="t", command="x")], "exactly one of"),
        ([Job("a", task="t"), Job("a", task="u")], "two jobs"),
        ([Job("a", task="t", args=[object()])], "JSON"),
        ([], "nothing to submit"),
    ],
)
def test_bad_jobs_are_refused_before_sending(jobs: list[Job], message: str) -> None:
    with pytest.raises(InvalidJob, match=message):
        to_specs(jobs)


def test_jobs_from_a_submission_file() -> None:
    jobs, labels = jobs_from_data(
        {
            "labels": {"project": "demo"},
            "jobs": [
                {"id": "extract", "task": "extract", "args": ["in.csv"], "retries": 1},
                {"id": "load", "task": "load", "after": "extract", "kwargs": {"table": "t"}},
                {"command": ["sh", "-c", "echo hi"]},
            ],
        }
    )
    specs = to_specs(jobs)
    assert labels == {"project": "demo"}
    assert [s.job_id for s in specs] == ["extract", "load", "sh"]
    assert specs[1].depends_on == ("extract",)
    with pytest.raises(InvalidJob, match="unknown fields"):
        jobs_from_data([{"id": "x", "task": "t", "colour": "red"}])


def test_resolve_references() -> None:
    assert resolve("s-1/a") == ("s-1", "a")
    assert resolve("s-1") == ("s-1", None)
    assert resolve("s-1", "a") == ("s-1", "a")
    assert resolve(("s-1", "b")) == ("s-1", "b")
    assert resolve(JobView("s-1", "c")) == ("s-1", "c")
    with pytest.raises(InvalidJob):
        resolve("s-1/a", "b")


def test_job_key_is_a_valid_id() -> None:
    assert job_key("/usr/bin/my tool") == "usr-bin-my-tool"
    assert job_key("***") == "job"


def test_job_from_a_projection_row() -> None:
    job = job_from_row(
        {
            "submission_id": "s",
            "job_id": "j",
            "status": "FAILED",
            "command": "sh -c 'exit 3'",
            "attempts": 2,
            "run_at": datetime(2024, 1, 1, 12, 0, 0),
            "finished_at": datetime(2024, 1, 1, 12, 0, 5),
            "error_type": "exit_code",
            "exit_code": 3,
            "depends_on": ["a"],
            "deleted": False,
        }
    )
    assert job.command == ("sh", "-c", "exit 3")
    assert job.execution_duration == 5.0
    assert job.run_at is not None and job.run_at.tzinfo is UTC
    assert job.status is JobStatus.FAILED and job.attempt == 2 and job.depends_on == ("a",)
    canceled = job_from_row(
        {"submission_id": "s", "job_id": "k", "status": "CANCELED", "end_reason": "no budget"}
    )
    assert canceled.error == "no budget"
