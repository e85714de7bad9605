"""Failover on a cluster of three brokers: the time with no decision when a broker or a
scheduler instance is SIGKILLed mid-run, and proof that nothing was lost or doubled.

``python -m benchmarks failover [--jobs 10000] [--rate 200] [--schedulers 3] [--case ...]``

A :class:`~engine.broker.cluster.LocalCluster` of three KRaft nodes starts in a temporary
directory (or ``--bootstrap-servers`` names a cluster whose nodes this benchmark cannot kill:
then the broker case is skipped). Each case runs joblog's services as processes
(:class:`~benchmarks.cluster.JoblogCluster`: ``--schedulers`` scheduler instances of one
group, two workers of 16 slots, the projector) on a fresh topic prefix of ``--partitions``
partitions at replication factor 3 with ``min.insync.replicas=2``, submits ``--jobs`` no-op
jobs (one submission each) at ``--rate`` jobs/s, an open-loop load below the capacity of the
machine, and once ``--kill-at`` of them were submitted SIGKILLs

* ``broker``: the node leading most of the prefix's partitions (started again at the end);
* ``scheduler``: the instance ``scheduler-2``, which never comes back;
* ``scheduler-short``: the same, with every scheduler at ``--transaction-timeout-ms
  10000`` (``--short-transaction-timeout-ms``) instead of the default 30 s.

Figures of each case, from the ``events`` topic read back after the run (timestamps are the
scheduler's; one machine, one clock):

* ``takeover_ms`` (scheduler cases): from the kill to the first decision on a partition the
  dead instance held: the failover gap of its submissions;
* ``gap_ms``: the longest time with no decision at all, from the kill to the last decision;
  ``completion_gap_ms``: the same for ``JobCompleted`` decisions only (under a steady load,
  submissions go on being accepted while no job runs: this is the time work stood still);
* ``projection_stall_ms``: the longest time after the kill in which the projection's count
  of COMPLETED jobs did not grow (sampled every 0.2 s): what readers saw;
* ``reader_stall_ms``: per partition of ``events``, the longest time after the kill in which
  a read-committed consumer got none of its records: a dead scheduler's open transaction
  holds its partitions' readers back until the broker aborts it;
* ``seconds`` / ``jobs_per_s``: first submit to the last job COMPLETED in the projection;
  ``catch_up_seconds``: from the last submit to then;
* ``lost`` / ``doubled``: jobs with no ``JobCompleted`` / with more than one; ``events_twice``
  and ``dispatches_twice``: ids written more than once; ``gaps``: submissions whose event
  sequence numbers are not 1..n; ``scheduler_restarts``: "restarting on a fresh book" lines.

Writes ``benchmarks/results/failover.json``; ``--markdown`` writes the table between the
``failover`` markers of BENCHMARKS.md. Exits 1 when anything was lost or doubled.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from benchmarks.cluster import ClusterError, JoblogCluster
from benchmarks.endtoend import submit
from benchmarks.machine import facts
from engine import codec, kafka
from engine.broker.cluster import LocalCluster
from engine.client import CommandProducer
from engine.config import Settings
from engine.errors import CodecError
from engine.lifecycle.records import Event
from engine.partitioning import partition_for
from engine.topics import Topics
from projections.errors import ProjectionError

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "failover.json"
MARKDOWN = ROOT / "BENCHMARKS.md"
START = "<!-- failover:start (written by python -m benchmarks failover) -->"
END = "<!-- failover:end -->"
CASES = ("broker", "scheduler", "scheduler-short")
_COMPLETED = (
    "SELECT count(*) AS n FROM jobs WHERE status = 'COMPLETED' AND starts_with(submission_id, ?)"
)


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- reading back


def _read_topic(settings: Settings, topic: str, timeout_s: float = 120.0) -> Iterator[bytes]:
    """Every committed value of a topic, partition by partition."""
    reader: Consumer = kafka.consumer(
        settings,
        f"{settings.topic_prefix}failover-{uuid.uuid4().hex[:8]}",
        {"enable.partition.eof": True},
    )
    try:
        partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
        for partition in sorted(partitions):
            for message in kafka.read_to_end(reader, topic, partition, 0, timeout_s):
                yield message.value() or b""
    finally:
        reader.close()


def _events(settings: Settings) -> list[Event]:
    out = []
    for value in _read_topic(settings, Topics(settings.topic_prefix).events):
        with contextlib.suppress(CodecError):
            out.append(codec.decode_event(value))
    return out


def audit(settings: Settings, tag: str, jobs: int) -> dict[str, Any]:
    """What the log says about the run's ``jobs`` submissions: lost, doubled, repeated ids."""
    events = [e for e in _events(settings) if e.submission_id.startswith(tag)]
    completed = Counter(e.submission_id for e in events if e.name == "JobCompleted")
    ids = Counter(e.event_id for e in events)
    seqs: dict[str, list[int]] = {}
    for event in events:
        if event.seq > 0:
            seqs.setdefault(event.submission_id, []).append(event.seq)
    dispatches: Counter[str] = Counter()
    for value in _read_topic(settings, Topics(settings.topic_prefix).dispatch("default")):
        with contextlib.suppress(CodecError):
            dispatch = codec.decode_dispatch(value)
            if dispatch.submission_id.startswith(tag):
                dispatches[dispatch.dispatch_id] += 1
    return {
        "events": len(events),
        "lost": jobs - len(completed),
        "doubled": sum(1 for n in completed.values() if n > 1),
        "events_twice": sum(1 for n in ids.values() if n > 1),
        "dispatches": len(dispatches),
        "dispatches_twice": sum(1 for n in dispatches.values() if n > 1),
        "gaps": sum(1 for s in seqs.values() if s != list(range(1, len(s) + 1))),
        "_events": events,
    }


