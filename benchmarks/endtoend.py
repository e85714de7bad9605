"""End-to-end runs on a :class:`~benchmarks.cluster.JoblogCluster`: throughput and latency.

* :func:`throughput`: N no-op jobs (one submission each) submitted as fast as the client can,
  timed from the first submit to the moment the projection (DuckDB) holds all of them
  COMPLETED.
* :func:`latency`: no-op jobs submitted at a fixed rate; for each, the client's send time
  against the timestamps of its ``JobSubmitted``, ``JobStarted`` and ``JobCompleted`` events
  (decided), the moment a consumer of ``events`` sees them (committed), and the moment the
  projection shows the job COMPLETED. Everything runs on one machine, so one clock.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from benchmarks.cluster import ClusterError, JoblogCluster
from benchmarks.stats import latency_summary, paced
from engine import codec
from engine.client import CommandProducer
from engine.config import Settings
from engine.errors import CodecError
from engine.lifecycle.records import JobSpec
from engine.topics import Topics

NOOP = JobSpec("noop", task="noop")
_COMPLETED = (
    "SELECT count(*) AS n FROM jobs WHERE status = 'COMPLETED' AND starts_with(submission_id, ?)"
)


def submit(producer: CommandProducer, submission_id: str, spec: JobSpec = NOOP) -> None:
    """Sends one no-op submission without waiting; waits for room when the queue is full."""
    while True:
        try:
            producer.submit(spec, submission_id=submission_id, wait=False)
            return
        except BufferError:
            producer.flush(0.1)


def log_ends(settings: Settings) -> dict[str, int]:
    """Sum of the end offsets of each of the prefix's topics."""
    admin = AdminClient(cast("dict[str, str | int | float | bool]", settings.client_config()))
    metadata = admin.list_topics(timeout=10)
    reader = Consumer(settings.client_config(**{"group.id": f"ends-{uuid.uuid4().hex[:8]}"}))
    try:
        ends: dict[str, int] = {}
        for name, topic in metadata.topics.items():
            if not name.startswith(settings.topic_prefix):
                continue
            ends[name[len(settings.topic_prefix) :]] = sum(
                reader.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                for p in topic.partitions
            )
        return ends
    finally:
        reader.close()


def throughput(
    cluster: JoblogCluster,
    jobs: int,
    *,
    stall_timeout: float = 120.0,
    poll_s: float = 0.1,
    spec: JobSpec = NOOP,
) -> dict[str, Any]:
    """Submits ``jobs`` no-op jobs at once; returns jobs/s from first submit to last projected.

    ``spec`` is the job of each submission (a no-op task by default; e.g. with a
    concurrency key, to measure what a limit costs).

    Raises:
        ClusterError: a service died, or no job completed for ``stall_timeout`` seconds.
    """
    tag = f"t{uuid.uuid4().hex[:6]}-"
    before = log_ends(cluster.settings)
    producer = CommandProducer(cluster.settings)
    started = time.time()
    for index in range(jobs):
        submit(producer, f"{tag}{index:07d}", spec)
    producer.flush(120)
    submitted = time.time()
    samples: list[tuple[float, int]] = []
    last_progress = time.monotonic()
    while True:
        count = int(cluster.query(_COMPLETED, [tag])[0]["n"])
        now = time.time()
        if not samples or count > samples[-1][1]:
            last_progress = time.monotonic()
        samples.append((now, count))
        if count >= jobs:
            break
        if time.monotonic() - last_progress > stall_timeout:
            raise ClusterError(f"{count}/{jobs} jobs completed, none more in {stall_timeout}s")
        cluster.check_alive()
        time.sleep(poll_s)
    done = samples[-1][0]
    decided = cluster.query(
        "SELECT epoch_ms(max(finished_at)) AS last, count(*) AS jobs FROM jobs "
        "WHERE starts_with(submission_id, ?)",
        [tag],
    )[0]
    after = log_ends(cluster.settings)
    records = {topic: after.get(topic, 0) - before.get(topic, 0) for topic in after}
    seconds = done - started
    return {
        "jobs": jobs,
        "seconds": seconds,
        "jobs_per_s": jobs / seconds,
        "submit_seconds": submitted - started,
        "submit_per_s": jobs / max(submitted - started, 1e-9),
        "decided_seconds": int(decided["last"]) / 1000 - started,
        "decided_jobs_per_s": jobs / max(int(decided["last"]) / 1000 - started, 1e-9),
        "steady_jobs_per_s": _steady_rate(samples, jobs),
        "records_per_job": sum(records.values()) / jobs,
        "records": records,
        "poll_s": poll_s,
    }


def _steady_rate(samples: list[tuple[float, int]], jobs: int) -> float:
    """Completions per second between 10 % and 90 % of the jobs (no ramp-up, no tail)."""
    low = next(((t, n) for t, n in samples if n >= jobs * 0.1), None)
    high = next(((t, n) for t, n in samples if n >= jobs * 0.9), None)
    if low is None or high is None or high[0] <= low[0]:
        return float("nan")
    return (high[1] - low[1]) / (high[0] - low[0])


