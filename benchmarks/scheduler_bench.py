"""Scheduler benchmark: decisions per second (pure core and through Kafka transactions) and
rebuild time per 100k events.

Usage:
    python -m benchmarks.scheduler_bench [--submissions 20000] [--bootstrap-servers HOST:PORT]

Without ``--bootstrap-servers`` (or ``JOBLOG_BOOTSTRAP_SERVERS``) a local broker is started in
a temporary directory. Figures are printed and written to ``benchmarks/results/scheduler.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
import uuid
from pathlib import Path

from engine.admin import ensure_topics
from engine.client import CommandProducer
from engine.config import Settings
from engine.lifecycle.decide import Policy
from engine.lifecycle.records import (
    AttemptRef,
    Claimed,
    Finished,
    JobSpec,
    Outcome,
    Started,
    SubmitJobs,
)
from engine.scheduler.book import Book, PartitionBook
from engine.scheduler.rebuild import rebuild
from engine.scheduler.service import Scheduler, SchedulerConfig

RESULTS = Path(__file__).parent / "results" / "scheduler.json"


def pure_core(submissions: int) -> dict[str, float]:
    """Decisions per second of the core alone: submit, claim, start, finish per job."""
    book = Book(Policy())
    book.adopt(PartitionBook(0), 0)
    started = time.perf_counter()
    decisions = events = 0
    for i in range(submissions):
        sid = f"s{i}"
        decision = book.apply(0, sid, SubmitJobs(f"c{i}", sid, (JobSpec("j", task="noop"),)), i)
        events += len(decision.events)
        ref = AttemptRef(sid, "j", 1, f"{sid}/j/1", "w")
        for report in (Claimed(ref), Started(ref), Finished(ref, Outcome.COMPLETED)):
            events += len(book.apply(0, sid, report, i + 1).events)
        decisions += 4
    seconds = time.perf_counter() - started
    return {
        "decisions": decisions,
        "events": events,
        "seconds": seconds,
        "decisions_per_s": decisions / seconds,
        "events_per_s": events / seconds,
    }


def through_kafka(settings: Settings, submissions: int) -> dict[str, float]:
    """Submit commands decided by one scheduler instance, on transactions."""
    producer = CommandProducer(settings)
    for i in range(submissions):
        producer.submit(JobSpec("j", task="noop"), submission_id=f"b{i}", wait=False)
    producer.flush(120)
    scheduler = Scheduler(settings, config=SchedulerConfig(instance_id="bench"))
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(stop,), daemon=True)
    started = time.perf_counter()
    thread.start()
    assert scheduler.ready.wait(120)
    ready_at = time.perf_counter()
    while scheduler.metrics["commands"] < submissions:
        time.sleep(0.05)
    seconds = time.perf_counter() - ready_at
    stop.set()
    thread.join(60)
    return {
        "commands": submissions,
        "events": scheduler.metrics["events"],
        "transactions": scheduler.metrics["transactions"],
        "startup_seconds": ready_at - started,
        "seconds": seconds,
        "decisions_per_s": submissions / seconds,
        "events_per_s": scheduler.metrics["events"] / seconds,
    }


def rebuild_times(settings: Settings) -> dict[str, float]:
    """Rebuild every partition (snapshots + event tail) and scale to 100k events."""
    started = time.perf_counter()
    replayed = snapshots = 0
    for partition in range(settings.partitions):
        stats, _ = rebuild(settings, partition)
        replayed += stats.events_replayed
        snapshots += stats.snapshots
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "snapshots": snapshots,
        "events_replayed": replayed,
    }


def replay_all(settings: Settings, events: int) -> dict[str, float]:
    """The worst case: no snapshots, every event replayed (a fresh prefix, events copied)."""
    from confluent_kafka import Producer

    from tests.integration.kafka_io import read_all

    target = Settings.from_env(
        bootstrap_servers=settings.bootstrap_servers,
        topic_prefix=f"replay{uuid.uuid4().hex[:6]}.",
        partitions=settings.partitions,
    )
    ensure_topics(target)
    producer = Producer(target.producer_config())
    count = 0
    for key, raw in read_all(settings, f"{settings.topic_prefix}events", lambda b: b, 120):
        producer.produce(f"{target.topic_prefix}events", key=key, value=raw)
        count += 1
        if count % 10_000 == 0:
            producer.flush(60)
    producer.flush(60)
    started = time.perf_counter()
    replayed = 0
    for partition in range(target.partitions):
        stats, _ = rebuild(target, partition)
        replayed += stats.events_replayed
    seconds = time.perf_counter() - started
    return {
        "events": count,
        "events_replayed": replayed,
        "seconds": seconds,
        "seconds_per_100k_events": seconds * 100_000 / max(replayed, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--submissions", type=int, default=20_000)
    parser.add_argument("--bootstrap-servers", default=os.environ.get("JOBLOG_BOOTSTRAP_SERVERS"))
    args = parser.parse_args()
    broker = None
    bootstrap = args.bootstrap_servers
    if not bootstrap:
        from engine.broker import LocalBroker

        broker = LocalBroker.temporary()
        broker.start()
        bootstrap = broker.bootstrap_servers
    try:
        settings = Settings.from_env(
            bootstrap_servers=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:6]}."
        )
        ensure_topics(settings)
        results: dict[str, object] = {
            "machine": {
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
                "platform": platform.platform(),
            },
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "pure_core": pure_core(args.submissions),
            "kafka": through_kafka(settings, args.submissions),
            "rebuild_with_snapshots": rebuild_times(settings),
            "rebuild_replay_all": replay_all(settings, args.submissions),
        }
    finally:
        if broker is not None:
            broker.stop()
    print(json.dumps(results, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    history = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    history.append(results)
    RESULTS.write_text(json.dumps(history, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
