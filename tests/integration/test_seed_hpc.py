"""An HPC scheduler's monitoring events against a real broker, scheduler and workers.

Its *job* is a joblog submission and its *tasks* are the submission's jobs. The seed's
progress-printing pattern (each task's progress summed into the job's, printed from the
callback that ``wait_until_done`` calls), ``task_completed`` / ``job_completed`` /
``task_state_changed`` / ``task_progress_updated`` on a :class:`~engine.watch.Watcher`, each
task's own ``on_completed``, and progress coalesced to one update per 200 ms.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from engine import Job, Joblog, JobStatus, SubmissionStatus
from engine.lifecycle.records import JobProgressed
from engine.watch import PROGRESS_INTERVAL_S, JobView, SubmissionView, Watcher
from engine.worker import JobContext, TaskRegistry, task
from tests.integration.conftest import KafkaUnderTest
from tests.integration.test_client import REGISTRY, client_running


@task
def simulate(ctx: JobContext, steps: int, pause: float = 0.1) -> int:
    """A task that reports a user-defined progress value, from 20 up to 20 * steps."""
    for step in range(1, steps + 1):
        ctx.set_progress(20 * step, total=20 * steps)
        time.sleep(pause)
    return steps


@task
def chatter(ctx: JobContext, updates: int) -> int:
    """Calls set_progress many times within each 200 ms."""
    for n in range(1, updates + 1):
        ctx.set_progress(n, total=updates)
        if n % 50 == 0:
            time.sleep(0.05)
    return updates


TASKS = TaskRegistry([*REGISTRY, simulate, chatter])


@pytest.fixture(scope="module")
def jl(kafka_cluster: KafkaUnderTest) -> Iterator[Joblog]:
    with client_running(kafka_cluster, "hp", TASKS) as client:
        yield client


def test_the_progress_printing_pattern(jl: Joblog, capsys: pytest.CaptureFixture[str]) -> None:
    tasks = [
        Job(f"task-{n}", task="simulate", args=[5 + n], kwargs={"pause": 0.2}) for n in range(3)
    ]
    submission = jl.submit(*tasks)

    # The seed's pattern: the job's progress is the sum of its tasks' progress, printed each
    # time wait_until_done calls back (after a progress or state change, and every interval).
    def update_progress(job: SubmissionView) -> None:
        progress = sum(t.fraction or (1.0 if t.is_terminal else 0.0) for t in job.jobs.values())
        print(f"{100 * progress / len(tasks):.0f}%")

    task_updates: Counter[str] = Counter()

    def task_progress_updated(task: JobView) -> None:
        task_updates[task.job_id] += 1

    watcher = submission.watch(task_progress_updated=task_progress_updated)
    view = submission.wait_until_done(update_progress, timeout=180, interval=0.2)
    assert watcher.join(60) and watcher.error is None

    assert view.outcome is SubmissionStatus.COMPLETED
    printed = [float(line.rstrip("%")) for line in capsys.readouterr().out.split()]
    assert printed[-1] == 100.0 and len(set(printed)) >= 3, printed
    assert printed == sorted(printed)  # progress only grows
    assert set(task_updates) == {"task-0", "task-1", "task-2"}
    assert all(view.jobs[t].progress == view.jobs[t].total for t in task_updates)


def test_callbacks_fire_once_per_task_and_once_per_job(jl: Joblog) -> None:
    names = [f"t{n}" for n in range(4)]
    tasks = [Job(name, task="double", args=[n]) for n, name in enumerate(names)]
    tasks.append(Job("report", task="print_it", depends_on=names))
    done = threading.Event()
    task_completed: Counter[str] = Counter()
    own: Counter[str] = Counter()
    jobs_completed: list[SubmissionStatus | None] = []
    states: dict[str, list[JobStatus]] = {}

    def job_completed(job: SubmissionView) -> None:
        jobs_completed.append(job.outcome)
        done.set()

    def task_state_changed(task: JobView, previous: JobStatus | None) -> None:
        states.setdefault(task.job_id, []).append(task.status)

    submission = jl.submit(*tasks)
    watcher = Watcher(
        submission.id,
        settings=jl.settings,
        task_completed=lambda task: task_completed.update([task.job_id]),
        job_completed=job_completed,
        task_state_changed=task_state_changed,
        on_completed={"t0": lambda task: own.update([task.job_id])},
    )
    watcher.task("report").on_completed = lambda task: own.update([f"own:{task.job_id}"])
    with watcher:
        assert done.wait(120), "the job never completed"
        assert watcher.join(30) and watcher.error is None
    assert task_completed == Counter({job_id: 1 for job_id in submission.job_ids})
    assert own == Counter({"t0": 1, "own:report": 1})
    assert jobs_completed == [SubmissionStatus.COMPLETED]
    for job_id in submission.job_ids:
        seen = states[job_id]
        assert seen[-1] is JobStatus.COMPLETED, (job_id, seen)
        assert seen.index(JobStatus.ASSIGNED) < seen.index(JobStatus.RUNNING), seen
    assert JobStatus.BLOCKED in states["report"]

    # A second watcher replays the history: the same callbacks, once each, and a task's
    # on_completed set after it ended is called at once.
    again: Counter[str] = Counter()
    with Watcher(
        submission.id, settings=jl.settings, task_completed=lambda t: again.update([t.job_id])
    ) as replay:
        assert replay.join(60) and replay.error is None
    assert again == task_completed
    late: list[str] = []
    replay.task("t3").on_completed = lambda task: late.append(task.job_id)
    assert late == ["t3"]


def test_progress_is_coalesced_to_one_update_per_200_ms(jl: Joblog) -> None:
    calls: list[tuple[float, float | None]] = []
    submission = jl.submit(task="chatter", args=[2000])
    watcher = submission.watch(
        task_progress_updated=lambda task: calls.append((time.monotonic(), task.progress))
    )
    view = submission.wait_until_done(timeout=180)
    assert watcher.join(60) and watcher.error is None
    assert view.outcome is SubmissionStatus.COMPLETED

    events = [
        event
        for event in jl.history(submission, "chatter")
        if isinstance(event.body, JobProgressed)
    ]
    # 2000 set_progress calls reach the log as a handful of events, 200 ms apart or more
    # (the scheduler's clock); the final value comes with the job's end, at once, as it is
    # never lost to coalescing.
    assert 1 <= len(events) < 2000
    gaps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(events)]
    assert all(gap >= 200 for gap in gaps[:-1]), gaps
    assert events[-1].body.value == 2000  # type: ignore[union-attr]
    assert view.jobs["chatter"].progress == 2000
    # The callback, too, comes at most once per 200 ms (the watcher's clock), the final
    # value before the job's completion.
    assert calls and calls[-1][1] == 2000
    spacing = [b[0] - a[0] for a, b in itertools.pairwise(calls)]
    assert all(gap >= PROGRESS_INTERVAL_S for gap in spacing[:-1]), spacing
