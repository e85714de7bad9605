"""The worker against the real broker and the real scheduler: what reaches the event log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from engine import codec
from engine.client import CommandProducer
from engine.config import Settings
from engine.lifecycle.decide import Policy
from engine.lifecycle.records import (
    TERMINAL,
    Event,
    JobAbandoned,
    JobAssigned,
    JobCanceled,
    JobCompleted,
    JobExceptionRaised,
    JobFailed,
    JobOutput,
    JobProgressed,
    JobRetryScheduled,
    JobSpec,
    JobStarted,
    JobStatus,
    RetryPolicy,
)
from engine.partitioning import partition_for
from engine.scheduler.service import Scheduler, SchedulerConfig
from engine.topics import Topics
from engine.worker import TaskRegistry, Worker, WorkerOptions, task
from tests.integration import sample_tasks
from tests.integration.kafka_io import events_by_submission, read_all, wait_for


@task
def segfault() -> None:
    """Crashes its process the way a broken C extension does."""
    os.kill(os.getpid(), signal.SIGSEGV)


@task
def huge_result(megabytes: float) -> str:
    return "x" * int(megabytes * 1_000_000)


REGISTRY = TaskRegistry.from_modules(["tests.integration.sample_tasks"])
REGISTRY.register(segfault)
REGISTRY.register(huge_result)
POLICY = Policy(lease_ms=3_000, kill_grace_ms=3_000)
FAST = WorkerOptions(drain_timeout_s=2.0, session_timeout_ms=6_000, stop_grace_ms=500)
ROOT = Path(__file__).resolve().parents[2]
QUICK_RETRY = RetryPolicy(max_attempts=2, backoff_ms=100, jitter=0.0)

_TERMINAL_EVENT = {
    "JobCompleted": JobStatus.COMPLETED,
    "JobFailed": JobStatus.FAILED,
    "JobCanceled": JobStatus.CANCELED,
    "JobSkipped": JobStatus.SKIPPED,
    "JobAbandoned": JobStatus.ABANDONED,
}


# --------------------------------------------------------------------------- harness


@contextmanager
def scheduler_running(settings: Settings) -> Iterator[Scheduler]:
    scheduler = Scheduler(settings, policy=POLICY, config=SchedulerConfig(instance_id="w-test"))
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: scheduler.ready.is_set() or not thread.is_alive(), 60, "the scheduler to start"
        )
        assert thread.is_alive(), "the scheduler thread died (see the warnings)"
        yield scheduler
    finally:
        stop.set()
        thread.join(30)


@contextmanager
def worker_running(
    settings: Settings,
    worker_id: str,
    *,
    concurrency: int = 2,
    options: WorkerOptions = FAST,
) -> Iterator[Worker]:
    worker = Worker(settings, "default", concurrency, REGISTRY, worker_id, options=options)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: worker.ready.is_set() or not thread.is_alive(),
            60,
            f"worker {worker_id} to get dispatch partitions",
        )
        assert thread.is_alive(), f"worker {worker_id} died (see the warnings)"
        yield worker
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), f"worker {worker_id} did not stop"


def events(settings: Settings, submission_id: str) -> list[Event]:
    return events_by_submission(settings).get(submission_id, [])


def wait_events(
    settings: Settings,
    submission_id: str,
    until: Callable[[list[Event]], bool],
    timeout: float,
    what: str,
) -> list[Event]:
    found: list[Event] = []

    def check() -> bool:
        found[:] = events(settings, submission_id)
        return until(found)

    wait_for(check, timeout, what, every=0.25)
    return found


def completed(found: list[Event]) -> bool:
    return any(e.name == "SubmissionCompleted" for e in found)


def terminal_status(found: list[Event]) -> dict[str, JobStatus]:
    """Each job's terminal status, failing if a job reached one twice."""
    out: dict[str, JobStatus] = {}
    for event in found:
        status = _TERMINAL_EVENT.get(event.name)
        if status is not None:
            assert event.job_id not in out, f"{event.job_id} reached a terminal status twice"
            assert status in TERMINAL
            out[event.job_id] = status
    return out


def bodies(found: list[Event], kind: type, job_id: str | None = None) -> list[object]:
    return [e.body for e in found if isinstance(e.body, kind) and job_id in (None, e.job_id)]


# --------------------------------------------------------------------------- tests


