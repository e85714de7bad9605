"""The projector's start and stop around its file, without a broker (it never gets to Kafka)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from engine.config import Settings
from projections import ProjectionError, ProjectionFrozenError, Projector, run_projector
from projections.server import endpoint_path
from projections.store import ProjectionStore

SETTINGS = Settings(bootstrap_servers="127.0.0.1:1", topic_prefix="unit.")


def stopped() -> threading.Event:
    stop = threading.Event()
    stop.set()
    return stop


def test_a_stopped_projector_creates_its_file_and_leaves_no_sidecar(tmp_path: Path) -> None:
    db = tmp_path / "p.duckdb"
    stats = run_projector(SETTINGS, db, stopped())
    assert stats.events == 0 and stats.batches == 0
    assert db.exists()
    assert not endpoint_path(db).exists()
    with ProjectionStore(db) as store:
        assert store.meta()["topic_prefix"] == "unit."


def test_a_point_in_time_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "p.duckdb"
    with ProjectionStore(db) as store:
        store.set_meta(as_of="2024-01-01T00:00:00Z")
    with pytest.raises(ProjectionFrozenError, match="point-in-time"):
        Projector(SETTINGS, db).run(stopped())


def test_a_file_held_by_another_process_is_waited_for_then_refused(tmp_path: Path) -> None:
    db = tmp_path / "p.duckdb"
    ProjectionStore(db).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import duckdb, time
                connection = duckdb.connect({str(db)!r}, read_only=True)
                print("ready", flush=True)
                time.sleep(30)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(ProjectionError, match="held by another process"):
            Projector(SETTINGS, db, open_timeout=0.5).run(threading.Event())
    finally:
        holder.kill()
        holder.wait()


def test_the_group_and_its_static_identity_follow_the_file(tmp_path: Path) -> None:
    one = Projector(SETTINGS, tmp_path / "a.duckdb")
    same = Projector(SETTINGS, tmp_path / "a.duckdb")
    other = Projector(SETTINGS, tmp_path / "b.duckdb", group="mine")
    assert one.group == "unit.projector"
    assert one.instance_id == same.instance_id != other.instance_id
    assert other.instance_id.startswith("mine.")
