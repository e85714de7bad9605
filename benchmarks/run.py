"""The benchmark run: every figure of BENCHMARKS.md, measured on one broker in one go.

Order: the raw Kafka ceiling; end-to-end throughput of joblog and of the peers (Celery, and
Temporal in memory and with its SQLite file), interleaved run by run (so that a change in the
machine's load hits all alike); joblog's latency at a fixed offered load; the latency of
joblog and the peers at shared rates; the projector; scheduler recovery; DuckDB queries; a
profiled run. Every run keeps the machine's load average at its start.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import (
    ceiling,
    endtoend,
    machine,
    peer,
    profiles,
    queries,
    recovery,
    temporal_peer,
)
from benchmarks.cluster import JoblogCluster, process_cpu_seconds, tree_cpu_seconds
from benchmarks.plan import Plan
from benchmarks.stats import summary
from engine import codec
from engine.admin import ensure_topics
from engine.config import Settings
from engine.lifecycle.workload import simulate

RESULTS = Path(__file__).parent / "results"
PEERS = ("celery", "temporal")
SUSTAIN_MARGIN = 1.25
"""A system is run at a shared latency rate if its measured throughput is this much above it."""


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
        peers: Collection[str],
        profile_dir: Path | None,
        broker_pid: int | None,
    ) -> None:
        self.plan = plan
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.peers = frozenset(peers)
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
        out: dict[str, Any] = {"joblog": {}, "celery": {}, "temporal": {}}
        celery = self._start_celery(out, self.plan.peer_tasks)
        variants = self._temporal_variants(out, self.plan.temporal_jobs)
        celery_sizes = set(self.plan.peer_tasks) if celery is not None else set()
        temporal_sizes = set(self.plan.temporal_jobs) if variants else set()
        joblog_sizes = set(self.plan.jobs) | temporal_sizes  # every Temporal run has its pair
        try:
            for size in sorted(joblog_sizes | celery_sizes):
                runs: dict[str, list[dict[str, Any]]] = {"joblog": [], "celery": []}
                runs.update({variant: [] for variant in temporal_peer.VARIANTS})
                for repeat in range(self.plan.repeats):
                    if size in joblog_sizes:
                        say(f"  joblog {size:,} jobs, run {repeat + 1}")
                        runs["joblog"].append(self._joblog_throughput(size))
                        say(f"    {runs['joblog'][-1]['jobs_per_s']:,.0f} jobs/s")
                    if celery is not None and size in celery_sizes:
                        say(f"  celery {size:,} tasks, run {repeat + 1}")
                        runs["celery"].append(self._celery_throughput(celery, size))
                        say(f"    {runs['celery'][-1]['tasks_per_s']:,.0f} tasks/s")
                    for variant in list(variants) if size in temporal_sizes else ():
                        say(f"  temporal ({variant}) {size:,} workflows, run {repeat + 1}")
                        try:
                            runs[variant].append(self._temporal_throughput(variant, size))
                        except Exception as exc:  # the peer's failure is not joblog's
                            _peer_failed(out, f"temporal-{variant}", exc)
                            variants.remove(variant)
                            continue
                        say(f"    {runs[variant][-1]['jobs_per_s']:,.1f} jobs/s")
                self._throughput_entries(out, str(size), runs)
        finally:
            if celery is not None:
                celery.stop()
        return out

    @staticmethod
    def _throughput_entries(
        out: dict[str, Any],
        size: str,
        runs: dict[str, list[dict[str, Any]]],
    ) -> None:
        """The summaries of one size's runs, and the ratios of joblog to each peer, paired."""
        joblog_runs = runs["joblog"]
        if joblog_runs:
            out["joblog"][size] = {
                "runs": joblog_runs,
                "jobs_per_s": summary([r["jobs_per_s"] for r in joblog_runs]),
                "steady_jobs_per_s": summary([r["steady_jobs_per_s"] for r in joblog_runs]),
                "records_per_job": summary([r["records_per_job"] for r in joblog_runs]),
            }
        if runs["celery"]:
            out["celery"][size] = {
                "runs": runs["celery"],
                "tasks_per_s": summary([r["tasks_per_s"] for r in runs["celery"]]),
            }
            if joblog_runs:
                out.setdefault("ratio", {})[size] = _paired(
                    joblog_runs, runs["celery"], "tasks_per_s"
                )
        for variant in temporal_peer.VARIANTS:
            if not runs[variant]:
                continue
            out["temporal"].setdefault(variant, {})[size] = {
                "runs": runs[variant],
                "jobs_per_s": summary([r["jobs_per_s"] for r in runs[variant]]),
            }
            if joblog_runs:
                out.setdefault("temporal_ratio", {}).setdefault(variant, {})[size] = _paired(
                    joblog_runs, runs[variant], "jobs_per_s"
                )

    def _start_celery(self, out: dict[str, Any], sizes: Collection[Any]) -> peer.CeleryPeer | None:
        """The running Celery peer, or None (and why, in ``out["celery_skipped"]``)."""
        if "celery" not in self.peers or not sizes:
            out["celery_skipped"] = _not_run("celery", self.peers)
            return None
        reason = peer.ensure_installed(say)
        if reason is not None:
            out["celery_skipped"] = reason
            return None
        celery = peer.CeleryPeer(processes=self.plan.workers)
        try:
            celery.start()
        except Exception as exc:  # stop what did start; the run goes on without the peer
            celery.stop()
            _peer_failed(out, "celery", exc)
            out["celery_skipped"] = f"failed to start: {type(exc).__name__}: {exc}"
            return None
        out["celery_versions"] = peer.versions()
        return celery

    def _temporal_variants(self, out: dict[str, Any], sizes: Collection[Any]) -> list[str]:
        """The Temporal variants to run (none, and why in ``out["temporal_skipped"]``)."""
        if "temporal" not in self.peers or not sizes:
            out["temporal_skipped"] = _not_run("temporal", self.peers)
            return []
        reason = temporal_peer.ensure_installed(say, install=self.plan.name != "smoke")
        if reason is not None:
            out["temporal_skipped"] = reason
            return []
        out["temporal_versions"] = temporal_peer.versions()
        return list(temporal_peer.VARIANTS)

    def _celery_throughput(self, celery: peer.CeleryPeer, tasks: int) -> dict[str, Any]:
        return _peer_throughput(celery.pids, lambda: celery.throughput(tasks))

    def _temporal_throughput(self, variant: str, jobs: int) -> dict[str, Any]:
        """One run on a fresh server (and file): ``jobs`` workflows, and every process's CPU."""
        temporal = temporal_peer.TemporalPeer(
            variant, workers=self.plan.workers, slots=self.plan.concurrency
        )
        try:
            temporal.start()
            result = _peer_throughput(temporal.pids, lambda: temporal.throughput(jobs))
            return {"variant": variant, **result}
        finally:
            temporal.stop()

    def _cluster(self) -> JoblogCluster:
        """joblog's services of the plan's size, on fresh topics (not started)."""
        return JoblogCluster(
            self.bootstrap,
            self.workdir / "clusters",
            workers=self.plan.workers,
            concurrency=self.plan.concurrency,
        )

    def _joblog_throughput(self, jobs: int) -> dict[str, Any]:
        cluster = self._cluster()
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
        runs = [
            self._joblog_latency(self.plan.latency_rate, self.plan.latency_seconds, repeat)
            for repeat in range(self.plan.repeats)
        ]
        out: dict[str, Any] = {"runs": runs}
        for view in ("decided", "seen"):
            for phase in ("submitted", "running", "completed"):
                for q in ("p50_ms", "p99_ms"):
                    out[f"{view}.{phase}.{q}"] = summary([r[view][phase][q] for r in runs])
        for q in ("p50_ms", "p99_ms"):
            out[f"projected.{q}"] = summary([r["projected"][q] for r in runs])
            out[f"projection_lag.{q}"] = summary([r["projection_lag"][q] for r in runs])
        return out

    def _joblog_latency(self, rate: float, seconds: float, repeat: int) -> dict[str, Any]:
        """One latency run of joblog at ``rate`` jobs/s on fresh services."""
        cluster = self._cluster()
        cluster.start()
        try:
            endtoend.throughput(cluster, 50)
            say(f"  joblog {rate:g} jobs/s for {seconds:g}s, run {repeat + 1}")
            run = _run(endtoend.latency(cluster, rate, seconds))
            say(f"    p99 submit->RUNNING {run['decided']['running']['p99_ms']:.0f} ms")
            return run
        finally:
            cluster.stop()

    def peer_latency(self) -> dict[str, Any]:
        """joblog, Celery and Temporal at each shared rate, interleaved run by run.

        A system runs at a rate only if its throughput in this run's throughput section was
        at least :data:`SUSTAIN_MARGIN` times the rate (or was not measured); otherwise its
        entry says why not. joblog's *running* is the ``JobStarted`` event's timestamp and its
        *result* the moment a consumer saw ``JobCompleted``; Celery's and Temporal's *running*
        is the time taken inside the task or activity, and their *result* the result stored
        (Celery) or returned to the client (Temporal).
        """
        out: dict[str, Any] = {"seconds": self.plan.peer_latency_seconds, "rates": {}}
        celery = self._start_celery(out, self.plan.peer_latency_rates)
        variants = self._temporal_variants(out, self.plan.peer_latency_rates)
        rates = self.sections.get("throughput", {})
        try:
            for rate in self.plan.peer_latency_rates:
                names = ["joblog", *(["celery"] if celery is not None else [])]
                names += [f"temporal-{variant}" for variant in variants]
                entry: dict[str, Any] = {}
                runs: dict[str, list[dict[str, Any]]] = {}
                for name in names:
                    reason = _unsustained(name, _best_rate(rates, name), rate)
                    if reason is not None:
                        entry[name] = {"skipped": reason}
                    else:
                        runs[name] = []
                for repeat in range(self.plan.repeats):
                    for name in [n for n in runs if n not in entry]:
                        try:
                            runs[name].append(self._peer_latency_run(name, rate, repeat, celery))
                        except Exception as exc:  # the peer's failure is not joblog's
                            if name == "joblog":
                                raise
                            _peer_failed(out, name, exc)
                            entry[name] = {"skipped": f"failed: {type(exc).__name__}: {exc}"}
                for name, system_runs in runs.items():
                    if system_runs:
                        entry.setdefault(name, _latency_entry(system_runs))
                out["rates"][f"{rate:g}"] = entry
        finally:
            if celery is not None:
                celery.stop()
        return out

    def _peer_latency_run(
        self, name: str, rate: float, repeat: int, celery: peer.CeleryPeer | None
    ) -> dict[str, Any]:
        """One latency run of ``name`` at ``rate``, as ``running`` and ``result`` summaries."""
        seconds = self.plan.peer_latency_seconds
        if name == "joblog":
            run = self._joblog_latency(rate, seconds, repeat)
            return {
                "load_average": run["load_average"],
                "rate": rate,
                "jobs": run["jobs"],
                "achieved_rate": run["achieved_rate"],
                "running": run["decided"]["running"],
                "result": run["seen"]["completed"],
                "joblog": run,
            }
        say(f"  {name} {rate:g} jobs/s for {seconds:g}s, run {repeat + 1}")
        if name == "celery":
            assert celery is not None
            run = _run(celery.latency(rate, seconds))
        else:
            temporal = temporal_peer.TemporalPeer(
                name.removeprefix("temporal-"),
                workers=self.plan.workers,
                slots=self.plan.concurrency,
            )
            try:
                temporal.start()
                run = _run(temporal.latency(rate, seconds))
            finally:
                temporal.stop()
        say(f"    p99 start->result {run['result']['p99_ms']:.0f} ms")
        return run

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
        cluster = self._cluster()
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
    peers: Collection[str] = PEERS,
) -> dict[str, Any]:
    """Runs ``plan`` and writes the results to ``results_path``; returns them.

    ``peers`` (of :data:`PEERS`) are the peers to run when ``peer_enabled``.
    """
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
            peers=peers if peer_enabled else (),
            profile_dir=profile_dir,
            broker_pid=broker_pid,
        )
        runner.section("ceiling", runner.ceiling)
        runner.section("throughput", runner.throughput)
        runner.section("latency", runner.latency)
        if plan.peer_latency_rates:
            runner.section("peer_latency", runner.peer_latency)
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


