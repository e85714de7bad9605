"""The benchmark harness in its smoke mode, against the test broker: figures come out.

Nothing here is timed: the machine running the tests may be busy, so the figures are only
checked to exist (and the table and BENCHMARKS.md section to be written from them).
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import report
from benchmarks.plan import PLANS
from benchmarks.run import run


def test_smoke_mode_produces_every_figure(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    results = run(
        PLANS["smoke"],
        bootstrap_servers=kafka_bootstrap,
        peer_enabled=False,
        profile=False,
        results_path=out,
        command="python -m benchmarks run --smoke",
    )

    assert results["errors"] == {}
    sections = results["sections"]
    assert sections["ceiling"]["produce_per_s"]["median"] > 0
    assert sections["throughput"]["joblog"]["200"]["jobs_per_s"]["median"] > 0
    assert sections["latency"]["decided.running.p99_ms"]["median"] >= 0
    assert sections["projection"]["backlog_events_per_s"]["median"] > 0
    assert sections["recovery"]["5000"]["without_snapshots"]["runs"][0]["events_replayed"] == 5000
    assert sections["recovery"]["5000"]["with_snapshots"]["runs"][0]["snapshots"] > 0
    assert set(sections["queries"]["10000"]["queries"]) >= {"status_counts", "task_durations"}
    assert json.loads(out.read_text())["mode"] == "smoke"

    assert "jobs/s" in report.table(results)
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text(
        f"# Benchmarks\n\nintro\n\n{report.START}\nstale figures\n{report.END}\n\noutro\n"
    )
    report.write_markdown(markdown, results)
    text = markdown.read_text()
    assert "intro" in text and "outro" in text and "stale figures" not in text
    assert "python -m benchmarks run --smoke" in text
