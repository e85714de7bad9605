"""Projector benchmark: events projected per second, and lag under a steady load.

Three measurements on one event log made by the real decider
(:func:`engine.lifecycle.workload.simulate`, ~12 events per submission, every terminal status):

* ``in_process``: decode + fold + DuckDB write in batches, no Kafka (the projector's ceiling);
* ``kafka_backlog``: the log already on the ``events`` topic, a projector started from
  nothing: events per second until it has caught up;
* ``steady_load``: a producer writes events at a fixed rate, in transactions every 100 ms,
  while the projector runs; the lag (events on the topic not yet in the file) is sampled.

Usage:
    python -m benchmarks.projector_bench [--submissions 10000] [--rate 5000] [--seconds 20]
        [--bootstrap-servers HOST:PORT]

Without ``--bootstrap-servers`` (or ``JOBLOG_BOOTSTRAP_SERVERS``) a local broker is started in
a temporary directory. Figures are printed and appended to ``benchmarks/results/projector.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import Producer

from benchmarks.stats import percentile
from engine import codec, collector
from engine.admin import ensure_topics
from engine.config import Settings
from engine.lifecycle.records import Event
from engine.lifecycle.workload import simulate
from engine.topics import Topics
from projections import Projector, lag
from projections.fold import Fold, Position
from projections.store import ProjectionStore

RESULTS = Path(__file__).parent / "results" / "projector.json"


@contextmanager
def _as_in_the_service() -> Iterator[None]:
    """The garbage collector's thresholds of the projector's process, for the time of a run."""
    previous = gc.get_threshold()
    collector.tune_for_service()
    try:
        yield
    finally:
        gc.set_threshold(*previous)


@_as_in_the_service()
def in_process(
    encoded: Sequence[tuple[bytes, bytes]], workdir: Path, batch: int
) -> dict[str, float]:
    """Decode, fold and write in batches of ``batch`` events, without Kafka."""
    path = workdir / "in-process.duckdb"
    fold = Fold()
    decode = fold_seconds = write = 0.0
    with ProjectionStore(path, topic_prefix="bench.") as store:
        started = time.perf_counter()
        for start in range(0, len(encoded), batch):
            t0 = time.perf_counter()
            events = [codec.decode_event(raw) for _, raw in encoded[start : start + batch]]
            t1 = time.perf_counter()
            fold.prefetch(events, (), store)
            for offset, event in enumerate(events, start=start):
                fold.event(event, Position("bench.events", 0, offset))
            changes = fold.take()
            t2 = time.perf_counter()
            store.write(changes)
            t3 = time.perf_counter()
            decode += t1 - t0
            fold_seconds += t2 - t1
            write += t3 - t2
        seconds = time.perf_counter() - started
    return {
        "events": len(encoded),
        "batch": batch,
        "seconds": seconds,
        "events_per_s": len(encoded) / seconds,
        "decode_share": decode / seconds,
        "fold_share": fold_seconds / seconds,
        "write_share": write / seconds,
        "file_mb": path.stat().st_size / 1e6,
    }


def produce(
    settings: Settings, encoded: Sequence[tuple[bytes, bytes]], per_txn: int = 2_000
) -> None:
    topic = Topics(settings.topic_prefix).events
    producer = Producer(
        settings.producer_config(
            **{"transactional.id": f"bench-{uuid.uuid4().hex}", "linger.ms": 20}
        )
    )
    producer.init_transactions(60)
    producer.begin_transaction()
    for index, (key, value) in enumerate(encoded, start=1):
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
        if index % per_txn == 0:
            producer.commit_transaction(60)
            producer.begin_transaction()
    producer.commit_transaction(60)


def caught_up(settings: Settings, db: Path) -> tuple[bool, int]:
    rows = [row for row in lag(settings, db) if row.topic.endswith("events")]
    behind = sum(row.lag for row in rows)
    return bool(rows) and behind == 0, behind


@_as_in_the_service()
def kafka_backlog(
    settings: Settings, encoded: Sequence[tuple[bytes, bytes]], workdir: Path
) -> dict[str, float]:
    """The whole log on the topic first; then one projector from nothing to caught up."""
    produce(settings, encoded)
    db = workdir / "backlog.duckdb"
    projector = Projector(settings, db, workers=False)
    stop = threading.Event()
    thread = threading.Thread(target=projector.run, args=(stop,), daemon=True)
    started = time.perf_counter()
    thread.start()
    if not projector.ready.wait(120):
        raise RuntimeError("the projector got no partitions in 120 s")
    ready_at = time.perf_counter()
    while projector.stats.events < len(encoded):
        time.sleep(0.05)
        if not thread.is_alive():
            raise RuntimeError("the projector stopped")
    seconds = time.perf_counter() - ready_at
    stop.set()
    thread.join(60)
    return {
        "events": projector.stats.events,
        "batches": projector.stats.batches,
        "startup_seconds": ready_at - started,
        "seconds": seconds,
        "events_per_s": projector.stats.events / seconds,
    }


def steady_load(
    settings: Settings,
    encoded: Sequence[tuple[bytes, bytes]],
    workdir: Path,
    rate: int,
    seconds: float,
) -> dict[str, float]:
    """Events produced at ``rate`` per second while the projector runs; lag sampled."""
    db = workdir / "steady.duckdb"
    projector = Projector(settings, db, workers=False)
    stop = threading.Event()
    thread = threading.Thread(target=projector.run, args=(stop,), daemon=True)
    thread.start()
    if not projector.ready.wait(120):
        raise RuntimeError("the projector got no partitions in 120 s")
    topic = Topics(settings.topic_prefix).events
    producer = Producer(
        settings.producer_config(
            **{"transactional.id": f"steady-{uuid.uuid4().hex}", "linger.ms": 5}
        )
    )
    producer.init_transactions(60)
    total = min(len(encoded), int(rate * seconds))
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(caught_up(settings, db)[1])
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    sent = 0
    tick = 0.1
    while sent < total:
        due = min(total, int((time.perf_counter() - started + tick) * rate))
        producer.begin_transaction()
        for key, value in encoded[sent:due]:
            producer.produce(topic, key=key, value=value)
        producer.commit_transaction(60)
        sent = due
        time.sleep(max(0.0, started + sent / rate - time.perf_counter()))
    produced_in = time.perf_counter() - started
    while not caught_up(settings, db)[0]:
        time.sleep(0.1)
    drained_in = time.perf_counter() - started - produced_in
    done.set()
    sampler.join(10)
    stop.set()
    thread.join(60)
    return {
        "target_rate": rate,
        "events": sent,
        "achieved_rate": sent / produced_in,
        "lag_p50": statistics.median(samples) if samples else 0,
        "lag_p99": percentile(samples, 0.99) if samples else 0,
        "lag_max": max(samples) if samples else 0,
        # events behind at a steady rate, as time: how old the newest unprojected event is
        "lag_p50_s": (statistics.median(samples) if samples else 0) / rate,
        "lag_p99_s": (percentile(samples, 0.99) if samples else 0) / rate,
        "lag_max_s": (max(samples) if samples else 0) / rate,
        "lag_samples": len(samples),
        "drain_seconds_after_producer_stopped": drained_in,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--submissions", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--rate", type=int, default=5_000, help="events/s of the steady load")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the steady load")
    parser.add_argument("--bootstrap-servers", default=os.environ.get("JOBLOG_BOOTSTRAP_SERVERS"))
    args = parser.parse_args()

    made = time.perf_counter()
    events: list[Event] = simulate(args.submissions, seed=1).events
    encoded = [(e.submission_id.encode(), codec.encode_event(e)) for e in events]
    print(
        f"{len(events)} events of {args.submissions} submissions made in "
        f"{time.perf_counter() - made:.1f}s",
        file=sys.stderr,
    )

    broker = None
    bootstrap = args.bootstrap_servers
    if not bootstrap:
        from engine.broker import LocalBroker

        broker = LocalBroker.temporary()
        broker.start()
        bootstrap = broker.bootstrap_servers
    try:
        with tempfile.TemporaryDirectory(prefix="projector-bench-") as tmp:
            workdir = Path(tmp)
            results: dict[str, object] = {
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": sys.version.split()[0],
                    "platform": platform.platform(),
                },
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "submissions": args.submissions,
            }
            results["in_process"] = in_process(encoded, workdir, args.batch)
            print(json.dumps(results["in_process"]), file=sys.stderr)
            backlog = Settings.from_env(
                bootstrap_servers=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:6]}."
            )
            ensure_topics(backlog)
            results["kafka_backlog"] = kafka_backlog(backlog, encoded, workdir)
            print(json.dumps(results["kafka_backlog"]), file=sys.stderr)
            steady = Settings.from_env(
                bootstrap_servers=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:6]}."
            )
            ensure_topics(steady)
            results["steady_load"] = steady_load(steady, encoded, workdir, args.rate, args.seconds)
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
