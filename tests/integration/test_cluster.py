"""joblog on a cluster of three brokers: replication, a broker crash under load, and a
scheduler instance crash among two or three that share the partitions.

The cluster is this module's own (:class:`~engine.broker.cluster.LocalCluster`, three KRaft
nodes on 127.0.0.1), whatever cluster the rest of the suite uses: its brokers are killed.
Topics are created at replication factor 3 with ``min.insync.replicas=2``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from confluent_kafka.admin import ConfigResource, ResourceType

from engine import codec, kafka
from engine.admin import ensure_topics
from engine.api import Joblog
from engine.broker.cluster import LocalCluster
from engine.config import Settings
from engine.errors import BrokerError, CodecError
from engine.lifecycle.decide import Policy
from engine.lifecycle.records import Event, JobStatus
from engine.partitioning import partition_for
from engine.topics import Topics
from engine.worker import Worker
from tests.integration.kafka_io import events_by_submission, read_all, wait_for
from tests.integration.test_client import FAST, REGISTRY, _thread, engine_running
from tests.integration.test_scheduler import assert_contiguous, status_of

ROOT = Path(__file__).resolve().parents[2]

JOBS = 1_500
#: A lease longer than a failover (the dead broker fenced after 4 s, leaders elected, the
#: workers' group rejoined at its new coordinator): a worker's heartbeats may be held up
#: that long without its attempts being lost.
POLICY = Policy(lease_ms=30_000, kill_grace_ms=3_000)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("cluster"), brokers=3) as running:
        yield running


def _settings(cluster: LocalCluster, partitions: int = 3) -> Settings:
    settings = Settings.from_env(
        bootstrap_servers=cluster.bootstrap_servers,
        topic_prefix=f"r{uuid.uuid4().hex[:8]}.",
        partitions=partitions,
        replication_factor=3,
    )
    try:
        ensure_topics(settings, timeout=60.0)
    except BrokerError as exc:
        logs = "\n".join(f"--- node {n}\n{node.log_tail(30)}" for n, node in cluster.nodes.items())
        raise BrokerError(f"{exc}\n{logs}") from exc
    return settings


def test_topics_have_three_replicas_and_need_two_in_sync(cluster: LocalCluster) -> None:
    settings = _settings(cluster)
    admin = cluster.admin()
    metadata = admin.list_topics(timeout=10)
    names = [name for name in metadata.topics if name.startswith(settings.topic_prefix)]
    assert Topics(settings.topic_prefix).events in names
    for name in names:
        for partition in metadata.topics[name].partitions.values():
            assert sorted(partition.replicas) == [1, 2, 3], (name, partition.id)
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    for future in admin.describe_configs(resources).values():
        config = future.result()
        assert config["min.insync.replicas"].value == "2"


def _busiest_leader(cluster: LocalCluster, prefix: str) -> int:
    """The node leading most of the prefix's partitions."""
    leaders = Counter(n for n in cluster.leaders(prefix).values() if n > 0)
    return leaders.most_common(1)[0][0]


