"""Taipy's jobs, as its documentation tells them, on joblog against the real broker.

The examples of ``seeds/001`` (Taipy's *Job* page): a scenario of two sequential tasks,
``double_task`` then ``print_task``, submitted as one submission; ``get_jobs``,
``get_latest_job``, ``cancel_job`` with the outputs (1)-(6) of both cancel examples;
``delete_job`` with and without ``force`` and its ``JobNotDeletedException``;
``delete_jobs``; a job's ``stacktrace`` and ``force``; ``Submission.jobs`` as jobs with a
status. Taipy's rule for a cancel of a RUNNING job (it finishes, its dependents are
abandoned) is ``mode="finish"``; joblog's default kills it (docs/seeds.md, *Taipy jobs*).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from engine import Job, Joblog, JobNotCanceled, JobNotDeletedException
from engine.admin import ensure_topics
from engine.config import Settings
from engine.lifecycle.records import JobStatus
from engine.watch import JobView
from engine.worker import JobContext, TaskRegistry, task
from tests.integration.conftest import KafkaUnderTest
from tests.integration.test_client import Engine, engine_running

T = TypeVar("T")
WAIT_S = 90


@task(name="double_task")
def double_task(ctx: JobContext, nb: int, seconds: float = 0.0) -> int:
    """Taipy's ``double``: ``sleep(5)`` (here ``seconds``, cancellable), then ``nb * 2``."""
    if seconds and ctx.wait_cancelled(seconds):
        ctx.check_cancelled()
    return nb * 2


@task(name="print_task")
def print_task(value: object = None) -> str:
    """Taipy's ``print`` task."""
    return f"printed {value}"


@task(name="divide_task")
def divide_task(nb: int, by: int) -> float:
    """Raises ZeroDivisionError for ``by=0``: a stack trace to read back."""
    return nb / by


REGISTRY = TaskRegistry([double_task, print_task, divide_task])


