"""The DuckDB store: batch writes with offsets, reads by key, incremental == batch."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from engine.lifecycle.records import CommandRejected, Event
from engine.lifecycle.workload import simulate
from projections.errors import ProjectionError, ProjectionFrozenError
from projections.fold import Fold, NoRows, Position
from projections.schema import KEYED_TABLES, SCHEMA_VERSION, TABLES, VIEWS, Table
from projections.store import ProjectionStore, prepare

TOPIC = "x.events"
COMPARED = (
    "jobs",
    "attempts",
    "submissions",
    "job_events",
    "job_exceptions",
    "job_outputs",
    "progress",
    "workers",
)


def project(
    path: Path, batches: list[list[Event]], *, fresh_fold: bool, max_rows: int = 200_000
) -> None:
    """Writes ``batches`` through the store, as a projector would (offset = index in the log)."""
    offset = 0
    fold = Fold(max_rows=max_rows)
    with ProjectionStore(path, topic_prefix="x.") as store:
        for batch in batches:
            if fresh_fold:
                fold = Fold(max_rows=max_rows)
            fold.prefetch(batch, (), store)
            for event in batch:
                fold.event(event, Position(TOPIC, 0, offset))
                offset += 1
            store.write(fold.take())


def table(path: Path, name: str) -> list[tuple[Any, ...]]:
    connection = duckdb.connect(str(path), read_only=True)
    try:
        return connection.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall()
    finally:
        connection.close()


def split(events: list[Event], rng: random.Random) -> list[list[Event]]:
    batches: list[list[Event]] = []
    start = 0
    while start < len(events):
        size = rng.randint(1, 400)
        batches.append(events[start : start + size])
        start += size
    return batches


@pytest.mark.parametrize(("fresh_fold", "max_rows"), [(True, 200_000), (False, 25)])
def test_incremental_equals_batch(tmp_path: Path, fresh_fold: bool, max_rows: int) -> None:
    events = simulate(150, seed=11).events
    project(tmp_path / "batch.duckdb", [events], fresh_fold=False)
    project(
        tmp_path / "incremental.duckdb",
        split(events, random.Random(3)),
        fresh_fold=fresh_fold,
        max_rows=max_rows,
    )
    for name in COMPARED:
        assert table(tmp_path / "batch.duckdb", name) == table(
            tmp_path / "incremental.duckdb", name
        ), name


def test_rows_and_offsets_commit_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = simulate(10).events
    path = tmp_path / "p.duckdb"
    project(path, [events[:20]], fresh_fold=True)
    before = {name: table(path, name) for name in (*COMPARED, "projection_offsets")}

    with ProjectionStore(path) as store:
        fold = Fold()
        fold.prefetch(events[20:], (), store)
        for offset, event in enumerate(events[20:], start=20):
            fold.event(event, Position(TOPIC, 0, offset))
        changes = fold.take()
        real_replace = store._replace
        written: list[str] = []

        def recording_replace(table_: Table, rows: pa.Table) -> None:
            written.append(table_.name)
            real_replace(table_, rows)

        def failing_offsets(offsets: pa.Table) -> None:
            raise duckdb.IOException("disk full")

        monkeypatch.setattr(store, "_replace", recording_replace)
        monkeypatch.setattr(store, "_store_offsets", failing_offsets)
        with pytest.raises(duckdb.IOException):
            store.write(changes)
        assert {"jobs", "submissions"} <= set(written)

    assert {name: table(path, name) for name in before} == before


def test_stored_offsets_are_the_next_offsets(tmp_path: Path) -> None:
    path = tmp_path / "p.duckdb"
    events = simulate(5).events
    project(path, [events[:7], events[7:]], fresh_fold=True)
    with ProjectionStore(path) as store:
        assert store.offsets() == {(TOPIC, 0): len(events)}


def test_rows_are_read_back_as_the_fold_holds_them(tmp_path: Path) -> None:
    events = simulate(30, seed=4).events
    expected = Fold()
    expected.prefetch(events, (), NoRows())
    for event in events:
        expected.event(event)
    path = tmp_path / "p.duckdb"
    project(path, [events], fresh_fold=True)
    with ProjectionStore(path) as store:
        for key, row in expected.jobs.items():
            assert next(iter(store.jobs([key]))) == row
        for attempt_key, row in expected.attempts.items():
            assert next(iter(store.attempts([attempt_key]))) == row
        for sid, row in expected.submissions.items():
            assert next(iter(store.submissions([sid]))) == row


def test_every_view_runs_on_an_empty_and_a_full_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.duckdb"
    ProjectionStore(empty).close()
    full = tmp_path / "full.duckdb"
    project(full, [simulate(40).events], fresh_fold=True)
    for path in (empty, full):
        connection = duckdb.connect(str(path), read_only=True)
        try:
            for view in VIEWS:
                connection.execute(f"SELECT * FROM {view}").fetchall()
        finally:
            connection.close()
    assert table(full, "status_counts")


def test_schema_version_prefix_and_frozen_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.duckdb"
    with ProjectionStore(path, topic_prefix="a.") as store:
        assert store.meta()["schema_version"] == str(SCHEMA_VERSION)
    with pytest.raises(ProjectionError, match=r"prefix 'a\.'"):
        ProjectionStore(path, topic_prefix="b.")
    with ProjectionStore(path) as store:
        store.set_meta(as_of="1200")
    with pytest.raises(ProjectionFrozenError):
        ProjectionStore(path)
    ProjectionStore(path, allow_frozen=True).close()
    with ProjectionStore(path, allow_frozen=True) as store:
        store.set_meta(schema_version="0")
    with pytest.raises(ProjectionError, match="rebuild"):
        ProjectionStore(path, allow_frozen=True)


def test_reset_empties_every_table(tmp_path: Path) -> None:
    path = tmp_path / "p.duckdb"
    project(path, [simulate(10).events], fresh_fold=True)
    with ProjectionStore(path) as store:
        store.reset()
        assert store.offsets() == {}
    for definition in TABLES:
        if definition.name != "projection_meta":
            assert table(path, definition.name) == []
    assert {t.name for t in KEYED_TABLES} <= {t.name for t in TABLES}


def test_a_rejection_outside_a_sequence_is_stored_once_across_batches(tmp_path: Path) -> None:
    rejection = Event(
        "s-9:rejected:c-7",
        "s-9",
        "",
        0,
        1_700_000_000_000,
        CommandRejected("c-7", "CancelJobs", "unknown_submission", "no submission 's-9'"),
    )
    path = tmp_path / "p.duckdb"
    project(path, [[rejection], [rejection], [rejection, rejection]], fresh_fold=True)
    assert [row[0] for row in table(path, "job_events")] == ["s-9:rejected:c-7"]


def test_a_prepared_batch_does_not_change_with_the_fold(tmp_path: Path) -> None:
    events = simulate(3).events
    fold = Fold()
    fold.prefetch(events, (), NoRows())
    for event in events:
        fold.event(event)
    changes = fold.take()
    prepared = prepare(changes)
    for row in changes.jobs:
        row["status"] = "CHANGED AFTERWARDS"
    path = tmp_path / "p.duckdb"
    with ProjectionStore(path) as store:
        store.commit(prepared)
    assert "CHANGED AFTERWARDS" not in {row[6] for row in table(path, "jobs")}


def test_a_refused_batch_says_why_and_leaves_the_store_usable(tmp_path: Path) -> None:
    from engine.lifecycle.records import SubmissionAccepted

    def batch(sid: str, timestamp: int) -> Any:
        fold = Fold()
        fold.event(
            Event(f"{sid}:1", sid, "", 1, timestamp, SubmissionAccepted("c", "", (), ())),
            Position(TOPIC, 0, 0),
        )
        return fold.take()

    with ProjectionStore(tmp_path / "p.duckdb") as store:
        for _ in range(2):  # the same refusal each time, not an aborted transaction
            with pytest.raises(duckdb.ConversionException):
                store.write(batch("s-beyond", 10**16))  # beyond DuckDB's TIMESTAMP range
        store.write(batch("s-1", 1_700_000_000_000))
        assert store.connection.execute("SELECT submission_id FROM submissions").fetchall() == [
            ("s-1",)
        ]