def longest_gap_ms(events: list[Event], after_ms: int) -> int:
    """The longest time with no decision, from ``after_ms`` to the last decision."""
    stamps = sorted(e.timestamp for e in events if e.timestamp >= after_ms)
    return max((b - a for a, b in itertools.pairwise([after_ms, *stamps])), default=0)


def first_decision_ms(events: list[Event], partitions: set[int], count: int, after_ms: int) -> int:
    """From ``after_ms`` to the first decision on one of ``partitions`` (-1: none)."""
    stamps = [
        e.timestamp
        for e in events
        if e.timestamp >= after_ms and partition_for(e.submission_id, count) in partitions
    ]
    return min(stamps) - after_ms if stamps else -1


def per_second(events: list[Event], after_ms: int) -> list[int]:
    """Decisions in each second from ``after_ms`` on."""
    counts = Counter((e.timestamp - after_ms) // 1000 for e in events if e.timestamp >= after_ms)
    return [counts.get(second, 0) for second in range(max(counts, default=-1) + 1)]


def group_partitions(settings: Settings, instance_id: str) -> set[int]:
    """The partitions of ``commands`` the scheduler instance ``instance_id`` holds."""
    admin = kafka.admin_client(settings)
    group = f"{settings.topic_prefix}scheduler"
    commands = Topics(settings.topic_prefix).commands
    description = admin.describe_consumer_groups([group], request_timeout=10)[group].result(15)
    for member in description.members:
        if member.group_instance_id == instance_id and member.assignment is not None:
            return {
                tp.partition for tp in member.assignment.topic_partitions if tp.topic == commands
            }
    return set()


# --------------------------------------------------------------------------- one case


class _ProjectionSamples(threading.Thread):
    """Samples how many of the run's jobs the projection shows COMPLETED, every 0.2 s."""

    def __init__(self, cluster: JoblogCluster, tag: str) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.tag = tag
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    @property
    def count(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def run(self) -> None:
        while not self.stop.wait(0.2):
            with contextlib.suppress(ProjectionError):
                count = int(self.cluster.query(_COMPLETED, [self.tag])[0]["n"])
                self.samples.append((time.time(), count))

    def longest_stall_ms(self, after_s: float) -> int:
        """The longest time after ``after_s`` in which the count did not grow, until the
        last job showed."""
        changes = [after_s]
        for (_, before), (at, count) in itertools.pairwise(self.samples):
            if at > after_s and count > before:
                changes.append(at)
        return int(max((b - a for a, b in itertools.pairwise(changes)), default=0) * 1000)


class _ArrivalWatch(threading.Thread):
    """Reads ``events`` read-committed without decoding; keeps when records of each partition
    arrived, as any reader (the projector, a watcher, a waiting client) would get them."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.arrivals: dict[int, list[float]] = {}
        self.stop = threading.Event()
        self.consumer: Consumer = kafka.consumer(
            settings,
            f"{settings.topic_prefix}failover-arrivals",
            {"auto.offset.reset": "earliest", "fetch.wait.max.ms": 10},
        )
        self.consumer.subscribe([Topics(settings.topic_prefix).events])

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                messages = self.consumer.consume(1000, timeout=0.05)
                now = time.time()
                for partition in {m.partition() for m in messages if m.error() is None}:
                    self.arrivals.setdefault(partition or 0, []).append(now)
        finally:
            self.consumer.close()

    def longest_stall_ms(self, after_s: float) -> dict[int, int]:
        """Per partition, the longest time after ``after_s`` without a record arriving, until
        its last record."""
        return {
            partition: int(
                max(
                    (
                        b - a
                        for a, b in itertools.pairwise(
                            [after_s, *(t for t in times if t > after_s)]
                        )
                    ),
                    default=0,
                )
                * 1000
            )
            for partition, times in sorted(self.arrivals.items())
        }


def run_case(
    case: str,
    bootstrap_servers: str,
    workdir: Path,
    *,
    jobs: int,
    rate: float,
    schedulers: int,
    partitions: int,
    kill_at: float,
    nodes: LocalCluster | None,
    scheduler_options: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Runs the services on a fresh prefix, submits ``jobs`` at ``rate`` jobs/s, kills the
    case's victim once ``kill_at`` of them were submitted; returns the figures."""
    cluster = JoblogCluster(
        bootstrap_servers,
        workdir,
        workers=2,
        concurrency=16,
        schedulers=schedulers,
        partitions=partitions,
        replication_factor=3,
        scheduler_options=scheduler_options,
    )
    _say(
        f"{case}: {schedulers} schedulers {' '.join(scheduler_options)}, 2 workers, projector "
        f"on {cluster.settings.topic_prefix}"
    )
    cluster.start()
    tag = f"f{uuid.uuid4().hex[:6]}-"
    victim = ""
    owned: set[int] = set()
    killed_at = 0
    projection = _ProjectionSamples(cluster, tag)
    arrivals = _ArrivalWatch(cluster.settings)
    try:
        producer = CommandProducer(cluster.settings)
        projection.start()
        arrivals.start()
        started = time.time()
        for index in range(jobs):
            if index == int(jobs * kill_at):
                producer.flush(30)
                victim, owned = _kill(case, cluster, nodes)
                killed_at = int(time.time() * 1000)
                _say(f"{case}: {victim} SIGKILLed at {projection.count}/{jobs} completed")
            pause = started + index / rate - time.time()
            if pause > 0:
                producer.flush(pause)
            submit(producer, f"{tag}{index:07d}")
        producer.flush(120)
        submitted = time.time()
        last_count, last_progress = 0, time.monotonic()
        while projection.count < jobs:
            if projection.count > last_count:
                last_count, last_progress = projection.count, time.monotonic()
            if time.monotonic() - last_progress > 180:
                raise ClusterError(f"{last_count}/{jobs} jobs completed, none more in 180 s")
            cluster.check_alive()
            time.sleep(0.1)
        done = projection.samples[-1][0]
        restarts = {
            service.name: service.log_path.read_text(errors="replace").count(
                "restarting on a fresh book"
            )
            for service in cluster.services
            if service.name.startswith("scheduler")
        }
    finally:
        projection.stop.set()
        arrivals.stop.set()
        arrivals.join(10)
        cluster.stop()
    if case == "broker" and nodes is not None and victim:
        nodes.start_node(int(victim.removeprefix("node-")))
        nodes.wait_for_brokers(len(nodes.nodes), timeout=120)
    found = audit(cluster.settings, tag, jobs)
    events = found.pop("_events")
    last_decision = max(e.timestamp for e in events) / 1000
    figures: dict[str, Any] = {
        "case": case,
        "scheduler_options": list(scheduler_options),
        "jobs": jobs,
        "rate": rate,
        "schedulers": schedulers,
        "partitions": partitions,
        "victim": victim,
        "victim_partitions": sorted(owned),
        "seconds": done - started,
        "jobs_per_s": jobs / (done - started),
        "submit_seconds": submitted - started,
        "catch_up_seconds": done - submitted,
        "decided_seconds": last_decision - started,
        "killed_after_s": killed_at / 1000 - started,
        "gap_ms": longest_gap_ms(events, killed_at),
        "completion_gap_ms": longest_gap_ms(
            [e for e in events if e.name == "JobCompleted"], killed_at
        ),
        "projection_stall_ms": projection.longest_stall_ms(killed_at / 1000),
        "reader_stall_ms": arrivals.longest_stall_ms(killed_at / 1000),
        "decisions_per_s_after_kill": per_second(events, killed_at),
        "scheduler_restarts": restarts,
        **found,
    }
    if case.startswith("scheduler"):
        figures["takeover_ms"] = first_decision_ms(events, owned, partitions, killed_at)
    _say(f"{case}: {json.dumps(figures)}")
    return figures


def _kill(case: str, cluster: JoblogCluster, nodes: LocalCluster | None) -> tuple[str, set[int]]:
    if case == "broker":
        assert nodes is not None
        leaders = Counter(n for n in nodes.leaders(cluster.settings.topic_prefix).values() if n > 0)
        node = leaders.most_common(1)[0][0]
        nodes.kill(node)
        return f"node-{node}", set()
    owned = group_partitions(cluster.settings, cluster.instance_id(2))
    cluster.kill("scheduler-2")
    return "scheduler-2", owned


# --------------------------------------------------------------------------- report


def table(results: dict[str, Any]) -> str:
    """The figures as a Markdown table."""
    rows = [
        "| case | victim | jobs | first decision on the victim's partitions | longest time "
        "without a decision / a job completed | longest time a partition of `events` showed "
        "readers nothing new | longest time the projection stood still | "
        "time to completion | catch-up after the last submit | lost / doubled | events, "
        "dispatches twice | scheduler restarts |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for run in results["runs"]:
        gap = run["gap_ms"]
        takeover = run.get("takeover_ms")
        completion = run["completion_gap_ms"]
        options = " ".join(run["scheduler_options"])
        victim = run["victim"] + (
            f" (partitions {run['victim_partitions']})" if run["victim_partitions"] else ""
        )
        rows.append(
            f"| {run['case']} SIGKILL{f' ({options})' if options else ''} | {victim} | "
            f"{run['jobs']:,} at {run['rate']:.0f}/s | "
            f"{'-' if takeover is None else f'{takeover / 1000:.1f} s'} | "
            f"{gap / 1000:.1f} s / {completion / 1000:.1f} s | "
            f"{max(run['reader_stall_ms'].values(), default=0) / 1000:.1f} s | "
            f"{run['projection_stall_ms'] / 1000:.1f} s | "
            f"{run['seconds']:.1f} s ({run['jobs_per_s']:.0f} jobs/s) | "
            f"{run['catch_up_seconds']:.1f} s | {run['lost']} / {run['doubled']} | "
            f"{run['events_twice']}, {run['dispatches_twice']} | "
            f"{sum(run['scheduler_restarts'].values())} |"
        )
    machine = results["machine"]
    return (
        f"Measured {results['when']} with `{results['command']}` on {machine.get('cpus')} cores "
        f"({machine.get('cpu_model')}): the three brokers, "
        f"{results['runs'][0]['schedulers']} schedulers, two workers and the projector all on "
        "this one machine.\n\n" + "\n".join(rows) + "\n"
    )


def write_markdown(path: Path, results: dict[str, Any]) -> None:
    """Writes the table between the failover markers of ``path`` (appended if absent)."""
    text = path.read_text() if path.exists() else ""
    block = f"{START}\n{table(results)}{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Failover on three brokers\n\n" + block + "\n"
    path.write_text(text)


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks failover",
        description="SIGKILL a broker, then a scheduler instance, mid-run on three brokers.",
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=200.0, help="jobs submitted per second")
    parser.add_argument(
        "--short-transaction-timeout-ms",
        type=int,
        default=10_000,
        help="the schedulers' --transaction-timeout-ms in the scheduler-short case",
    )
    parser.add_argument("--schedulers", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--kill-at", type=float, default=0.3, help="fraction completed")
    parser.add_argument("--case", choices=CASES, action="append", help="default: all")
    parser.add_argument(
        "--bootstrap-servers",
        help="an existing cluster of three brokers (its brokers cannot be killed from here)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--markdown", type=Path, nargs="?", const=MARKDOWN, help="write the table (BENCHMARKS.md)"
    )
    args = parser.parse_args(argv)
    if args.schedulers < 2:
        parser.error("--schedulers must be at least 2: one is killed")
    cases = args.case or list(CASES)
    short = ("--transaction-timeout-ms", str(args.short_transaction_timeout_ms))
    if args.bootstrap_servers and "broker" in cases:
        _say("an existing cluster: its brokers are not ours to kill; the broker case is skipped")
        cases = [case for case in cases if case != "broker"]
    command = "python -m benchmarks failover " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    workdir = Path(tempfile.mkdtemp(prefix="joblog-failover-"))
    with contextlib.ExitStack() as stack:
        nodes = None
        bootstrap = args.bootstrap_servers
        if bootstrap is None:
            _say("starting three KRaft nodes")
            nodes = stack.enter_context(LocalCluster.temporary(brokers=3))
            bootstrap = nodes.bootstrap_servers
        runs = [
            run_case(
                case,
                bootstrap,
                workdir,
                jobs=args.jobs,
                rate=args.rate,
                schedulers=args.schedulers,
                partitions=args.partitions,
                kill_at=args.kill_at,
                nodes=nodes,
                scheduler_options=short if case == "scheduler-short" else (),
            )
            for case in cases
        ]
    results = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": command.strip(),
        "machine": facts(),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    if args.markdown is not None:
        write_markdown(args.markdown, results)
        _say(f"figures written to {args.markdown}")
    _say(f"results in {args.out}; service logs in {workdir}")
    bad = [r for r in runs if r["lost"] or r["doubled"] or r["events_twice"] or r["gaps"]]
    return 1 if bad or any(r["dispatches_twice"] for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
