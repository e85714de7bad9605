"""The fold behind watching, event names, and the client's job descriptions (no broker)."""

from __future__ import annotations

import errno
import threading
from collections.abc import Generator
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
from engine.config import Settings
from engine.flux import EventLogEvent
from engine.lifecycle.names import FLUX_EVENTS, FLUX_NAMES, FLUX_UNMAPPED, eventlog_names
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
    JobFailed,
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
    EventNotFound,
    FatalExceptions,
    JobEventWatchFuture,
    JobException,
    JobView,
    Live,
    ProgressThrottle,
    SubmissionView,
    Watcher,
    WatchTimeout,
    event_name,
    event_names,
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
    with pytest.raises(ValueError, match="JobCompleted") as caught:
        event_name("finished-ish")
    assert "clean" in str(caught.value)  # Flux's names are listed too
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


# --------------------------------------------------------------------------- Flux's names


def test_flux_event_names_are_aliases_of_joblog_events() -> None:
    assert event_name("submit") == "JobSubmitted"
    assert event_name("alloc") == "JobAssigned"
    assert event_name("start") == "JobStarted"
    assert event_name("depend") == "JobPending"
    assert event_name("exception") == "JobExceptionRaised"
    assert event_name("data") == "JobOutput"
    assert event_names("finish") == {"JobCompleted", "JobFailed", "JobCanceled"}
    assert event_names("clean") == {
        "JobCompleted",
        "JobFailed",
        "JobCanceled",
        "JobAbandoned",
        "JobSkipped",
    }
    assert event_names("JobCompleted") == {"JobCompleted"}


def test_a_flux_name_of_several_events_is_refused_where_one_is_needed() -> None:
    with pytest.raises(ValueError, match="several events"):
        event_name("finish")


def test_flux_events_without_a_counterpart_say_why() -> None:
    with pytest.raises(ValueError, match="no joblog counterpart: a job"):
        event_names("urgency")


def test_the_flux_tables_name_real_events_and_agree() -> None:
    for flux, names in FLUX_EVENTS.items():
        assert names and names <= set(EVENT_NAMES), flux
    assert not set(FLUX_EVENTS) & set(FLUX_UNMAPPED)
    for joblog, flux in FLUX_NAMES.items():
        assert joblog in FLUX_EVENTS[flux]
    assert FLUX_NAMES["JobCompleted"] == "finish" and FLUX_NAMES["JobAbandoned"] == "clean"


def test_eventlogs_split_the_output_from_the_main_log() -> None:
    assert eventlog_names("eventlog") == set(EVENT_NAMES) - {"JobOutput"}
    assert eventlog_names("guest.output") == {"JobOutput"}
    assert "JobStarted" in eventlog_names("guest.exec.eventlog")
    with pytest.raises(ValueError, match="unknown eventlog 'guest"):
        eventlog_names("guest.stdout")


def test_event_not_found_is_flux_enodata() -> None:
    error = EventNotFound("job s-1/a: its eventlog ended before event=finish")
    assert isinstance(error, OSError) and isinstance(error, LookupError)
    assert error.errno == errno.ENODATA
    assert str(error) == "job s-1/a: its eventlog ended before event=finish"
    assert EventNotFound("no job", errno.ENOENT).errno == errno.ENOENT


def test_a_flux_eventlog_entry_has_flux_fields() -> None:
    entry = EventLogEvent(ev(5, "a", JobCompleted(1, result="42"), at=1500))
    assert entry.name == "finish" and entry.joblog_name == "JobCompleted"
    assert entry.timestamp == pytest.approx((T0 + 1500) / 1000)
    assert entry.context == {"attempt": 1, "result": "42", "exit_code": None, "ended_at": 0}
    assert (entry.submission_id, entry.job_id, entry.seq) == (SID, "a", 5)
    submitted = EventLogEvent(ev(2, "a", JobSubmitted(JobSpec(job_id="a", task="t"))))
    assert submitted.name == "submit" and submitted.context["spec"]["task"] == "t"
    progressed = EventLogEvent(ev(6, "a", JobProgressed(1, 1.0, 2.0, None)))
    assert progressed.name == "JobProgressed"  # Flux has no progress event


