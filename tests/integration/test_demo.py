"""``joblog demo`` end to end: its own local broker (or the session's cluster), exit code 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb

from tests.integration.conftest import KafkaUnderTest

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_runs_end_to_end(kafka_cluster: KafkaUnderTest, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "engine.cli", "demo", "--dir", str(tmp_path), "--frames", "6"]
    if kafka_cluster.mode != "local":
        # No local Java broker where the session uses Docker or an external cluster.
        argv += ["--bootstrap-servers", kafka_cluster.bootstrap_servers]
        argv += ["--topic-prefix", f"demo{os.getpid()}."]
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("JOBLOG_BOOTSTRAP_SERVERS", None)
    result = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "outcomes as expected" in result.stdout
    assert "all signatures valid: True" in result.stdout
    database = tmp_path / "joblog.duckdb"
    assert database.exists()
    with duckdb.connect(str(database), read_only=True) as connection:
        counts = dict(connection.execute("SELECT status, jobs FROM status_counts").fetchall())
    assert counts == {"COMPLETED": 9, "CANCELED": 1, "ABANDONED": 2}
    assert (tmp_path / "deliveries.jsonl").exists()
    if kafka_cluster.mode == "local":
        assert not (tmp_path / "kafka" / "broker.pid").exists(), "the demo left its broker up"
