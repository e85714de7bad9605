"""cgkit's jobqueue, as its documentation tells it, on joblog against the real broker.

The examples of ``seeds/004`` (cgkit.jobqueue): a job is a hierarchy of sub-jobs processed
depth first (a job runs only when its sub-jobs completed), each job runs a ``JobProc``
object (``run``, ``postCreate``, ``setProgress``, ``setStatusLine``, ``setError``,
``execCmd`` with its line callbacks, ``runningDir``), and the queue calls ``createJobRoot``,
``createJob``, ``listJobs``, ``deleteJobs`` and ``runNextAvailableJob``.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from engine.admin import ensure_topics
from engine.config import Settings
from engine.jobqueue import JOB_PROC_ERROR, JobHandle, JobProc, JobQueue, createJobQueue
from engine.lifecycle.decide import Policy
from engine.lifecycle.records import (
    JobOutput,
    JobProgressed,
    JobStatus,
    SubmissionStatus,
)
from engine.scheduler.service import Scheduler, SchedulerConfig
from engine.worker import Worker, WorkerOptions
from engine.worker.attempt import AttemptOptions
from tests.integration.conftest import KafkaUnderTest
from tests.integration.test_client import eventually

T = TypeVar("T")
POLICY = Policy(lease_ms=3_000, kill_grace_ms=3_000)
WAIT_S = 90


# --------------------------------------------------------------------------- the procedures


class renderFrame(JobProc):
    """Renders one frame with a command, reading its progress from the command's output."""

    def __init__(self, scene: str, frame: int, fail: bool = False) -> None:
        super().__init__(label=f"render {scene} frame {frame}")
        self.scene = scene
        self.frame = frame
        self.fail = fail

    def run(self) -> None:
        self.setStatusLine(f"rendering {self.scene} frame {self.frame}")
        # The attempt has a process of its own: run() starts in its running directory.
        assert os.getcwd() == self.runningDir, (os.getcwd(), self.runningDir)
        Path("scene.rib").write_text(self.scene)
        script = "; ".join(
            [
                f"echo 'rendering {self.scene} frame {self.frame}'",
                "echo 'PROGRESS 50'",
                "cat scene.rib; echo",  # runs in the running directory
                "echo 'PROGRESS 100'",
            ]
        )
        if self.execCmd(script) != 0:
            self.setError("the renderer exited with an error")
        if self.fail:
            self.setError(f"frame {self.frame} has no camera")
        # Give the coalesced progress its interval, so each step reaches the log.
        time.sleep(0.3)

    def stdoutCallback(self, lineNr: int, line: str) -> None:
        if line.startswith("PROGRESS "):
            self.setProgress(int(line.split()[1]))


class encodeMovie(JobProc):
    """Assembles the frames its sub-jobs rendered."""

    def __init__(self, scene: str) -> None:
        super().__init__()
        self.scene = scene

    def postCreate(self, jobDir: str | None) -> None:
        self.label = f"encode {self.scene}"

    def run(self) -> None:
        self.setStatusLine(f"encoding {self.scene}")
        self.setProgress(100)
        assert self.stdout is not None
        self.stdout.write(f"encoded {self.scene}\n")
        time.sleep(0.3)


PROCS = [renderFrame, encodeMovie]


# --------------------------------------------------------------------------- the engine


@dataclass
class Running:
    settings: Settings
    db_path: Path
    queue: JobQueue


@contextmanager
def _thread(target: Callable[[threading.Event], object], name: str) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