# --------------------------------------------------------------------------- fatal exceptions


def test_a_fatal_exception_ends_the_job_unless_a_retry_follows() -> None:
    fatal = FatalExceptions("a")
    retried = ev(3, "a", JobExceptionRaised(1, "InputMissing", "frame 12", 0))
    assert fatal.see(retried) is None
    assert fatal.open == [retried]
    retry = JobRetryScheduled(1, FailureReason.EXCEPTION, "InputMissing", "", 2, 0, "d2", "q")
    assert fatal.see(ev(4, "a", retry)) is None and fatal.open == []
    last = ev(5, "a", JobExceptionRaised(2, "InputMissing", "frame 12", 0))
    assert fatal.see(last) is None
    assert fatal.see(ev(6, "b", JobFailed(1, FailureReason.ERROR))) is None  # another job
    assert fatal.see(ev(7, "a", JobFailed(2, FailureReason.EXCEPTION))) is last


def test_non_fatal_exceptions_are_not_held() -> None:
    fatal = FatalExceptions()
    assert fatal.see(ev(3, "a", JobExceptionRaised(1, "LowDisk", "5% free", 2))) is None
    assert fatal.open == []
    assert fatal.see(ev(4, "a", JobCompleted(1))) is None


# --------------------------------------------------------------------------- progress throttle


def job_at(progress: float) -> JobView:
    return JobView(SID, "a", status=JobStatus.RUNNING, progress=progress, total=10.0)


def test_progress_is_let_through_once_per_interval_last_value_wins() -> None:
    throttle = ProgressThrottle(0.2)
    assert throttle.offer(job_at(1), now=10.0) == job_at(1)
    assert throttle.offer(job_at(2), now=10.05) is None
    assert throttle.offer(job_at(3), now=10.1) is None
    assert throttle.due(now=10.15) == []
    assert throttle.due(now=10.25) == [job_at(3)]  # the last value, once
    assert throttle.due(now=10.5) == []
    assert throttle.offer(job_at(4), now=10.5) == job_at(4)


def test_held_progress_is_taken_before_the_job_ends() -> None:
    throttle = ProgressThrottle(0.2)
    throttle.offer(job_at(1), now=0.0)
    throttle.offer(job_at(9), now=0.1)
    assert throttle.take("a", now=0.12) == job_at(9)
    assert throttle.take("a", now=0.13) is None
    throttle.offer(job_at(10), now=0.5)
    throttle.offer(job_at(10), now=0.6)
    assert throttle.take_all(now=0.61) == [job_at(10)] and throttle.due(now=9) == []


def test_a_zero_interval_lets_every_update_through_and_negative_is_refused() -> None:
    throttle = ProgressThrottle(0)
    assert all(throttle.offer(job_at(n), now=0.0) is not None for n in range(3))
    with pytest.raises(ValueError, match="0 or more"):
        ProgressThrottle(-1)


# --------------------------------------------------------------------------- the future


def _future(items: list[int], error: Exception | None = None) -> JobEventWatchFuture[int]:
    def stream(stop: threading.Event) -> Generator[int, None, None]:
        for item in items:
            if stop.is_set():
                return
            yield item
        if error is not None:
            raise error

    return JobEventWatchFuture(stream, name="test-future")


def test_the_future_gives_each_event_then_none() -> None:
    future = _future([1, 2, 3])
    assert [future.get_event(timeout=30) for _ in range(4)] == [1, 2, 3, None]
    assert future.get_event(timeout=30) is None
    assert future.join(30)


def test_the_future_without_autoreset_gives_the_same_event_until_reset() -> None:
    future = _future([1, 2])
    assert future.get_event(autoreset=False, timeout=30) == 1
    assert future.get_event(autoreset=False, timeout=30) == 1
    future.reset()
    assert future.get_event(timeout=30) == 2
    assert future.get_event(timeout=30) is None


