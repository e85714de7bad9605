"""joblog on a cluster of three brokers: replication, and a broker crash under load.

The cluster is this module's own (:class:`~engine.broker.cluster.LocalCluster`, three KRaft
nodes on 127.0.0.1), whatever cluster the rest of the suite uses: its brokers are killed.
Topics are created at replication factor 3 with ``min.insync.replicas=2``.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import ConfigResource, ResourceType

from engine import codec, kafka
from engine.admin import ensure_topics
from engine.api import Joblog
from engine.broker.cluster import LocalCluster
from engine.config import Settings
from engine.errors import CodecError
from engine.lifecycle.decide import Policy
from engine.lifecycle.records import Event, JobStatus
from engine.topics import Topics
from tests.integration.kafka_io import events_by_submission, wait_for
from tests.integration.test_client import engine_running
from tests.integration.test_scheduler import assert_contiguous, status_of

JOBS = 1_500
#: A lease longer than a failover (the dead broker fenced after 4 s, leaders elected, the
#: workers' group rejoined at its new coordinator): a worker's heartbeats may be held up
#: that long without its attempts being lost.
POLICY = Policy(lease_ms=30_000, kill_grace_ms=3_000)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("cluster"), brokers=3) as running:
        yield running


def _settings(cluster: LocalCluster) -> Settings:
    settings = Settings.from_env(
        bootstrap_servers=cluster.bootstrap_servers,
        topic_prefix=f"r{uuid.uuid4().hex[:8]}.",
        partitions=3,
        replication_factor=3,
    )
    ensure_topics(settings)
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


def _wait_for_all(settings: Settings, completions: _Completions, counts: Counter[str]) -> None:
    """Waits until every submission ended; on a timeout, says how far the log itself got."""
    deadline = time.monotonic() + 300
    while completions.count < JOBS:
        if time.monotonic() > deadline:
            by = events_by_submission(settings, timeout=30)
            done = sum(any(e.name == "JobCompleted" for e in ev) for ev in by.values())
            stuck = {
                sid: [f"{e.name}{_brief(e)}" for e in events]
                for sid, events in by.items()
                if not any(e.name == "JobCompleted" for e in events)
            }
            raise AssertionError(
                f"{completions.count} completions seen live, {done} in the log, of {JOBS}; "
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
