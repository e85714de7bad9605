"""JobContext: progress coalescing, exceptions, cancel, output."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from engine.lifecycle.records import (
    AttemptRef,
    AttemptReport,
    ExceptionReported,
    JobSpec,
    OutputReported,
    ProgressReported,
)
from engine.worker import JobCancelled, JobContext, JobException
from engine.worker.context import Progress, ProgressThrottle, running_dir_of
from engine.worker.output import OutputLimits

REF = AttemptRef("s1", "j1", 1, "s1/j1/1", "w1")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_context(
    clock: FakeClock | None = None, limits: OutputLimits | None = None
) -> tuple[JobContext, list[AttemptReport]]:
    reports: list[AttemptReport] = []
    context = JobContext(
        REF,
        JobSpec(job_id="j1", task="t"),
        reports.append,
        args=[1],
        kwargs={"k": 2},
        output_limits=limits,
        **({} if clock is None else {"clock": clock}),
    )
    return context, reports


def progress_reports(reports: list[AttemptReport]) -> list[ProgressReported]:
    return [r for r in reports if isinstance(r, ProgressReported)]


class TestThrottle:
    def test_first_update_goes_out_then_waits_for_the_interval(self) -> None:
        clock = FakeClock()
        throttle = ProgressThrottle(200, clock)
        assert throttle.update(value=1) == Progress(1, None, None)
        assert throttle.update(value=2) is None
        clock.advance(0.1)
        assert throttle.update(value=3, total=10) is None
        assert throttle.due() is None
        clock.advance(0.1)
        assert throttle.due() == Progress(3, 10, None)
        assert throttle.due() is None  # nothing new

    def test_none_keeps_previous_fields(self) -> None:
        throttle = ProgressThrottle(0, FakeClock())
        throttle.update(value=1, total=10)
        throttle.update(status_line="half")
        assert throttle.update(value=5) == Progress(5, 10, "half")


def test_identity_properties() -> None:
    context, _ = make_context()
    assert (context.submission_id, context.job_id, context.attempt) == ("s1", "j1", 1)
    assert (context.dispatch_id, context.worker_id) == ("s1/j1/1", "w1")
    assert context.args == (1,)
    assert context.kwargs == {"k": 2}


def test_thousand_updates_in_one_second_make_at_most_six_reports() -> None:
    context, reports = make_context()
    done = threading.Event()

    def pump() -> None:  # the worker's loop, which flushes held-back progress
        while not done.is_set():
            context.flush_progress()
            time.sleep(0.02)

    pumper = threading.Thread(target=pump)
    pumper.start()
    start = time.monotonic()
    for i in range(1, 1001):
        context.set_progress(i, total=1000)
        time.sleep(max(0.0, start + i / 1000 - time.monotonic()))
    done.set()
    pumper.join()
    elapsed = time.monotonic() - start
    sent = progress_reports(reports)
    assert elapsed < 1.5
    assert 1 <= len(sent) <= 6
    assert [r.value for r in sent] == sorted(r.value for r in sent if r.value is not None)
    assert context.progress == Progress(1000.0, 1000.0, None)  # final value, for Finished


def test_held_value_is_flushed_after_the_interval() -> None:
    clock = FakeClock()
    context, reports = make_context(clock)
    for i in range(50):
        context.set_progress(i)
    context.set_status_line("working")
    assert [r.value for r in progress_reports(reports)] == [0]
    clock.advance(0.2)
    context.flush_progress()
    last = progress_reports(reports)[-1]
    assert (last.value, last.status_line) == (49, "working")
    assert last.ref == REF


def test_fatal_exception_raises_and_reports_nothing_itself() -> None:
    context, reports = make_context()
    with pytest.raises(JobException) as caught:
        context.raise_exception("InputMissing", "no frame", severity=0)
    assert (caught.value.type, caught.value.note) == ("InputMissing", "no frame")
    assert reports == []  # the attempt reports it as it ends


def test_non_fatal_exception_is_reported_and_returns() -> None:
    context, reports = make_context()
    context.raise_exception("LowDisk", "5% free", severity=3)
    (report,) = reports
    assert isinstance(report, ExceptionReported)
    assert (report.type, report.note, report.severity) == ("LowDisk", "5% free", 3)
    with pytest.raises(ValueError, match="severity"):
        context.raise_exception("X", "y", severity=-1)


def test_cancel_flag_and_check() -> None:
    context, _ = make_context()
    assert not context.cancelled
    context.check_cancelled()
    context.request_cancel("user asked", 1000)
    assert context.cancelled
    assert context.cancel_reason == "user asked"
    assert context.wait_cancelled(0)
    with pytest.raises(JobCancelled, match="user asked"):
        context.check_cancelled()


def test_write_output_is_chunked_and_capped() -> None:
    context, reports = make_context(limits=OutputLimits(chunk_bytes=4, max_bytes=10))
    context.write_output("abcdefgh")
    context.write_output("ijklmn", stream="stderr")
    context.output.close()
    chunks = [(r.stream, r.chunk, r.offset, r.truncated) for r in reports]
    assert isinstance(reports[0], OutputReported)
    assert chunks[:4] == [
        ("stdout", "abcd", 0, False),
        ("stdout", "efgh", 4, False),
        ("stderr", "ij", 0, False),
        ("stderr", chunks[3][1], 2, True),
    ]
    assert "4 bytes of stderr dropped" in chunks[3][1]


def test_run_command_streams_output_and_returns_exit_code() -> None:
    context, reports = make_context()
    seen: list[str] = []
    code = context.run_command(
        ["sh", "-c", 'echo "out $X"; echo err >&2; exit 3'],
        env={"X": "42"},
        on_stdout=seen.append,
    )
    assert code == 3
    assert "".join(seen) == "out 42\n"
    streams = {(r.stream, r.chunk) for r in reports if isinstance(r, OutputReported)}
    assert streams == {("stdout", "out 42\n"), ("stderr", "err\n")}


def test_run_command_is_terminated_by_a_cancel() -> None:
    context, _ = make_context()
    timer = threading.Timer(0.3, context.request_cancel, args=("stop", 2000))
    timer.start()
    start = time.monotonic()
    with pytest.raises(JobCancelled):
        context.run_command(["sleep", "30"])
    assert time.monotonic() - start < 2.0
    with pytest.raises(JobCancelled):  # once cancelled, no new command starts
        context.run_command(["true"])


def test_the_running_dir_is_the_attempts_own_and_safe_as_a_path(tmp_path: Path) -> None:
    context = JobContext(
        AttemptRef("s/1", "..", 2, "d", "w1"),
        JobSpec(job_id="..", task="t"),
        [].append,
        run_root=tmp_path,
    )
    path = context.running_dir
    assert path == tmp_path / "s_1" / "_" / "2" and path.is_dir()
    assert context.running_dir is path, "made once"
    assert running_dir_of(tmp_path, REF) == tmp_path / "s1" / "j1" / "1"
    assert not context.own_process, "a context in the worker's process"
