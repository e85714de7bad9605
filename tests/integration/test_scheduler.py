"""The scheduler on the real broker: ordering, exactly-once across crashes and rebalances,
dead letters and rejections."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka import Producer

from engine import codec, kafka
from engine.client import CommandProducer
from engine.config import Settings
from engine.lifecycle.decide import Policy
from engine.lifecycle.records import TERMINAL, Event, JobSpec, JobStatus, SubmitJobs
from engine.scheduler.rebuild import read_state
from engine.scheduler.service import Scheduler, SchedulerConfig
from engine.topics import Topics
from tests.integration.kafka_io import EchoWorker, events_by_submission, read_all, wait_for

FAST = Policy(lease_ms=60_000, kill_grace_ms=5_000)


@contextmanager
def scheduler_thread(
    settings: Settings, instance_id: str = "a", **config: object
) -> Iterator[Scheduler]:
    scheduler = Scheduler(
        settings,
        policy=FAST,
        config=SchedulerConfig(instance_id=instance_id, **config),  # type: ignore[arg-type]
    )
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert scheduler.ready.wait(60), "the scheduler never got its partitions"
        yield scheduler
    finally:
        stop.set()
        thread.join(30)


def chain(n: int = 3) -> tuple[JobSpec, ...]:
    """a0 <- a1 <- a2 ...: each depends on the previous one."""
    return tuple(
        JobSpec(f"a{i}", task="noop", depends_on=(f"a{i - 1}",) if i else ()) for i in range(n)
    )


def status_of(events: list[Event]) -> dict[str, JobStatus]:
    """The terminal status of each job, checking that it is reached exactly once."""
    terminal: dict[str, JobStatus] = {}
    for event in events:
        for status in TERMINAL:
            if event.name == _TERMINAL_EVENT[status]:
                assert event.job_id not in terminal, f"{event.job_id} ended twice"
                terminal[event.job_id] = status
    return terminal


_TERMINAL_EVENT = {
    JobStatus.COMPLETED: "JobCompleted",
    JobStatus.FAILED: "JobFailed",
    JobStatus.CANCELED: "JobCanceled",
    JobStatus.SKIPPED: "JobSkipped",
    JobStatus.ABANDONED: "JobAbandoned",
}


def assert_contiguous(by_submission: dict[str, list[Event]]) -> None:
    for submission_id, events in by_submission.items():
        seqs = [event.seq for event in events if event.seq > 0]
        assert seqs == list(range(1, len(seqs) + 1)), f"{submission_id}: gaps or repeats {seqs}"


def test_a_graph_flows_in_order_with_one_dispatch_per_runnable_attempt(settings: Settings) -> None:
    commands = CommandProducer(settings)
    with scheduler_thread(settings):
        sent = commands.submit(chain(3), submission_id="graph-1")
        wait_for(
            lambda: len(events_by_submission(settings).get("graph-1", [])) >= 7,
            30,
            "the submission's first events",
        )
    events = events_by_submission(settings)["graph-1"]
    names = [(e.name, e.job_id) for e in events]
    assert names == [
        ("SubmissionAccepted", ""),
        ("JobSubmitted", "a0"),
        ("JobSubmitted", "a1"),
        ("JobSubmitted", "a2"),
        ("JobPending", "a0"),
        ("JobBlocked", "a1"),
        ("JobBlocked", "a2"),
    ]
    assert events[0].body.command_id == sent.command_id  # type: ignore[union-attr]
    dispatches = read_all(
        settings, Topics(settings.topic_prefix).dispatch("default"), codec.decode_dispatch
    )
    assert [(d.job_id, d.attempt) for _, d in dispatches] == [("a0", 1)]


def test_a_graph_runs_to_completion_with_a_worker(settings: Settings) -> None:
    commands = CommandProducer(settings)
    with scheduler_thread(settings), EchoWorker(settings) as worker:
        commands.submit(chain(4), submission_id="graph-2")
        wait_for(
            lambda: any(
                e.name == "SubmissionCompleted"
                for e in events_by_submission(settings).get("graph-2", [])
            ),
            60,
            "the submission to complete",
        )
    events = events_by_submission(settings)["graph-2"]
    assert status_of(events) == {f"a{i}": JobStatus.COMPLETED for i in range(4)}
    assert_contiguous({"graph-2": events})
    assert Counter(worker.seen) == Counter({f"graph-2/a{i}/1": 1 for i in range(4)})


def test_garbage_and_invalid_commands_do_not_stop_valid_ones(settings: Settings) -> None:
    topics = Topics(settings.topic_prefix)
    producer = Producer(settings.producer_config())
    valid = SubmitJobs("c-ok-1", "ok-1", (JobSpec("j", task="t"),))
    invalid = SubmitJobs("c-bad", "bad-1", (JobSpec("j", task="t", depends_on=("nope",)),))
    misrouted = SubmitJobs("c-mis", "mis-1", (JobSpec("j", task="t"),))
    valid2 = SubmitJobs("c-ok-2", "ok-2", (JobSpec("j", task="t"),))
    producer.produce(topics.commands, key=b"ok-1", value=codec.encode_command(valid))
    producer.produce(topics.commands, key=b"junk", value=b"\x00\x01not avro at all")
    producer.produce(topics.commands, key=b"bad-1", value=codec.encode_command(invalid))
    producer.produce(topics.commands, key=b"other", value=codec.encode_command(misrouted))
    producer.produce(topics.commands, key=b"ok-2", value=codec.encode_command(valid2))
    producer.flush(10)
    with scheduler_thread(settings) as scheduler:
        wait_for(
            lambda: scheduler.metrics["commands"] >= 3 and scheduler.metrics["dead_letters"] >= 2,
            30,
            "all commands to be processed",
        )
    by = events_by_submission(settings)
    assert by["ok-1"][0].name == "SubmissionAccepted"
    assert by["ok-2"][0].name == "SubmissionAccepted"
    rejected = by["bad-1"]
    assert [e.name for e in rejected] == ["CommandRejected"]
    assert rejected[0].body.code == "unknown_dependency"  # type: ignore[union-attr]
    assert "mis-1" not in by
    letters = read_all(settings, topics.deadletter, codec.decode_deadletter)
    assert len(letters) == 2
    reasons = sorted(letter.error_message for _, letter in letters)
    assert any("submission id" in reason for reason in reasons)
    assert all(letter.value for _, letter in letters), "the original bytes are kept"


def test_two_instances_share_partitions_and_lose_no_decision(settings: Settings) -> None:
    commands = CommandProducer(settings)
    submissions = [f"pair-{i}" for i in range(40)]
    with scheduler_thread(settings, "a"), EchoWorker(settings):
        for submission_id in submissions[:15]:
            commands.submit(chain(3), submission_id=submission_id, wait=False)
        commands.flush()
        with scheduler_thread(settings, "b") as second:
            for submission_id in submissions[15:30]:
                commands.submit(chain(3), submission_id=submission_id, wait=False)
            commands.flush()
            wait_for(lambda: len(second.assigned) > 0, 30, "the second instance to take partitions")
        # the second instance left: the first takes everything back
        for submission_id in submissions[30:]:
            commands.submit(chain(3), submission_id=submission_id, wait=False)
        commands.flush()
        wait_for(
            lambda: (
                sum(
                    1
                    for events in events_by_submission(settings).values()
                    if events and events[-1].name == "SubmissionCompleted"
                )
                == len(submissions)
            ),
            120,
            "every submission to complete",
        )
    by = events_by_submission(settings)
    assert_contiguous(by)
    for submission_id in submissions:
        assert status_of(by[submission_id]) == {f"a{i}": JobStatus.COMPLETED for i in range(3)}
    ids = [e.event_id for events in by.values() for e in events]
    assert len(ids) == len(set(ids)), "an event was written twice"
    dispatches = read_all(
        settings, Topics(settings.topic_prefix).dispatch("default"), codec.decode_dispatch
    )
    counted = Counter(d.dispatch_id for _, d in dispatches)
    assert all(n == 1 for n in counted.values()), "a dispatch was written twice"
    assert len(counted) == 3 * len(submissions)


def _spawn_scheduler(settings: Settings, log_path: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        JOBLOG_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        JOBLOG_TOPIC_PREFIX=settings.topic_prefix,
        JOBLOG_SCHEDULER_ID="crashy",
    )
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "engine.scheduler", "--batch-size", "50", "--log-level", "INFO"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _checkpointed(settings: Settings) -> bool:
    """Whether some partition of ``state`` holds a checkpoint past offset 0 (a rebuild of it
    starts from its snapshots, not from the beginning of ``events``)."""
    topics = Topics(settings.topic_prefix)
    reader = kafka.consumer(
        settings,
        f"{settings.topic_prefix}test-state-{uuid.uuid4().hex[:8]}",
        {"enable.partition.eof": True},
    )
    try:
        return any(read_state(reader, topics, p, 10)[0] > 0 for p in range(settings.partitions))
    finally:
        reader.close()


def test_sigkill_mid_run_neither_loses_nor_duplicates(settings: Settings, tmp_path: object) -> None:
    """Kill -9 the scheduler while it works; the restarted one ends with a log equal to an
    uninterrupted run's, and rebuilds from snapshots instead of replaying everything."""
    commands = CommandProducer(settings)
    submissions = [f"crash-{i}" for i in range(60)]
    log_path = os.path.join(str(tmp_path), "scheduler.log")
    with EchoWorker(settings):
        process = _spawn_scheduler(settings, log_path)
        try:
            for submission_id in submissions[:30]:
                commands.submit(chain(3), submission_id=submission_id, wait=False)
            commands.flush()
            wait_for(
                lambda: (
                    sum(
                        1
                        for ev in events_by_submission(settings).values()
                        if ev and ev[-1].name == "SubmissionCompleted"
                    )
                    >= 10
                ),
                60,
                "some submissions to complete",
            )
            # the snapshots of the finished ones are written in batches: the kill comes after
            # one partition's checkpoint, so that the restart has snapshots to rebuild from
            wait_for(lambda: _checkpointed(settings), 60, "a checkpoint on state")
            for submission_id in submissions[30:]:
                commands.submit(chain(3), submission_id=submission_id, wait=False)
            commands.flush()
            time.sleep(0.3)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        restarted = _spawn_scheduler(settings, log_path)
        try:
            wait_for(
                lambda: (
                    sum(
                        1
                        for ev in events_by_submission(settings).values()
                        if ev and ev[-1].name == "SubmissionCompleted"
                    )
                    == len(submissions)
                ),
                120,
                "every submission to complete after the restart",
            )
        finally:
            restarted.send_signal(signal.SIGTERM)
            restarted.wait(30)
    by = events_by_submission(settings)
    assert_contiguous(by)
    expected = _uninterrupted_names()
    for submission_id in submissions:
        names = [(e.name, e.job_id) for e in by[submission_id]]
        assert names == expected, f"{submission_id} differs from an uninterrupted run"
    with open(log_path) as log:
        text = log.read()
    rebuilt = [line for line in text.splitlines() if "rebuilt" in line]
    assert rebuilt, text[-2000:]
    # the restarted instance read snapshots: not every event was replayed from offset 0
    replayed = sum(int(line.split(" events replayed")[0].split()[-1]) for line in rebuilt[-6:])
    total = sum(len(events) for events in by.values())
    assert replayed < total, f"replayed {replayed} of {total} events: snapshots unused"