def test_a_task_and_a_command_complete_with_progress_and_output(settings: Settings) -> None:
    jobs = [
        sample_tasks.count_to.spec("count", 2000, label="counting frames"),
        JobSpec("shell", command=("sh", "-c", "echo hello from $JOBLOG_JOB_ID; echo careful >&2")),
        sample_tasks.add.spec("add", 2, 3),
    ]
    with scheduler_running(settings), worker_running(settings, "w1"):
        CommandProducer(settings).submit(jobs, submission_id="basic")
        found = wait_events(settings, "basic", completed, 60, "the submission to complete")
    assert terminal_status(found) == {
        "count": JobStatus.COMPLETED,
        "shell": JobStatus.COMPLETED,
        "add": JobStatus.COMPLETED,
    }
    (count_done,) = bodies(found, JobCompleted, "count")
    assert json.loads(count_done.result) == {"counted": 2000, "attempt": 1}  # type: ignore[attr-defined]
    (add_done,) = bodies(found, JobCompleted, "add")
    assert add_done.result == "5"  # type: ignore[attr-defined]
    (shell_done,) = bodies(found, JobCompleted, "shell")
    assert shell_done.exit_code == 0  # type: ignore[attr-defined]

    progress = bodies(found, JobProgressed, "count")
    assert 1 <= len(progress) <= 10, "2,000 set_progress calls are coalesced"
    last = progress[-1]
    assert (last.value, last.total, last.status_line) == (2000, 2000, "counting frames")  # type: ignore[attr-defined]

    output = {(o.stream, o.chunk) for o in bodies(found, JobOutput)}  # type: ignore[attr-defined]
    assert ("stdout", "hello from shell\n") in output
    assert ("stderr", "careful\n") in output
    assert ("stdout", "counted to 2000\n") in output
    started = bodies(found, JobStarted, "shell")
    assert started and started[0].worker_id == "w1"  # type: ignore[attr-defined]


def spread_job_ids(submission_id: str, partitions: int, count: int) -> list[str]:
    """Job ids whose dispatch keys cover every partition, so every worker gets some."""
    chosen: list[str] = []
    covered: set[int] = set()
    candidate = 0
    while len(chosen) < count:
        job_id = f"hold-{candidate}"
        candidate += 1
        partition = partition_for(f"{submission_id}/{job_id}", partitions)
        if partition not in covered or len(covered) == partitions:
            covered.add(partition)
            chosen.append(job_id)
    return chosen


def running_per_worker(found: list[Event]) -> tuple[dict[str, int], dict[str, int]]:
    """From the log: how many jobs each worker ran, and the most it ran at once.

    The tasks run in child processes, so the log (not the task module's counters) says it.
    """
    owner: dict[str, str] = {}
    running: dict[str, int] = {}
    peak: dict[str, int] = {}
    ran: dict[str, int] = {}
    for event in found:
        if isinstance(event.body, JobStarted):
            worker = event.body.worker_id
            owner[event.job_id] = worker
            ran[worker] = ran.get(worker, 0) + 1
            running[worker] = running.get(worker, 0) + 1
            peak[worker] = max(peak.get(worker, 0), running[worker])
        elif event.name in _TERMINAL_EVENT and event.job_id in owner:
            running[owner[event.job_id]] -= 1
    return ran, peak


def test_concurrency_is_bounded_and_two_workers_split_the_work(settings: Settings) -> None:
    job_ids = spread_job_ids("ten", settings.partitions, 10)
    jobs = [sample_tasks.hold.spec(job_id, 1.0) for job_id in job_ids]
    with (
        scheduler_running(settings),
        worker_running(settings, "left") as left,
        worker_running(settings, "right") as right,
    ):
        wait_for(
            lambda: (
                bool(left.assigned)
                and bool(right.assigned)
                and len(left.assigned) + len(right.assigned) == settings.partitions
            ),
            30,
            "both workers to share the dispatch partitions",
        )
        start = time.monotonic()
        CommandProducer(settings).submit(jobs, submission_id="ten")
        found = wait_events(settings, "ten", completed, 60, "ten jobs to complete")
        elapsed = time.monotonic() - start
    assert terminal_status(found) == dict.fromkeys(job_ids, JobStatus.COMPLETED)
    ran, peak = running_per_worker(found)
    assert peak["left"] <= 2
    assert peak["right"] <= 2
    assert left.max_running <= 2 and right.max_running <= 2
    assert ran["left"] > 0 and ran["right"] > 0
    assert ran["left"] + ran["right"] == 10
    results = {b.result for b in bodies(found, JobCompleted)}  # type: ignore[attr-defined]
    assert results == {'"left"', '"right"'}, "each task saw the id of the worker running it"
    assert elapsed >= 2.5, "10 one-second jobs on 4 slots take at least 3 rounds"