@pytest.fixture(scope="module")
def running(
    kafka_cluster: KafkaUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    """A scheduler, a projector and a worker of the ``render`` queue running the procedures."""
    from projections.projector import Projector

    settings = Settings.from_env(
        bootstrap_servers=kafka_cluster.bootstrap_servers,
        topic_prefix=f"cg{uuid.uuid4().hex[:8]}.",
        partitions=2,
    )
    ensure_topics(settings, queues=["render", "batch"])
    db_path = tmp_path_factory.mktemp("cgkit") / "joblog.duckdb"
    run_dir = tmp_path_factory.mktemp("runs")
    queue = JobQueue("render", procs=PROCS, settings=settings, db_path=db_path)
    with ExitStack() as stack:
        scheduler = Scheduler(
            settings, policy=POLICY, config=SchedulerConfig(instance_id=f"cg-{uuid.uuid4().hex}")
        )
        stack.enter_context(_thread(scheduler.run, "scheduler"))
        projector = Projector(settings, db_path, poll_timeout=0.1)
        stack.enter_context(_thread(projector.run, "projector"))
        options = WorkerOptions(
            drain_timeout_s=2.0,
            session_timeout_ms=6_000,
            stop_grace_ms=500,
            attempt=AttemptOptions(run_dir=str(run_dir)),
        )
        worker = Worker(settings, "render", 2, queue.registry(), "cg-w1", options=options)
        stack.enter_context(_thread(worker.run, "worker"))
        assert scheduler.ready.wait(60), "the scheduler never got its partitions"
        assert projector.ready.wait(60), "the projector never got its partitions"
        assert worker.ready.wait(60), "the worker got no partitions"
        yield Running(settings, db_path, queue)
        queue.close()


def render_tree(queue: JobQueue, scene: str, frames: int, failing: int | None = None) -> JobHandle:
    """The documentation's example: a job whose sub-jobs render the frames it encodes."""
    root = queue.createJobRoot("encodeMovie", scene=scene)
    for frame in range(1, frames + 1):
        root.createJob("renderFrame", scene=scene, frame=frame, fail=frame == failing)
    return root.activate()


# --------------------------------------------------------------------------- the examples


def test_a_render_tree_runs_its_sub_jobs_first_with_progress_and_status_lines(
    running: Running,
) -> None:
    queue = running.queue
    handle = render_tree(queue, "shot1", 3)
    client = queue.client
    view = client.wait_until_done(handle.submission_id, timeout=WAIT_S)
    assert view.outcome is SubmissionStatus.COMPLETED
    root = view.jobs[handle.job_id]
    frames = [job for job in view.jobs.values() if job.parent == handle.job_id]
    assert root.name == "encode shot1", "the label set in postCreate names the job"
    assert sorted(job.name for job in frames) == [f"render shot1 frame {n}" for n in (1, 2, 3)]
    assert root.run_at is not None
    assert all(f.finished_at is not None and f.finished_at <= root.run_at for f in frames)

    # Progress and status lines are events of the log...
    events = client.history(handle.submission_id)
    progressed = [(e.job_id, e.body) for e in events if isinstance(e.body, JobProgressed)]
    frame_one = next(job.job_id for job in frames if job.name.endswith("frame 1"))
    lines = {body.status_line for job_id, body in progressed if job_id == frame_one}
    assert "rendering shot1 frame 1" in lines
    values = {(body.value, body.total) for job_id, body in progressed if job_id == frame_one}
    assert (100, 100) in values, "setProgress(100) from the command's output"
    # ...and of the projection, where the queue's handles read them.
    listed = eventually(
        lambda: [
            h
            for h in queue.listJobs()
            if h.location == handle.location and h.status is JobStatus.COMPLETED
        ],
        30,
        "the tree in the projection",
    )
    top = listed[0]
    assert top.isFinished() and not top.hasError(recursive=True)
    assert top.label == "encode shot1" and top.statusLine == "encoding shot1"
    assert top.progress == 100
    subs = top.listSubJobs()
    assert [s.label for s in subs] == [f"render shot1 frame {n}" for n in (1, 2, 3)]
    assert all(s.progress == 100 and s.statusLine.startswith("rendering") for s in subs)
    rows = client.query(
        "SELECT count(*) AS n FROM progress WHERE submission_id = ? AND status_line = ?",
        [handle.submission_id, "rendering shot1 frame 2"],
    )
    assert rows[0]["n"] >= 1


def test_exec_cmd_streams_the_command_output_from_the_running_dir(running: Running) -> None:
    queue = running.queue
    root = queue.createJob("renderFrame", scene="teapot", frame=9)
    handle = root.activate()
    view = queue.client.wait_until_done(handle.submission_id, timeout=WAIT_S)
    assert view.jobs[handle.job_id].status is JobStatus.COMPLETED
    bodies = [e.body for e in queue.client.history(handle.submission_id, handle.job_id)]
    output = "".join(body.chunk for body in bodies if isinstance(body, JobOutput))
    assert "rendering teapot frame 9\nPROGRESS 50\nteapot\nPROGRESS 100\n" in output


def test_set_error_fails_the_job_and_its_parent_never_runs(running: Running) -> None:
    queue = running.queue
    handle = render_tree(queue, "shot2", 2, failing=2)
    view = queue.client.wait_until_done(handle.submission_id, timeout=WAIT_S)
    root = view.jobs[handle.job_id]
    failed = [job for job in view.jobs.values() if job.status is JobStatus.FAILED]
    assert [job.name for job in failed] == ["render shot2 frame 2"]
    assert failed[0].error_type == JOB_PROC_ERROR
    assert failed[0].error_note == "frame 2 has no camera"
    assert root.status is JobStatus.ABANDONED and root.run_at is None, "the parent never ran"
    started = [
        e
        for e in queue.client.history(handle.submission_id, handle.job_id)
        if e.name == "JobStarted"
    ]
    assert started == []
    top = eventually(
        lambda: next(
            (h for h in queue.listJobs() if h.location == handle.location and h.isFinished()),
            None,
        ),
        30,
        "the failed tree in the projection",
    )
    assert top.hasError() and top.hasError(recursive=True)
    assert [s.hasError() for s in top.listSubJobs()] == [False, True]


def test_delete_jobs_takes_a_tree_off_the_list(running: Running) -> None:
    queue = running.queue
    handle = render_tree(queue, "shot3", 1)
    queue.client.wait_until_done(handle.submission_id, timeout=WAIT_S)
    eventually(
        lambda: any(h.location == handle.location for h in queue.listJobs()),
        30,
        "the tree to be listed",
    )
    queue.deleteJobs(handle)
    queue.deleteJobs([handle])  # gone already: not an error
    queue.deleteJobs(None)
    eventually(
        lambda: all(h.location != handle.location for h in queue.listJobs()),
        30,
        "the deletion to be projected",
    )
    assert any(e.name == "JobDeleted" for e in queue.client.history(handle.submission_id))


def test_run_next_available_job_runs_exactly_one_job_then_returns(running: Running) -> None:
    batch = createJobQueue("batch", settings=running.settings, procs=PROCS, db_path=running.db_path)
    try:
        root = batch.createJobRoot("encodeMovie", scene="night")
        for frame in (1, 2):
            root.createJob("renderFrame", scene="night", frame=frame)
        handle = root.activate()

        def statuses() -> list[JobStatus]:
            jobs = batch.client.view(handle.submission_id).jobs
            return [jobs[key].status for key in sorted(jobs)]

        eventually(lambda: statuses().count(JobStatus.PENDING) == 2, 30, "both frames to wait")
        assert batch.runNextAvailableJob(timeout=20) is True
        after_one = statuses()
        assert after_one.count(JobStatus.COMPLETED) == 1, after_one
        assert after_one.count(JobStatus.PENDING) == 1, "the other frame still waits"
        assert batch.client.view(handle.submission_id).jobs[handle.job_id].status is (
            JobStatus.BLOCKED
        ), "the parent waits for its sub-jobs"

        assert batch.runNextAvailableJob(timeout=20) is True
        eventually(
            lambda: (
                batch.client.view(handle.submission_id).jobs[handle.job_id].status
                is JobStatus.PENDING
            ),
            30,
            "the parent to be runnable once both frames completed",
        )
        assert batch.runNextAvailableJob(timeout=20) is True
        assert set(statuses()) == {JobStatus.COMPLETED}
        assert batch.runNextAvailableJob(timeout=3) is False, "nothing waits anymore"
    finally:
        batch.close()