def test_the_future_raises_what_ended_the_watch_after_its_events() -> None:
    future = _future([1], WatchTimeout("nothing ended the watch within 1 s"))
    assert future.get_event(timeout=30) == 1
    with pytest.raises(WatchTimeout, match="within 1 s"):
        future.get_event(timeout=30)


def test_the_future_can_be_canceled_and_waited_for_with_a_timeout() -> None:
    def endless(stop: threading.Event) -> Generator[int, None, None]:
        while not stop.wait(0.01):
            pass
        yield from ()

    future = JobEventWatchFuture(endless, name="test-endless")
    with pytest.raises(WatchTimeout):
        future.get_event(timeout=0.05)
    future.cancel()
    assert future.get_event(timeout=30) is None


def test_then_calls_back_for_each_event_and_the_end() -> None:
    seen: list[int | None] = []
    ended = threading.Event()

    def on_event(future: JobEventWatchFuture[int], tag: str) -> None:
        event = future.get_event()
        seen.append(event)
        if event is None:
            ended.set()

    gate = threading.Event()

    def stream(stop: threading.Event) -> Generator[int, None, None]:
        gate.wait(30)
        yield from (1, 2)

    future = JobEventWatchFuture(stream, name="test-then").then(on_event, "tag")
    gate.set()
    assert ended.wait(30) and future.join(30)
    assert seen == [1, 2, None]


# --------------------------------------------------------------------------- watcher callbacks


def _submission_events() -> list[Event]:
    spec_a, spec_b = JobSpec(job_id="a", task="t"), JobSpec(job_id="b", task="t")
    return [
        ev(1, "", SubmissionAccepted("c", "me", (), ("a", "b"))),
        ev(2, "a", JobSubmitted(spec_a)),
        ev(3, "b", JobSubmitted(spec_b)),
        ev(4, "a", JobPending(1, "default", "d1", 0)),
        ev(5, "a", JobStarted(1, "w1")),
        ev(6, "a", JobProgressed(1, 1.0, 2.0, None)),
        ev(7, "a", JobProgressed(1, 2.0, 2.0, None)),
        ev(8, "a", JobCompleted(1)),
        ev(9, "b", JobAbandoned("x", JobStatus.FAILED)),
        ev(10, "b", JobDeleted()),
        ev(11, "", SubmissionCompleted(SubmissionStatus.FAILED, (("COMPLETED", 1),))),
    ]


def test_a_watcher_calls_hpc_callbacks_once_per_task_and_job() -> None:
    tasks: list[str] = []
    jobs: list[SubmissionStatus | None] = []
    own: list[tuple[str, JobStatus]] = []
    states: list[tuple[str, JobStatus]] = []
    progress: list[float | None] = []
    watcher = Watcher(
        SID,
        settings=Settings(),
        task_completed=lambda job: tasks.append(job.job_id),
        job_completed=lambda view: jobs.append(view.outcome),
        task_state_changed=lambda job, _: states.append((job.job_id, job.status)),
        task_progress_updated=lambda job: progress.append(job.progress),
        on_completed={"a": lambda job: own.append((job.job_id, job.status))},
    )
    watcher.task("b").on_completed = lambda job: own.append((job.job_id, job.status))
    for event in _submission_events():
        watcher._dispatch(event)
    assert tasks == ["a", "b"] and jobs == [SubmissionStatus.FAILED]
    assert own == [("a", JobStatus.COMPLETED), ("b", JobStatus.ABANDONED)]
    assert states[-2:] == [("a", JobStatus.COMPLETED), ("b", JobStatus.ABANDONED)]
    # the second progress came within 200 ms of the first: held, then given before the end
    assert progress == [1.0, 2.0]
    late: list[str] = []
    watcher.task("a").on_completed = lambda job: late.append(job.job_id)
    assert late == ["a"]  # registered after the job ended: called at once, once
    assert watcher.task("a").view is not None and watcher.task_completed is not None


def test_a_callback_under_both_names_is_refused() -> None:
    with pytest.raises(ValueError, match="on_progress or its HPC scheduler name"):
        Watcher(SID, settings=Settings(), on_progress=print, task_progress_updated=print)
