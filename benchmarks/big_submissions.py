"""Big submissions: one graph of many jobs, and one flat submission of many jobs, end to end.

``python -m benchmarks.big_submissions [--smoke] [--workers N] [--bootstrap-servers ...]``

On a local Apache Kafka broker (or ``--bootstrap-servers`` / ``JOBLOG_BOOTSTRAP_SERVERS``),
with one scheduler (``python -m engine.scheduler``) and ``--workers`` workers
(``python -m engine.worker --tasks benchmarks.tasks``, default ``pool`` isolation), fresh
topics and fresh processes for each case:

* ``dag``: one submission of a layered graph, ``layers`` x ``width`` no-op jobs, each job of a
  layer after the first depending on two jobs of the previous layer (10,000 jobs: 50 x 200;
  ``--smoke``: 5 x 200);
* ``flat``: one submission of N independent no-op jobs (100,000; ``--smoke``: 5,000).

For each case: the wall time from the submit (encode + send, acknowledged) to the moment a
read-committed consumer sees the submission's ``SubmissionCompleted``, found by reading only
the last records of the submission's partition of ``events`` every 200 ms (never the whole
topic), and jobs/s over it; the same up to the event's own timestamp (the scheduler's
decision, before its transaction committed); when the ``SubmissionAccepted`` was decided
and when the partition's committed end first grew (the first events of the submission
visible to readers);
the scheduler's peak RSS (``VmRSS`` sampled every 100 ms, and ``VmHWM``, the kernel's peak
since the process started) and its CPU seconds over the case (the workers' and the
broker's beside them); the longest time the submission's partition of ``events`` did not
grow; and, read once the services have stopped, the records on ``state``, ``events`` and
``commands`` of the run (count, bytes, the largest record and its key).

Nothing is asserted about the figures. Writes the run to
``benchmarks/results/big_submissions.json`` (one entry per mode, the last run of each).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from benchmarks.cluster import (
    ClusterError,
    JoblogCluster,
    _assigned_members,
    process_cpu_seconds,
    tree_cpu_seconds,
)
from benchmarks.machine import facts, load_average
from engine import codec
from engine.admin import ensure_topics
from engine.client import CommandProducer, submit_command
from engine.errors import CodecError
from engine.lifecycle.records import (
    CommandRejected,
    Event,
    JobSpec,
    SubmissionAccepted,
    SubmissionCompleted,
)
from engine.partitioning import partition_for
from engine.topics import Topics
from engine.watch import events_consumer

RESULTS = Path(__file__).resolve().parent / "results" / "big_submissions.json"

#: Records at the end of the submission's partition read on each look for its end.
TAIL = 64


@dataclass(frozen=True)
class Sizes:
    """The sizes of one mode."""

    dag_layers: int
    dag_width: int
    flat_jobs: int


MODES = {
    "smoke": Sizes(dag_layers=5, dag_width=200, flat_jobs=5_000),
    "full": Sizes(dag_layers=50, dag_width=200, flat_jobs=100_000),
}


def say(message: str) -> None:
    """A progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the jobs


def layered_dag(layers: int, width: int) -> list[JobSpec]:
    """``layers`` x ``width`` no-op jobs; job ``i`` of a layer after the first depends on jobs
    ``i`` and ``i + 1`` (mod ``width``) of the layer before."""
    jobs: list[JobSpec] = []
    for layer in range(layers):
        for index in range(width):
            depends: tuple[str, ...] = ()
            if layer:
                depends = (
                    f"l{layer - 1:02d}-{index:03d}",
                    f"l{layer - 1:02d}-{(index + 1) % width:03d}",
                )
            jobs.append(JobSpec(f"l{layer:02d}-{index:03d}", task="noop", depends_on=depends))
    return jobs


def flat(count: int) -> list[JobSpec]:
    """``count`` independent no-op jobs."""
    return [JobSpec(f"j{index:06d}", task="noop") for index in range(count)]


# --------------------------------------------------------------------------- the services


class SchedulerAndWorkers(JoblogCluster):
    """The benchmark cluster without a projector: one scheduler and ``workers`` workers."""

    def start(self, timeout: float = 120.0) -> None:
        ensure_topics(self.settings)
        self._spawn_scheduler_and_workers()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        prefix = self.settings.topic_prefix
        wanted = {f"{prefix}scheduler": 1, f"{prefix}workers.default": self.workers}
        admin = AdminClient(
            cast("dict[str, str | int | float | bool]", self.settings.client_config())
        )
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            members = _assigned_members(admin, list(wanted))
            if all(members.get(group, 0) >= count for group, count in wanted.items()):
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"services not ready after {timeout:.0f}s: members {members}, want {wanted}"
                )
            time.sleep(0.2)

    def pid(self, name: str) -> int:
        return self.pids()[name]

    def log_text(self, name: str) -> str:
        for service in self.services:
            if service.name == name:
                service.log.flush()
                return service.log_path.read_text(errors="replace")
        return ""