def _uninterrupted_names() -> list[tuple[str, str]]:
    """The event names of a 3-chain run by an echo worker, decided by the pure core."""
    from engine.lifecycle.decide import decide
    from engine.lifecycle.evolve import evolve
    from engine.lifecycle.records import AttemptRef, Claimed, Finished, Outcome, Started

    state = None
    out: list[tuple[str, str]] = []

    def run(given: object, now: int) -> list[Event]:
        nonlocal state
        events = decide(state, given, now)  # type: ignore[arg-type]
        for event in events:
            state = evolve(state, event)
            out.append((event.name, event.job_id))
        return events

    queue = [e for e in run(SubmitJobs("c", "x", chain(3)), 1) if e.name == "JobPending"]
    now = 2
    while queue:
        event = queue.pop(0)
        ref = AttemptRef("x", event.job_id, 1, f"x/{event.job_id}/1", "echo")
        run(Claimed(ref), now)
        run(Started(ref), now + 1)
        queue.extend(
            e
            for e in run(Finished(ref, Outcome.COMPLETED, result="null"), now + 2)
            if e.name == "JobPending"
        )
        now += 3
    return out


def test_rebuild_reads_snapshots_not_history(settings: Settings) -> None:
    commands = CommandProducer(settings)
    with scheduler_thread(settings, snapshot_max_age_ms=200) as first, EchoWorker(settings):
        for i in range(20):
            commands.submit(chain(2), submission_id=f"snap-{i}", wait=False)
        commands.flush()
        wait_for(
            lambda: (
                sum(
                    1
                    for ev in events_by_submission(settings).values()
                    if ev and ev[-1].name == "SubmissionCompleted"
                )
                == 20
            ),
            60,
            "the submissions to complete",
        )
        # finished submissions are snapshotted in batches (snapshot_done_delay_ms), the
        # checkpoint with them; the sweep writes what no input touches
        wait_for(
            lambda: all(
                not book.dirty_since and book.checkpoint_written == book.checkpoint()
                for book in list(first.book.partitions.values())
            ),
            30,
            "every finished submission to be snapshotted",
        )
    with scheduler_thread(settings, "b") as second:
        stats = second.metrics.rebuilds
        assert stats, "no rebuild happened"
        assert sum(s.events_replayed for s in stats) == 0
        assert sum(s.snapshots for s in stats) == 20
        books = list(second.book.partitions.values())
        # finished submissions are restored dormant: kept encoded until a command names one
        assert sum(len(book.dormant) for book in books) == 20
        assert not any(book.submissions for book in books)
        done = [codec.decode_snapshot(raw) for book in books for raw in book.dormant.values()]
        assert all(state.done for state in done) and len(done) == 20


def test_commands_land_where_partition_for_says(settings: Settings) -> None:
    """librdkafka's murmur2 partitioner and engine.partitioning agree, so readers can find a
    submission's events in one partition."""
    from engine.partitioning import partition_for

    commands = CommandProducer(settings)
    for i in range(30):
        sent = commands.send(SubmitJobs(f"c-{i}", f"where-{i}", (JobSpec("j", task="t"),)))
        assert sent is not None
        assert sent.partition == partition_for(f"where-{i}", settings.partitions)
