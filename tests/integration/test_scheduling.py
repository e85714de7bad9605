"""Scheduling end to end on the real broker: limits, priorities, pauses, delays, reruns.

One engine serves the module: a scheduler, workers of three queues (``default``, ``prio``
and ``gpu``) and a projector, under a topic prefix of its own; tests keep apart by
submission, concurrency key and queue. What the tests check is read from the events (their
timestamps are the scheduler's decisions), never from wall-clock timing of the test.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from engine import cli
from engine.admin import ensure_topics, grow_dispatch
from engine.api import Job, Joblog
from engine.config import Settings
from engine.errors import ConfigurationError, JobNotRerun
from engine.lifecycle.records import JobStatus, SubmissionStatus
from engine.scheduler.service import Scheduler, SchedulerConfig
from engine.worker import JobContext, TaskRegistry, Worker, task
from tests.integration.conftest import KafkaUnderTest
from tests.integration.test_client import FAST, POLICY, _thread, eventually


@task
def nap(ctx: JobContext, seconds: float = 0.3) -> str:
    """Runs for a while (cancellably)."""
    ctx.wait_cancelled(seconds)
    ctx.check_cancelled()
    return ctx.job_id


@task
def fails_until_marked(ctx: JobContext, marker: str) -> str:
    """Fails until the file ``marker`` exists: a fix the rerun picks up (tasks run in child
    processes, so the mark is a file)."""
    if not Path(marker).exists():
        raise RuntimeError(f"{marker} does not exist yet")
    return "fixed"


REGISTRY = TaskRegistry([nap, fails_until_marked])


class Running:
    def __init__(self, settings: Settings, db_path: Path) -> None:
        self.settings = settings
        self.db_path = db_path

    def client(self) -> Joblog:
        return Joblog(self.settings, db_path=self.db_path)


@pytest.fixture(scope="module")
def running(
    kafka_cluster: KafkaUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    settings = Settings.from_env(
        bootstrap_servers=kafka_cluster.bootstrap_servers,
        topic_prefix=f"sch{uuid.uuid4().hex[:8]}.",
        partitions=3,
    )
    queues = ("default", "prio", "gpu")
    ensure_topics(settings, queues=queues)
    db_path = tmp_path_factory.mktemp("scheduling") / "joblog.duckdb"
    with ExitStack() as stack:
        scheduler = Scheduler(
            settings, policy=POLICY, config=SchedulerConfig(instance_id=f"sch-{uuid.uuid4().hex}")
        )
        stack.enter_context(_thread(scheduler.run, "scheduler"))
        workers = []
        for n, queue in enumerate(("default", "default", "prio", "gpu")):
            worker = Worker(settings, queue, 4, REGISTRY, f"w{n}-{queue}", options=FAST)
            stack.enter_context(_thread(worker.run, f"worker-{n}"))
            workers.append(worker)
        from projections.projector import Projector

        projector = Projector(settings, db_path, poll_timeout=0.1)
        stack.enter_context(_thread(projector.run, "projector"))
        assert projector.ready.wait(60)
        assert scheduler.ready.wait(60)
        for worker in workers:
            assert worker.ready.wait(60)
        yield Running(settings, db_path)


@pytest.fixture
def jl(running: Running) -> Iterator[Joblog]:
    client = running.client()
    yield client
    client.close()


@pytest.fixture
def joblog(
    running: Running, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    monkeypatch.setenv("JOBLOG_BOOTSTRAP_SERVERS", running.settings.bootstrap_servers)
    monkeypatch.setenv("JOBLOG_TOPIC_PREFIX", running.settings.topic_prefix)
    monkeypatch.setenv("JOBLOG_PROJECTION_DB", str(running.db_path))
    monkeypatch.setenv("COLUMNS", "200")

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def _events(jl: Joblog, submission_ids: list[str], names: tuple[str, ...]) -> list[dict[str, Any]]:
    marks = ", ".join("?" for _ in submission_ids)
    kinds = ", ".join("?" for _ in names)
    return jl.query(
        f"SELECT submission_id, job_id, event, epoch_ms(timestamp) AS ts, body FROM job_events "
        f"WHERE submission_id IN ({marks}) AND event IN ({kinds}) ORDER BY timestamp, seq",
        [*submission_ids, *names],
    )


def _projected(jl: Joblog, submission_ids: list[str]) -> None:
    marks = ", ".join("?" for _ in submission_ids)

    def done() -> bool:
        rows = jl.query(
            f"SELECT count(*) AS n FROM submissions WHERE done AND submission_id IN ({marks})",
            submission_ids,
        )
        return rows[0]["n"] == len(submission_ids)

    eventually(done, 60, "the submissions in the projection")


def _most_at_once(intervals: list[tuple[int, int]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


# --------------------------------------------------------------------------- tests


def test_a_concurrency_key_limits_jobs_across_submissions(jl: Joblog) -> None:
    key = f"customer-{uuid.uuid4().hex[:6]}"
    submissions = [
        jl.submit(
            Job("a", task="nap", args=[0.5], concurrency_key=key, max_running=2),
            Job("b", task="nap", args=[0.5], concurrency_key=key, max_running=2),
        )
        for _ in range(3)
    ]
    for submission in submissions:
        view = submission.wait_until_done(timeout=90)
        assert view.outcome is SubmissionStatus.COMPLETED
    ids = [s.id for s in submissions]
    _projected(jl, ids)
    rows = _events(jl, ids, ("JobDispatched", "JobPending", "JobCompleted", "JobHeld"))
    begun: dict[tuple[str, str], int] = {}
    ended: dict[tuple[str, str], int] = {}
    for row in rows:
        job = (row["submission_id"], row["job_id"])
        if row["event"] in ("JobDispatched", "JobPending") and job not in begun:
            if row["event"] == "JobDispatched" or json.loads(row["body"])["dispatch_id"]:
                begun[job] = row["ts"]
        elif row["event"] == "JobCompleted":
            ended[job] = row["ts"]
    assert len(begun) == 6 and len(ended) == 6
    # from the dispatch to the end, at most two of the key's jobs hold a slot at once
    assert _most_at_once([(begun[job], ended[job]) for job in begun]) <= 2
    assert any(row["event"] == "JobHeld" for row in rows), "nobody ever waited for a slot"
    slots = jl.query(
        'SELECT count(*) AS n FROM concurrency_slots WHERE "limit" = ?', [f"key:{key}"]
    )
    assert slots == [{"n": 0}], "a slot or a claim was left behind"


def test_priority_decides_who_gets_a_queue_slot_first(jl: Joblog) -> None:
    jl.set_queue_limits("prio", max_running=1)
    blocker = jl.submit(task="nap", args=[1.5], queue="prio")
    eventually(
        lambda: blocker.view().jobs["nap"].status is JobStatus.RUNNING, 30, "the blocker running"
    )
    low = [jl.submit(task="nap", args=[0.05], queue="prio", priority=0) for _ in range(3)]
    high = jl.submit(task="nap", args=[0.05], queue="prio", priority=10)
    for submission in (blocker, *low, high):
        assert submission.wait_until_done(timeout=90).outcome is SubmissionStatus.COMPLETED
    started = {s.id: s.view().jobs["nap"].run_at for s in (blocker, *low, high)}
    assert all(started[high.id] < started[s.id] for s in low), started  # type: ignore[operator]
    jl.set_queue_limits("prio", max_running=0)


def test_a_paused_queue_holds_its_jobs_until_resumed(
    jl: Joblog, joblog: Callable[..., tuple[int, str, str]]
) -> None:
    code, out, err = joblog("queues", "pause", "gpu")
    assert code == 0, err
    assert "paused in every partition" in out
    submission = jl.submit(task="nap", args=[0.05], queue="gpu")

    def held() -> list[dict[str, Any]] | None:
        rows = jl.pending_reasons(submission.id)
        return rows if rows and rows[0]["reason"] == "queue_paused" else None

    rows = eventually(held, 30, "the job held by its paused queue")
    assert "gpu is paused" in rows[0]["detail"]
    code, out, _ = joblog("why", submission.id)
    assert code == 0 and "queue_paused" in out
    queue = eventually(
        lambda: [q for q in jl.queues() if q["queue"] == "gpu" and q["paused"]], 30, "the queue"
    )
    assert queue[0]["held"] == 1
    code, out, err = joblog("queues", "resume", "gpu")
    assert code == 0, err
    assert submission.wait_until_done(timeout=60).outcome is SubmissionStatus.COMPLETED
    code, out, _ = joblog("queues", "list", "--json")
    gpu = [q for q in json.loads(out) if q["queue"] == "gpu"]
    assert gpu and gpu[0]["paused"] is False


def test_not_before_delays_the_start(jl: Joblog) -> None:
    at = time.time() + 2.0
    submission = jl.submit(task="nap", args=[0.05], not_before=at)
    rows = eventually(
        lambda: [r for r in jl.pending_reasons(submission.id) if r["reason"] == "not_before"],
        30,
        "the job waiting for its not_before",
    )
    assert rows[0]["until"] is not None
    view = submission.wait_until_done(timeout=60)
    job = view.jobs["nap"]
    assert job.run_at is not None and job.run_at.timestamp() >= at - 0.001


def test_a_rate_limit_spaces_the_starts(jl: Joblog) -> None:
    key = f"api-{uuid.uuid4().hex[:6]}"
    jobs = [
        Job(f"call{i}", task="nap", args=[0.01], concurrency_key=key, rate_limit="2/2s")
        for i in range(5)
    ]
    submission = jl.submit(*jobs)
    assert submission.wait_until_done(timeout=90).outcome is SubmissionStatus.COMPLETED
    _projected(jl, [submission.id])
    grants = jl.query(
        "SELECT epoch_ms(timestamp) AS ts FROM job_events WHERE event = 'SlotDecided' "
        "AND json_extract_string(body, '$.ledger') = ? "
        "AND json_extract_string(body, '$.decision') = 'granted' ORDER BY ts",
        [f"key:{key}"],
    )
    times = [row["ts"] for row in grants]
    assert len(times) == 5
    for i in range(len(times) - 2):
        assert times[i + 2] - times[i] >= 2_000, times  # never 3 starts within 2 s


def test_rerun_runs_the_failed_part_again_in_the_same_history(
    jl: Joblog, joblog: Callable[..., tuple[int, str, str]], tmp_path: Path
) -> None:
    marker = str(tmp_path / "fixed")
    submission = jl.submit(
        Job("fetch", task="fails_until_marked", args=[marker]),
        Job("report", task="nap", args=[0.01], depends_on=["fetch"]),
    )
    view = submission.wait_until_done(timeout=60)
    assert {j: v.status for j, v in view.jobs.items()} == {
        "fetch": JobStatus.FAILED,
        "report": JobStatus.ABANDONED,
    }
    with pytest.raises(JobNotRerun):
        jl.rerun(submission.id, "nope")
    Path(marker).touch()
    code, _, err = joblog("rerun", submission.id)
    assert code == 0, err
    view = submission.wait_until_done(timeout=60)
    assert view.outcome is SubmissionStatus.COMPLETED
    assert view.jobs["fetch"].attempt == 2 and view.jobs["report"].attempt == 1
    _projected(jl, [submission.id])
    rows = jl.query(
        "SELECT seq FROM job_events WHERE submission_id = ? ORDER BY seq", [submission.id]
    )
    seqs = [row["seq"] for row in rows]
    assert seqs == list(range(1, len(seqs) + 1))  # one continuous history
    assert jl.get_job(submission.id, "fetch").status is JobStatus.COMPLETED


def test_a_dispatch_topic_grows_for_more_workers(running: Running) -> None:
    settings = running.settings
    assert grow_dispatch(settings, "gpu", 5) == 5
    assert grow_dispatch(settings, "gpu", 5) == 5
    with pytest.raises(ConfigurationError, match="cannot be removed"):
        grow_dispatch(settings, "gpu", 2)
    assert grow_dispatch(settings, f"new-{uuid.uuid4().hex[:4]}", 8) == 8
