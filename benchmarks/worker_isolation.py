"""What isolating a Python task costs per attempt, in each ``--isolation`` mode of the worker.

``python -m benchmarks.worker_isolation [--attempts N] [--concurrency C] [--seconds S]``

No broker: attempts of the no-op task (:mod:`benchmarks.tasks`) run through the worker's
own :class:`engine.worker.attempt.AttemptRun`, as the worker's attempt threads run them,
with the reports going to a list instead of Kafka. The template is forked, as in a worker,
from an interpreter that has the worker, confluent-kafka and DuckDB loaded. For each mode:

* *per-attempt overhead*: attempts one after the other on one thread, the wall time of each
  (``execute()`` from start to its ``Finished``), median and p90 in ms;
* *no-op attempts/s*: ``--concurrency`` threads running attempts back to back for
  ``--seconds``, as a worker with that many slots would, and the CPU time per attempt of the
  whole process tree (worker, template and task processes).

Appends one run to ``benchmarks/results/worker_isolation.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb  # noqa: F401  (a worker's interpreter: DuckDB and confluent-kafka loaded)

import engine.worker.worker  # noqa: F401
from benchmarks import tasks
from benchmarks.cluster import process_cpu_seconds, tree_cpu_seconds
from benchmarks.machine import facts, load_average
from engine.lifecycle.records import AttemptReport, Dispatch, Finished, JobSpec, Outcome
from engine.worker.attempt import AttemptRun
from engine.worker.child import run_attempt_child
from engine.worker.forkserver import ForkServer
from engine.worker.pool import PER_ATTEMPT, ChildPool, PoolOptions
from engine.worker.tasks import TaskRegistry, encode_args

RESULTS = Path(__file__).resolve().parent / "results" / "worker_isolation.json"
MODES = ("thread", "pool", "process-per-attempt")
REGISTRY = TaskRegistry.from_modules([tasks.__name__])
_ARGS = encode_args((), {})


class Mode:
    """One isolation mode: a pool of task processes (with its template), or none."""

    def __init__(self, name: str, concurrency: int) -> None:
        self.name = name
        self.server: ForkServer | None = None
        self.pool: ChildPool | None = None
        if name != "thread":
            self.server = ForkServer(
                lambda sock, template: run_attempt_child(sock, template, REGISTRY)
            )
            self.server.start()
            options = (
                PoolOptions(size=concurrency, max_attempts_per_child=1_000)
                if name == "pool"
                else PER_ATTEMPT
            )
            self.pool = ChildPool(self.server, options)
            self.pool.start()
        self._ids = iter(range(1, 1 << 62))
        self._lock = threading.Lock()

    def attempt(self) -> float:
        """Runs one no-op attempt; its wall time in seconds."""
        with self._lock:
            number = next(self._ids)
        spec = JobSpec(job_id=f"j{number}", task="noop", args=_ARGS)
        dispatch = Dispatch(f"s/j{number}/1", "s", f"j{number}", 1, spec, 0, 30_000)
        reports: list[AttemptReport] = []
        run = AttemptRun(dispatch, "bench", REGISTRY, reports.append, pool=self.pool)
        start = time.perf_counter()
        finished: Finished = run.execute()
        took = time.perf_counter() - start
        if finished.outcome is not Outcome.COMPLETED:
            raise RuntimeError(f"{self.name}: a no-op attempt ended {finished}")
        return took

    def cpu_seconds(self) -> float:
        """CPU seconds so far of this process, the template and its task processes."""
        total = process_cpu_seconds(os.getpid())
        if self.server is not None and self.server.pid is not None:
            total += tree_cpu_seconds(self.server.pid)
        return total

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
        if self.server is not None:
            self.server.close()


def sequential(mode: Mode, attempts: int) -> dict[str, float]:
    """One attempt at a time: the overhead each one pays."""
    for _ in range(min(20, attempts)):  # warm: first touches, the pool's first reuse
        mode.attempt()
    times = sorted(mode.attempt() for _ in range(attempts))
    return {
        "attempts": attempts,
        "median_ms": round(statistics.median(times) * 1000, 3),
        "p90_ms": round(times[int(len(times) * 0.9)] * 1000, 3),
        "mean_ms": round(statistics.fmean(times) * 1000, 3),
    }


def concurrent(mode: Mode, concurrency: int, seconds: float) -> dict[str, float]:
    """``concurrency`` threads running attempts back to back, as a worker's slots do."""
    counts = [0] * concurrency
    stop = threading.Event()

    def slot(index: int) -> None:
        while not stop.is_set():
            mode.attempt()
            counts[index] += 1

    threads = [threading.Thread(target=slot, args=(i,), daemon=True) for i in range(concurrency)]
    cpu0, wall0 = mode.cpu_seconds(), time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(60)
    wall = time.perf_counter() - wall0
    cpu = mode.cpu_seconds() - cpu0
    done = sum(counts)
    return {
        "concurrency": concurrency,
        "seconds": round(wall, 2),
        "attempts": done,
        "attempts_per_s": round(done / wall, 1),
        "cpu_ms_per_attempt": round(cpu / done * 1000, 3) if done else float("nan"),
    }


def measure(attempts: int, concurrency: int, seconds: float) -> dict[str, Any]:
    """Every mode's figures (the modes one after the other, each with its own template)."""
    figures: dict[str, Any] = {}
    for name in MODES:
        mode = Mode(name, concurrency)
        try:
            figures[name] = {
                "load_average": load_average(),
                "sequential": sequential(mode, attempts),
                "concurrent": concurrent(mode, concurrency, seconds),
            }
            if mode.pool is not None:
                figures[name]["pool"] = dict(mode.pool.stats)
        finally:
            mode.close()
        print(_line(name, figures[name]), file=sys.stderr, flush=True)
    return figures


def _line(name: str, figures: dict[str, Any]) -> str:
    one, many = figures["sequential"], figures["concurrent"]
    return (
        f"{name:>20}: {one['median_ms']:8.3f} ms per attempt (p90 {one['p90_ms']:.3f}); "
        f"{many['attempts_per_s']:8.1f} no-op attempts/s at concurrency {many['concurrency']} "
        f"({many['cpu_ms_per_attempt']:.3f} ms CPU each)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker_isolation")
    parser.add_argument("--attempts", type=int, default=300, help="sequential attempts per mode")
    parser.add_argument("--concurrency", type=int, default=4, help="attempts at once")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the concurrent run")
    args = parser.parse_args(argv)
    run = {
        "machine": facts(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "task": "benchmarks.tasks.noop",
        "modes": measure(args.attempts, args.concurrency, args.seconds),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    runs: list[Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    runs.append(run)
    RESULTS.write_text(json.dumps(runs, indent=2) + "\n")
    print(f"written to {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