def _peer_throughput(
    pids: Callable[[], dict[str, int]], throughput: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """A peer's throughput run with the load average at its start and the CPU seconds of
    each of the peer's processes and of the client (the harness) over it."""
    load = machine.load_average()
    cpu0 = {n: tree_cpu_seconds(p) for n, p in pids().items()}
    result = throughput()
    cpu1 = {n: tree_cpu_seconds(p) for n, p in pids().items()}
    cpu1["client"] = result.pop("client_cpu_seconds")
    cpu0["client"] = 0.0
    result["cpu_seconds"] = {n: cpu1[n] - cpu0[n] for n in cpu0}
    return {"load_average": load, **result}


def _paired(
    joblog_runs: list[dict[str, Any]], peer_runs: list[dict[str, Any]], key: str
) -> dict[str, float | int]:
    """joblog's jobs/s over the peer's, run by run (repeat i against repeat i), summarized."""
    # a peer whose run failed has fewer runs: the pairs are the repeats both have
    pairs = zip(joblog_runs, peer_runs, strict=False)
    return summary([j["jobs_per_s"] / p[key] for j, p in pairs])


def _not_run(name: str, peers: Collection[str]) -> str:
    """Why a peer is left out of a section before anything is tried."""
    if name not in peers:
        return f"not run (--peer, or --peers with {name}, runs it)"
    return "not in this mode's plan"


def _peer_failed(out: dict[str, Any], name: str, exc: Exception) -> None:
    """Records a peer's failed run; the section goes on with joblog and the other peers."""
    out.setdefault("peer_errors", {})[name] = f"{type(exc).__name__}: {exc}"
    say(f"    {name} FAILED: {exc}")
    traceback.print_exc(file=sys.stderr)


def _best_rate(throughput: dict[str, Any], name: str) -> float | None:
    """The median throughput of ``name`` at its largest size in ``throughput`` (None: none)."""
    if name.startswith("temporal-"):
        entries = throughput.get("temporal", {}).get(name.removeprefix("temporal-"), {})
        key = "jobs_per_s"
    else:
        entries = throughput.get(name, {})
        key = "tasks_per_s" if name == "celery" else "jobs_per_s"
    if not entries:
        return None
    value = entries[max(entries, key=int)][key]["median"]
    return None if value is None or math.isnan(value) else float(value)


def _unsustained(name: str, measured: float | None, rate: float) -> str | None:
    """Why ``name`` is not run at ``rate`` (its throughput too close), or None to run it."""
    if measured is None or measured >= rate * SUSTAIN_MARGIN:
        return None
    return (
        f"not run: {name} sustained {measured:,.1f} jobs/s in the throughput runs, "
        f"under {SUSTAIN_MARGIN:g} x {rate:g}"
    )


def _latency_entry(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs of one system at one rate, and the median and spread of each percentile."""
    out: dict[str, Any] = {"runs": runs}
    for phase in ("running", "result"):
        for q in ("p50_ms", "p99_ms", "max_ms"):
            out[f"{phase}.{q}"] = summary([r[phase][q] for r in runs])
    out["achieved_rate"] = summary([r["achieved_rate"] for r in runs])
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return str(value)