class MemorySampler(threading.Thread):
    """Samples a process's ``VmRSS`` every ``every_s``; keeps the peak and a 1 s timeline."""

    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.every_s = every_s
        self.peak_kib = 0
        self.timeline: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        last = -1.0
        while not self.stop.is_set():
            rss = status_kib(self.pid).get("VmRSS")
            if rss is not None:
                self.peak_kib = max(self.peak_kib, rss)
                now = time.monotonic() - started
                if now - last >= 1.0:
                    self.timeline.append((round(now, 1), rss))
                    last = now
            self.stop.wait(self.every_s)


def status_kib(pid: int) -> dict[str, int]:
    """The ``Vm*`` lines of ``/proc/<pid>/status``, in KiB."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("Vm") and line.endswith("kB"):
            name, value = line.split(":", 1)
            out[name] = int(value.split()[0])
    return out


# --------------------------------------------------------------------------- the end


class TailWatch:
    """Looks at the last records of one submission's partition of ``events`` for its end."""

    def __init__(self, cluster: SchedulerAndWorkers, submission_id: str) -> None:
        self.topic = Topics(cluster.settings.topic_prefix).events
        self.key = submission_id.encode()
        self.consumer = events_consumer(cluster.settings, **{"fetch.wait.max.ms": 10})
        partitions = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic]
        self.partition = partition_for(submission_id, len(partitions.partitions))

    def end_offset(self) -> int:
        tp = TopicPartition(self.topic, self.partition)
        return int(self.consumer.get_watermark_offsets(tp, timeout=10)[1])

    def read(self, start: int, limit: int, *, until_key: bool = False) -> list[Event]:
        """This submission's events from ``start`` to the (committed) end, at most ``limit``
        records read; with ``until_key``, only up to the first of this submission."""
        self.consumer.assign([TopicPartition(self.topic, self.partition, start)])
        found: list[Event] = []
        read = 0
        deadline = time.monotonic() + 5.0
        while read < limit and time.monotonic() < deadline:
            for message in self.consumer.consume(min(limit - read, 500), timeout=0.1):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return found
                    raise ClusterError(f"events: {error.str()}")
                read += 1
                if message.key() != self.key:
                    continue
                try:
                    found.append(codec.decode_event(message.value() or b""))
                except CodecError:
                    continue
                if until_key:
                    return found
        return found

    def close(self) -> None:
        self.consumer.close()


# --------------------------------------------------------------------------- one case


