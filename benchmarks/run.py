"""The benchmark run: every figure of BENCHMARKS.md, measured on one broker in one go.

Order: the raw Kafka ceiling; end-to-end throughput of joblog and of the Celery peer,
interleaved run by run (so that a change in the machine's load hits both alike); latency at
a fixed offered load; the projector; scheduler recovery; DuckDB queries; a profiled run.
Every run keeps the machine's load average at its start.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import ceiling, endtoend, machine, peer, profiles, queries, recovery
from benchmarks.cluster import JoblogCluster, process_cpu_seconds, tree_cpu_seconds
from benchmarks.plan import Plan
from benchmarks.stats import summary
from engine import codec
from engine.admin import ensure_topics
from engine.config import Settings
from engine.lifecycle.workload import simulate

RESULTS = Path(__file__).parent / "results"


def say(message: str) -> None:
    """A progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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


def _run(record: dict[str, Any]) -> dict[str, Any]:
    return {"load_average": machine.load_average(), **record}


class Runner:
    """Runs a :class:`~benchmarks.plan.Plan` and collects the results."""

    def __init__(
        self,
        plan: Plan,
        bootstrap: str,
        workdir: Path,
        *,
        peer_enabled: bool,
        profile_dir: Path | None,
        broker_pid: int | None,
    ) -> None:
        self.plan = plan
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.peer_enabled = peer_enabled
        self.profile_dir = profile_dir
        self.broker_pid = broker_pid
        self.sections: dict[str, Any] = {}
        self.errors: dict[str, str] = {}

    def section(self, name: str, fn: Callable[[], Any]) -> None:
        """Runs one section; a failure is recorded and the run goes on."""
        say(f"{name} ...")
        started = time.perf_counter()
        try:
            self.sections[name] = fn()
        except Exception as exc:
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            say(f"{name} FAILED: {exc}")
            traceback.print_exc(file=sys.stderr)
        say(f"{name} done in {time.perf_counter() - started:.0f}s")

    # ------------------------------------------------------------------ sections

    def ceiling(self) -> dict[str, Any]:
        events = simulate(min(2_000, self.plan.ceiling_records // 12 + 1), seed=3).events
        records = [(e.submission_id.encode(), codec.encode_event(e)) for e in events]
        records = (records * (self.plan.ceiling_records // max(len(records), 1) + 1))[
            : self.plan.ceiling_records
        ]
        settings = Settings.from_env(bootstrap_servers=self.bootstrap, topic_prefix="ceiling.")
        runs = [_run(ceiling.raw_kafka(settings, records)) for _ in range(self.plan.repeats)]
        return {
            "runs": runs,
            "produce_per_s": summary([r["produce_per_s"] for r in runs]),
            "consume_per_s": summary([r["consume_per_s"] for r in runs]),
            "value_bytes": runs[0]["value_bytes"],
        }

    def throughput(self) -> dict[str, Any]:
        celery: peer.CeleryPeer | None = None
        out: dict[str, Any] = {"joblog": {}, "celery": {}}
        if self.peer_enabled and self.plan.peer_tasks:
            reason = peer.ensure_installed(say)
            if reason is None:
                celery = peer.CeleryPeer(processes=self.plan.workers)
                celery.start()
                out["celery_versions"] = peer.versions()
            else:
                out["celery_skipped"] = reason
        else:
            out["celery_skipped"] = "not run in this mode (--peer runs it)"
        try:
            sizes = sorted(set(self.plan.jobs) | set(self.plan.peer_tasks if celery else ()))
            for size in sizes:
                joblog_runs: list[dict[str, Any]] = []
                celery_runs: list[dict[str, Any]] = []
                for repeat in range(self.plan.repeats):
                    if size in self.plan.jobs:
                        say(f"  joblog {size:,} jobs, run {repeat + 1}")
                        joblog_runs.append(self._joblog_throughput(size))
                        say(f"    {joblog_runs[-1]['jobs_per_s']:,.0f} jobs/s")
                    if celery is not None and size in self.plan.peer_tasks:
                        say(f"  celery {size:,} tasks, run {repeat + 1}")
                        load = machine.load_average()
                        cpu0 = {n: tree_cpu_seconds(p) for n, p in celery.pids().items()}
                        result = celery.throughput(size)
                        cpu1 = {n: tree_cpu_seconds(p) for n, p in celery.pids().items()}
                        cpu1["client"] = result.pop("client_cpu_seconds")
                        cpu0["client"] = 0.0
                        result["cpu_seconds"] = {n: cpu1[n] - cpu0[n] for n in cpu0}
                        celery_runs.append({"load_average": load, **result})
                        say(f"    {result['tasks_per_s']:,.0f} tasks/s")
                if joblog_runs:
                    out["joblog"][str(size)] = {
                        "runs": joblog_runs,
                        "jobs_per_s": summary([r["jobs_per_s"] for r in joblog_runs]),
                        "steady_jobs_per_s": summary([r["steady_jobs_per_s"] for r in joblog_runs]),
                        "records_per_job": summary([r["records_per_job"] for r in joblog_runs]),
                    }
                if celery_runs:
                    out["celery"][str(size)] = {
                        "runs": celery_runs,
                        "tasks_per_s": summary([r["tasks_per_s"] for r in celery_runs]),
                    }
                if joblog_runs and celery_runs:
                    ratios = [
                        j["jobs_per_s"] / c["tasks_per_s"]
                        for j, c in zip(joblog_runs, celery_runs, strict=True)
                    ]
                    out.setdefault("ratio", {})[str(size)] = summary(ratios)
        finally:
            if celery is not None:
                celery.stop()
        return out

    def _joblog_throughput(self, jobs: int) -> dict[str, Any]:
        cluster = JoblogCluster(
            self.bootstrap,
            self.workdir / "clusters",
            workers=self.plan.workers,
            concurrency=self.plan.concurrency,
        )
        cluster.start()
        try:
            endtoend.throughput(cluster, 50)  # warm: every service has done its first job
            load = machine.load_average()
            cpu0 = self._cpu(cluster)
            client = time.process_time()
            result = endtoend.throughput(cluster, jobs)
            cpu1 = self._cpu(cluster)
            cpu0["client"], cpu1["client"] = 0.0, time.process_time() - client
            result["cpu_seconds"] = {n: cpu1[n] - cpu0[n] for n in cpu0}
            return {"load_average": load, **result}
        finally:
            cluster.stop()

    def _cpu(self, cluster: JoblogCluster) -> dict[str, float]:
        cpu = cluster.cpu_seconds()
        if self.broker_pid is not None:
            cpu["broker"] = process_cpu_seconds(self.broker_pid)
        return cpu

    def latency(self) -> dict[str, Any]:
        runs = []
        for repeat in range(self.plan.repeats):
            cluster = JoblogCluster(
                self.bootstrap,
                self.workdir / "clusters",
                workers=self.plan.workers,
                concurrency=self.plan.concurrency,
            )
            cluster.start()
            try:
                endtoend.throughput(cluster, 50)
                say(
                    f"  {self.plan.latency_rate:g} jobs/s for {self.plan.latency_seconds:g}s, "
                    f"run {repeat + 1}"
                )
                runs.append(
                    _run(
                        endtoend.latency(cluster, self.plan.latency_rate, self.plan.latency_seconds)
                    )
                )
                say(f"    p99 submit->RUNNING {runs[-1]['decided']['running']['p99_ms']:.0f} ms")
            finally:
                cluster.stop()
        out: dict[str, Any] = {"runs": runs}
        for view in ("decided", "seen"):
            for phase in ("submitted", "running", "completed"):
                for q in ("p50_ms", "p99_ms"):
                    out[f"{view}.{phase}.{q}"] = summary([r[view][phase][q] for r in runs])
        for q in ("p50_ms", "p99_ms"):
            out[f"projected.{q}"] = summary([r["projected"][q] for r in runs])
            out[f"projection_lag.{q}"] = summary([r["projection_lag"][q] for r in runs])
        return out

    def projection(self) -> dict[str, Any]:
        from benchmarks import projector_bench

        events = simulate(self.plan.projection_submissions, seed=1).events
        encoded = [(e.submission_id.encode(), codec.encode_event(e)) for e in events]
        runs = []
        for repeat in range(self.plan.repeats):
            say(f"  {len(encoded):,} events, run {repeat + 1}")
            workdir = Path(tempfile.mkdtemp(dir=self.workdir, prefix="projector-"))
            record: dict[str, Any] = {"load_average": machine.load_average()}
            record["in_process"] = projector_bench.in_process(encoded, workdir, 5_000)
            backlog = Settings.from_env(
                bootstrap_servers=self.bootstrap, topic_prefix=f"p{time.time_ns() % 10**9}."
            )
            ensure_topics(backlog)
            record["kafka_backlog"] = projector_bench.kafka_backlog(backlog, encoded, workdir)
            steady = Settings.from_env(
                bootstrap_servers=self.bootstrap, topic_prefix=f"q{time.time_ns() % 10**9}."
            )
            ensure_topics(steady)
            record["steady_load"] = projector_bench.steady_load(
                steady,
                encoded,
                workdir,
                self.plan.projection_rate,
                self.plan.projection_seconds,
            )
            runs.append(record)
        return {
            "events": len(encoded),
            "runs": runs,
            "in_process_events_per_s": summary([r["in_process"]["events_per_s"] for r in runs]),
            "backlog_events_per_s": summary([r["kafka_backlog"]["events_per_s"] for r in runs]),
            "steady_lag_p99_s": summary([r["steady_load"]["lag_p99_s"] for r in runs]),
            "steady_lag_max_s": summary([r["steady_load"]["lag_max_s"] for r in runs]),
        }

    def recovery(self) -> dict[str, Any]:
        largest = max(self.plan.recovery_events)
        tile = recovery.Tile.make(max(10, min(largest, 100_000) // 12 + 10))
        out: dict[str, Any] = {"tile_events": len(tile.events)}
        for events in self.plan.recovery_events:
            entry: dict[str, Any] = {}
            for snapshots in (True, False):
                label = "with_snapshots" if snapshots else "without_snapshots"
                settings = recovery.prepare(self.bootstrap, tile, events, snapshots)
                runs = []
                for repeat in range(self.plan.repeats):
                    say(f"  {events:,} events {label.replace('_', ' ')}, run {repeat + 1}")
                    runs.append(_run(recovery.recover(settings)))
                    say(f"    {runs[-1]['seconds']:.2f}s")
                entry[label] = {"runs": runs, "seconds": summary([r["seconds"] for r in runs])}
            out[str(events)] = entry
        return out

    def queries(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for events in self.plan.query_events:
            path = self.workdir / f"queries-{events}.duckdb"
            say(f"  building {events:,} events")
            built = queries.build(path, events)
            out[str(events)] = {
                **built,
                "load_average": machine.load_average(),
                "queries": queries.time_queries(path),
            }
            path.unlink(missing_ok=True)
        return out

    def profile(self) -> dict[str, Any]:
        assert self.profile_dir is not None
        if profiles.py_spy() is None:
            return {"skipped": "py-spy is not installed (pip install py-spy)"}
        cluster = JoblogCluster(
            self.bootstrap,
            self.workdir / "clusters",
            workers=self.plan.workers,
            concurrency=self.plan.concurrency,
        )
        cluster.start()
        try:
            endtoend.throughput(cluster, 50)
            recordings = [
                r
                for name, pid in cluster.pids().items()
                if (r := profiles.record(name, pid, self.profile_dir)) is not None
            ]
            result = _run(endtoend.throughput(cluster, self.plan.profile_jobs))
            summaries = {}
            for recording in recordings:
                path = recording.finish()
                if path is not None:
                    summaries[recording.name] = profiles.summarize(path)
        finally:
            cluster.stop()
        (self.profile_dir / "summary.json").write_text(json.dumps(summaries, indent=2) + "\n")
        return {"run": result, "services": summaries, "dir": str(self.profile_dir)}


def run(
    plan: Plan,
    *,
    bootstrap_servers: str | None,
    peer_enabled: bool,
    profile: bool,
    results_path: Path,
    command: str,
) -> dict[str, Any]:
    """Runs ``plan`` and writes the results to ``results_path``; returns them."""
    started = time.time()
    with (
        tempfile.TemporaryDirectory(prefix="joblog-bench-") as tmp,
        broker_at(bootstrap_servers) as (bootstrap, kafka_version, broker_pid),
    ):
        facts = machine.facts(kafka_version)
        say(
            f"{plan.name} run on {facts['cpus']} CPUs, load {facts['load_average']}, "
            f"broker {bootstrap}"
        )
        profile_dir = results_path.parent / "profiles" if profile and plan.profile_jobs else None
        runner = Runner(
            plan,
            bootstrap,
            Path(tmp),
            peer_enabled=peer_enabled,
            profile_dir=profile_dir,
            broker_pid=broker_pid,
        )
        runner.section("ceiling", runner.ceiling)
        runner.section("throughput", runner.throughput)
        runner.section("latency", runner.latency)
        runner.section("projection", runner.projection)
        runner.section("recovery", runner.recovery)
        runner.section("queries", runner.queries)
        if profile_dir is not None:
            runner.section("profile", runner.profile)
    try:
        results_file = str(results_path.resolve().relative_to(Path(__file__).parent.parent))
    except ValueError:
        results_file = str(results_path)
    results: dict[str, Any] = {
        "mode": plan.name,
        "command": command,
        "results_file": results_file,
        "plan": asdict(plan),
        "machine": facts,
        "load_average_at_end": machine.load_average(),
        "wall_seconds": time.time() - started,
        "sections": runner.sections,
        "errors": runner.errors,
    }
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=2, default=_jsonable) + "\n")
    return results


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return str(value)
