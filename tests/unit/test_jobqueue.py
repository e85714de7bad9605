"""cgkit's jobqueue without a broker: procedures on an attempt, job types, trees, handles."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from engine.jobqueue import (
    JOB_PROC_ERROR,
    JobHandle,
    JobProc,
    JobQueue,
    JobQueueError,
    proc_task,
)
from engine.lifecycle.records import (
    AttemptRef,
    AttemptReport,
    Dispatch,
    ExceptionReported,
    Finished,
    JobSpec,
    JobStatus,
    Outcome,
    OutputReported,
    ProgressReported,
)
from engine.lifecycle.views import JobView
from engine.worker import TaskRegistry
from engine.worker.attempt import AttemptOptions, AttemptRun
from engine.worker.context import running_dir_of
from engine.worker.tasks import encode_args


class renderFrame(JobProc):
    """Renders one frame: progress, status line, a command and its lines."""

    seen: list[tuple[str, int, str]] = []

    def __init__(self, scene: str, frame: int, fail: bool = False) -> None:
        super().__init__(label=f"{scene} frame {frame}")
        self.scene = scene
        self.frame = frame
        self.fail = fail

    def run(self) -> None:
        self.setStatusLine(f"rendering {self.scene} frame {self.frame}")
        self.setProgress(150)  # clamped to 100
        (Path(self.runningDir) / "frame.txt").write_text(str(self.frame))
        code = self.execCmd(f"echo one; echo two; echo oops >&2; ls {self.runningDir}")
        if self.fail or code != 0:
            self.setError(f"frame {self.frame} did not render")
        assert self.stdout is not None
        self.stdout.write("done\n")

    def stdoutCallback(self, lineNr: int, line: str) -> None:
        self.seen.append(("out", lineNr, line))

    def stderrCallback(self, lineNr: int, line: str) -> None:
        self.seen.append(("err", lineNr, line))


class encodeMovie(JobProc):
    jobType = "encode"
    retries = 2
    timeout = 1.5

    def __init__(self, scene: str) -> None:
        super().__init__()
        self.scene = scene
        self.created = 0

    def postCreate(self, jobDir: str | None) -> None:
        self.label = f"encode {self.scene}"


def attempt(
    proc: type[JobProc], tmp_path: Path, **params: Any
) -> tuple[Finished, list[AttemptReport]]:
    spec = JobSpec(job_id="j", task=proc.task_name(), args=encode_args((), params))
    dispatch = Dispatch("s/j/1", "s", "j", 1, spec, 0, 3_000)
    reports: list[AttemptReport] = []
    run = AttemptRun(
        dispatch,
        "w1",
        TaskRegistry([proc_task(proc)]),
        reports.append,
        AttemptOptions(progress_interval_ms=0, run_dir=str(tmp_path)),
    )
    return run.execute(), reports


# ------------------------------------------------------------------ a procedure on a worker


def test_a_procedure_runs_with_progress_status_line_output_and_its_running_dir(
    tmp_path: Path,
) -> None:
    renderFrame.seen.clear()
    finished, reports = attempt(renderFrame, tmp_path, scene="s", frame=7)
    assert finished.outcome is Outcome.COMPLETED, finished
    progress = [r for r in reports if isinstance(r, ProgressReported)]
    assert any(r.status_line == "rendering s frame 7" for r in progress)
    assert (finished.progress, finished.total) == (100, 100), "setProgress(150) is clamped"
    running = running_dir_of(tmp_path, AttemptRef("s", "j", 1, "s/j/1", "w1"))
    assert (running / "frame.txt").read_text() == "7", "runningDir is the attempt's own"
    output = "".join(r.chunk for r in reports if isinstance(r, OutputReported))
    assert "one\ntwo\n" in output and "oops" in output and "frame.txt" in output
    assert output.endswith("done\n") or "done\n" in output
    assert ("out", 1, "one\n") in renderFrame.seen and ("out", 2, "two\n") in renderFrame.seen
    assert ("err", 1, "oops\n") in renderFrame.seen
    assert ("out", 3, "frame.txt\n") in renderFrame.seen


def test_set_error_fails_the_attempt_with_a_clear_reason_without_raising(tmp_path: Path) -> None:
    finished, reports = attempt(renderFrame, tmp_path, scene="s", frame=2, fail=True)
    assert finished.outcome is Outcome.FAILED
    assert finished.error_type == JOB_PROC_ERROR
    assert finished.error_note == "frame 2 did not render"
    assert any(isinstance(r, ExceptionReported) and r.severity == 0 for r in reports)
    output = "".join(r.chunk for r in reports if isinstance(r, OutputReported))
    assert "done\n" in output, "run() went on after setError()"


def test_parameters_that_do_not_fit_the_procedure_fail_with_bad_arguments(tmp_path: Path) -> None:
    finished, _ = attempt(renderFrame, tmp_path, scene="s", frame=1, colour="red")
    assert finished.outcome is Outcome.FAILED and finished.error_type == "BadArguments"
    assert "colour" in finished.error_note


def test_an_exception_in_run_fails_the_attempt_with_its_traceback(tmp_path: Path) -> None:
    class broken(JobProc):
        def run(self) -> None:
            raise RuntimeError("no scene")

    finished, _ = attempt(broken, tmp_path)
    assert finished.outcome is Outcome.FAILED and finished.error_type == "RuntimeError"
    assert "no scene" in finished.traceback


def test_the_context_exists_only_while_run_runs() -> None:
    proc = renderFrame("s", 1)
    with pytest.raises(JobQueueError, match="only inside run"):
        _ = proc.runningDir
    with pytest.raises(JobQueueError):
        proc.setProgress(10)


# ------------------------------------------------------------------ job types


def test_a_job_type_is_the_class_name_or_its_job_type() -> None:
    assert renderFrame.task_name() == "renderFrame"
    assert encodeMovie.task_name() == "encode"
    assert proc_task(renderFrame) is proc_task(renderFrame), "one task per class"
    assert JobProc.as_task() is None
    with pytest.raises(TypeError):
        proc_task(JobProc)


def test_a_worker_module_registers_its_procedures_beside_its_tasks() -> None:
    module = types.ModuleType("procs_for_test")
    module.JobProc = JobProc  # type: ignore[attr-defined]
    module.renderFrame = renderFrame  # type: ignore[attr-defined]
    module.encodeMovie = encodeMovie  # type: ignore[attr-defined]
    module.Path = Path  # type: ignore[attr-defined]
    registry = TaskRegistry()
    registry.load_module(module)
    assert registry.names() == ["encode", "renderFrame"]
    registry.load_module(module)  # loading twice is harmless
    assert len(registry) == 2


def test_the_queue_resolves_job_types_by_class_module_or_import_path() -> None:
    module = types.ModuleType("jobqueue_procs_for_test")
    module.renderFrame = renderFrame  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        jq = JobQueue("render", procs=["jobqueue_procs_for_test"])
        assert jq.procs() == {"renderFrame": renderFrame}
        root = JobQueue("render").createJobRoot(
            "jobqueue_procs_for_test.renderFrame", scene="s", frame=1
        )
        assert root.jobType == "renderFrame"
    finally:
        del sys.modules[module.__name__]
    with pytest.raises(JobQueueError, match="unknown job type 'nope'"):
        jq.createJobRoot("nope")
    with pytest.raises(JobQueueError, match="both"):
        jq.addProcs(type("renderFrame", (JobProc,), {}))


# ------------------------------------------------------------------ trees


def queue() -> JobQueue:
    return JobQueue("render", procs=[renderFrame, encodeMovie])


def test_a_tree_puts_sub_jobs_under_their_parent_with_labels_and_parameters() -> None:
    root = queue().createJobRoot("encode", scene="shot")
    frames = [root.createJob("renderFrame", scene="shot", frame=n) for n in (1, 2)]
    tree = root.tree()
    assert tree.key == "encode.0" and tree.name == "encode shot", "postCreate set the label"
    assert [child.key for child in tree.children] == [job.key for job in frames]
    assert [child.kwargs for child in tree.children] == [
        {"scene": "shot", "frame": 1},
        {"scene": "shot", "frame": 2},
    ]
    specs = tree.specs()
    assert [s.job_id for s in specs] == ["renderFrame.1", "renderFrame.2", "encode.0"]
    assert all(s.queue == "render" and dict(s.labels) == {"jobqueue": "render"} for s in specs)
    assert specs[0].parent == "encode.0" and specs[-1].parent is None
    assert specs[0].task == "renderFrame" and specs[0].name == "shot frame 1"
    assert (specs[0].retry.max_attempts, specs[0].timeout_ms) == (1, 0), "cgkit's: no retry"
    assert (specs[-1].retry.max_attempts, specs[-1].timeout_ms) == (3, 1_500)


def test_a_shared_sub_job_is_a_child_once_and_a_dependency_after() -> None:
    root = queue().createJobRoot("encode", scene="shot")
    left = root.createJob("encode", scene="left")
    right = root.createJob("encode", scene="right")
    shared = left.createJob("renderFrame", scene="shot", frame=1)
    right.addDependency(shared)
    specs = {s.job_id: s for s in root.tree().specs()}
    assert specs[shared.key].parent == left.key
    assert specs[right.key].depends_on == (shared.key,)


def test_a_cycle_is_refused_before_anything_is_sent() -> None:
    root = queue().createJobRoot("encode", scene="shot")
    a = root.createJob("encode", scene="a")
    b = a.createJob("encode", scene="b")
    b.addDependency(a)
    with pytest.raises(JobQueueError, match="cycle"):
        root.tree()


def test_bad_parameters_fail_at_creation() -> None:
    jq = queue()
    with pytest.raises(JobQueueError, match="do not fit job type 'renderFrame'"):
        jq.createJobRoot("renderFrame", scene="s")
    root = jq.createJobRoot("encode", scene="s")
    with pytest.raises(JobQueueError):
        root.addDependency(root)
    other = jq.createJobRoot("encode", scene="t")
    with pytest.raises(JobQueueError, match="another job tree"):
        root.addDependency(other.createJob("encode", scene="u"))
    with pytest.raises(JobQueueError, match="no location"):
        JobQueue(None).createJobRoot("encode", scene="s")
    assert JobQueue(None).listJobs() == []
    with pytest.raises(JobQueueError, match="needs a job type"):
        jq.createJobRoot()


def test_arguments_that_are_not_json_are_refused() -> None:
    root = queue().createJobRoot("encode", scene=object())
    with pytest.raises(ValueError, match="JSON"):
        root.tree().specs()


# ------------------------------------------------------------------ handles


@pytest.mark.parametrize(
    ("status", "waiting", "running", "finished", "error"),
    [
        (JobStatus.BLOCKED, True, False, False, False),
        (JobStatus.PENDING, True, False, False, False),
        (JobStatus.ASSIGNED, False, True, False, False),
        (JobStatus.RUNNING, False, True, False, False),
        (JobStatus.COMPLETED, False, False, True, False),
        (JobStatus.FAILED, False, False, True, True),
        (JobStatus.ABANDONED, False, False, True, True),
    ],
)
def test_a_handle_tells_the_cgkit_states(
    status: JobStatus, waiting: bool, running: bool, finished: bool, error: bool
) -> None:
    handle = JobHandle(queue(), JobView("s", "j", status=status, progress=30, total=60))
    assert (handle.isWaiting(), handle.isRunning(), handle.isFinished()) == (
        waiting,
        running,
        finished,
    )
    assert handle.hasError() is error
    assert handle.progress == 50 and handle.location == "s/j" and handle.label == "Job j"
