"""Idempotency keys across partitions, with two schedulers sharing them, on the real broker.

Each submission lands on the partition of its id; each key is decided on the partition of
its ledger. The submissions below are chosen on every partition, so that the jobs, the ledger
and the two schedulers are all on different sides for some of them.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from engine.admin import ensure_topics
from engine.api import Job, Joblog
from engine.config import Settings
from engine.lifecycle.records import JobStatus, key_ledger_id
from engine.partitioning import partition_for
from engine.scheduler.service import Scheduler, SchedulerConfig
from engine.worker import JobContext, TaskRegistry, Worker, task
from tests.integration.conftest import KafkaUnderTest
from tests.integration.test_client import FAST, POLICY, _thread

PARTITIONS = 4


@task
def charge(ledger: str, amount: int, seconds: float = 0.5, fail: bool = False) -> int:
    """A side effect that must happen once: one line per execution in ``ledger``."""
    with open(ledger, "a", encoding="utf-8") as out:
        out.write(f"{os.getpid()} {amount}\n")
    time.sleep(seconds)
    if fail:
        raise RuntimeError("card declined")
    return amount


@task
def note(ctx: JobContext) -> str:
    return ctx.job_id


REGISTRY = TaskRegistry([charge, note])


@pytest.fixture
def cluster_settings(kafka_cluster: KafkaUnderTest) -> Settings:
    settings = Settings.from_env(
        bootstrap_servers=kafka_cluster.bootstrap_servers,
        topic_prefix=f"idem{uuid.uuid4().hex[:8]}.",
        partitions=PARTITIONS,
    )
    ensure_topics(settings)
    return settings


@contextmanager
def two_schedulers(settings: Settings) -> Iterator[list[Scheduler]]:
    """Two scheduler instances in one group, and two workers."""
    with ExitStack() as stack:
        schedulers = [
            Scheduler(
                settings,
                policy=POLICY,
                config=SchedulerConfig(instance_id=f"idem-{n}-{uuid.uuid4().hex[:6]}"),
            )
            for n in (1, 2)
        ]
        for n, scheduler in enumerate(schedulers):
            stack.enter_context(_thread(scheduler.run, f"scheduler-{n + 1}"))
        workers = [Worker(settings, "default", 4, REGISTRY, f"w{n}", options=FAST) for n in (1, 2)]
        for worker in workers:
            stack.enter_context(_thread(worker.run, worker.worker_id))
        deadline = time.monotonic() + 90
        while not all(s.ready.is_set() and s.book.partitions for s in schedulers):
            assert time.monotonic() < deadline, "the schedulers did not share the partitions"
            time.sleep(0.2)
        for worker in workers:
            assert worker.ready.wait(60)
        owned = sorted(p for s in schedulers for p in s.book.partitions)
        assert owned == list(range(PARTITIONS)), owned
        yield schedulers


def _ids_on_every_partition(count: int) -> list[str]:
    """``count`` submission ids, spread over every partition in turn."""
    ids: list[str] = []
    while len(ids) < count:
        want = len(ids) % PARTITIONS
        candidate = f"s-{uuid.uuid4().hex}"
        if partition_for(candidate.encode(), PARTITIONS) == want:
            ids.append(candidate)
    return ids


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def test_a_key_runs_once_across_partitions_and_schedulers_even_while_in_flight(
    cluster_settings: Settings, tmp_path: Path
) -> None:
    key = f"invoice-{uuid.uuid4().hex[:8]}"
    charges = tmp_path / "charges.log"
    with two_schedulers(cluster_settings):
        jl = Joblog(cluster_settings)
        try:
            ids = _ids_on_every_partition(8)
            # all eight are sent at once: most arrive while the first one runs
            handles = [
                jl.submit(
                    Job(
                        "bill",
                        task="charge",
                        kwargs={"ledger": str(charges), "amount": 42},
                        idempotency_key=key,
                    ),
                    Job("after", task="note", depends_on=["bill"]),
                    submission_id=sid,
                )
                for sid in ids
            ]
            views = [h.wait_until_done(timeout=90) for h in handles]
            # after both schedulers restart, the key is still done: a new duplicate on a
            # partition that never saw it completed is answered from the ledger's state
        finally:
            jl.close()
    statuses = [v.jobs["bill"].status for v in views]
    assert statuses.count(JobStatus.COMPLETED) == 1, statuses
    assert statuses.count(JobStatus.SKIPPED) == len(ids) - 1, statuses
    assert len(_lines(charges)) == 1, "the side effect happened once"
    assert all(v.jobs["after"].status is JobStatus.COMPLETED for v in views)
    winner = ids[statuses.index(JobStatus.COMPLETED)]
    ledger_partition = partition_for(key_ledger_id(key).encode(), PARTITIONS)
    elsewhere = [sid for sid in ids if partition_for(sid.encode(), PARTITIONS) != ledger_partition]
    assert elsewhere, "some jobs lived away from their key's ledger"

    later = next(
        sid
        for sid in _ids_on_every_partition(PARTITIONS * 2)
        if partition_for(sid.encode(), PARTITIONS)
        not in (ledger_partition, partition_for(winner.encode(), PARTITIONS))
    )
    with two_schedulers(cluster_settings):
        jl = Joblog(cluster_settings)
        try:
            view = jl.submit(
                Job(
                    "bill",
                    task="charge",
                    kwargs={"ledger": str(charges), "amount": 42},
                    idempotency_key=key,
                ),
                submission_id=later,
            ).wait_until_done(timeout=90)
        finally:
            jl.close()
    assert view.jobs["bill"].status is JobStatus.SKIPPED
    assert winner in (view.jobs["bill"].error_note or ""), view.jobs["bill"]
    assert len(_lines(charges)) == 1


def test_a_failed_holder_hands_the_key_to_the_duplicate_that_waited(
    cluster_settings: Settings, tmp_path: Path
) -> None:
    key = f"payout-{uuid.uuid4().hex[:8]}"
    charges = tmp_path / "charges.log"
    first, second, third = _ids_on_every_partition(3)
    with two_schedulers(cluster_settings):
        jl = Joblog(cluster_settings)
        try:
            failing = jl.submit(
                Job(
                    "bill",
                    task="charge",
                    kwargs={"ledger": str(charges), "amount": 1, "seconds": 1.0, "fail": True},
                    idempotency_key=key,
                ),
                submission_id=first,
                wait=True,
            )
            deadline = time.monotonic() + 30
            while not _lines(charges):  # the first one runs: the others must wait for it
                assert time.monotonic() < deadline, "the first job never ran"
                time.sleep(0.05)
            waiting = [
                jl.submit(
                    Job(
                        "bill",
                        task="charge",
                        kwargs={"ledger": str(charges), "amount": 2, "seconds": 0.2},
                        idempotency_key=key,
                    ),
                    submission_id=sid,
                )
                for sid in (second, third)
            ]
            canceled_while_waiting = jl.submit(
                Job("bill", task="note", idempotency_key=key),
                submission_id=f"s-{uuid.uuid4().hex}",
                wait=True,
            )
            jl.cancel(canceled_while_waiting.id, wait=True)
            assert failing.wait_until_done(timeout=60).jobs["bill"].status is JobStatus.FAILED
            outcomes = [h.wait_until_done(timeout=60).jobs["bill"].status for h in waiting]
            canceled = canceled_while_waiting.wait_until_done(timeout=60).jobs["bill"].status
        finally:
            jl.close()
    assert outcomes == [JobStatus.COMPLETED, JobStatus.SKIPPED], outcomes
    assert canceled is JobStatus.CANCELED
    assert [line.split()[1] for line in _lines(charges)] == ["1", "2"], "failed, then one run"