class _Completions(threading.Thread):
    """Counts the committed ``SubmissionCompleted`` events of the prefix as they come."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.count = 0
        self.stop = threading.Event()

    def run(self) -> None:
        consumer = kafka.consumer(
            self.settings, f"count-{uuid.uuid4().hex[:8]}", {"auto.offset.reset": "earliest"}
        )
        consumer.subscribe([Topics(self.settings.topic_prefix).events])
        try:
            while not self.stop.is_set():
                message = consumer.poll(0.2)
                if message is None or message.error():
                    continue
                with contextlib.suppress(CodecError):
                    if codec.decode_event(message.value() or b"").name == "SubmissionCompleted":
                        self.count += 1
        finally:
            consumer.close()


def _decision_gap_ms(by: dict[str, list[Event]], after_ms: int) -> int:
    """The longest time with no decision at all, from ``after_ms`` to the last decision."""
    stamps = sorted(e.timestamp for events in by.values() for e in events if e.timestamp)
    stamps = [after_ms] + [t for t in stamps if t >= after_ms]
    return max((b - a for a, b in itertools.pairwise(stamps)), default=0)


def _brief(event: Event) -> str:
    body = event.body
    fields = {
        name: getattr(body, name)
        for name in ("attempt", "worker_id", "previous_worker_id", "claimer", "mode", "reason")
        if getattr(body, name, None) not in (None, "")
    }
    at = event.timestamp % 100_000
    return f"({fields}@{at})" if fields else f"(@{at})"


def _wait_for_all(
    settings: Settings, completions: _Completions, counts: Counter[str], jobs: int = JOBS
) -> None:
    """Waits until every submission ended; on a timeout, says how far the log itself got."""
    deadline = time.monotonic() + 300
    while completions.count < jobs:
        if time.monotonic() > deadline:
            by = events_by_submission(settings, timeout=30)
            done = sum(any(e.name == "JobCompleted" for e in ev) for ev in by.values())
            stuck = {
                sid: [f"{e.name}{_brief(e)}" for e in events]
                for sid, events in by.items()
                if not any(e.name == "JobCompleted" for e in events)
            }
            raise AssertionError(
                f"{completions.count} completions seen live, {done} in the log, of {jobs}; "
                f"scheduler: {dict(counts)}; unfinished: {stuck}"
            )
        time.sleep(1)


@pytest.mark.parametrize("how", ["sigkill", "stop"])
def test_a_broker_lost_under_load_loses_and_doubles_nothing(
    cluster: LocalCluster, tmp_path: Path, how: str
) -> None:
    """The node leading most partitions dies (``sigkill``) or is stopped for a minute
    (``stop``) while jobs run: every job completes once, every submission's events stay
    contiguous, and the services ride through the leader elections (the scheduler rebuilds
    its producer at most once, see below)."""
    settings = _settings(cluster)
    completions = _Completions(settings)
    completions.start()
    with engine_running(settings, workers=2, concurrency=8, policy=POLICY) as engine:
        with Joblog(settings) as jl:
            for index in range(JOBS):
                # a fifth of a second each: about 20 s of work on the workers' 16 slots
                jl.submit(task="double", args=[index, 0.2], submission_id=f"load-{index:05d}")
            wait_for(lambda: completions.count >= JOBS // 4, 180, "a quarter of the jobs")
            assert completions.count < JOBS, "every job ended before the broker was lost"
            victim = _busiest_leader(cluster, settings.topic_prefix)
            lost_at = int(time.time() * 1000)
            if how == "sigkill":
                cluster.kill(victim)
            else:
                cluster.stop_node(victim)
            if how == "stop":
                time.sleep(60)
                cluster.start_node(victim)
            _wait_for_all(settings, completions, engine.scheduler.metrics.counts)
        restarts = engine.scheduler.metrics["restarts"]
        if how == "sigkill":
            cluster.start_node(victim)
    completions.stop.set()
    by = events_by_submission(settings, timeout=30)
    assert_contiguous(by)
    submissions = [f"load-{index:05d}" for index in range(JOBS)]
    for submission_id in submissions:
        assert status_of(by[submission_id]) == {"double": JobStatus.COMPLETED}
    gap = _decision_gap_ms(by, lost_at)
    print(f"{how} of node {victim}: longest time without a decision {gap} ms")
    # A crash of the group coordinator's broker can strand librdkafka's
    # send_offsets_to_transaction (confluentinc/librdkafka#5511): the scheduler abandons that
    # call after SchedulerConfig.offsets_timeout_s and retries on a new producer, once.
    assert restarts <= 1, f"the scheduler restarted {restarts} times"
    cluster.wait_for_brokers(3, timeout=60)


# --------------------------------------------------------------------------- scheduler crash

#: Jobs of the scheduler-crash test: half before the crash, half right after it, so that
#: records wait on the dead instance's partitions while the group hands them over.
SCHEDULER_JOBS = 2_000


def _spawn_scheduler(
    settings: Settings, instance_id: str, log_path: Path, options: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """``python -m engine.scheduler`` as an operator runs it, one instance of the group."""
    env = {
        **os.environ,
        "JOBLOG_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "JOBLOG_TOPIC_PREFIX": settings.topic_prefix,
        "JOBLOG_PARTITIONS": str(settings.partitions),
        "JOBLOG_REPLICATION_FACTOR": str(settings.replication_factor),
        "JOBLOG_SCHEDULER_ID": instance_id,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "engine.scheduler", "--log-level", "INFO", *options],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@contextmanager
def _schedulers(
    settings: Settings, count: int, log_dir: Path, options: Sequence[str] = ()
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """``count`` scheduler processes of one group; whatever still runs is killed at the end."""
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for n in range(1, count + 1):
            instance_id = f"sched-{n}"
            processes[instance_id] = _spawn_scheduler(
                settings, instance_id, log_dir / f"{instance_id}.log", options
            )
        yield processes
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@contextmanager
def _workers(settings: Settings, count: int, concurrency: int) -> Iterator[list[Worker]]:
    """``count`` workers of the default queue, in threads of this process."""
    with ExitStack() as stack:
        workers = []
        for n in range(count):
            worker = Worker(settings, "default", concurrency, REGISTRY, f"w{n + 1}", options=FAST)
            stack.enter_context(_thread(worker.run, f"worker-{n + 1}"))
            workers.append(worker)
        for worker in workers:
            assert worker.ready.wait(60), f"worker {worker.worker_id} got no partitions"
        yield workers


def _owners(cluster: LocalCluster, settings: Settings) -> dict[str, set[int]]:
    """The partitions of ``commands`` each scheduler instance holds, by instance id."""
    group = f"{settings.topic_prefix}scheduler"
    commands = Topics(settings.topic_prefix).commands
    admin = cluster.admin()  # held until the answer came: a dropped client never answers
    try:
        future = admin.describe_consumer_groups([group], request_timeout=10)[group]
        description = future.result(timeout=15)
    except Exception:  # the group does not exist yet, or its coordinator is moving
        return {}
    return {
        member.group_instance_id or member.member_id: {
            tp.partition for tp in member.assignment.topic_partitions if tp.topic == commands
        }
        for member in description.members
        if member.assignment is not None
    }


def _all_shared(cluster: LocalCluster, settings: Settings, instances: int) -> bool:
    owners = _owners(cluster, settings)
    held = [partitions for partitions in owners.values() if partitions]
    return len(held) == instances and set().union(*held) == set(range(settings.partitions))


def _first_decision_ms(
    by: dict[str, list[Event]], partitions: set[int], count: int, after_ms: int
) -> int:
    """The time from ``after_ms`` to the first decision on any of ``partitions`` (-1: none)."""
    stamps = [
        event.timestamp
        for submission_id, events in by.items()
        if partition_for(submission_id, count) in partitions
        for event in events
        if event.timestamp >= after_ms
    ]
    return min(stamps) - after_ms if stamps else -1


def _timeline(by: dict[str, list[Event]], partitions: set[int], count: int, after_ms: int) -> str:
    """Decisions per second from ``after_ms`` on: on ``partitions`` / on the others."""
    seconds: dict[int, list[int]] = {}
    for submission_id, events in by.items():
        mine = partition_for(submission_id, count) in partitions
        for event in events:
            if event.timestamp >= after_ms:
                second = (event.timestamp - after_ms) // 1000
                seconds.setdefault(second, [0, 0])[0 if mine else 1] += 1
    return " ".join(f"{s}s:{a}/{b}" for s, (a, b) in sorted(seconds.items()))


def _restarts(log_path: Path) -> int:
    return log_path.read_text(errors="replace").count("scheduler restarting on a fresh book")


@pytest.mark.parametrize(
    ("instances", "options"),
    [(2, ("--transaction-timeout-ms", "10000")), (3, ())],
    ids=["two-short-transactions", "three-defaults"],
)
def test_a_scheduler_instance_killed_under_load_hands_over_without_loss(
    cluster: LocalCluster, tmp_path: Path, instances: int, options: tuple[str, ...]
) -> None:
    """Two or three scheduler processes share six partitions; one is SIGKILLed while jobs
    run and never comes back. The others take its partitions after the group's session
    timeout (the scheduler's ``--session-timeout-ms``, 10 s) and rebuild them from ``state``
    and ``events``: every job completes exactly once, no event and no dispatch is written
    twice, every submission's events stay contiguous, and the survivors never restart.

    The dead instance's open transaction holds up read-committed readers of every partition
    it wrote to (the dispatch topic's, shared by all instances) until the broker aborts it,
    ``--transaction-timeout-ms`` after it began (30 s by default, 10 s in the two-instance
    case): the printed gaps show both waits."""
    settings = _settings(cluster, partitions=6)
    completions = _Completions(settings)
    completions.start()
    half = SCHEDULER_JOBS // 2
    with (
        _schedulers(settings, instances, tmp_path, options) as processes,
        _workers(settings, 2, concurrency=8),
        Joblog(settings) as jl,
    ):
        wait_for(lambda: _all_shared(cluster, settings, instances), 90, "every instance's share")
        for index in range(half):
            jl.submit(task="double", args=[index, 0.02], submission_id=f"sch-{index:05d}")
        wait_for(lambda: completions.count >= half // 4, 120, "a quarter of the first half")
        victim = "sched-2"
        wait_for(lambda: bool(_owners(cluster, settings).get(victim)), 30, "its partitions")
        owned = _owners(cluster, settings)[victim]
        killed_at = int(time.time() * 1000)
        processes[victim].send_signal(signal.SIGKILL)
        processes[victim].wait(10)
        for index in range(half, SCHEDULER_JOBS):
            jl.submit(task="double", args=[index, 0.02], submission_id=f"sch-{index:05d}")
        _wait_for_all(settings, completions, Counter(), SCHEDULER_JOBS)
        survivors = {name: p for name, p in processes.items() if name != victim}
        assert all(p.poll() is None for p in survivors.values()), "a surviving instance died"
        assert _all_shared(cluster, settings, instances - 1), _owners(cluster, settings)
    completions.stop.set()
    restarts = {name: _restarts(tmp_path / f"{name}.log") for name in survivors}
    by = events_by_submission(settings, timeout=30)
    assert_contiguous(by)
    for index in range(SCHEDULER_JOBS):
        assert status_of(by[f"sch-{index:05d}"]) == {"double": JobStatus.COMPLETED}
    ids = [event.event_id for events in by.values() for event in events]
    assert len(ids) == len(set(ids)), "an event was written twice"
    dispatches = read_all(
        settings, Topics(settings.topic_prefix).dispatch("default"), codec.decode_dispatch, 30
    )
    counted = Counter(dispatch.dispatch_id for _, dispatch in dispatches)
    assert [d for d, n in counted.items() if n > 1] == [], "a dispatch was written twice"
    assert len(counted) == SCHEDULER_JOBS
    takeover = _first_decision_ms(by, owned, settings.partitions, killed_at)
    gap = _decision_gap_ms(by, killed_at)
    completed = {sid: [e for e in ev if e.name == "JobCompleted"] for sid, ev in by.items()}
    idle = _decision_gap_ms(completed, killed_at)
    print(
        f"{instances} instances, {victim} (partitions {sorted(owned)}) SIGKILLed: first "
        f"decision on its partitions after {takeover} ms; longest time without any decision "
        f"{gap} ms, without a job completed {idle} ms; survivors' restarts {restarts}"
    )
    timeline = _timeline(by, owned, settings.partitions, killed_at)
    print(f"decisions per second after the kill (on its partitions/others): {timeline}")
    assert all(n == 0 for n in restarts.values()), restarts
