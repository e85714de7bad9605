"""The benchmark harness's statistics and table, without running anything."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

from benchmarks import report
from benchmarks.cluster import process_cpu_seconds, tree_cpu_seconds
from benchmarks.stats import latency_summary, percentile, summary


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1, 2, 3, 4], 0.5) == 2.5
    assert percentile([5], 0.99) == 5
    assert math.isnan(percentile([], 0.5))


def test_summary_gives_median_and_relative_spread() -> None:
    s = summary([90, 100, 110])
    assert (s["median"], s["min"], s["max"], s["runs"]) == (100, 90, 110, 3)
    assert s["spread"] == 0.2


def test_latency_summary_is_in_milliseconds() -> None:
    s = latency_summary([0.010, 0.020, 0.030])
    assert s["p50_ms"] == 20
    assert s["max_ms"] == 30


def test_targets_are_judged_against_the_largest_run() -> None:
    results = {
        "sections": {
            "throughput": {
                "joblog": {
                    size: {
                        "jobs_per_s": summary([rate]),
                        "steady_jobs_per_s": summary([rate]),
                        "records_per_job": summary([10.0]),
                    }
                    for size, rate in (("1000", 2500.0), ("10000", 1500.0))
                },
                "celery": {"10000": {"tasks_per_s": summary([500.0])}},
                "ratio": {"10000": summary([5.0])},
            }
        }
    }
    rows = {row[0]: row for row in report.rows(results)}
    assert rows["joblog end to end, 10,000 no-op jobs, jobs/s"][4] == "not met"
    assert rows["joblog end to end, 1,000 no-op jobs, jobs/s"][4] == ""
    assert rows["joblog ÷ Celery, 10,000 jobs (same run, paired)"][1] == "5.00x"
    assert rows["joblog ÷ Celery, 10,000 jobs (same run, paired)"][4] == "met"


def test_a_service_counts_the_cpu_of_its_grandchildren() -> None:
    # a child that forks a grandchild which burns CPU for a while, then both wait
    script = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    end = time.process_time() + 0.3\n"
        "    while time.process_time() < end: pass\n"
        "    time.sleep(30); os._exit(0)\n"
        "time.sleep(30)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 20
        while tree_cpu_seconds(child.pid) < 0.25:
            assert time.monotonic() < deadline, "the grandchild's CPU was never counted"
            time.sleep(0.05)
        assert process_cpu_seconds(child.pid) < 0.25  # the child's own figure misses it
        assert tree_cpu_seconds(os.getpid()) - process_cpu_seconds(os.getpid()) >= 0.25
    finally:
        child.kill()
        child.wait()
