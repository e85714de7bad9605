"""The scheduler at its boundaries, on the real broker: record sizes, big graphs, poison
inputs, ids that are never reused, fast failover and broker restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from engine import codec
from engine.admin import ensure_topics
from engine.broker import LocalBroker
from engine.client import CommandProducer
from engine.config import Settings
from engine.lifecycle.records import (
    CommandRejected,
    DeleteJobs,
    Event,
    JobCompleted,
    JobSpec,
    JobStarted,
    RejectionCode,
    SubmitJobs,
)
from engine.limits import KiB
from engine.partitioning import partition_for
from engine.scheduler.service import Scheduler, SchedulerConfig
from engine.topics import Topics
from tests.integration.conftest import KafkaUnderTest
from tests.integration.kafka_io import EchoWorker, events_by_submission, read_all, wait_for
from tests.integration.test_scheduler import FAST, assert_contiguous, scheduler_thread, status_of


def _completed(settings: Settings, *submissions: str) -> bool:
    try:
        by = events_by_submission(settings)
    except KafkaException:
        return False  # e.g. a restarted broker that has not taken its partitions back yet
    return all(by.get(s) and by[s][-1].name == "SubmissionCompleted" for s in submissions)


def _ended(settings: Settings, submission_id: str) -> bool:
    """Whether the submission's last events include its SubmissionCompleted (reads only the
    tail of its partition, for submissions too large to read whole every few seconds)."""
    topic = Topics(settings.topic_prefix).events
    partition = partition_for(submission_id, settings.partitions)
    consumer = Consumer(
        settings.client_config(
            **{"group.id": f"tail-{submission_id}", "isolation.level": "read_committed"}
        )
    )
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        consumer.assign([TopicPartition(topic, partition, max(0, high - 20))])
        for message in consumer.consume(20, timeout=5):
            if message.error() is None:
                event = codec.decode_event(message.value() or b"")
                if event.submission_id == submission_id and event.name == "SubmissionCompleted":
                    return True
        return False
    finally:
        consumer.close()


def _rejections(events: list[Event]) -> list[CommandRejected]:
    return [e.body for e in events if isinstance(e.body, CommandRejected)]


def test_a_large_argument_and_result_complete_and_other_submissions_go_on(
    settings: Settings,
) -> None:
    commands = CommandProducer(settings)
    payload = json.dumps({"args": ["x" * (900 * KiB)], "kwargs": {}})
    with scheduler_thread(settings), EchoWorker(settings, result_of=lambda d: d.spec.args):
        commands.submit((JobSpec("big", task="echo", args=payload),), submission_id="large")
        commands.submit((JobSpec("small", task="noop"),), submission_id="beside")
        wait_for(lambda: _completed(settings, "large", "beside"), 60, "both to complete")
    events = events_by_submission(settings)["large"]
    (done,) = [e.body for e in events if isinstance(e.body, JobCompleted)]
    assert done.result == payload


def _layered(width: int, depth: int) -> tuple[JobSpec, ...]:
    """``depth`` layers of ``width`` jobs; each job waits on two jobs of the layer before."""
    specs = []
    for layer in range(depth):
        for i in range(width):
            after = (f"l{layer - 1}-{i}", f"l{layer - 1}-{(i + 1) % width}") if layer else ()
            specs.append(JobSpec(f"l{layer}-{i}", task="noop", depends_on=after))
    return tuple(specs)


def test_a_10000_job_graph_in_one_submission_runs_every_edge_in_order(
    settings: Settings,
) -> None:
    commands = CommandProducer(settings)
    specs = _layered(200, 50)
    with scheduler_thread(settings), EchoWorker(settings):
        commands.submit(specs, submission_id="dag")
        time.sleep(1.0)
        commands.submit((JobSpec("other", task="noop"),), submission_id="unrelated")
        wait_for(lambda: _completed(settings, "unrelated"), 60, "the unrelated submission")
        wait_for(lambda: _ended(settings, "dag"), 400, "the 10,000-job graph", every=2)
    by = events_by_submission(settings, timeout=60)
    events = by["dag"]
    assert_contiguous({"dag": events})
    assert set(status_of(events).values()) == {"COMPLETED"} and len(status_of(events)) == 10_000
    started = {e.job_id: e.seq for e in events if isinstance(e.body, JobStarted)}
    finished = {e.job_id: e.seq for e in events if isinstance(e.body, JobCompleted)}
    for spec in specs:
        for upstream in spec.depends_on:
            assert started[spec.job_id] > finished[upstream], (spec.job_id, upstream)


def test_a_100000_job_submission_completes(settings: Settings) -> None:
    commands = CommandProducer(settings)
    specs = tuple(JobSpec(f"j{i:06d}", task="noop") for i in range(100_000))
    started = time.monotonic()
    with scheduler_thread(settings) as scheduler, EchoWorker(settings):
        commands.submit(specs, submission_id="wide")
        wait_for(lambda: _ended(settings, "wide"), 900, "the 100,000-job submission", every=5)
        assert scheduler.metrics["restarts"] == 0
    print(f"100,000 jobs in one submission: {time.monotonic() - started:.1f} s")


def test_a_record_that_cannot_be_written_is_dead_lettered_and_answered(
    settings: Settings,
) -> None:
    # This scheduler writes records of at most 200 KB: a 300 KB argument passes the
    # submission's checks (1 MB) but its JobSubmitted event cannot be written.
    small = replace(
        settings, limits=replace(settings.limits, max_record_bytes=200 * KiB, max_submit_bytes=100)
    )
    commands = CommandProducer(settings)
    for i in range(20):
        commands.submit((JobSpec("a", task="noop"),), submission_id=f"before-{i}", wait=False)
    args = json.dumps({"args": ["y" * (300 * KiB)], "kwargs": {}})
    commands.submit((JobSpec("fat", task="noop", args=args),), submission_id="poison", wait=False)
    for i in range(20):
        commands.submit((JobSpec("a", task="noop"),), submission_id=f"after-{i}", wait=False)
    commands.flush()
    others = [f"before-{i}" for i in range(20)] + [f"after-{i}" for i in range(20)]
    with scheduler_thread(small) as scheduler, EchoWorker(settings):
        wait_for(lambda: _completed(settings, *others), 120, "every other submission")
        wait_for(
            lambda: bool(_rejections(events_by_submission(settings).get("poison", []))),
            60,
            "the poison submission's rejection",
        )
        assert scheduler.metrics["poison_batches"] >= 1
    (rejection,) = _rejections(events_by_submission(settings)["poison"])
    assert rejection.code == RejectionCode.UNPROCESSABLE
    assert "JOBLOG_MAX_RECORD_BYTES" in rejection.reason
    letters = [
        v
        for _, v in read_all(
            settings, Topics(settings.topic_prefix).deadletter, codec.decode_deadletter
        )
    ]
    assert any(
        letter.key == b"poison" and "JOBLOG_MAX_RECORD_BYTES" in letter.error_message
        for letter in letters
    )


def test_a_deleted_id_is_never_accepted_again_even_after_a_restart(settings: Settings) -> None:
    commands = CommandProducer(settings)
    spec = (JobSpec("a", task="noop"),)
    with scheduler_thread(settings), EchoWorker(settings):
        commands.submit(spec, submission_id="reused")
        wait_for(lambda: _completed(settings, "reused"), 60, "the first run")
        commands.send(DeleteJobs("del-1", "reused"))
        wait_for(
            lambda: any(e.name == "JobDeleted" for e in events_by_submission(settings)["reused"]),
            60,
            "the deletion",
        )
        commands.send(SubmitJobs("again-1", "reused", spec))
        commands.send(DeleteJobs("del-2", "reused"))
        wait_for(
            lambda: len(_rejections(events_by_submission(settings)["reused"])) == 2, 60, "answers"
        )
    with scheduler_thread(settings, instance_id="b"), EchoWorker(settings):
        commands.send(SubmitJobs("again-2", "reused", spec))
        wait_for(
            lambda: len(_rejections(events_by_submission(settings)["reused"])) == 3,
            60,
            "the answer after a rebuild",
        )
    events = events_by_submission(settings)["reused"]
    codes = [r.code for r in _rejections(events)]
    assert codes == ["duplicate_submission", "deleted", "duplicate_submission"]
    assert len({e.event_id for e in events}) == len(events)  # no event id reused
    assert [e.name for e in events].count("JobSubmitted") == 1


def _spawn(settings: Settings, instance: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        JOBLOG_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        JOBLOG_TOPIC_PREFIX=settings.topic_prefix,
    )
    argv = [sys.executable, "-m", "engine.scheduler", "--instance-id", instance]
    argv += ["--session-timeout-ms", "6000"]
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)


def _first_decision_after(settings: Settings, submission_id: str, since: float) -> float:
    CommandProducer(settings).submit((JobSpec("a", task="noop"),), submission_id=submission_id)
    wait_for(lambda: bool(events_by_submission(settings).get(submission_id)), 90, submission_id)
    return time.monotonic() - since


def test_a_scheduler_restarted_after_sigkill_decides_again_within_seconds(
    settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "scheduler.log"
    first = _spawn(settings, "static-1", log)
    try:
        _first_decision_after(settings, "warm-up", time.monotonic())
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    restarted_at = time.monotonic()
    second = _spawn(settings, "static-1", log)
    try:
        seconds = _first_decision_after(settings, "after-restart", restarted_at)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(15) == 0
    print(f"restarted scheduler: first decision {seconds:.1f} s after its start")
    assert seconds < 20, log.read_text()[-3000:]  # well below the 45 s of a dynamic member


def test_a_dead_scheduler_hands_its_partitions_over_after_the_session_timeout(
    settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "scheduler.log"
    doomed = _spawn(settings, "doomed", log)
    try:
        _first_decision_after(settings, "warm", time.monotonic())
        with scheduler_thread(settings, instance_id="survivor", session_timeout_ms=6000):
            time.sleep(2)
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(10)
            killed_at = time.monotonic()
            probes = [f"probe-{i}" for i in range(12)]  # land on every partition
            for probe in probes:
                CommandProducer(settings).submit((JobSpec("a", task="noop"),), submission_id=probe)
            wait_for(
                lambda: all(events_by_submission(settings).get(p) for p in probes), 90, "probes"
            )
            seconds = time.monotonic() - killed_at
    finally:
        if doomed.poll() is None:
            doomed.kill()
    print(f"dead scheduler's partitions decided again {seconds:.1f} s after its death")
    assert seconds < 6 + 30


@pytest.fixture
def own_broker(kafka_cluster: KafkaUnderTest, tmp_path: Path) -> Iterator[LocalBroker]:
    if kafka_cluster.mode != "local":
        pytest.skip("restarts only a broker this test run owns (local mode)")
    broker = LocalBroker(tmp_path / "kafka")
    try:
        yield broker.start()
    finally:
        broker.stop()


def _kill_hard(broker: LocalBroker) -> None:
    pid = broker._running_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    broker.stop(timeout=1)


_CHAOS = pytest.mark.skipif(
    not os.environ.get("JOBLOG_CHAOS"),
    reason="a SIGKILL of the only broker can leave a committed transaction hanging on its "
    "partitions (the restarted broker skips its markers; docs/scheduler.md, Failover): seen once "
    "in 43 runs, so it runs on demand (JOBLOG_CHAOS=1); test_cluster.py kills a broker of three",
)


@pytest.mark.parametrize("how", ["stop", pytest.param("sigkill", marks=_CHAOS)])
def test_the_scheduler_rides_through_broker_restarts_under_load(
    own_broker: LocalBroker, how: str
) -> None:
    settings = Settings(bootstrap_servers=own_broker.bootstrap_servers, partitions=3)
    ensure_topics(settings)
    commands = CommandProducer(settings)
    submissions = [f"load-{i}" for i in range(1000)]
    scheduler = Scheduler(settings, policy=FAST, config=SchedulerConfig(instance_id=f"r-{how}"))
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(stop,), daemon=True)
    thread.start()
    with EchoWorker(settings):
        for rounds in range(2):
            for submission_id in submissions[rounds * 500 : rounds * 500 + 500]:
                commands.submit(
                    (JobSpec("a", task="noop"),), submission_id=submission_id, wait=False
                )
            commands.flush()
            time.sleep(1.0)
            if how == "stop":
                own_broker.stop()
            else:
                _kill_hard(own_broker)
            time.sleep(2.0)
            own_broker.start()
        wait_for(lambda: _completed(settings, *submissions), 240, "every submission", every=2)
    stopping = time.monotonic()
    stop.set()
    thread.join(20)
    assert not thread.is_alive(), "the scheduler did not stop"
    print(f"{how}: stopped {time.monotonic() - stopping:.1f} s after the request")
    by = events_by_submission(settings, timeout=30)
    assert_contiguous(by)
    for submission_id in submissions:
        assert status_of(by[submission_id]) == {"a": "COMPLETED"}
