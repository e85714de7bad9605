"""AttemptRun: what each way of ending an attempt reports, without a broker."""

from __future__ import annotations

import json
import threading
import time

from engine.lifecycle.records import (
    AttemptReport,
    Dispatch,
    ExceptionReported,
    Finished,
    JobSpec,
    Outcome,
    OutputReported,
    ProgressReported,
    Started,
)
from engine.worker import JobContext, JobException, TaskRegistry, task
from engine.worker.attempt import AttemptRun
from engine.worker.tasks import encode_args


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def progress(ctx: JobContext, n: int) -> str:
    for i in range(n):
        ctx.set_progress(i + 1, total=n)
    ctx.set_status_line("done")
    return "ok"


@task
def fails(note: str) -> None:
    raise KeyError(note)


@task
def fatal(ctx: JobContext) -> None:
    ctx.raise_exception("Minor", "keep going", severity=1)
    raise JobException("Broken", "cannot go on")


@task
def waits(ctx: JobContext) -> None:
    while True:
        ctx.check_cancelled()
        time.sleep(0.01)


@task
def swallow_then_fail(ctx: JobContext) -> None:
    ctx.wait_cancelled(5)
    raise RuntimeError("noticed the cancel my own way")


@task
def not_json(ctx: JobContext) -> object:
    return object()


@task
async def coroutine(x: int) -> int:
    return x * 2


REGISTRY = TaskRegistry(
    [add, progress, fails, fatal, waits, swallow_then_fail, not_json, coroutine]
)


def dispatch(spec: JobSpec, attempt: int = 1) -> Dispatch:
    return Dispatch(
        dispatch_id=f"s/{spec.job_id}/{attempt}",
        submission_id="s",
        job_id=spec.job_id,
        attempt=attempt,
        spec=spec,
        dispatched_at=0,
        lease_ms=3000,
    )


def task_spec(name: str, *args: object, **kwargs: object) -> JobSpec:
    return JobSpec(job_id="j", task=name, args=encode_args(args, kwargs))


def execute(spec: JobSpec) -> tuple[Finished, list[AttemptReport], AttemptRun]:
    reports: list[AttemptReport] = []
    run = AttemptRun(dispatch(spec), "w1", REGISTRY, reports.append)
    finished = run.execute()
    assert reports[-1] == finished
    return finished, reports, run


def test_task_result_is_json() -> None:
    finished, reports, _ = execute(task_spec("add", 2, b=3))
    assert isinstance(reports[0], Started)
    assert finished.outcome is Outcome.COMPLETED
    assert json.loads(finished.result or "") == 5
    assert finished.ref.worker_id == "w1"
    assert finished.ref.dispatch_id == "s/j/1"


def test_async_task() -> None:
    finished, _, _ = execute(task_spec("coroutine", 21))
    assert finished.result == "42"


def test_final_progress_travels_in_finished() -> None:
    finished, reports, _ = execute(task_spec("progress", 500))
    assert len([r for r in reports if isinstance(r, ProgressReported)]) == 1  # coalesced
    assert (finished.progress, finished.total, finished.status_line) == (500, 500, "done")


def test_python_exception_fails_with_class_name_note_and_traceback() -> None:
    finished, reports, _ = execute(task_spec("fails", "missing key"))
    assert finished.outcome is Outcome.FAILED
    assert finished.error_type == "KeyError"
    assert finished.error_note == "'missing key'"
    assert "raise KeyError(note)" in finished.traceback
    assert not any(isinstance(r, ExceptionReported) for r in reports)


def test_fatal_job_exception_is_reported_then_fails() -> None:
    finished, reports, _ = execute(task_spec("fatal"))
    exceptions = [r for r in reports if isinstance(r, ExceptionReported)]
    assert [(e.type, e.severity) for e in exceptions] == [("Minor", 1), ("Broken", 0)]
    assert exceptions[1].note == "cannot go on"
    assert finished.outcome is Outcome.FAILED
    assert (finished.error_type, finished.error_note) == ("Broken", "cannot go on")


def test_unknown_task_bad_arguments_and_unserializable_result() -> None:
    unknown, reports, _ = execute(task_spec("nope"))
    assert (unknown.outcome, unknown.error_type) == (Outcome.FAILED, "UnknownTask")
    assert reports == [unknown]  # never started
    bad, _, _ = execute(task_spec("add", 1, 2, 3))
    assert bad.error_type == "BadArguments"
    malformed, _, _ = execute(JobSpec(job_id="j", task="add", args="[1"))
    assert malformed.error_type == "BadArguments"
    result, _, _ = execute(task_spec("not_json"))
    assert result.error_type == "UnserializableResult"


def test_neither_task_nor_command() -> None:
    finished, _, _ = execute(JobSpec(job_id="j"))
    assert finished.error_type == "NoWork"


def run_and_cancel(spec: JobSpec, after: float, grace_ms: int = 2000) -> tuple[Finished, float]:
    reports: list[AttemptReport] = []
    run = AttemptRun(dispatch(spec), "w1", REGISTRY, reports.append)
    timer = threading.Timer(after, run.cancel, args=("user asked", grace_ms))
    timer.start()
    start = time.monotonic()
    finished = run.execute()
    return finished, time.monotonic() - start


def test_cooperative_cancel() -> None:
    finished, elapsed = run_and_cancel(task_spec("waits"), 0.2)
    assert finished.outcome is Outcome.CANCELED
    assert finished.error_note == "user asked"
    assert elapsed < 1


def test_any_exception_after_a_cancel_is_canceled() -> None:
    finished, _ = run_and_cancel(task_spec("swallow_then_fail"), 0.1)
    assert finished.outcome is Outcome.CANCELED


def test_command_completes_with_output() -> None:
    spec = JobSpec(
        job_id="c",
        command=("sh", "-c", 'echo "$GREETING from $JOBLOG_JOB_ID#$JOBLOG_ATTEMPT"'),
        env=(("GREETING", "hi"),),
    )
    finished, reports, _ = execute(spec)
    assert isinstance(reports[0], Started) and reports[0].pid > 0
    output = [r for r in reports if isinstance(r, OutputReported)]
    assert [(o.stream, o.chunk) for o in output] == [("stdout", "hi from c#1\n")]
    assert (finished.outcome, finished.exit_code) == (Outcome.COMPLETED, 0)


def test_command_nonzero_exit_fails() -> None:
    finished, _, _ = execute(JobSpec(job_id="c", command=("sh", "-c", "exit 4")))
    assert (finished.outcome, finished.exit_code) == (Outcome.FAILED, 4)
    assert finished.error_type == "ExitCode"
    assert "exit code 4" in finished.error_note


def test_command_that_cannot_start() -> None:
    finished, reports, _ = execute(JobSpec(job_id="c", command=("/no/such/program",)))
    assert finished.outcome is Outcome.FAILED
    assert finished.error_type == "FileNotFoundError"
    assert reports == [finished]


def test_command_cancel_sigterm() -> None:
    finished, elapsed = run_and_cancel(JobSpec(job_id="c", command=("sleep", "600")), 0.2)
    assert finished.outcome is Outcome.CANCELED
    assert finished.exit_code == -15
    assert elapsed < 2


def test_command_cancel_escalates_to_sigkill() -> None:
    stubborn = ("sh", "-c", "trap '' TERM; while :; do sleep 0.05; done")
    finished, elapsed = run_and_cancel(JobSpec(job_id="c", command=stubborn), 0.3, grace_ms=400)
    assert finished.outcome is Outcome.CANCELED
    assert finished.exit_code == -9
    assert 0.6 < elapsed < 3