def run_case(
    bootstrap: str,
    workdir: Path,
    name: str,
    jobs: list[JobSpec],
    *,
    workers: int,
    concurrency: int,
    broker_pid: int | None,
    stall_timeout: float,
    shape: dict[str, Any],
) -> dict[str, Any]:
    """Starts fresh services, submits ``jobs`` as one submission, waits for its end."""
    cluster = SchedulerAndWorkers(
        bootstrap, workdir / name, workers=workers, concurrency=concurrency
    )
    say(f"{name}: starting 1 scheduler and {workers} workers ({concurrency} slots each)")
    cluster.start()
    stopped = False
    try:
        scheduler = cluster.pid("scheduler")
        submission_id = f"big-{name}-{uuid.uuid4().hex[:8]}"
        watch = TailWatch(cluster, submission_id)
        producer = CommandProducer(cluster.settings)
        command = submit_command(jobs, submission_id=submission_id)
        time.sleep(1.0)  # the services settle after joining (first fetches, rebuilds)
        start_offset = watch.end_offset()
        rss_before = status_kib(scheduler)
        cpu0 = _cpu(cluster, broker_pid)
        load = load_average()
        sampler = MemorySampler(scheduler)
        sampler.start()
        say(f"{name}: submitting {len(jobs):,} jobs as {submission_id}")
        started, started_mono = time.time(), time.monotonic()
        producer.send(command, wait=True, timeout=120)
        sent = time.time()
        producer.close()
        end: Event | None = None
        high, last_growth, longest_quiet = start_offset, time.monotonic(), 0.0
        quiet_from = 0.0
        first_visible: float | None = None
        looks: list[float] = []
        clock0 = time.monotonic()
        next_note = time.monotonic() + 10
        while end is None:
            cluster.check_alive()
            now_high = watch.end_offset()
            now = time.monotonic()
            if now_high > high:
                if first_visible is None:
                    first_visible = time.time() - started
                if now - last_growth > longest_quiet:
                    longest_quiet, quiet_from = now - last_growth, last_growth - clock0
                high, last_growth = now_high, now
            elif now - last_growth > stall_timeout:
                raise ClusterError(
                    f"{name}: events did not grow for {stall_timeout:g}s (at offset {high})"
                )
            look = time.monotonic()
            for event in watch.read(max(start_offset, high - TAIL), TAIL + 1):
                if isinstance(event.body, SubmissionCompleted | CommandRejected):
                    end = event
            looks.append(time.monotonic() - look)
            if end is None:
                if now > next_note:
                    say(f"  {name}: {high - start_offset:,} records on its partition of events")
                    next_note = now + 10
                time.sleep(0.2)
        seen = time.time()
        sampler.stop.set()
        sampler.join(5)
        cpu1 = _cpu(cluster, broker_pid)
        hwm = status_kib(scheduler).get("VmHWM", 0)
        if isinstance(end.body, CommandRejected):
            raise ClusterError(f"{name}: the submission was rejected: {end.body}")
        first = watch.read(start_offset, 10_000, until_key=True)
        accepted = first[0] if first and isinstance(first[0].body, SubmissionAccepted) else None
        watch.close()
        scheduler_log = cluster.log_text("scheduler")
        cluster.stop()
        stopped = True
        seconds = seen - started
        decided = end.timestamp / 1000 - started
        result: dict[str, Any] = {
            "case": name,
            "shape": shape,
            "jobs": len(jobs),
            "workers": workers,
            "concurrency": concurrency,
            "load_average": load,
            "submission_id": submission_id,
            "status": str(cast("SubmissionCompleted", end.body).status),
            "counts": dict(cast("SubmissionCompleted", end.body).counts),
            "submit_seconds": round(sent - started, 3),
            "accepted_seconds": (
                round(accepted.timestamp / 1000 - started, 3) if accepted is not None else None
            ),
            "first_events_seconds": (
                round(first_visible, 2) if first_visible is not None else None
            ),
            "seconds": round(seconds, 3),
            "jobs_per_s": round(len(jobs) / seconds, 1),
            "decided_seconds": round(decided, 3),
            "decided_jobs_per_s": round(len(jobs) / max(decided, 1e-9), 1),
            "events_on_partition": high - start_offset,
            "longest_quiet_s": round(longest_quiet, 2),
            "longest_quiet_from_s": round(quiet_from + (clock0 - started_mono), 2),
            "tail_looks": {
                "count": len(looks),
                "mean_ms": round(1000 * sum(looks) / max(len(looks), 1), 1),
                "max_ms": round(1000 * max(looks, default=0.0), 1),
            },
            "scheduler": {
                "rss_before_mib": round(rss_before.get("VmRSS", 0) / 1024, 1),
                "peak_rss_mib": round(sampler.peak_kib / 1024, 1),
                "vm_hwm_mib": round(hwm / 1024, 1),
                "rss_timeline_mib": [(t, round(k / 1024, 1)) for t, k in sampler.timeline],
                "log": _log_facts(scheduler_log),
            },
            "cpu_seconds": {n: round(cpu1[n] - cpu0[n], 2) for n in cpu0},
        }
        say(f"{name}: reading the run's topics")
        result["topics"] = {
            topic: topic_records(cluster.settings, topic)
            for topic in ("state", "events", "commands")
        }
        result["command_bytes"] = result["topics"]["commands"]["largest_bytes"]
        return result
    finally:
        if not stopped:
            cluster.stop()


def _cpu(cluster: SchedulerAndWorkers, broker_pid: int | None) -> dict[str, float]:
    cpu = {name: tree_cpu_seconds(pid) for name, pid in cluster.pids().items()}
    if broker_pid is not None:
        cpu["broker"] = process_cpu_seconds(broker_pid)
    return cpu


def _log_facts(text: str) -> dict[str, Any]:
    """What the scheduler's log says about restarts, rebuilds and trouble."""
    lines = text.splitlines()
    trouble = [line for line in lines if "WARNING" in line or "ERROR" in line]
    return {
        "rebuilds": sum(1 for line in lines if " rebuilt: " in line),
        "restarts": sum(1 for line in lines if "restarting on a fresh book" in line),
        "warnings": len(trouble),
        "first_warnings": [line[:300] for line in trouble[:10]],
    }


