"""Python tasks in child processes: what each way of ending reports, without a broker.

A module-wide fork server is forked from the test process, as a worker forks its own at
start-up; the tasks below reach the children through it, like a worker's registry. Every
test runs twice: with a pool of warm children reused across attempts (the default), and with
a fresh child per attempt.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

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
from engine.limits import Limits
from engine.worker import JobContext, TaskRegistry, task
from engine.worker.attempt import TIMEOUT_REASON, AttemptOptions, AttemptRun
from engine.worker.child import run_attempt_child
from engine.worker.forkserver import ForkServer, describe_wait_status
from engine.worker.pool import PER_ATTEMPT, ChildPool, PoolOptions
from engine.worker.tasks import encode_args

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux processes")


@task
def double(x: int) -> int:
    time.sleep(0.01)
    return 2 * x


@task
def sleeper(seconds: float) -> str:
    """Never looks at the cancelled flag."""
    time.sleep(seconds)
    return "slept"


@task
def stubborn(ctx: JobContext, seconds: float) -> str:
    """Swallows SIGTERM's JobCancelled and goes on: only SIGKILL ends it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # the JobCancelled of SIGTERM, too
            time.sleep(0.05)
    return "outlived"


@task
def cooperative(ctx: JobContext) -> str:
    while True:
        ctx.check_cancelled()
        time.sleep(0.01)


@task
def reporter(ctx: JobContext, n: int) -> dict[str, object]:
    ctx.set_status_line("starting")
    for i in range(n):
        ctx.set_progress(i + 1, total=n)
    ctx.raise_exception("LowDisk", "5% left", severity=2)
    code = ctx.run_command(["sh", "-c", "echo out; echo err >&2; exit 4"])
    ctx.write_output("written\n")
    return {"pid": os.getpid(), "code": code, "cancelled": ctx.cancelled}


@task
def holds_progress(ctx: JobContext) -> float:
    """Two updates at once (the second held back by the interval), then a while without."""
    ctx.set_progress(1, total=2)
    ctx.set_progress(2, total=2)
    time.sleep(0.6)
    return time.time()


@task
def fatal(ctx: JobContext) -> None:
    ctx.raise_exception("InputMissing", "frame 12", severity=0)


@task
def raises(note: str) -> None:
    raise KeyError(note)


@task
def segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


@task
def null_read() -> None:
    ctypes.string_at(0)


@task
def hard_exit() -> None:
    os._exit(3)


@task
def soft_exit() -> None:
    sys.exit(5)


@task
def leak() -> None:
    kept = []
    while True:
        kept.append(b"x" * (8 * 1024 * 1024))
        time.sleep(0.005)


@task
def huge() -> str:
    return "x" * 2_000_000


@task
def long_status(ctx: JobContext) -> None:
    ctx.set_status_line("s" * 5000)
    raise RuntimeError("n" * 200_000)


@task
def spawns(ctx: JobContext, marker: str) -> int:
    return ctx.run_command(["sh", "-c", f"sleep 300 & sleep 301; : {marker}"])


REGISTRY = TaskRegistry(
    [
        double,
        sleeper,
        stubborn,
        cooperative,
        reporter,
        holds_progress,
        fatal,
        raises,
        segfault,
        null_read,
        hard_exit,
        soft_exit,
        leak,
        huge,
        long_status,
        spawns,
    ]
)


POOLED = PoolOptions(size=2, max_attempts_per_child=0)


@pytest.fixture(scope="module", params=[POOLED, PER_ATTEMPT], ids=["pool", "per-attempt"])
def server(request: pytest.FixtureRequest) -> Iterator[ChildPool]:
    fork_server = ForkServer(lambda sock, template: run_attempt_child(sock, template, REGISTRY))
    fork_server.start()
    pool = ChildPool(fork_server, request.param)
    pool.start()
    yield pool
    pool.close()
    fork_server.close()


