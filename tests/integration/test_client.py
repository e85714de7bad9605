"""The Python client against a real broker, scheduler, workers and projector (in threads).

The scenarios come from the systems joblog's vocabulary comes from: Taipy's cancel examples,
Flux's ``event_wait`` with a fatal exception, an HPC scheduler's progress callbacks, and
cgkit's job trees. One engine (scheduler, two workers, projector) serves the whole module
under a topic prefix of its own; tests keep apart by submission.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import pytest

from engine import (
    LIVE,
    Job,
    JobException,
    Joblog,
    JobNotFound,
    JobStatus,
    SubmissionRejected,
    SubmissionStatus,
    Watcher,
    WatchTimeout,
)
from engine.admin import ensure_topics
from engine.config import Settings
from engine.errors import (
    ArgumentsTooLarge,
    CommandRejectedError,
    DecisionTimeout,
    JobNotCanceled,
    JobNotDeleted,
    JobNotRetried,
    SubmissionTooLarge,
    TooManyJobs,
    UnknownSubmission,
)
from engine.lifecycle.decide import Policy
from engine.lifecycle.records import Event, JobStarted, SubmissionAccepted
from engine.limits import Limits
from engine.scheduler.service import Scheduler, SchedulerConfig
from engine.watch import JobView, SubmissionView
from engine.worker import JobContext, TaskRegistry, Worker, WorkerOptions, task
from tests.integration.conftest import KafkaUnderTest

T = TypeVar("T")

POLICY = Policy(lease_ms=5_000, kill_grace_ms=3_000)
FAST = WorkerOptions(drain_timeout_s=2.0, session_timeout_ms=6_000)

# --------------------------------------------------------------------------- tasks

_attempts: dict[str, int] = {}
_attempts_lock = threading.Lock()


@task
def double(ctx: JobContext, nb: int, seconds: float = 0.0) -> int:
    """Taipy's example task: doubles a number, optionally slowly (and cancellably)."""
    if seconds and ctx.wait_cancelled(seconds):
        ctx.check_cancelled()
    return nb * 2


@task(name="print_it")
def print_it(value: object = None) -> str:
    """Taipy's second task."""
    return f"printed {value}"


@task
def render(ctx: JobContext, frame: int, steps: int = 5, pause: float = 0.3) -> str:
    """A frame of a render: progress over ``steps`` steps."""
    ctx.set_status_line(f"frame {frame}")
    for step in range(1, steps + 1):
        ctx.set_progress(step, total=steps)
        time.sleep(pause)
    return f"frame-{frame:03d}.exr"


@task
def fail_with(ctx: JobContext, kind: str, note: str, severity: int = 0) -> str:
    """Raises a job exception (Flux): severity 0 fails the attempt."""
    ctx.raise_exception(kind, note, severity=severity)
    return "went on"


@task
def flaky(ctx: JobContext, key: str, failures: int = 1) -> int:
    """Fails its first ``failures`` attempts, then returns the attempt number."""
    with _attempts_lock:
        _attempts[key] = _attempts.get(key, 0) + 1
    if ctx.attempt <= failures:
        raise RuntimeError(f"attempt {ctx.attempt} fails on purpose")
    return ctx.attempt


REGISTRY = TaskRegistry([double, print_it, render, fail_with, flaky])


# --------------------------------------------------------------------------- the engine


@dataclass
class Engine:
    """A running joblog: scheduler, workers and (optionally) projector, in threads."""

    settings: Settings
    db_path: Path | None
    scheduler: Scheduler
    workers: list[Worker]

    def client(self) -> Joblog:
        return Joblog(self.settings, db_path=self.db_path)


