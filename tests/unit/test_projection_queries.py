"""Queries on a projection: through the projector's endpoint, on the file, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.lifecycle.workload import simulate
from projections import ProjectionReader, ProjectionUnavailableError, QueryError, query
from projections.cli import projections_main
from projections.fold import Fold, Position
from projections.rebuild import AsOf, default_as_of_path
from projections.server import Endpoint, QueryServer, endpoint_path
from projections.store import ProjectionStore

SQL_COUNT = "SELECT count(*) AS jobs FROM jobs"
#: Jobs in the projection of ``simulate(20)``.
JOBS = len({(e.submission_id, e.job_id) for e in simulate(20).events if e.name == "JobSubmitted"})


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "joblog.duckdb"
    events = simulate(20).events
    with ProjectionStore(path, topic_prefix="x.") as store:
        fold = Fold()
        fold.prefetch(events, (), store)
        for offset, event in enumerate(events):
            fold.event(event, Position("x.events", 0, offset))
        store.write(fold.take())
    return path


@pytest.fixture
def served(db: Path) -> Iterator[tuple[ProjectionStore, QueryServer]]:
    store = ProjectionStore(db)
    server = QueryServer(store.connection, db, status=lambda: {"events": 1})
    server.start()
    try:
        yield store, server
    finally:
        server.stop()
        store.close()


def test_the_file_is_read_when_no_projector_runs(db: Path) -> None:
    reader = ProjectionReader(db)
    assert reader.query(SQL_COUNT) == [{"jobs": JOBS}]
    assert reader.source == "file"


def test_queries_go_to_the_projector_that_holds_the_file(
    db: Path, served: tuple[ProjectionStore, QueryServer]
) -> None:
    store, server = served
    endpoint = Endpoint.read(db)
    assert endpoint is not None and endpoint.url == server.endpoint.url
    assert endpoint_path(db).stat().st_mode & 0o777 == 0o600

    reader = ProjectionReader(db)
    assert reader.query(SQL_COUNT) == [{"jobs": JOBS}]
    assert reader.source == "projector"
    rows = reader.query(
        "SELECT job_id, submitted_at FROM jobs WHERE job_id = ? LIMIT 1", ["double"]
    )
    assert rows[0]["submitted_at"].year == 2024

    doubles = reader.query("SELECT count(*) AS n FROM jobs WHERE job_id = 'double'")[0]["n"]
    store.connection.execute("DELETE FROM jobs WHERE job_id = 'double'")
    assert reader.query(SQL_COUNT) == [{"jobs": JOBS - doubles}]


def test_the_projector_refuses_writes_and_several_statements(
    db: Path, served: tuple[ProjectionStore, QueryServer]
) -> None:
    reader = ProjectionReader(db)
    with pytest.raises(QueryError, match="read-only"):
        reader.query("DELETE FROM jobs")
    with pytest.raises(QueryError, match="one statement"):
        reader.query("SELECT 1; SELECT 2")
    with pytest.raises(QueryError, match="no_such_table"):
        reader.query("SELECT * FROM no_such_table")
    assert reader.query(SQL_COUNT) == [{"jobs": JOBS}]


def test_the_file_refuses_writes_too(db: Path) -> None:
    with pytest.raises(QueryError, match="read-only"):
        query(db, "CREATE TABLE x (a INTEGER)")


def test_a_stale_endpoint_falls_back_to_the_file(db: Path) -> None:
    endpoint_path(db).write_text(
        json.dumps({"url": "http://127.0.0.1:9", "token": "t", "pid": 1, "db": str(db)})
    )
    reader = ProjectionReader(db, timeout=2)
    assert reader.query(SQL_COUNT) == [{"jobs": JOBS}]
    assert reader.source == "file"


def test_no_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ProjectionUnavailableError, match="joblog projector --db"):
        query(tmp_path / "missing.duckdb", SQL_COUNT)


def test_a_file_held_without_an_endpoint_is_a_clear_error(db: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import duckdb, sys, time
                connection = duckdb.connect({str(db)!r})
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
        with pytest.raises(ProjectionUnavailableError, match="Another process holds the file"):
            query(db, SQL_COUNT)
    finally:
        holder.kill()
        holder.wait()


def test_the_status_endpoint_needs_the_token(
    db: Path, served: tuple[ProjectionStore, QueryServer]
) -> None:
    import urllib.error
    import urllib.request

    _, server = served
    request = urllib.request.Request(f"{server.endpoint.url}/status")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 401
    request.add_header("X-Joblog-Token", server.token)
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.loads(response.read()) == {"events": 1}


def test_stopping_the_server_removes_the_sidecar(db: Path) -> None:
    store = ProjectionStore(db)
    server = QueryServer(store.connection, db)
    server.start()
    server.stop()
    store.close()
    assert not endpoint_path(db).exists()


# --------------------------------------------------------------------------- the CLI


def test_sql_prints_a_table_or_json(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert projections_main(["sql", "--db", str(db), "SELECT * FROM status_counts"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split() == ["status", "jobs"]
    assert "COMPLETED" in text

    sql = "SELECT job, state, submit FROM accounting ORDER BY job LIMIT 2"
    assert projections_main(["sql", "--db", str(db), "--json", sql]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and set(rows[0]) == {"job", "state", "submit"}
    assert rows[0]["submit"].startswith("2024-01-01T")


def test_sql_errors_exit_1_with_the_reason(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert projections_main(["sql", "--db", str(db), "SELEC nonsense"]) == 1
    assert "syntax error" in capsys.readouterr().err.lower()
    assert projections_main(["sql", "--db", str(db / "nope"), SQL_COUNT]) == 1


def test_views_are_listed(capsys: pytest.CaptureFixture[str]) -> None:
    assert projections_main(["projections", "views"]) == 0
    out = capsys.readouterr().out
    for view in ("status_counts", "task_durations", "accounting", "worker_load", "queue_wait"):
        assert view in out


def test_as_of_is_an_offset_offsets_per_partition_or_a_time() -> None:
    assert AsOf.parse("1200").bound(5) == 1200
    per_partition = AsOf.parse("0:10,3:7")
    assert (per_partition.bound(0), per_partition.bound(3), per_partition.bound(1)) == (10, 7, 0)
    moment = AsOf.parse("2024-01-01T00:00:10Z")
    assert moment.timestamp_ms == 1_704_067_210_000
    assert AsOf.parse("2024-01-01T01:00:10+01:00").timestamp_ms == 1_704_067_210_000
    assert AsOf.parse("2024-01-01 00:00:10").timestamp_ms == 1_704_067_210_000
    with pytest.raises(Exception, match="ISO-8601"):
        AsOf.parse("yesterday")
    assert default_as_of_path("/d/joblog.duckdb") == Path("/d/joblog.as-of.duckdb")


def test_sidecar_of_a_dead_projector_is_harmless(db: Path) -> None:
    store = ProjectionStore(db)
    server = QueryServer(store.connection, db)
    server.start()
    # A killed projector leaves its sidecar behind; its port stops answering.
    server._httpd.shutdown()
    server._httpd.server_close()
    store.close()
    time.sleep(0.1)
    assert query(db, SQL_COUNT) == [{"jobs": JOBS}]


def test_the_idempotency_keys_view_reads_the_ledgers_decisions(tmp_path: Path) -> None:
    """The workload's skipped story runs a key once, then every duplicate is skipped."""
    workload = simulate(60)
    with ProjectionStore(tmp_path / "keys.duckdb", topic_prefix="x.") as store:
        fold = Fold()
        fold.prefetch(workload.events, (), store)
        for offset, event in enumerate(workload.events):
            fold.event(event, Position("x.events", 0, offset))
        store.write(fold.take())
        rows = store.connection.execute(
            "SELECT key, completed_by, granted, skipped FROM idempotency_keys"
        ).fetchall()
        skipped_jobs = store.connection.execute(
            "SELECT count(*) FROM jobs WHERE status = 'SKIPPED'"
        ).fetchone()
    ((key, completed_by, granted, skipped),) = rows
    assert key == "snapshot-2024" and completed_by.endswith("/snapshot") and granted == 1
    assert skipped_jobs is not None and skipped <= skipped_jobs[0]