def spec(name: str, *args: object, timeout_ms: int = 0) -> JobSpec:
    return JobSpec(job_id="j", task=name, args=encode_args(args, {}), timeout_ms=timeout_ms)


class Run:
    """One attempt in a child, with the worker loop's pump in a thread."""

    def __init__(
        self,
        server: ChildPool,
        job: JobSpec,
        options: AttemptOptions | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.reports: list[AttemptReport] = []
        dispatch = Dispatch("s/j/1", "s", "j", 1, job, 0, 3000)
        self.attempt = AttemptRun(
            dispatch,
            "w1",
            REGISTRY,
            self.reports.append,
            options,
            limits=limits or Limits(),
            pool=server,
        )

    def execute(self, cancel_after: float | None = None, reason: str = "user asked") -> Finished:
        stop = threading.Event()

        def pump() -> None:
            while not stop.wait(0.02):
                self.attempt.pump()

        threading.Thread(target=pump, daemon=True).start()
        if cancel_after is not None:
            threading.Timer(cancel_after, self.attempt.cancel, args=(reason, 3000)).start()
        try:
            finished = self.attempt.execute()
        finally:
            stop.set()
        assert self.reports[-1] == finished
        return finished

    def of(self, kind: type) -> list[AttemptReport]:
        return [r for r in self.reports if isinstance(r, kind)]


def test_the_result_comes_back_from_the_child(server: ChildPool) -> None:
    run = Run(server, spec("double", 21))
    finished = run.execute()
    assert (finished.outcome, finished.result) == (Outcome.COMPLETED, "42")
    (started,) = run.of(Started)
    assert started.pid not in (0, os.getpid()), "it ran in a process of its own"  # type: ignore[attr-defined]


def test_held_back_progress_is_sent_while_the_attempt_runs_also_on_a_reused_child(
    server: ChildPool,
) -> None:
    for _ in range(3):  # a pooled child waits idle between these attempts
        run = Run(server, spec("holds_progress"))
        finished = run.execute()
        assert finished.outcome is Outcome.COMPLETED
        sent = [r for r in run.of(ProgressReported) if r.value == 2]  # type: ignore[attr-defined]
        assert sent, "the held-back update came only with the Finished"
        assert sent[0].sent_at < float(finished.result or 0) * 1000 - 200  # type: ignore[attr-defined]


def test_the_context_works_across_the_process_boundary(server: ChildPool) -> None:
    run = Run(server, spec("reporter", 1000))
    finished = run.execute()
    result = json.loads(finished.result or "")
    assert result["code"] == 4 and result["cancelled"] is False
    assert result["pid"] == run.of(Started)[0].pid  # type: ignore[attr-defined]
    assert len(run.of(ProgressReported)) <= 3, "1,000 updates are coalesced"
    assert (finished.progress, finished.total, finished.status_line) == (1000, 1000, "starting")
    (warning,) = run.of(ExceptionReported)
    assert (warning.type, warning.note, warning.severity) == ("LowDisk", "5% left", 2)  # type: ignore[attr-defined]
    output = {(o.stream, o.chunk) for o in run.of(OutputReported)}  # type: ignore[attr-defined]
    assert {("stdout", "out\n"), ("stderr", "err\n"), ("stdout", "written\n")} <= output


def test_exceptions_keep_their_type_note_and_traceback(server: ChildPool) -> None:
    failed = Run(server, spec("raises", "missing")).execute()
    assert (failed.outcome, failed.error_type, failed.error_note) == (
        Outcome.FAILED,
        "KeyError",
        "'missing'",
    )
    assert "raise KeyError(note)" in failed.traceback
    run = Run(server, spec("fatal"))
    fatal_end = run.execute()
    assert (fatal_end.error_type, fatal_end.error_note) == ("InputMissing", "frame 12")
    assert [r.severity for r in run.of(ExceptionReported)] == [0]  # type: ignore[attr-defined]


def test_a_kill_ends_a_task_that_never_looks_at_the_flag(server: ChildPool) -> None:
    run = Run(server, spec("sleeper", 30))
    start = time.monotonic()
    finished = run.execute(cancel_after=0.3)
    assert (finished.outcome, finished.error_note) == (Outcome.CANCELED, "user asked")
    assert time.monotonic() - start < 20, "it did not sleep its 30 s"


def test_sigkill_after_the_grace_for_a_task_that_survives_sigterm(server: ChildPool) -> None:
    run = Run(server, spec("stubborn", 30), AttemptOptions(cooperative_ms=100))
    start = time.monotonic()
    finished = run.execute(cancel_after=0.2)
    assert finished.outcome is Outcome.CANCELED
    assert 2.0 < time.monotonic() - start < 20, "SIGKILL came at the end of the 3 s grace"


def test_a_cooperative_task_stops_on_the_flag(server: ChildPool) -> None:
    finished = Run(server, spec("cooperative")).execute(cancel_after=0.2)
    assert (finished.outcome, finished.error_type) == (Outcome.CANCELED, "JobCancelled")


def test_the_scheduler_timeout_kill_fails_the_attempt_with_timeout(server: ChildPool) -> None:
    finished = Run(server, spec("sleeper", 30, timeout_ms=100)).execute(
        cancel_after=0.2, reason=TIMEOUT_REASON
    )
    assert (finished.outcome, finished.error_type) == (Outcome.FAILED, "Timeout")
    assert finished.error_note == "ran longer than 100 ms"


def test_the_worker_ends_an_attempt_past_its_timeout_by_itself(server: ChildPool) -> None:
    options = AttemptOptions(timeout_margin_ms=100, cooperative_ms=100)
    finished = Run(server, spec("sleeper", 30, timeout_ms=200), options).execute()
    assert (finished.outcome, finished.error_type) == (Outcome.FAILED, "Timeout")


@pytest.mark.parametrize(
    ("name", "how"),
    [
        ("segfault", "exit signal SIGSEGV"),
        ("null_read", "exit signal SIGSEGV"),
        ("hard_exit", "exit code 3"),
    ],
)
def test_a_dying_child_fails_its_attempt_and_the_next_one_runs(
    server: ChildPool, name: str, how: str
) -> None:
    run = Run(server, spec(name))
    finished = run.execute()
    assert (finished.outcome, finished.error_type) == (Outcome.FAILED, "WorkerChildDied")
    assert finished.error_note == f"the task's process died: {how}"
    assert run.of(Started), "what it reported before it died arrived"
    assert Run(server, spec("double", 1)).execute().result == "2"


def test_sys_exit_is_a_failure_with_its_code(server: ChildPool) -> None:
    finished = Run(server, spec("soft_exit")).execute()
    assert (finished.outcome, finished.error_type) == (Outcome.FAILED, "SystemExit")
    assert finished.error_note == "the task called sys.exit(5)"


def test_a_leak_past_the_memory_limit_fails_the_attempt(server: ChildPool) -> None:
    limit = 150 * 1024 * 1024
    finished = Run(server, spec("leak"), AttemptOptions(memory_limit_bytes=limit)).execute()
    assert (finished.outcome, finished.error_type) == (Outcome.FAILED, "MemoryLimitExceeded")
    assert "(--task-memory-limit)" in finished.error_note


def test_a_result_above_the_limit_fails_with_result_too_large(server: ChildPool) -> None:
    finished = Run(server, spec("huge"), limits=Limits(max_result_bytes=1024 * 1024)).execute()
    assert (finished.outcome, finished.error_type, finished.result) == (
        Outcome.FAILED,
        "ResultTooLarge",
        None,
    )
    assert finished.error_note.startswith("result is 2.0 MB, the limit is 1.0 MB")


def test_status_lines_and_notes_are_cut_to_their_limits(server: ChildPool) -> None:
    limits = Limits(max_status_line_bytes=100, max_note_bytes=1000, max_traceback_bytes=2000)
    run = Run(server, spec("long_status"), limits=limits)
    finished = run.execute()
    assert len(finished.status_line or "") <= 100
    assert len(finished.error_note.encode()) <= 1000
    assert len(finished.traceback.encode()) <= 2000
    assert all(len(p.status_line or "") <= 100 for p in run.of(ProgressReported))  # type: ignore[attr-defined]


def test_an_unknown_task_fails_without_a_child(server: ChildPool) -> None:
    run = Run(server, spec("nope"))
    finished = run.execute()
    assert finished.error_type == "UnknownTask"
    assert run.reports == [finished]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def marked(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def test_no_orphans_when_the_template_is_killed() -> None:
    own = ForkServer(lambda sock, template: run_attempt_child(sock, template, REGISTRY))
    own.start()
    pool = ChildPool(own, POOLED)
    pool.start()
    marker = f"joblog-orphan-{os.getpid()}-{time.monotonic_ns()}"
    run = Run(pool, spec("spawns", marker))
    ended = threading.Event()
    threading.Thread(target=lambda: (run.execute(), ended.set()), daemon=True).start()
    deadline = time.monotonic() + 10
    while len(marked(marker)) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marked(marker), "the command started"
    child = run.attempt.child
    assert child is not None and alive(child.pid)
    assert own.pid is not None
    os.kill(own.pid, signal.SIGKILL)  # the template and all it forked must go
    deadline = time.monotonic() + 10
    while (marked(marker) or alive(child.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child.pid), "the task's process outlived its template"
    assert not marked(marker), "the task's command group outlived it"
    assert ended.wait(15)
    assert run.reports[-1].error_type == "WorkerChildDied"  # type: ignore[union-attr]
    assert not [pid for pid in pool.idle if alive(pid)], "the idle children went with it"
    pool.close()
    own.close()


def test_wait_statuses_read_like_an_operator_expects() -> None:
    assert describe_wait_status(3 << 8) == "exit code 3"
    assert describe_wait_status(signal.SIGKILL) == "exit signal SIGKILL"


def test_thread_mode_after_a_kill_reports_canceled_even_if_the_task_returns() -> None:
    reports: list[AttemptReport] = []
    dispatch = Dispatch("s/j/1", "s", "j", 1, spec("sleeper", 0.5), 0, 3000)
    attempt = AttemptRun(dispatch, "w1", REGISTRY, reports.append)
    threading.Timer(0.1, attempt.cancel, args=("user asked", 1000)).start()
    finished = attempt.execute()
    assert (finished.outcome, finished.result) == (Outcome.CANCELED, None)


class _HoldsAConsumer:
    """A Kafka consumer in a reference cycle (its error callback is a bound method)."""

    def __init__(self) -> None:
        from confluent_kafka import Consumer

        self.consumer = Consumer(
            {
                "bootstrap.servers": "127.0.0.1:1",
                "group.id": "garbage",
                "error_cb": self.on_error,
                "log_level": 0,
            }
        )
        self.consumer.subscribe(["nowhere"])
        self.consumer.poll(0.2)

    def on_error(self, _error: object) -> None:
        pass


def test_the_template_survives_a_kafka_client_left_as_garbage_by_the_worker() -> None:
    """Collecting such a client in a forked process aborts it (librdkafka's threads are gone).

    The worker's garbage is frozen in the template, never collected there.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        _HoldsAConsumer()  # dropped at once: garbage until the worker's collector runs
        own = ForkServer(lambda sock, template: run_attempt_child(sock, template, REGISTRY))
        own.start()
        pool = ChildPool(own, POOLED)
        pool.start()
        try:
            for n in range(3):
                finished = Run(pool, spec("double", n)).execute()
                assert (finished.outcome, finished.result) == (Outcome.COMPLETED, str(2 * n))
            assert own.alive and own.pid is not None and alive(own.pid)
        finally:
            pool.close()
            own.close()
    finally:
        if collecting:
            gc.enable()
        gc.collect()