@pytest.fixture(scope="module")
def engine(
    kafka_cluster: KafkaUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    settings = Settings.from_env(
        bootstrap_servers=kafka_cluster.bootstrap_servers,
        topic_prefix=f"tp{uuid.uuid4().hex[:8]}.",
        partitions=2,
    )
    ensure_topics(settings)
    db_path = tmp_path_factory.mktemp("taipy") / "joblog.duckdb"
    with engine_running(settings, registry=REGISTRY, db_path=db_path) as running:
        yield running


@pytest.fixture
def tp(engine: Engine) -> Iterator[Joblog]:
    """The client, named as Taipy's module is in its examples."""
    client = engine.client()
    yield client
    client.close()


def eventually(check: Callable[[], T | None], what: str, timeout: float = WAIT_S) -> T:
    """Polls ``check`` until it returns something truthy (the projection lags the log)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def scenario(nb: int = 21, seconds: float = 5.0) -> tuple[Job, Job]:
    """The scenario of the examples: double_task, then print_task on its output."""
    return (
        Job("double_task", task="double_task", args=[nb], kwargs={"seconds": seconds}),
        Job("print_task", task="print_task", depends_on=["double_task"]),
    )


def status_of(tp: Joblog, job: JobView) -> Callable[[], JobStatus | None]:
    """The job's status in the projections, once the projector has it."""

    def read() -> JobStatus | None:
        try:
            return tp.get_job(job).status
        except LookupError:
            return None

    return read


def projected(tp: Joblog, job: JobView, status: JobStatus) -> JobView:
    eventually(lambda: status_of(tp, job)() is status, f"{job.ref} {status} in the projections")
    return tp.get_job(job)


def latest(tp: Joblog, task_name: str, submission_id: str) -> JobView:
    """``get_latest_job(task)``, once the projections hold this submission's job."""
    return eventually(
        lambda: (
            job
            if (job := tp.get_latest_job(task_name)) is not None
            and job.submission_id == submission_id
            else None
        ),
        f"the latest {task_name} job",
    )


# --------------------------------------------------------------------------- the examples


def test_canceling_a_job_the_blocked_print_task(tp: Joblog) -> None:
    """Outputs (1)-(6): cancel print_task while double_task runs; double_task completes,
    print_task is CANCELED."""
    before = len(tp.get_jobs())  # (1) (0 in a fresh application)
    submission = tp.submit(*scenario(), wait=True)
    eventually(lambda: len(tp.get_jobs()) == before + 2, "(2) two more jobs")
    submission.event_wait("double_task", "JobStarted", timeout=WAIT_S)
    job_double = projected(tp, latest(tp, "double_task", submission.id), JobStatus.RUNNING)
    job_print = latest(tp, "print_task", submission.id)
    assert job_double.is_running()  # (3) Status.RUNNING
    assert job_print.status is JobStatus.BLOCKED and job_print.is_blocked()  # (4)

    decision = tp.cancel_job(job_print, wait=True)
    assert decision.result().name == "JobCanceled"

    view = submission.wait_until_done(timeout=WAIT_S)
    assert view.jobs["double_task"].status is JobStatus.COMPLETED  # (5)
    assert view.jobs["print_task"].status is JobStatus.CANCELED  # (6)
    assert projected(tp, job_double, JobStatus.COMPLETED).result == "42"
    assert projected(tp, job_print, JobStatus.CANCELED).is_canceled()


def test_canceling_a_running_job_with_taipys_rule(tp: Joblog) -> None:
    """Outputs (5)-(6) of the second example: with ``mode="finish"`` the running
    double_task completes and print_task is ABANDONED."""
    submission = tp.submit(*scenario(seconds=3.0), wait=True)
    submission.event_wait("double_task", "JobStarted", timeout=WAIT_S)
    job_double = projected(tp, latest(tp, "double_task", submission.id), JobStatus.RUNNING)
    job_print = latest(tp, "print_task", submission.id)
    assert job_print.is_blocked()  # (4)

    assert tp.cancel_job(job_double, mode="finish", wait=True).result().name == (
        "JobCancelRequested"
    )
    view = submission.wait_until_done(timeout=WAIT_S)
    assert view.jobs["double_task"].status is JobStatus.COMPLETED  # (5)
    assert view.jobs["print_task"].status is JobStatus.ABANDONED  # (6)
    assert view.jobs["double_task"].result == "42"


def test_canceling_a_running_job_with_joblogs_default_kills_it(tp: Joblog) -> None:
    """joblog's own rule (cancel wins): the default mode kills the running double_task, it
    ends CANCELED, print_task is ABANDONED all the same."""
    submission = tp.submit(*scenario(seconds=30.0), wait=True)
    submission.event_wait("double_task", "JobStarted", timeout=WAIT_S)
    tp.cancel_job(f"{submission.id}/double_task", wait=True)
    view = submission.wait_until_done(timeout=WAIT_S)
    assert view.jobs["double_task"].status is JobStatus.CANCELED
    assert view.jobs["print_task"].status is JobStatus.ABANDONED


def test_canceling_a_completed_job_abandons_what_follows_it(tp: Joblog) -> None:
    """Taipy: a COMPLETED job keeps its status; the jobs after it that have not finished
    are abandoned. A job with nothing after it is accepted too; a FAILED one is not."""
    submission = tp.submit(
        Job("double_task", task="double_task", args=[1]),
        Job("slow", task="double_task", args=[2], kwargs={"seconds": 30.0}),
        Job("print_task", task="print_task", depends_on=["double_task", "slow"]),
        Job("divide_task", task="divide_task", args=[1, 0]),
        wait=True,
    )
    submission.event_wait("double_task", "JobCompleted", timeout=WAIT_S)
    tp.event_wait(submission, "divide_task", "JobFailed", WAIT_S, raise_job_exception=False)
    decision = submission.cancel("double_task", wait=True)
    assert decision.result().name == "JobCancelRequested"
    submission.event_wait("print_task", "JobAbandoned", timeout=WAIT_S)
    with pytest.raises(JobNotCanceled) as caught:
        submission.cancel("divide_task", wait=True)
    assert caught.value.code == "already_terminal"
    submission.cancel("slow", wait=True)
    view = submission.wait_until_done(timeout=WAIT_S)
    assert view.jobs["double_task"].status is JobStatus.COMPLETED
    assert view.jobs["print_task"].status is JobStatus.ABANDONED
    assert view.jobs["slow"].status is JobStatus.CANCELED

    alone = tp.submit(task="double_task", args=[5], wait=True)
    alone.wait_until_done(timeout=WAIT_S)
    assert alone.cancel("double_task", wait=True).result().name == "JobCancelRequested"
    assert alone.view().jobs["double_task"].is_completed()


# --------------------------------------------------------------------------- job attributes


def test_submission_jobs_are_jobs_with_a_status(tp: Joblog) -> None:
    submission = tp.submit(*scenario(seconds=0.0))
    jobs = submission.jobs
    assert [job.job_id for job in jobs] == ["double_task", "print_task"]
    assert all(isinstance(job, JobView) for job in jobs)
    assert all(job.submit_id == submission.id and job.creation_date for job in jobs)
    assert all(job.force is False for job in jobs)
    submission.wait_until_done(timeout=WAIT_S)
    done = submission.jobs
    assert all(job.is_completed() and job.is_finished() for job in done)
    assert all(job.execution_duration is not None for job in done)
    assert done[0].id == f"{submission.id}/double_task"


def test_a_failed_job_has_its_stacktrace(tp: Joblog) -> None:
    submission = tp.submit(task="divide_task", args=[1, 0], wait=True)
    submission.wait_until_done(timeout=WAIT_S)
    (job,) = submission.jobs
    assert job.is_failed()
    assert job.stacktrace and "ZeroDivisionError" in job.stacktrace[-1]
    assert "Traceback" in job.stacktrace[-1]
    row = projected(tp, job, JobStatus.FAILED)
    assert row.stacktrace and "ZeroDivisionError" in row.stacktrace[-1]


def test_force_runs_a_job_that_would_be_skipped(tp: Joblog) -> None:
    key = f"report-{uuid.uuid4().hex}"
    first = tp.submit(task="double_task", args=[3], idempotency_key=key, wait=True)
    assert first.wait_until_done(timeout=WAIT_S).jobs["double_task"].is_completed()
    again = tp.submit(task="double_task", args=[3], idempotency_key=key, wait=True)
    assert again.wait_until_done(timeout=WAIT_S).jobs["double_task"].is_skipped()
    forced = tp.submit(task="double_task", args=[3], idempotency_key=key, force=True, wait=True)
    view = forced.wait_until_done(timeout=WAIT_S)
    job = view.jobs["double_task"]
    assert job.is_completed() and job.result == "6" and job.run_at is not None
    assert job.force is True


# --------------------------------------------------------------------------- delete


def test_delete_job_of_a_running_job_raises_job_not_deleted_exception(tp: Joblog) -> None:
    submission = tp.submit(*scenario(seconds=30.0), wait=True)
    submission.event_wait("double_task", "JobStarted", timeout=WAIT_S)
    job = latest(tp, "double_task", submission.id)
    with pytest.raises(JobNotDeletedException) as caught:
        tp.delete_job(job)
    assert caught.value.code == "not_terminal" and "double_task" in caught.value.reason

    handle = tp.delete_job(job, wait=False)  # the option not to wait
    with pytest.raises(JobNotDeletedException):
        handle.result(timeout=WAIT_S)

    # force: the running attempt is canceled at once (its worker gets a kill), what waits
    # on it is abandoned, then it is deleted
    tp.delete_job(job, force=True)
    events = [e.name for e in tp.history(submission.id, "double_task")]
    assert events[-2:] == ["JobCanceled", "JobDeleted"]
    view = submission.wait_until_done(timeout=WAIT_S)
    assert view.jobs["double_task"].status is JobStatus.CANCELED
    assert view.jobs["double_task"].deleted
    assert view.jobs["print_task"].status is JobStatus.ABANDONED
    assert not view.jobs["print_task"].deleted
    tp.delete_job(f"{submission.id}/print_task")  # ABANDONED: deleted without force
    with pytest.raises(JobNotDeletedException) as again:
        tp.delete_job(job)
    assert again.value.code == "deleted"


def test_delete_job_of_a_completed_job(tp: Joblog) -> None:
    submission = tp.submit(task="double_task", args=[4], wait=True)
    submission.wait_until_done(timeout=WAIT_S)
    job = projected(tp, latest(tp, "double_task", submission.id), JobStatus.COMPLETED)
    assert job.is_deletable()
    assert tp.delete_job(job).result().name == "JobDeleted"
    eventually(lambda: job.ref not in {j.ref for j in tp.get_jobs()}, "the job gone from get_jobs")


def test_delete_jobs_deletes_every_job(tp: Joblog) -> None:
    """Taipy's ``delete_jobs()``; the last test of the module: every job is deleted."""
    for submission_id in {job.submission_id for job in tp.get_jobs()}:
        tp.wait_until_done(submission_id, timeout=WAIT_S)
    tp.submit(*scenario(seconds=0.0), wait=True).wait_until_done(timeout=WAIT_S)
    eventually(lambda: len(tp.get_jobs()) >= 2, "jobs in the projections")
    handles = tp.delete_jobs()
    assert handles and all(handle.decided for handle in handles)
    eventually(lambda: not tp.get_jobs(), "no job left in get_jobs")
