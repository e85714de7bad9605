"""The failover benchmark's figures and its BENCHMARKS.md section, without running anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import failover
from engine.lifecycle.records import Event, JobCompleted
from engine.partitioning import partition_for


def _event(submission_id: str, at: int) -> Event:
    return Event(f"{submission_id}-{at}", submission_id, "j", 1, at, JobCompleted(attempt=1))


def test_the_longest_gap_counts_from_the_kill_to_the_last_decision() -> None:
    events = [_event("s", at) for at in (900, 1_200, 1_300, 4_300, 4_400)]
    # decisions before the kill (at 1,000) do not count; 1,300 -> 4,300 is the longest gap
    assert failover.longest_gap_ms(events, 1_000) == 3_000
    assert failover.longest_gap_ms(events, 5_000) == 0


def test_the_takeover_is_the_first_decision_on_the_victims_partitions() -> None:
    ids = [f"s-{n}" for n in range(40)]
    mine = {partition_for(ids[0], 6)}
    theirs = next(i for i in ids if partition_for(i, 6) not in mine)
    events = [_event(theirs, 1_100), _event(ids[0], 1_900), _event(ids[0], 2_500)]
    assert failover.first_decision_ms(events, mine, 6, 1_000) == 900
    assert (
        failover.first_decision_ms(
            events, {p for p in range(6)} - mine - {partition_for(theirs, 6)}, 6, 1_000
        )
        == -1
    )


def test_decisions_are_counted_per_second_after_the_kill() -> None:
    events = [_event("s", at) for at in (500, 1_000, 1_999, 4_000)]
    assert failover.per_second(events, 1_000) == [2, 0, 0, 1]


def _results() -> dict[str, Any]:
    run = {
        "case": "scheduler",
        "scheduler_options": [],
        "jobs": 10_000,
        "rate": 200.0,
        "schedulers": 3,
        "victim": "scheduler-2",
        "victim_partitions": [2, 3],
        "takeover_ms": 10_600,
        "gap_ms": 3_700,
        "completion_gap_ms": 29_900,
        "reader_stall_ms": {2: 34_700, 3: 34_600},
        "projection_stall_ms": 33_700,
        "seconds": 61.1,
        "jobs_per_s": 163.7,
        "catch_up_seconds": 11.1,
        "lost": 0,
        "doubled": 0,
        "events_twice": 0,
        "dispatches_twice": 0,
        "scheduler_restarts": {"scheduler": 0, "scheduler-3": 0},
    }
    broker = {key: value for key, value in run.items() if key != "takeover_ms"}
    return {
        "when": "2026-12-03 06:05 UTC",
        "command": "python -m benchmarks failover",
        "machine": {"cpus": 2, "cpu_model": "a CPU"},
        "runs": [run, {**broker, "case": "broker", "victim": "node-1", "victim_partitions": []}],
    }


def test_the_table_has_a_row_per_case_with_its_gaps() -> None:
    table = failover.table(_results())
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 3  # the header and two cases
    assert "| 10.6 s | 3.7 s / 29.9 s | 34.7 s | 33.7 s |" in rows[1]
    assert "| broker SIGKILL | node-1 |" in rows[2] and "| - |" in rows[2]


def test_the_markdown_section_replaces_only_what_is_between_its_markers(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# B\n\nbefore\n\n{failover.START}\nstale\n{failover.END}\n\nafter\n")
    failover.write_markdown(path, _results())
    text = path.read_text()
    assert "before" in text and "after" in text and "stale" not in text
    assert "python -m benchmarks failover" in text
    fresh = tmp_path / "new.md"
    failover.write_markdown(fresh, _results())
    assert "## Failover on three brokers" in fresh.read_text()