class _EventWatch(threading.Thread):
    """Reads ``events`` from its current end; keeps, per submission of ``tag``, when each
    event was decided (its timestamp) and when this consumer saw it."""

    NAMES = ("JobSubmitted", "JobStarted", "JobCompleted")

    def __init__(self, settings: Settings, tag: str) -> None:
        super().__init__(daemon=True)
        self.tag = tag
        self.decided: dict[str, dict[str, float]] = {}
        self.seen: dict[str, dict[str, float]] = {}
        self.stop = threading.Event()
        self.consumer = Consumer(
            settings.client_config(
                **{
                    "group.id": f"latency-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "fetch.wait.max.ms": 5,
                }
            )
        )
        topic = Topics(settings.topic_prefix).events
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign(
            [
                TopicPartition(
                    topic, p, self.consumer.get_watermark_offsets(TopicPartition(topic, p))[1]
                )
                for p in partitions
            ]
        )

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                for message in self.consumer.consume(500, timeout=0.05):
                    arrived = time.time()
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            raise ClusterError(f"event watch: {error.str()}")
                        continue
                    try:
                        event = codec.decode_event(message.value() or b"")
                    except CodecError:
                        continue
                    name = event.name
                    if name in self.NAMES and event.submission_id.startswith(self.tag):
                        self.decided.setdefault(event.submission_id, {})[name] = (
                            event.timestamp / 1000
                        )
                        self.seen.setdefault(event.submission_id, {})[name] = arrived
        finally:
            self.consumer.close()


class _ProjectionWatch(threading.Thread):
    """Polls the projection; keeps when each job of ``tag`` was first seen COMPLETED there."""

    def __init__(self, cluster: JoblogCluster, tag: str, every_s: float) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.tag = tag
        self.every_s = every_s
        self.projected: dict[str, float] = {}
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        since = 0
        try:
            while not self.stop.is_set():
                rows = self.cluster.query(
                    "SELECT submission_id, epoch_ms(finished_at) AS f FROM jobs "
                    "WHERE status = 'COMPLETED' AND starts_with(submission_id, ?) "
                    "AND epoch_ms(finished_at) >= ?",
                    [self.tag, since],
                )
                now = time.time()
                for row in rows:
                    self.projected.setdefault(row["submission_id"], now)
                if rows:
                    since = max(int(row["f"]) for row in rows) - 5_000
                self.stop.wait(self.every_s)
        except BaseException as exc:  # reported by latency()
            self.error = exc


def latency(
    cluster: JoblogCluster,
    rate: float,
    seconds: float,
    *,
    poll_s: float = 0.05,
    keep_samples: bool = False,
) -> dict[str, Any]:
    """Submits no-op jobs at ``rate`` per second for ``seconds``; returns latency percentiles.

    Raises:
        ClusterError: a service died, or the jobs did not all complete within 120 s.
    """
    tag = f"l{uuid.uuid4().hex[:6]}-"
    events = _EventWatch(cluster.settings, tag)
    projection = _ProjectionWatch(cluster, tag, poll_s)
    events.start()
    projection.start()
    producer = CommandProducer(cluster.settings)
    total = int(rate * seconds)
    sent: dict[str, float] = {}
    started = time.time()
    for index in paced(total, rate, started):
        submission_id = f"{tag}{index:07d}"
        sent[submission_id] = time.time()
        submit(producer, submission_id)
    producer.flush(30)
    sent_for = time.time() - started
    deadline = time.monotonic() + 120
    while len(projection.projected) < total:
        if projection.error is not None:
            raise ClusterError(f"projection watch failed: {projection.error}")
        if time.monotonic() > deadline:
            raise ClusterError(f"{len(projection.projected)}/{total} jobs projected after 120 s")
        cluster.check_alive()
        time.sleep(0.1)
    time.sleep(0.5)
    events.stop.set()
    projection.stop.set()
    events.join(10)
    projection.join(10)

    def spans(table: dict[str, dict[str, float]], name: str) -> list[float]:
        return [table[s][name] - at for s, at in sent.items() if name in table.get(s, {})]

    completed_at = {s: events.decided[s]["JobCompleted"] for s in sent if s in events.decided}
    result: dict[str, Any] = {
        "rate": rate,
        "jobs": total,
        "achieved_rate": total / sent_for,
        "decided": {
            "submitted": latency_summary(spans(events.decided, "JobSubmitted")),
            "running": latency_summary(spans(events.decided, "JobStarted")),
            "completed": latency_summary(spans(events.decided, "JobCompleted")),
        },
        "seen": {
            "submitted": latency_summary(spans(events.seen, "JobSubmitted")),
            "running": latency_summary(spans(events.seen, "JobStarted")),
            "completed": latency_summary(spans(events.seen, "JobCompleted")),
        },
        "projected": latency_summary([projection.projected[s] - at for s, at in sent.items()]),
        "projection_lag": latency_summary(
            [projection.projected[s] - at for s, at in completed_at.items()]
        ),
        "poll_s": poll_s,
    }
    if keep_samples:
        result["samples"] = [
            {
                "sent": at - started,
                **{name: t - at for name, t in events.decided.get(s, {}).items()},
                "projected": projection.projected[s] - at,
            }
            for s, at in sent.items()
        ]
    result["projection_lag"]["note"] = (
        f"JobCompleted decided -> first poll showing it; polls every {poll_s * 1000:.0f} ms"
    )
    return result