def topic_records(settings: Any, topic: str) -> dict[str, Any]:
    """Every committed record of one of the run's topics: count, bytes, the largest.

    ``end_offsets`` is the growth of the partitions' end offsets, transaction markers
    included; ``records`` what a read-committed consumer reads now (``state`` is compacted:
    once its segments roll, older records of a key may already be gone).
    """
    name = getattr(Topics(settings.topic_prefix), topic)
    consumer = Consumer(
        settings.client_config(
            **{
                "group.id": f"big-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "fetch.max.bytes": 64 * 1024 * 1024,
                "max.partition.fetch.bytes": 32 * 1024 * 1024,
            }
        )
    )
    try:
        partitions = sorted(consumer.list_topics(name, timeout=10).topics[name].partitions)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
            for p in partitions
        }
        live = [p for p in partitions if ends[p] > 0]
        consumer.assign([TopicPartition(name, p, 0) for p in live])
        pending = set(live)
        count = total = 0
        largest, largest_key, largest_value, largest_offset = 0, b"", b"", -1
        quiet_until = time.monotonic() + 30
        while pending and time.monotonic() < quiet_until:
            for message in consumer.consume(10_000, timeout=1.0):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(message.partition() or 0)
                        continue
                    raise ClusterError(f"{name}: {error.str()}")
                quiet_until = time.monotonic() + 30
                value = message.value() or b""
                size = len(value) + len(message.key() or b"")
                count += 1
                total += size
                if size > largest:
                    largest, largest_key = size, message.key() or b""
                    largest_offset = message.offset() or 0
                    largest_value = value
        out: dict[str, Any] = {
            "end_offsets": sum(ends.values()),
            "records": count,
            "bytes": total,
            "largest_bytes": largest,
            "largest_key": largest_key.decode(errors="replace"),
            "largest_offset": largest_offset,
        }
        if count:
            out["largest_kind"] = _kind(topic, largest_key, largest_value)
        return out
    finally:
        consumer.close()


def _kind(topic: str, key: bytes, value: bytes) -> str:
    try:
        if topic == "events":
            return codec.decode_event(value).name
        if topic == "commands":
            return type(codec.decode_command(value)).__name__
    except CodecError:
        return "undecodable"
    if topic == "state":
        return "job snapshot" if b"/" in key else "submission snapshot (header or inline)"
    return topic


# --------------------------------------------------------------------------- the run


@contextmanager
def broker_at(bootstrap_servers: str | None) -> Iterator[tuple[str, str | None, int | None]]:
    """``(bootstrap, kafka version, broker pid)``: the given cluster, or a local broker."""
    if bootstrap_servers:
        yield bootstrap_servers, None, None
        return
    from engine.broker import LocalBroker

    broker = LocalBroker.temporary()
    broker.start()
    try:
        yield broker.bootstrap_servers, broker.version, broker.pid
    finally:
        broker.stop()


def measure(
    sizes: Sizes,
    *,
    bootstrap_servers: str | None,
    workers: int = 2,
    concurrency: int = 16,
    cases: tuple[str, ...] = ("dag", "flat"),
    stall_timeout: float = 180.0,
) -> dict[str, Any]:
    """Runs the cases on one broker; returns every figure."""
    started = time.time()
    out: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="joblog-big-") as tmp,
        broker_at(bootstrap_servers) as (bootstrap, version, broker_pid),
    ):
        machine = facts(version)
        say(f"broker {bootstrap}, {machine['cpus']} CPUs, load {machine['load_average']}")
        for case in cases:
            if case == "dag":
                jobs = layered_dag(sizes.dag_layers, sizes.dag_width)
                shape = {
                    "layers": sizes.dag_layers,
                    "width": sizes.dag_width,
                    "depends_on_per_job": 2,
                }
            else:
                jobs = flat(sizes.flat_jobs)
                shape = {"independent": sizes.flat_jobs}
            out[case] = run_case(
                bootstrap,
                Path(tmp),
                case,
                jobs,
                workers=workers,
                concurrency=concurrency,
                broker_pid=broker_pid,
                stall_timeout=stall_timeout,
                shape=shape,
            )
            print(_line(out[case]), file=sys.stderr, flush=True)
    return {
        "machine": machine,
        "load_average_at_end": load_average(),
        "wall_seconds": round(time.time() - started, 1),
        "cases": out,
    }


