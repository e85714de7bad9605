"""Flux's job eventlog calls (``flux.job.event``) against a real broker, scheduler and workers.

A Flux user's loops, as the Flux docs write them, with a :class:`~engine.api.Joblog` for the
Flux handle and ``"submission/job"`` for the job id: ``event_watch``, ``event_wait`` with a
fatal exception, Flux's event names, ``ENODATA`` when the eventlog ends without the event,
the ``eventlog=`` selector, and the ``event_watch_async`` future. One engine (scheduler, two
workers) serves the module under a topic prefix of its own.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator

import pytest

from engine import JobException, Joblog, flux
from engine import flux as job
from engine.lifecycle.records import JobStatus
from engine.watch import EventNotFound, Watcher
from engine.worker import JobContext, TaskRegistry, task
from tests.integration.conftest import KafkaUnderTest
from tests.integration.test_client import REGISTRY, client_running


@task
def fatal_once(ctx: JobContext) -> int:
    """A fatal exception on the first attempt only (its job retries once)."""
    if ctx.attempt == 1:
        ctx.raise_exception("InputMissing", "frame 12 not rendered yet", severity=0)
    return ctx.attempt


@task
def say(ctx: JobContext, text: str) -> str:
    """Writes a line of output (the job's ``guest.output`` eventlog)."""
    ctx.write_output(f"{text}\n")
    return text


TASKS = TaskRegistry([*REGISTRY, fatal_once, say])


@pytest.fixture(scope="module")
def jl(kafka_cluster: KafkaUnderTest) -> Iterator[Joblog]:
    with client_running(kafka_cluster, "fx", TASKS) as client:
        yield client


def test_the_event_watch_loop_of_the_flux_docs(jl: Joblog) -> None:
    submission = jl.submit(task="double", args=[21])
    jobid = f"{submission.id}/double"
    seen = []
    for event in job.event_watch(jl, jobid):  # as: for event in job.event_watch(h, jobid)
        seen.append(event)
    names = [event.name for event in seen]
    assert names[0] == "submit" and names[-1] == "finish"
    assert names.index("priority") < names.index("alloc") < names.index("start")
    assert all(isinstance(event.timestamp, float) for event in seen)
    assert [event.timestamp for event in seen] == sorted(event.timestamp for event in seen)
    finish = seen[-1]
    assert finish.joblog_name == "JobCompleted" and finish.context["result"] == "42"
    assert seen[0].context["spec"]["task"] == "double"
    assert all(event.job_id == "double" and event.submission_id == submission.id for event in seen)


def test_event_wait_raises_a_fatal_exception_and_returns_the_finish(jl: Joblog) -> None:
    submission = jl.submit(task="fail_with", args=["InputMissing", "frame 12 not rendered"])
    jobid = f"{submission.id}/fail_with"
    with pytest.raises(JobException) as caught:
        job.event_wait(jl, jobid, "finish")
    error = caught.value
    assert (error.type, error.note, error.severity) == (
        "InputMissing",
        "frame 12 not rendered",
        0,
    )
    finish = job.event_wait(jl, jobid, "finish", raiseJobException=False)
    assert finish.name == "finish" and finish.joblog_name == "JobFailed"
    exception = job.event_wait(jl, jobid, "exception")
    assert exception.context["severity"] == 0 and exception.context["type"] == "InputMissing"
    clean = job.event_wait(jl, jobid, "clean", raiseJobException=False)
    assert clean.joblog_name == "JobFailed"


def test_a_fatal_exception_that_a_retry_follows_does_not_end_the_job(jl: Joblog) -> None:
    submission = jl.submit(task="fatal_once", retries=1, retry_backoff=0.1)
    finish = jl.event_wait(submission, "fatal_once", "finish", timeout=120)
    assert finish.name == "JobCompleted" and finish.body.attempt == 2  # type: ignore[union-attr]
    first = jl.event_wait(submission, "fatal_once", "exception", timeout=30)
    assert first.body.severity == 0  # type: ignore[union-attr]


def test_flux_names_are_aliases_in_joblogs_own_event_wait(jl: Joblog) -> None:
    submission = jl.submit(task="double", args=[2], kwargs={"seconds": 0.5})
    assert jl.event_wait(submission, "double", "submit", timeout=60).name == "JobSubmitted"
    assert jl.event_wait(submission, "double", "depend", timeout=60).name == "JobPending"
    assert jl.event_wait(submission, "double", "alloc", timeout=60).name == "JobAssigned"
    assert jl.event_wait(submission, "double", "start", timeout=60).name == "JobStarted"
    assert submission.event_wait("double", "finish", timeout=60).name == "JobCompleted"
    assert jl.event_wait(submission, "double", "clean", timeout=60).name == "JobCompleted"


def test_an_eventlog_that_ends_without_the_event_is_enodata(jl: Joblog) -> None:
    submission = jl.submit(task="double", args=[3])
    jobid = f"{submission.id}/double"
    with pytest.raises(OSError) as caught:
        job.event_wait(jl, jobid, "exception")
    assert caught.value.errno == errno.ENODATA
    assert isinstance(caught.value, EventNotFound)
    assert "ended before event=exception" in str(caught.value)
    with pytest.raises(OSError) as no_output:
        job.event_wait(jl, jobid, "data", eventlog="guest.output")
    assert no_output.value.errno == errno.ENODATA
    with pytest.raises(OSError) as no_job:
        job.event_wait(jl, f"{submission.id}/nope", "start")
    assert no_job.value.errno == errno.ENOENT
    with pytest.raises(ValueError, match="no 'start' event"):
        job.event_wait(jl, jobid, "start", eventlog="guest.output")


def test_the_output_eventlog_holds_the_jobs_output(jl: Joblog) -> None:
    submission = jl.submit(task="say", args=["hello from the job"])
    jobid = f"{submission.id}/say"
    output = list(job.event_watch(jl, jobid, eventlog="guest.output"))
    assert output and all(event.name == "data" for event in output)
    assert "hello from the job" in "".join(event.context["chunk"] for event in output)
    main = [event.name for event in job.event_watch(jl, jobid)]
    assert "data" not in main and main[-1] == "finish"
    data = job.event_wait(jl, jobid, "data", eventlog="guest.output")
    assert data.context["stream"] == "stdout"


def test_the_async_future_gives_events_then_none(jl: Joblog) -> None:
    submission = jl.submit(task="double", args=[4], kwargs={"seconds": 0.5})
    future = job.event_watch_async(jl, f"{submission.id}/double")
    names = []
    while (event := future.get_event(timeout=120)) is not None:
        names.append(event.name)
    assert names[0] == "submit" and names[-1] == "finish" and "start" in names
    assert future.get_event() is None
    assert future.join(30)


def test_the_async_future_calls_back_and_can_be_canceled(jl: Joblog) -> None:
    submission = jl.submit(task="double", args=[5], kwargs={"seconds": 60})
    started = threading.Event()
    names: list[str] = []

    def on_event(future: flux.JobEventWatchFuture[flux.EventLogEvent]) -> None:
        event = future.get_event()
        if event is not None:
            names.append(event.name)
            if event.name == "start":
                started.set()

    future = job.event_watch_async(jl, f"{submission.id}/double").then(on_event)
    assert started.wait(120), names
    future.cancel()
    assert future.join(30)
    assert future.get_event(timeout=30) is None
    submission.cancel(wait=True)
    canceled = jl.event_wait(submission, "double", "finish", timeout=60)
    assert canceled.name == "JobCanceled"


def test_joblogs_own_future_reads_joblog_events(jl: Joblog) -> None:
    submission = jl.submit(task="double", args=[6])
    future = jl.event_watch_async(submission, "double")
    names = []
    while (event := future.get_event(timeout=120)) is not None:
        names.append(event.name)
    assert names[0] == "JobSubmitted" and names[-1] == "JobCompleted"
    with Watcher(submission.id, settings=jl.settings) as watcher:
        assert watcher.join(60)
    assert watcher.view.jobs["double"].status is JobStatus.COMPLETED