@contextmanager
def _thread(target: Callable[[threading.Event], object], name: str) -> Iterator[threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(30)


@contextmanager
def engine_running(
    settings: Settings,
    *,
    registry: TaskRegistry = REGISTRY,
    workers: int = 2,
    concurrency: int = 3,
    db_path: Path | None = None,
    policy: Policy = POLICY,
) -> Iterator[Engine]:
    """Starts a scheduler, ``workers`` workers and, given ``db_path``, a projector."""
    with ExitStack() as stack:
        scheduler = Scheduler(
            settings, policy=policy, config=SchedulerConfig(instance_id=f"sch-{uuid.uuid4().hex}")
        )
        stack.enter_context(_thread(scheduler.run, "scheduler"))
        started = []
        for n in range(workers):
            worker = Worker(settings, "default", concurrency, registry, f"w{n + 1}", options=FAST)
            stack.enter_context(_thread(worker.run, f"worker-{n + 1}"))
            started.append(worker)
        if db_path is not None:
            from projections.projector import Projector

            projector = Projector(settings, db_path, poll_timeout=0.1)
            stack.enter_context(_thread(projector.run, "projector"))
            assert projector.ready.wait(60), "the projector never got its partitions"
        assert scheduler.ready.wait(60), "the scheduler never got its partitions"
        for worker in started:
            assert worker.ready.wait(60), f"worker {worker.worker_id} got no partitions"
        yield Engine(settings, db_path, scheduler, started)


@contextmanager
def client_running(
    kafka_cluster: KafkaUnderTest, prefix: str, registry: TaskRegistry = REGISTRY
) -> Iterator[Joblog]:
    """A client of a running engine (scheduler and workers of ``registry``) on fresh topics."""
    settings = Settings.from_env(
        bootstrap_servers=kafka_cluster.bootstrap_servers,
        topic_prefix=f"{prefix}{uuid.uuid4().hex[:8]}.",
        partitions=3,
    )
    ensure_topics(settings)
    with engine_running(settings, registry=registry) as running:
        client = running.client()
        try:
            yield client
        finally:
            client.close()


@pytest.fixture(scope="module")
def engine(
    kafka_cluster: KafkaUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    settings = Settings.from_env(
        bootstrap_servers=kafka_cluster.bootstrap_servers,
        topic_prefix=f"c{uuid.uuid4().hex[:8]}.",
        partitions=3,
    )
    ensure_topics(settings)
    db_path = tmp_path_factory.mktemp("projection") / "joblog.duckdb"
    with engine_running(settings, db_path=db_path) as running:
        yield running


@pytest.fixture
def jl(engine: Engine) -> Iterator[Joblog]:
    client = engine.client()
    yield client
    client.close()


def eventually(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Polls ``check`` until it returns something truthy (for the projections only)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def statuses(view: SubmissionView) -> dict[str, JobStatus]:
    return {job_id: job.status for job_id, job in view.jobs.items()}


# --------------------------------------------------------------------------- submit and wait


def test_submit_one_task_and_wait(jl: Joblog) -> None:
    submission = jl.submit(task="double", args=[21])
    assert submission.job_ids == ("double",)
    view = submission.wait_until_done(timeout=60)
    assert view.outcome is SubmissionStatus.COMPLETED
    job = view.jobs["double"]
    assert job.status is JobStatus.COMPLETED and job.result == "42"
    assert job.submitted_at and job.run_at and job.finished_at
    assert job.submitted_at <= job.run_at <= job.finished_at


def test_submit_a_shell_command_and_a_graph(jl: Joblog) -> None:
    submission = jl.submit(
        Job("greet", command=["sh", "-c", "echo hello; exit 0"]),
        Job("twice", task="double", args=[4], depends_on=["greet"]),
        Job("show", task="print_it", kwargs={"value": "x"}, depends_on=["twice"]),
    )
    view = submission.wait_until_done(timeout=60)
    assert statuses(view) == dict.fromkeys(("greet", "twice", "show"), JobStatus.COMPLETED)
    assert view.jobs["greet"].exit_code == 0
    runs = {job_id: job.run_at for job_id, job in view.jobs.items()}
    finished = {job_id: job.finished_at for job_id, job in view.jobs.items()}
    assert finished["greet"] <= runs["twice"]  # type: ignore[operator]
    assert finished["twice"] <= runs["show"]  # type: ignore[operator]


def test_a_failing_attempt_is_retried(jl: Joblog) -> None:
    key = uuid.uuid4().hex
    submission = jl.submit(task="flaky", args=[key], retries=2, retry_backoff=0.1)
    view = submission.wait_until_done(timeout=60)
    job = view.jobs["flaky"]
    assert job.status is JobStatus.COMPLETED and job.attempt == 2 and job.result == "2"
    history = [event.name for event in jl.history(submission.id, "flaky")]
    assert "JobRetryScheduled" in history


def test_a_rejected_submission_raises(jl: Joblog) -> None:
    submission = jl.submit(
        Job("a", task="double", args=[1], depends_on=["b"]),
        Job("b", task="double", args=[1], depends_on=["a"]),
    )
    with pytest.raises(SubmissionRejected) as caught:
        submission.wait_until_done(timeout=60)
    assert caught.value.code == "cycle"


# --------------------------------------------------------------------------- Taipy's cancels


def test_cancel_a_blocked_job_while_its_dependency_runs(jl: Joblog) -> None:
    """Taipy example 1: cancel print_task (BLOCKED): it is CANCELED, double_task completes."""
    submission = jl.submit(
        Job("double_task", task="double", args=[21], kwargs={"seconds": 3.0}),
        Job("print_task", task="print_it", depends_on=["double_task"]),
    )
    submission.event_wait("double_task", "JobStarted", timeout=60)
    assert submission.view().jobs["print_task"].status is JobStatus.BLOCKED
    jl.cancel(submission, "print_task")
    view = submission.wait_until_done(timeout=60)
    assert statuses(view) == {
        "double_task": JobStatus.COMPLETED,
        "print_task": JobStatus.CANCELED,
    }
    assert view.outcome is SubmissionStatus.CANCELED


def test_cancel_a_running_job_taipy_rule_abandons_its_dependents(jl: Joblog) -> None:
    """Taipy example 2 (mode=finish): double_task completes, print_task is ABANDONED."""
    submission = jl.submit(
        Job("double_task", task="double", args=[21], kwargs={"seconds": 3.0}),
        Job("print_task", task="print_it", depends_on=["double_task"]),
    )
    submission.event_wait("double_task", "started", timeout=60)
    jl.cancel(f"{submission.id}/double_task", mode="finish")
    view = submission.wait_until_done(timeout=60)
    assert statuses(view) == {
        "double_task": JobStatus.COMPLETED,
        "print_task": JobStatus.ABANDONED,
    }


def test_cancel_a_running_job_kills_it_by_default(jl: Joblog) -> None:
    submission = jl.submit(
        Job("double_task", task="double", args=[21], kwargs={"seconds": 30}),
        Job("print_task", task="print_it", depends_on=["double_task"]),
    )
    submission.event_wait("double_task", "started", timeout=60)
    started = time.monotonic()
    submission.cancel("double_task", reason="changed my mind")
    view = submission.wait_until_done(timeout=60)
    assert time.monotonic() - started < 20
    assert statuses(view) == {
        "double_task": JobStatus.CANCELED,
        "print_task": JobStatus.ABANDONED,
    }


def test_cancel_of_a_blocked_job_abandons_its_dependents(jl: Joblog) -> None:
    submission = jl.submit(
        Job("a", task="double", args=[1], kwargs={"seconds": 3.0}),
        Job("b", task="double", args=[2], depends_on=["a"]),
        Job("c", task="double", args=[3], depends_on=["b"]),
        Job("d", task="print_it", depends_on=["a"]),
    )
    submission.event_wait("a", "started", timeout=60)
    jl.cancel(submission.id, "b")
    view = submission.wait_until_done(timeout=60)
    assert statuses(view) == {
        "a": JobStatus.COMPLETED,
        "b": JobStatus.CANCELED,
        "c": JobStatus.ABANDONED,
        "d": JobStatus.COMPLETED,
    }


# --------------------------------------------------------------------------- Flux


def test_event_wait_raises_the_fatal_job_exception(jl: Joblog) -> None:
    submission = jl.submit(task="fail_with", args=["InputMissing", "frame 12 not rendered"])
    with pytest.raises(JobException) as caught:
        submission.event_wait("fail_with", "JobCompleted", timeout=60)
    error = caught.value
    assert (error.type, error.note, error.severity) == (
        "InputMissing",
        "frame 12 not rendered",
        0,
    )
    assert error.job_id == "fail_with" and error.submission_id == submission.id
    failed = jl.event_wait(submission, "fail_with", "failed", timeout=30, raise_job_exception=False)
    assert failed.name == "JobFailed"


def test_a_non_fatal_exception_does_not_stop_event_wait(jl: Joblog) -> None:
    submission = jl.submit(task="fail_with", args=["LowDisk", "5% free"], kwargs={"severity": 2})
    done = submission.event_wait("fail_with", "completed", timeout=60)
    assert done.name == "JobCompleted"


def test_event_watch_gives_history_then_live_then_ends(jl: Joblog) -> None:
    first = jl.submit(task="double", args=[1])
    first.wait_until_done(timeout=60)
    seen = list(first.events(timeout=30))
    assert seen.count(LIVE) == 1 and seen[-1] is LIVE  # done: history, LIVE, end
    names = [item.name for item in seen if isinstance(item, Event)]
    assert names[0] == "SubmissionAccepted" and names[-1] == "SubmissionCompleted"

    second = jl.submit(task="double", args=[2], kwargs={"seconds": 1.0})
    items = list(second.events("double", timeout=60))
    live_at = items.index(LIVE)
    after = [item.name for item in items[live_at + 1 :] if isinstance(item, Event)]
    assert after and after[-1] == "JobCompleted"
    assert all(
        isinstance(item, Event) and item.job_id == "double" for item in items if item != LIVE
    )


def test_event_wait_times_out(jl: Joblog) -> None:
    submission = jl.submit(task="double", args=[1], kwargs={"seconds": 5})
    with pytest.raises(WatchTimeout):
        submission.event_wait("double", "JobCompleted", timeout=1.0)
    submission.cancel()


# --------------------------------------------------------------------------- HPC callbacks, cgkit


def test_a_watcher_sees_progress_and_state_changes(jl: Joblog) -> None:
    progress: list[tuple[str, float | None, float | None]] = []
    changes: list[tuple[str, JobStatus | None, JobStatus]] = []
    completed: list[str] = []
    finished: list[SubmissionStatus | None] = []
    done = threading.Event()

    def on_progress(job: JobView) -> None:
        progress.append((job.job_id, job.progress, job.total))

    def on_state_changed(job: JobView, previous: JobStatus | None) -> None:
        changes.append((job.job_id, previous, job.status))

    def on_submission_completed(view: SubmissionView) -> None:
        finished.append(view.outcome)
        done.set()

    submission = jl.submit(task="render", args=[7], kwargs={"steps": 6, "pause": 0.5})
    watcher = submission.watch(
        on_progress=on_progress,
        on_state_changed=on_state_changed,
        on_job_completed=lambda job: completed.append(job.job_id),
        on_submission_completed=on_submission_completed,
    )
    assert done.wait(60), "the submission never completed"
    assert watcher.join(10) and watcher.error is None
    # Progress is coalesced (at most one event per 200 ms, last value wins), so a busy
    # scheduler may merge some steps: what arrives is increasing and ends at the total.
    values = [value for _, value, _ in progress if value is not None]
    assert len(values) >= 2, progress
    assert values == sorted(values) and values[-1] == 6.0
    assert all(total == 6.0 for _, value, total in progress if value is not None)
    assert [new for _, _, new in changes][-1] is JobStatus.COMPLETED
    assert changes[0][1:] == (None, JobStatus.SUBMITTED)
    assert JobStatus.RUNNING in [new for _, _, new in changes]
    assert completed == ["render"] and finished == [SubmissionStatus.COMPLETED]


def test_wait_until_done_reports_progress(jl: Joblog) -> None:
    calls: list[int] = []
    submission = jl.submit(task="render", args=[1], kwargs={"steps": 4, "pause": 0.2})
    view = submission.wait_until_done(
        progress=lambda v: calls.append(len(v.jobs)), timeout=60, interval=0.1
    )
    assert view.outcome is SubmissionStatus.COMPLETED and len(calls) >= 3


def test_a_tree_runs_children_before_the_parent(jl: Joblog) -> None:
    shot = Job(
        "shot",
        task="print_it",
        kwargs={"value": "assembled"},
        children=[
            Job(f"frame-{n}", task="render", args=[n], kwargs={"steps": 2, "pause": 0.1})
            for n in range(1, 4)
        ],
    )
    submission = jl.submit(shot)
    assert submission.job_ids == ("frame-1", "frame-2", "frame-3", "shot")
    view = submission.wait_until_done(timeout=60)
    assert set(statuses(view).values()) == {JobStatus.COMPLETED}
    parent = view.jobs["shot"]
    children = [view.jobs[f"frame-{n}"] for n in range(1, 4)]
    assert parent.parent is None and all(child.parent == "shot" for child in children)
    assert parent.run_at is not None
    assert all(
        child.finished_at is not None and child.finished_at <= parent.run_at for child in children
    )
    blocked = [e for e in jl.history(submission.id, "shot") if e.name == "JobBlocked"]
    assert blocked, "the parent waits for its sub-jobs"


def test_a_failed_child_abandons_the_parent(jl: Joblog) -> None:
    submission = jl.submit(
        Job("parent", task="print_it", children=[Job("child", task="fail_with", args=["X", "y"])])
    )
    view = submission.wait_until_done(timeout=60)
    assert statuses(view) == {"child": JobStatus.FAILED, "parent": JobStatus.ABANDONED}
    assert view.outcome is SubmissionStatus.FAILED


# --------------------------------------------------------------------------- projections


def test_get_jobs_get_job_and_get_latest_job(jl: Joblog) -> None:
    first = jl.submit(task="double", args=[5])
    first.wait_until_done(timeout=60)
    second = jl.submit(task="double", args=[6])
    second.wait_until_done(timeout=60)

    def projected(submission_id: str) -> bool:
        jobs = jl.get_jobs(submission_id=submission_id)
        return bool(jobs) and all(job.status is JobStatus.COMPLETED for job in jobs)

    eventually(lambda: projected(first.id) and projected(second.id), 30, "the projection")
    latest = jl.get_latest_job("double")
    assert latest is not None and latest.submission_id == second.id
    job = jl.get_job(first.id, "double")
    assert job.result == "10" and job.execution_duration is not None
    assert jl.get_job(f"{second.id}/double").result == "12"
    mine = jl.get_jobs(submission_id=first.id)
    assert [j.ref for j in mine] == [f"{first.id}/double"]
    completed = jl.get_jobs(status="COMPLETED", task="double")
    assert {first.id, second.id} <= {j.submission_id for j in completed}
    assert len(jl.get_jobs(task="double", limit=1)) == 1
    with pytest.raises(JobNotFound):
        jl.get_job(first.id, "nope")


def test_delete_marks_jobs_deleted(jl: Joblog) -> None:
    submission = jl.submit(task="double", args=[8])
    submission.wait_until_done(timeout=60)
    submission.delete()
    deleted = submission.event_wait("double", "JobDeleted", timeout=30)
    assert deleted.name == "JobDeleted"
    eventually(
        lambda: (
            not jl.get_jobs(submission_id=submission.id)
            and jl.get_jobs(submission_id=submission.id, include_deleted=True)
        ),
        30,
        "the deletion to be projected",
    )


def test_submission_handle_from_an_id(jl: Joblog) -> None:
    submission = jl.submit(task="double", args=[3])
    submission.wait_until_done(timeout=60)
    again = jl.submission(submission.id)
    assert again.job_ids == ("double",)
    assert again.view().jobs["double"].result == "6"
    with pytest.raises(JobNotFound):
        jl.view(f"s-{uuid.uuid4().hex}", timeout=10)


def test_started_event_names_the_worker(jl: Joblog) -> None:
    submission = jl.submit(task="double", args=[1])
    started = submission.event_wait("double", "JobStarted", timeout=60)
    assert isinstance(started.body, JobStarted) and started.body.worker_id in {"w1", "w2"}
    submission.wait_until_done(timeout=60)


def test_a_watcher_can_be_stopped(engine: Engine, jl: Joblog) -> None:
    submission = jl.submit(task="double", args=[1], kwargs={"seconds": 30})
    watcher = Watcher(submission.id, settings=engine.settings).start()
    assert watcher.live.wait(30)
    watcher.stop()
    assert watcher.join(10) and watcher.error is None
    submission.cancel()
    assert submission.wait_until_done(timeout=60).outcome is SubmissionStatus.CANCELED


# --------------------------------------------------------------------------- decisions and limits


def test_a_submission_handle_tells_the_decision(jl: Joblog) -> None:
    submission = jl.submit(task="double", args=[2])
    accepted = submission.result(timeout=30)
    assert isinstance(accepted.body, SubmissionAccepted)
    assert accepted.body.command_id == submission.command_id
    assert submission.accepted() is True
    assert submission.command is not None and submission.command.decided
    submission.wait_until_done(timeout=60)


@pytest.mark.parametrize(
    ("jobs", "code"),
    [
        (
            [
                Job("a", task="double", args=[1], depends_on=["b"]),
                Job("b", task="double", args=[1], depends_on=["a"]),
            ],
            "cycle",
        ),
        ([Job("a", task="double", args=[1], depends_on=["missing"])], "unknown_dependency"),
    ],
)
def test_a_rejected_submission_raises_from_its_handle(
    jl: Joblog, jobs: list[Job], code: str
) -> None:
    submission = jl.submit(*jobs)
    with pytest.raises(SubmissionRejected) as caught:
        submission.result(timeout=30)
    assert isinstance(caught.value, CommandRejectedError)
    assert caught.value.code == code and caught.value.reason
    assert caught.value.command_id == submission.command_id
    assert submission.accepted() is False
    with pytest.raises(SubmissionRejected):
        jl.submit(*jobs, wait=True)


def test_cancel_of_a_finished_job_raises(jl: Joblog) -> None:
    """A FAILED job cannot be canceled (a COMPLETED one can: Taipy's rule, test_seed_taipy)."""
    submission = jl.submit(task="fail_with", kwargs={"kind": "Bad", "note": "no"}, wait=True)
    submission.wait_until_done(timeout=60)
    handle = jl.cancel(submission, "fail_with")
    with pytest.raises(JobNotCanceled) as caught:
        handle.result(timeout=30)
    assert caught.value.code == "already_terminal" and caught.value.job_id == "fail_with"
    assert handle.rejection is caught.value
    with pytest.raises(JobNotCanceled):
        submission.cancel(wait=True)


def test_delete_of_an_unfinished_job_raises_then_cancel_is_accepted(jl: Joblog) -> None:
    submission = jl.submit(task="double", args=[1], kwargs={"seconds": 30}, wait=True)
    submission.event_wait("double", "JobStarted", timeout=60)
    with pytest.raises(JobNotDeleted) as caught:
        jl.delete(submission, wait=True)
    assert caught.value.code == "not_terminal" and "double" in caught.value.reason
    canceled = submission.cancel("double").result(timeout=30)
    assert canceled.name in ("JobCanceled", "JobCancelRequested")
    submission.wait_until_done(timeout=60)
    assert jl.delete(submission, force=True).accepted(timeout=30)


def test_commands_for_an_unknown_submission_are_rejected(jl: Joblog) -> None:
    unknown = f"s-{uuid.uuid4().hex}"
    with pytest.raises(JobNotCanceled) as caught:
        jl.cancel(unknown, wait=True)
    assert caught.value.code == "unknown_submission"
    with pytest.raises(JobNotRetried):
        jl.retry(unknown, "x", wait=True)


def test_a_decision_times_out_without_a_scheduler(kafka_cluster: KafkaUnderTest) -> None:
    settings = Settings.from_env(
        bootstrap_servers=kafka_cluster.bootstrap_servers,
        topic_prefix=f"n{uuid.uuid4().hex[:8]}.",
        partitions=1,
    )
    ensure_topics(settings)
    with Joblog(settings) as client:
        submission = client.submit(task="double", args=[1])
        with pytest.raises(DecisionTimeout) as caught:
            submission.result(timeout=1.0)
        assert caught.value.submission_id == submission.id


def test_oversized_input_is_refused_before_sending(engine: Engine) -> None:
    with Joblog(engine.settings) as client:
        with pytest.raises(ArgumentsTooLarge) as too_large:
            client.submit(task="double", args=["x" * 5_200_000])
        assert "JOBLOG_MAX_ARGS_BYTES" in str(too_large.value)
        assert too_large.value.limit == engine.settings.limits.max_args_bytes
    small = replace(
        engine.settings, limits=Limits(max_submit_bytes=200_000, max_record_bytes=1_000_000)
    )
    with Joblog(small) as client:
        jobs = [Job(f"j{n}", task="double", args=["y" * 1_000]) for n in range(300)]
        with pytest.raises(SubmissionTooLarge) as caught:
            client.submit(*jobs)
        assert "JOBLOG_MAX_SUBMIT_BYTES" in str(caught.value)
        assert "split it" in str(caught.value)
    few = replace(engine.settings, limits=Limits(max_jobs=2))
    with Joblog(few) as client, pytest.raises(TooManyJobs):
        client.submit(*(Job(f"j{n}", task="double") for n in range(3)))


# --------------------------------------------------------------------------- watching ends


def test_a_watch_of_an_unknown_id_fails_at_once(jl: Joblog) -> None:
    unknown = f"s-{uuid.uuid4().hex}"
    jl.cancel(unknown).accepted(timeout=30)  # a rejection keyed by the id does not make it known
    with pytest.raises(UnknownSubmission) as caught:
        list(jl.event_watch(unknown, timeout=30))
    assert unknown in str(caught.value)
    assert isinstance(caught.value, JobNotFound)


def test_a_live_end_watch_of_a_finished_submission_ends_at_once(jl: Joblog) -> None:
    submission = jl.submit(task="double", args=[4])
    submission.wait_until_done(timeout=60)
    assert list(jl.event_watch(submission.id, from_start=False, timeout=30)) == [LIVE]
    assert list(submission.events("double", from_start=False, timeout=30)) == [LIVE]
