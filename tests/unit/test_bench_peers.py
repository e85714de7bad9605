"""The benchmark harness's peers without running them: install checks, plans, the report."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from benchmarks import report, temporal_peer
from benchmarks.__main__ import _peers
from benchmarks.plan import PLANS
from benchmarks.run import _best_rate, _paired, _unsustained
from benchmarks.stats import summary


def _no_tools_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_a_missing_cli_without_go_is_a_reason_not_a_failure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_tools_on_path(monkeypatch, tmp_path)
    reason = temporal_peer.ensure_installed(lambda _: None, bin_dir=tmp_path / "bin")
    assert reason is not None
    assert "go is not installed" in reason
    assert "go install github.com/temporalio/cli/cmd/temporal@v1.5.1" in reason


def test_without_install_nothing_is_built(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_tools_on_path(monkeypatch, tmp_path)
    said: list[str] = []
    reason = temporal_peer.ensure_installed(said.append, install=False, bin_dir=tmp_path)
    assert reason is not None and "not installed" in reason
    assert said == []


def test_the_cached_binary_is_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_tools_on_path(monkeypatch, tmp_path)
    binary = tmp_path / "temporal"
    binary.write_text("#!/bin/sh\n")
    assert temporal_peer.find_binary(tmp_path) is None  # not executable yet
    os.chmod(binary, 0o755)
    assert temporal_peer.find_binary(tmp_path) == binary


def test_the_sqlite_variant_alone_names_a_database_file() -> None:
    memory = temporal_peer.server_argv(Path("temporal"), 7233, 7243, None)
    sqlite = temporal_peer.server_argv(Path("temporal"), 7233, 7243, Path("/tmp/t.db"))
    assert memory[:3] == ["temporal", "server", "start-dev"]
    assert "--db-filename" not in memory
    assert sqlite[-2:] == ["--db-filename", "/tmp/t.db"]
    assert {"--headless", "127.0.0.1", "7233"} <= set(memory)


def test_an_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="variant"):
        temporal_peer.TemporalPeer("postgres")


def test_temporal_runs_are_smaller_and_smoke_installs_nothing() -> None:
    assert PLANS["full"].temporal_jobs == (1_000,)
    assert PLANS["quick"].temporal_jobs == (200,)
    for plan in PLANS.values():
        assert all(n <= min(plan.jobs) for n in plan.temporal_jobs)
    assert PLANS["smoke"].peer_latency_rates == ()
    assert 20 in PLANS["full"].peer_latency_rates and 20 in PLANS["quick"].peer_latency_rates


def test_peers_option_is_checked() -> None:
    assert _peers("celery, temporal") == ("celery", "temporal")
    with pytest.raises(argparse.ArgumentTypeError, match="unknown peer"):
        _peers("celery,airflow")


def test_a_system_runs_at_a_shared_rate_only_if_it_sustains_it() -> None:
    throughput = {
        "joblog": {"1000": {"jobs_per_s": summary([500.0])}},
        "temporal": {"sqlite": {"1000": {"jobs_per_s": summary([10.0])}}},
    }
    assert _best_rate(throughput, "joblog") == 500.0
    assert _best_rate(throughput, "temporal-memory") is None
    assert _unsustained("temporal-sqlite", _best_rate(throughput, "temporal-sqlite"), 5) is None
    reason = _unsustained("temporal-sqlite", 10.0, 20)
    assert reason is not None and "10.0 jobs/s" in reason
    assert _unsustained("temporal-memory", None, 20) is None  # not measured: try it


def test_ratios_are_paired_run_by_run() -> None:
    joblog = [{"jobs_per_s": 400.0}, {"jobs_per_s": 600.0}]
    temporal = [{"jobs_per_s": 10.0}, {"jobs_per_s": 20.0}]
    assert _paired(joblog, temporal, "jobs_per_s")["median"] == 35.0
    assert _paired(joblog, temporal[:1], "jobs_per_s")["runs"] == 1  # a failed peer run


def _latency(p50: float, p99: float) -> dict[str, object]:
    run = {
        "load_average": (1.5, 1.0, 1.0),
        "achieved_rate": 20.0,
        "running": {"p50_ms": p50, "p99_ms": p99, "max_ms": p99 + 10},
        "result": {"p50_ms": p50 * 2, "p99_ms": p99 * 2, "max_ms": p99 * 2 + 10},
    }
    entry: dict[str, object] = {"runs": [run]}
    for phase in ("running", "result"):
        for q in ("p50_ms", "p99_ms", "max_ms"):
            entry[f"{phase}.{q}"] = summary([run[phase][q]])  # type: ignore[index]
    return entry


def _results() -> dict[str, object]:
    def runs(rate: float, cpu: dict[str, float]) -> list[dict[str, object]]:
        return [{"load_average": (1.2, 1, 1), "jobs_per_s": rate, "cpu_seconds": cpu}]

    return {
        "sections": {
            "throughput": {
                "joblog": {
                    "1000": {
                        "runs": runs(500.0, {"scheduler": 1.0, "worker-1": 0.5, "worker-2": 0.5}),
                        "jobs_per_s": summary([500.0]),
                        "steady_jobs_per_s": summary([600.0]),
                        "records_per_job": summary([14.0]),
                    }
                },
                "celery": {},
                "temporal": {
                    "memory": {
                        "1000": {
                            "runs": runs(50.0, {"server": 20.0, "worker-1": 5.0, "client": 1.0}),
                            "jobs_per_s": summary([50.0]),
                        }
                    },
                    "sqlite": {
                        "1000": {
                            "runs": runs(10.0, {"server": 40.0, "worker-1": 6.0}),
                            "jobs_per_s": summary([10.0]),
                        }
                    },
                },
                "temporal_ratio": {
                    "memory": {"1000": summary([10.0])},
                    "sqlite": {"1000": summary([50.0])},
                },
                "celery_skipped": "redis-server is missing",
            },
            "peer_latency": {
                "rates": {
                    "20": {
                        "joblog": _latency(200.0, 300.0),
                        "temporal-memory": _latency(60.0, 120.0),
                        "temporal-sqlite": {"skipped": "not run: sustained 10.0 jobs/s"},
                    },
                    "5": {
                        "joblog": _latency(20.0, 40.0),
                        "temporal-sqlite": _latency(100.0, 150.0),
                    },
                }
            },
        }
    }


def test_the_temporal_targets_are_judged_honestly() -> None:
    rows = {row[0]: row for row in report.rows(_results())}
    memory = rows["joblog ÷ Temporal (in memory), 1,000 jobs (same run, paired)"]
    sqlite = rows["joblog ÷ Temporal (SQLite file), 1,000 jobs (same run, paired)"]
    assert (memory[1], memory[3], memory[4]) == ("10.0x", "≥ 40x", "not met")
    assert (sqlite[1], sqlite[4]) == ("50.0x", "met")
    slower = rows["p99 start → running at 20 jobs/s, ms: joblog against Temporal, in memory (120)"]
    assert (slower[1], slower[4]) == ("300", "not met")
    faster = rows["p99 start → result at 5 jobs/s, ms: joblog against Temporal, SQLite file (300)"]
    assert (faster[1], faster[4]) == ("80", "met")
    assert not any("20 jobs/s" in name and "SQLite" in name for name in rows)  # not run there
    assert rows["Celery peer"][4] == "not measured"
    cpu = next(row for name, row in rows.items() if name.startswith("Temporal (in memory) CPU"))
    assert cpu[0].endswith("(total; server 20.00, workers 5.00, client 1.00)")
    assert cpu[1] == "26.00"


def test_the_peer_table_has_a_column_per_system() -> None:
    body = {row[0]: row for row in report.peer_rows(_results())}
    assert all(len(row) == len(report.PEER_HEADER) for row in body.values())
    rate = body["1,000 no-op jobs, jobs/s (median, runs: min to max)"]
    assert rate[1:] == ("500 (1 run)", "", "50.0 (1 run)", "10.0 (1 run)")
    assert body["1,000 jobs: load average (1 min) at the start of the runs"][3] == "1.20"
    assert body["1,000 jobs: CPU per job, ms (total; per process)"][4].startswith("46.00 (server")
    running = next(
        row for name, row in body.items() if name.startswith("at 20 jobs/s: start → running")
    )
    assert running[1] == "200 / 300 / 310"
    assert running[3] == "60 / 120 / 130"
    assert running[4].startswith("not run")
    assert body["not run, and why"][2] == "redis-server is missing"


def test_the_markdown_carries_the_peer_table() -> None:
    results = _results()
    results["machine"] = {
        "versions": {"joblog": "0.1.0"},
        "at": "2026-12-03T08:00:00Z",
        "cpus": 2,
        "cpu_model": "x",
        "memory_gib": 8,
        "platform": "Linux",
        "python": "3.11",
        "load_average": (1.0, 1.0, 1.0),
    }
    results.update(command="python -m benchmarks run --full", mode="full", wall_seconds=60)
    results["sections"]["throughput"]["temporal_versions"] = {"temporalio": "1.35.0"}  # type: ignore[index]
    text = report.markdown(results)
    assert (
        "| figure | joblog | Celery + Redis | Temporal, in memory | Temporal, SQLite file |" in text
    )
    assert "temporalio 1.35.0" in text