def test_one_worker_never_runs_more_than_its_concurrency(settings: Settings) -> None:
    jobs = [sample_tasks.hold.spec(f"h{i}", 1.0) for i in range(10)]
    with scheduler_running(settings), worker_running(settings, "solo", concurrency=2) as solo:
        CommandProducer(settings).submit(jobs, submission_id="solo")
        found = wait_events(settings, "solo", completed, 60, "ten jobs to complete")
    assert terminal_status(found) == {f"h{i}": JobStatus.COMPLETED for i in range(10)}
    ran, peak = running_per_worker(found)
    assert ran == {"solo": 10}
    assert peak["solo"] == 2, "two slots were used at once, never more"
    assert solo.max_running == 2


def start_worker_process(
    settings: Settings, worker_id: str, log: Path, extra: list[str] | None = None
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.worker",
                "--queue=default",
                "--concurrency=2",
                "--tasks=tests.integration.sample_tasks",
                f"--worker-id={worker_id}",
                "--session-timeout-ms=6000",
                f"--bootstrap-servers={settings.bootstrap_servers}",
                f"--topic-prefix={settings.topic_prefix}",
                *(extra or []),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_a_worker_killed_mid_job_is_replaced_and_the_job_ends_once(
    settings: Settings, tmp_path: Path
) -> None:
    job = sample_tasks.hold.spec_with("survivor", args=[3.0], retry=QUICK_RETRY)
    victim = start_worker_process(settings, "victim", tmp_path / "victim.log")
    try:
        with scheduler_running(settings) as scheduler:
            CommandProducer(settings).submit(job, submission_id="crash")
            wait_events(
                settings,
                "crash",
                lambda found: any(
                    isinstance(e.body, JobStarted) and e.body.worker_id == "victim" for e in found
                ),
                60,
                "the victim to start the job",
            )
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            with worker_running(settings, "rescuer"):
                found = wait_events(settings, "crash", completed, 90, "the job to end")
            stale = scheduler.metrics["stale_reports"]
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(10)
    assert terminal_status(found) == {"survivor": JobStatus.COMPLETED}
    (done,) = bodies(found, JobCompleted, "survivor")
    owners = {b.attempt: b.worker_id for b in bodies(found, JobAssigned, "survivor")}  # type: ignore[attr-defined]
    assert owners[done.attempt] == "rescuer"  # type: ignore[attr-defined]
    retried = bodies(found, JobRetryScheduled, "survivor")
    if retried:  # the lease ran out first: attempt 1 was lost, attempt 2 ran on the rescuer
        assert retried[0].reason == "worker_lost"  # type: ignore[attr-defined]
        assert done.attempt == 2  # type: ignore[attr-defined]
        # The rescuer also got attempt 1's uncommitted dispatch back; its reports were stale.
        assert stale > 0
    else:  # the rescuer took the redelivered dispatch over before the lease ran out
        assert any(b.previous_worker_id == "victim" for b in bodies(found, JobAssigned))  # type: ignore[attr-defined]


def test_cancel_kills_a_running_command_and_abandons_its_dependents(settings: Settings) -> None:
    jobs = [
        JobSpec("sleeper", command=("sleep", "600")),
        sample_tasks.add.spec_with("after", args=[1, 2], depends_on=["sleeper"]),
    ]
    commands = CommandProducer(settings)
    with scheduler_running(settings), worker_running(settings, "w-cancel") as worker:
        commands.submit(jobs, submission_id="cancel")
        wait_events(
            settings,
            "cancel",
            lambda found: any(e.name == "JobStarted" for e in found),
            60,
            "the command to start",
        )
        cancel = commands.cancel("cancel", "sleeper", reason="not needed")
        found = wait_events(settings, "cancel", completed, 30, "the cancel to take effect")
    assert terminal_status(found) == {
        "sleeper": JobStatus.CANCELED,
        "after": JobStatus.ABANDONED,
    }
    canceled = next(e for e in found if isinstance(e.body, JobCanceled))
    assert canceled.timestamp - cancel.issued_at < POLICY.kill_grace_ms
    (abandoned,) = bodies(found, JobAbandoned, "after")
    assert abandoned.cause_job_id == "sleeper"  # type: ignore[attr-defined]
    assert worker.metrics["kills"] == 1
    assert worker.metrics["finished.CANCELED"] == 1


def test_exceptions_non_fatal_go_on_fatal_fail_and_retry(settings: Settings) -> None:
    jobs = [
        sample_tasks.warn_then_fail_once.spec_with("flaky", retry=QUICK_RETRY),
        sample_tasks.boom.spec("boom", "no such frame"),
    ]
    with scheduler_running(settings), worker_running(settings, "w-exc"):
        CommandProducer(settings).submit(jobs, submission_id="exceptions")
        found = wait_events(settings, "exceptions", completed, 60, "both jobs to end")
    assert terminal_status(found) == {"flaky": JobStatus.COMPLETED, "boom": JobStatus.FAILED}
    raised = [
        (b.attempt, b.type, b.severity)  # type: ignore[attr-defined]
        for b in bodies(found, JobExceptionRaised, "flaky")
    ]
    assert raised == [(1, "LowDisk", 2), (1, "InputMissing", 0), (2, "LowDisk", 2)]
    (retry,) = bodies(found, JobRetryScheduled, "flaky")
    assert (retry.reason, retry.error_type) == ("exception", "InputMissing")  # type: ignore[attr-defined]
    (done,) = bodies(found, JobCompleted, "flaky")
    assert (done.attempt, done.result) == (2, '"second attempt"')  # type: ignore[attr-defined]
    (failed,) = bodies(found, JobFailed, "boom")
    assert (failed.error_type, failed.error_note) == ("ValueError", "no such frame")  # type: ignore[attr-defined]
    assert "raise ValueError(message)" in failed.traceback  # type: ignore[attr-defined]


def test_undecodable_dispatch_and_control_records_are_dead_lettered(settings: Settings) -> None:
    topics = Topics(settings.topic_prefix)
    with scheduler_running(settings), worker_running(settings, "w-dl") as worker:
        producer = Producer(settings.producer_config())
        producer.produce(topics.dispatch("default"), key=b"junk/1", value=b"\x00not a dispatch")
        producer.produce(topics.control, key=b"w-dl", value=b"\xc3\x01garbage")
        producer.flush(10)
        wait_for(lambda: worker.metrics["dead_letters"] == 2, 30, "both records dead-lettered")
        CommandProducer(settings).submit(sample_tasks.add.spec("after", 1, 1), submission_id="dl")
        found = wait_events(settings, "dl", completed, 60, "a valid job after the garbage")
    assert terminal_status(found) == {"after": JobStatus.COMPLETED}
    letters = [
        letter for _, letter in read_all(settings, topics.deadletter, codec.decode_deadletter)
    ]
    assert sorted(letter.topic for letter in letters) == sorted(
        [topics.dispatch("default"), topics.control]
    )
    assert all(letter.consumer.endswith("worker/w-dl") for letter in letters)
    assert {letter.value for letter in letters} == {b"\x00not a dispatch", b"\xc3\x01garbage"}


def committed_offsets(settings: Settings) -> dict[int, int]:
    topic = Topics(settings.topic_prefix).dispatch("default")
    consumer = Consumer(
        settings.client_config(**{"group.id": f"{settings.topic_prefix}workers.default"})
    )
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
    finally:
        consumer.close()


def test_a_stopping_worker_reports_what_it_leaves_and_does_not_commit_it(
    settings: Settings,
) -> None:
    job = sample_tasks.slow_first.spec_with("long", args=[60.0], retry=QUICK_RETRY)
    quick_drain = WorkerOptions(drain_timeout_s=0.5, session_timeout_ms=6_000, stop_grace_ms=500)
    dispatch_topic = Topics(settings.topic_prefix).dispatch("default")
    with scheduler_running(settings):
        with worker_running(settings, "leaver", options=quick_drain) as leaver:
            CommandProducer(settings).submit(job, submission_id="leave")
            wait_events(
                settings,
                "leave",
                lambda found: any(e.name == "JobStarted" for e in found),
                60,
                "the job to start",
            )
        assert leaver.metrics["finished.CANCELED"] == 1  # stopped at the end of the drain
        found = wait_events(
            settings,
            "leave",
            lambda found: any(isinstance(e.body, JobRetryScheduled) for e in found),
            30,
            "the scheduler to retry the attempt left behind",
        )
        (retry,) = bodies(found, JobRetryScheduled, "long")
        assert retry.reason == "worker_lost"  # type: ignore[attr-defined]
        # Both dispatches share a key, so attempt 1 is at offset 0 and attempt 2 at offset 1.
        records = [d for _, d in read_all(settings, dispatch_topic, codec.decode_dispatch)]
        assert [d.attempt for d in records] == [1, 2]
        partition = partition_for("leave/long", settings.partitions)
        assert committed_offsets(settings).get(partition, -1) < 1, "attempt 1 was committed"
        with worker_running(settings, "heir") as heir:
            found = wait_events(settings, "leave", completed, 60, "attempt 2 to complete")
            # attempt 1's dispatch was redelivered to the heir, as well as attempt 2's
            wait_for(lambda: heir.metrics["claimed"] == 2, 30, "both dispatches to be claimed")
    assert terminal_status(found) == {"long": JobStatus.COMPLETED}
    (done,) = bodies(found, JobCompleted, "long")
    assert (done.attempt, done.result) == (2, "2")  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- isolation


def test_kill_cancel_ends_a_sleeping_task_canceled_and_abandons_its_dependent(
    settings: Settings,
) -> None:
    jobs = [
        sample_tasks.sleepy.spec("nap", 30.0),  # time.sleep(30): never looks at the flag
        sample_tasks.add.spec_with("after", args=[1, 2], depends_on=["nap"]),
    ]
    commands = CommandProducer(settings)
    with scheduler_running(settings), worker_running(settings, "w-kill") as worker:
        commands.submit(jobs, submission_id="kill")
        wait_events(
            settings,
            "kill",
            lambda found: any(e.name == "JobStarted" for e in found),
            60,
            "the task to start",
        )
        cancel = commands.cancel("kill", "nap", reason="not needed")
        found = wait_events(settings, "kill", completed, 30, "the cancel to take effect")
        wait_for(lambda: not worker.running, 30, "the worker's slot to be free")
    assert terminal_status(found) == {"nap": JobStatus.CANCELED, "after": JobStatus.ABANDONED}
    canceled = next(e for e in found if isinstance(e.body, JobCanceled))
    assert "did not confirm" not in canceled.body.reason, "the worker confirmed the kill"  # type: ignore[union-attr]
    assert canceled.timestamp - cancel.issued_at < POLICY.kill_grace_ms
    (abandoned,) = bodies(found, JobAbandoned, "after")
    assert abandoned.cause_job_id == "nap"  # type: ignore[attr-defined]
    assert worker.metrics["kills"] == 1
    assert worker.metrics["finished.CANCELED"] == 1
    assert worker.pool is not None and worker.pool.stats["retired.killed"] == 1
    assert worker.metrics["finished.COMPLETED"] == 0, "the killed task never completed"


def test_the_run_timeout_stops_a_task_that_ignores_the_flag(settings: Settings) -> None:
    job = sample_tasks.sleepy.spec_with("slow", args=[30.0], timeout_ms=1_000)
    with scheduler_running(settings), worker_running(settings, "w-timeout") as worker:
        CommandProducer(settings).submit(job, submission_id="timeout")
        found = wait_events(settings, "timeout", completed, 60, "the job to time out")
        # The task sleeps 30 s; its process was stopped long before that.
        # (the attempt's thread counts it before the worker's loop reaps its slot)
        wait_for(
            lambda: worker.metrics["finished.FAILED"] == 1 and not worker.running,
            20,
            "the attempt to end and leave its slot",
        )
    assert terminal_status(found) == {"slow": JobStatus.FAILED}
    (failed,) = bodies(found, JobFailed, "slow")
    assert (failed.reason, failed.error_type) == ("timeout", "Timeout")  # type: ignore[attr-defined]
    assert worker.metrics["finished.COMPLETED"] == 0


def test_a_segfaulting_task_fails_and_the_same_worker_runs_the_next_job(
    settings: Settings,
) -> None:
    commands = CommandProducer(settings)
    with (
        scheduler_running(settings),
        worker_running(settings, "w-crash", concurrency=1) as worker,
    ):
        commands.submit(segfault.spec("crash"), submission_id="segv")
        found = wait_events(settings, "segv", completed, 60, "the crash to be reported")
        commands.submit(sample_tasks.add.spec("next", 20, 22), submission_id="after-segv")
        after = wait_events(settings, "after-segv", completed, 60, "the next job to complete")
        commands.submit(sample_tasks.add.spec("again", 1, 1), submission_id="reuse")
        again = wait_events(settings, "reuse", completed, 60, "a third job to complete")
    assert terminal_status(found) == {"crash": JobStatus.FAILED}
    crash_pid = bodies(found, JobStarted)[0].pid  # type: ignore[attr-defined]
    next_pid = bodies(after, JobStarted)[0].pid  # type: ignore[attr-defined]
    assert crash_pid != next_pid, "the crashed task's process was replaced"
    assert bodies(again, JobStarted)[0].pid == next_pid, "the warm process ran the third job"  # type: ignore[attr-defined]
    assert worker.pool is not None and worker.pool.stats["retired.died"] == 1
    (failed,) = bodies(found, JobFailed, "crash")
    assert failed.error_type == "WorkerChildDied"  # type: ignore[attr-defined]
    assert failed.error_note == "the task's process died: exit signal SIGSEGV"  # type: ignore[attr-defined]
    (done,) = bodies(after, JobCompleted, "next")
    assert done.result == "42"  # type: ignore[attr-defined]
    assert [b.worker_id for b in bodies(after, JobStarted)] == ["w-crash"]  # type: ignore[attr-defined]
    assert worker.metrics["finished.FAILED"] == 1 and worker.metrics["finished.COMPLETED"] == 2


def test_a_result_above_the_limit_fails_with_result_too_large(settings: Settings) -> None:
    with scheduler_running(settings), worker_running(settings, "w-big"):
        CommandProducer(settings).submit(huge_result.spec("big", 5.2), submission_id="big")
        found = wait_events(settings, "big", completed, 60, "the job to fail")
    assert terminal_status(found) == {"big": JobStatus.FAILED}
    (failed,) = bodies(found, JobFailed, "big")
    assert failed.error_type == "ResultTooLarge"  # type: ignore[attr-defined]
    note = failed.error_note  # type: ignore[attr-defined]
    assert note.startswith(
        'result is 5.2 MB, the limit is 1.0 MB (JOBLOG_MAX_RESULT_BYTES); head: "xxx'
    )
    reports = read_all(settings, Topics(settings.topic_prefix).reports, lambda raw: len(raw))
    assert max(size for _, size in reports) < settings.limits.max_result_bytes, "no 5 MB record"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_no_orphan_survives_a_sigkilled_worker(settings: Settings, tmp_path: Path) -> None:
    worker_id = f"orphan-{os.getpid()}"
    marker = f"joblog-orphan-marker-{settings.topic_prefix}"
    jobs = [
        sample_tasks.shell.spec("cmd", ["sh", "-c", f"sleep 600 & sleep 601; : {marker}"]),
        sample_tasks.sleepy.spec("nap", 600.0),
    ]
    victim = start_worker_process(settings, worker_id, tmp_path / "victim.log")
    try:
        with scheduler_running(settings):
            CommandProducer(settings).submit(jobs, submission_id="orphans")
            wait_events(
                settings,
                "orphans",
                lambda found: len([e for e in found if e.name == "JobStarted"]) == 2,
                60,
                "both jobs to start",
            )
            wait_for(lambda: len(_processes_with(marker)) >= 1, 30, "the command to run")
            # The worker, its template and the two task processes share the worker's cmdline.
            family = _processes_with(f"--worker-id={worker_id}")
            assert len(family) >= 4, f"worker, template and two task processes: {family}"
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            wait_for(
                lambda: not _processes_with(f"--worker-id={worker_id}"),
                30,
                "the worker's task processes to die with it",
            )
            wait_for(lambda: not _processes_with(marker), 30, "the task's command to die too")
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(10)


def test_a_worker_process_stops_on_sigterm_while_a_task_ignores_the_flag(
    settings: Settings, tmp_path: Path
) -> None:
    victim = start_worker_process(
        settings, "stopper", tmp_path / "stopper.log", extra=["--drain-timeout=1"]
    )
    try:
        with scheduler_running(settings):
            CommandProducer(settings).submit(
                sample_tasks.sleepy.spec("nap", 600.0), submission_id="stop"
            )
            wait_events(
                settings,
                "stop",
                lambda found: any(e.name == "JobStarted" for e in found),
                60,
                "the task to start",
            )
            victim.send_signal(signal.SIGTERM)
            assert victim.wait(30) == 0
            wait_for(
                lambda: not _processes_with("--worker-id=stopper"), 30, "no process left behind"
            )
            found = wait_events(
                settings,
                "stop",
                lambda found: any(isinstance(e.body, JobRetryScheduled | JobFailed) for e in found),
                30,
                "the scheduler to hear the attempt was left",
            )
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(10)
    reasons = [b.reason for b in bodies(found, JobFailed) + bodies(found, JobRetryScheduled)]  # type: ignore[attr-defined]
    assert reasons == ["worker_lost"]
