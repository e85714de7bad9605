"""What scheduling rules cost: a concurrency key and a rate limit against plain jobs.

Usage:
    python -m benchmarks.scheduling_bench [--jobs 3000] [--core-jobs 20000]
        [--bootstrap-servers HOST:PORT]

Two measurements, each variant in the same run (ratios are what matter on a shared machine):

* the pure core: decisions per second and records per job through the scheduler's book, the
  slot traffic between a job's submission and its limit's ledger carried in process;
* end to end on Kafka: no-op jobs (one submission each) from the first submit to the last
  COMPLETED row in the projection, with the key's limits high enough never to hold a job, so
  the figure is the price of the ledger (a claim, a grant, a release: three more commands and
  events per job, all on the ledger's partition), not of waiting.

Without ``--bootstrap-servers`` (or ``JOBLOG_BOOTSTRAP_SERVERS``) a local broker is started.
Figures are printed and written to ``benchmarks/results/scheduling.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from benchmarks.cluster import JoblogCluster
from benchmarks.endtoend import throughput
from engine.lifecycle.decide import Policy
from engine.lifecycle.effects import Effect
from engine.lifecycle.records import (
    AttemptRef,
    Claimed,
    ClaimSlot,
    Dispatch,
    Finished,
    JobSpec,
    Outcome,
    ReleaseSlot,
    SlotAnswer,
    Started,
    SubmitJobs,
)
from engine.scheduler.book import Book, PartitionBook

RESULTS = Path(__file__).parent / "results" / "scheduling.json"

VARIANTS: dict[str, JobSpec] = {
    "plain": JobSpec("noop", task="noop"),
    "concurrency_key": JobSpec("noop", task="noop", concurrency_key="bench", max_running=1_000_000),
    "rate_limit": JobSpec(
        "noop", task="noop", concurrency_key="bench-rate", rate_limit=10_000, rate_period_ms=1
    ),
}


def pure_core(spec: JobSpec, jobs: int) -> dict[str, float]:
    """The book deciding ``jobs`` submissions of ``spec`` to COMPLETED, slot traffic included."""
    book = Book(Policy())
    book.adopt(PartitionBook(0), 0)
    inbox: deque[Effect] = deque()
    events = records = decisions = 0
    started = time.perf_counter()

    def apply(sid: str, given: Any, now: int) -> None:
        nonlocal events, records, decisions
        decision = book.apply(0, sid, given, now)
        decisions += 1
        events += len(decision.events)
        records += len(decision.events) + len(decision.effects)
        for effect in decision.effects:
            if isinstance(effect, ClaimSlot | ReleaseSlot | SlotAnswer):
                inbox.append(effect)
            elif isinstance(effect, Dispatch):
                ref = AttemptRef(
                    effect.submission_id, "noop", effect.attempt, effect.dispatch_id, "w"
                )
                inbox.extend([Claimed(ref), Started(ref), Finished(ref, Outcome.COMPLETED)])  # type: ignore[list-item]

    for i in range(jobs):
        sid = f"s{i}"
        apply(sid, SubmitJobs(f"c{i}", sid, (spec,)), i)
        while inbox:
            item = inbox.popleft()
            target = item.ref.submission_id if hasattr(item, "ref") else item.submission_id
            apply(target, item, i)
    seconds = time.perf_counter() - started
    return {
        "jobs": jobs,
        "seconds": seconds,
        "jobs_per_s": jobs / seconds,
        "decisions_per_job": decisions / jobs,
        "events_per_job": events / jobs,
        "records_per_job": records / jobs,
        "cpu_us_per_job": seconds / jobs * 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3_000, help="jobs per end-to-end run")
    parser.add_argument("--core-jobs", type=int, default=20_000)
    parser.add_argument("--bootstrap-servers", default=os.environ.get("JOBLOG_BOOTSTRAP_SERVERS"))
    parser.add_argument("--no-kafka", action="store_true", help="the pure core only")
    args = parser.parse_args()
    out: dict[str, Any] = {"machine": platform.platform(), "cpus": os.cpu_count()}
    core = {name: pure_core(spec, args.core_jobs) for name, spec in VARIANTS.items()}
    out["pure_core"] = core
    for name, figures in core.items():
        print(
            f"core  {name:<16} {figures['jobs_per_s']:>9.0f} jobs/s  "
            f"{figures['cpu_us_per_job']:>6.1f} µs/job  {figures['records_per_job']:.1f} "
            "records/job"
        )
    if not args.no_kafka:
        out["end_to_end"] = _end_to_end(args.bootstrap_servers, args.jobs)
        plain = out["end_to_end"]["plain"]["jobs_per_s"]
        for name, figures in out["end_to_end"].items():
            print(
                f"kafka {name:<16} {figures['jobs_per_s']:>9.0f} jobs/s  "
                f"({figures['jobs_per_s'] / plain:.2f}x plain)  "
                f"{figures['records_per_job']:.1f} records/job"
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


def _end_to_end(bootstrap: str | None, jobs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="joblog-sched-bench-") as tmp:
        broker = None
        if bootstrap is None:
            from engine.broker import LocalBroker

            broker = LocalBroker(Path(tmp) / "kafka")
            broker.start()
            bootstrap = broker.bootstrap_servers
        try:
            results = {}
            for name, spec in VARIANTS.items():
                with JoblogCluster(bootstrap, Path(tmp) / name) as cluster:
                    throughput(cluster, 50, spec=spec)  # warm
                    results[name] = throughput(cluster, jobs, spec=spec)
            return results
        finally:
            if broker is not None:
                broker.stop()


if __name__ == "__main__":
    sys.exit(main())