def _line(r: dict[str, Any]) -> str:
    topics = r["topics"]
    return (
        f"{r['case']:>5}: {r['jobs']:,} jobs in {r['seconds']:.1f}s = {r['jobs_per_s']:,.0f} "
        f"jobs/s (accepted after {r['accepted_seconds']}s, {r['status']}); scheduler peak "
        f"RSS {r['scheduler']['peak_rss_mib']:.0f} MiB (VmHWM {r['scheduler']['vm_hwm_mib']:.0f})"
        f", {r['cpu_seconds']['scheduler']:.1f} CPU s; state {topics['state']['records']:,} "
        f"records ({topics['state']['end_offsets']:,} offsets), largest state record "
        f"{topics['state']['largest_bytes']:,} B, largest event "
        f"{topics['events']['largest_bytes']:,} B; longest quiet {r['longest_quiet_s']}s "
        f"(from {r['longest_quiet_from_s']}s after the submit)"
    )


def table(run: dict[str, Any]) -> str:
    """The figures of a run, one row per figure."""
    rows = [("figure", *run["cases"])]
    cases = list(run["cases"].values())

    def row(label: str, fn: Any) -> None:
        rows.append((label, *(fn(c) for c in cases)))

    row("jobs", lambda c: f"{c['jobs']:,}")
    row("submit -> SubmissionCompleted seen, s", lambda c: f"{c['seconds']:.1f}")
    row("jobs/s", lambda c: f"{c['jobs_per_s']:,.0f}")
    row("submit -> SubmissionCompleted decided, s", lambda c: f"{c['decided_seconds']:.1f}")
    row("submit -> SubmissionAccepted decided, s", lambda c: f"{c['accepted_seconds']}")
    row("submit -> first events committed, s", lambda c: f"{c.get('first_events_seconds')}")
    row("submit command record, bytes", lambda c: f"{c['command_bytes']:,}")
    row("scheduler peak RSS (sampled), MiB", lambda c: f"{c['scheduler']['peak_rss_mib']:.0f}")
    row("scheduler VmHWM, MiB", lambda c: f"{c['scheduler']['vm_hwm_mib']:.0f}")
    row("scheduler RSS before submit, MiB", lambda c: f"{c['scheduler']['rss_before_mib']:.0f}")
    for name in ("scheduler", "worker-1", "worker-2", "broker"):
        row(
            f"{name} CPU seconds",
            lambda c, n=name: f"{c['cpu_seconds'][n]:.1f}" if n in c["cpu_seconds"] else "",
        )
    for topic in ("state", "events"):
        row(f"{topic} records (read back)", lambda c, t=topic: f"{c['topics'][t]['records']:,}")
        row(
            f"{topic} end offsets (with markers)",
            lambda c, t=topic: f"{c['topics'][t]['end_offsets']:,}",
        )
        row(f"{topic} bytes", lambda c, t=topic: f"{c['topics'][t]['bytes']:,}")
        row(
            f"largest {topic} record, bytes",
            lambda c, t=topic: (
                f"{c['topics'][t]['largest_bytes']:,} ({c['topics'][t].get('largest_kind', '')})"
            ),
        )
    row(
        "longest pause of its events partition, s (from s)",
        lambda c: f"{c['longest_quiet_s']} ({c['longest_quiet_from_s']})",
    )
    row(
        "scheduler log: rebuilds / restarts / warnings",
        lambda c: "{rebuilds} / {restarts} / {warnings}".format(**c["scheduler"]["log"]),
    )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [str(cell) for cell in r]
        lines.append(
            "  ".join(
                [cells[0].ljust(widths[0])]
                + [cell.rjust(w) for cell, w in zip(cells[1:], widths[1:], strict=True)]
            )
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.big_submissions")
    parser.add_argument(
        "--smoke",
        dest="mode",
        action="store_const",
        const="smoke",
        default="full",
        help="1,000 graph jobs and 5,000 flat jobs (default: 10,000 and 100,000)",
    )
    parser.add_argument("--workers", type=int, default=2, choices=(1, 2))
    parser.add_argument("--concurrency", type=int, default=16, help="slots of each worker")
    parser.add_argument(
        "--case", action="append", choices=("dag", "flat"), help="run only this case"
    )
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("JOBLOG_BOOTSTRAP_SERVERS"),
        help="use this cluster (default: a local broker in a temporary directory)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file")
    args = parser.parse_args(argv)
    sizes = MODES[args.mode]
    run = measure(
        sizes,
        bootstrap_servers=args.bootstrap_servers,
        workers=args.workers,
        concurrency=args.concurrency,
        cases=tuple(args.case or ("dag", "flat")),
    )
    run = {"mode": args.mode, "sizes": vars(sizes), **run}
    print(table(run))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[args.mode] = run
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
