"""The projector against a real Kafka broker: exactly-once into DuckDB, rebuild, as-of, queries.

The event log comes from :func:`engine.lifecycle.workload.simulate` (the real decider on a
simulated clock), written the way the scheduler writes it: keyed by submission id, in
transactions, with a commit marker after each.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from engine import codec
from engine.config import Settings
from engine.lifecycle.records import Event, Heartbeat, JobStarted, SubmissionAccepted
from engine.lifecycle.workload import Workload, simulate
from engine.topics import Topics
from projections import ProjectionError, ProjectionReader, Projector, lag, query, rebuild
from projections.fold import Fold, Position
from projections.schema import JOBS
from tests.unit.test_projection_oracle import actual_subset, expected_jobs

ROOT = Path(__file__).resolve().parents[2]
#: Tables compared between two projections of the same log (all but bookkeeping).
TABLES = (
    "jobs",
    "attempts",
    "submissions",
    "job_events",
    "job_exceptions",
    "job_outputs",
    "progress",
    "workers",
)


# --------------------------------------------------------------------------- helpers


def produce(
    settings: Settings,
    events: Sequence[Event],
    heartbeats: Sequence[Heartbeat] = (),
    per_transaction: int = 300,
) -> None:
    """Writes events (keyed by submission id) and heartbeats in transactions."""
    topics = Topics(settings.topic_prefix)
    producer = Producer(
        settings.producer_config(**{"transactional.id": f"test-{uuid.uuid4().hex}", "linger.ms": 5})
    )
    producer.init_transactions(60)
    producer.begin_transaction()
    for index, event in enumerate(events, start=1):
        producer.produce(
            topics.events, key=event.submission_id.encode(), value=codec.encode_event(event)
        )
        if index % per_transaction == 0:
            producer.commit_transaction(60)
            producer.begin_transaction()
    for heartbeat in heartbeats:
        producer.produce(
            topics.reports, key=heartbeat.worker_id.encode(), value=codec.encode_report(heartbeat)
        )
    producer.commit_transaction(60)


def produce_raw(settings: Settings, key: bytes, value: bytes) -> None:
    producer = Producer(settings.producer_config(**{"enable.idempotence": True}))
    producer.produce(Topics(settings.topic_prefix).events, key=key, value=value)
    assert producer.flush(30) == 0


@contextmanager
def projector_thread(
    settings: Settings, db: Path, fold: Fold | None = None, **options: Any
) -> Iterator[Projector]:
    projector = Projector(settings, db, **options)
    if fold is not None:
        projector.fold = fold
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            projector.run(stop)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="projector", daemon=True)
    thread.start()
    try:
        yield projector
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the projector did not stop"
        assert not failure, failure


def spawn_projector(
    settings: Settings, db: Path, log_path: Path, batch_size: int
) -> subprocess.Popen[bytes]:
    code = (
        "import logging, sys\n"
        "from engine.config import Settings\n"
        "from projections.projector import run_projector\n"
        "logging.basicConfig(level=logging.INFO)\n"
        f"run_projector(Settings(bootstrap_servers={settings.bootstrap_servers!r}, "
        f"topic_prefix={settings.topic_prefix!r}), {str(db)!r}, batch_size={batch_size})\n"
    )
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except ProjectionError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def caught_up(settings: Settings, db: Path) -> bool:
    """Every partition of events (and of reports seen) is projected to its end."""
    rows = lag(settings, db)
    return bool(rows) and all(row.lag == 0 for row in rows)


def snapshot(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every compared table of a projection, sorted, read straight from the file."""
    connection = duckdb.connect(str(db), read_only=True)
    try:
        return {
            name: connection.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall()
            for name in TABLES
        }
    finally:
        connection.close()


def event_offsets(db: Path, settings: Settings) -> dict[int, int]:
    connection = duckdb.connect(str(db), read_only=True)
    try:
        rows = connection.execute(
            "SELECT partition, next_offset FROM projection_offsets WHERE topic = ?",
            [Topics(settings.topic_prefix).events],
        ).fetchall()
    finally:
        connection.close()
    return {int(p): int(o) for p, o in rows}


def stored_jobs(db: Path) -> dict[tuple[str, str], dict[str, Any]]:
    rows = query(db, f"SELECT {JOBS.select_for_fold()} FROM jobs")
    return {(row["submission_id"], row["job_id"]): row for row in rows}


@pytest.fixture
def workload() -> Workload:
    return simulate(300, seed=21)


# --------------------------------------------------------------------------- tests


def test_jobs_match_an_independent_fold_and_queries_run_meanwhile(
    settings: Settings, workload: Workload, tmp_path: Path
) -> None:
    db = tmp_path / "live.duckdb"
    produce(settings, workload.events, workload.heartbeats)
    with projector_thread(settings, db, batch_size=500) as projector:
        wait_until(lambda: caught_up(settings, db), 120, "the projector to catch up")

        # `joblog sql` from another process while the projector holds the file.
        cli = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from projections.cli import projections_main; "
                "sys.exit(projections_main(sys.argv[1:]))",
                "sql",
                "--db",
                str(db),
                "--json",
                "SELECT count(*) AS n FROM job_events",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout) == [{"n": len(workload.events)}]
        reader = ProjectionReader(db)
        assert reader.query("SELECT count(*) AS n FROM jobs")[0]["n"] == len(
            expected_jobs(workload.events)
        )
        assert reader.source == "projector"
        assert projector.stats.events == len(workload.events)

        actual = stored_jobs(db)
    expected = expected_jobs(workload.events)
    assert set(actual) == set(expected)
    for key, want in expected.items():
        assert actual_subset(actual[key]) == want, key

    tables = snapshot(db)
    event_ids = [row[0] for row in tables["job_events"]]
    assert len(event_ids) == len(set(event_ids)) == len(workload.events)
    assert {row[0] for row in tables["workers"]} == {h.worker_id for h in workload.heartbeats}
    submissions = query(db, "SELECT count(*) AS n FROM submissions WHERE done")
    assert submissions == [{"n": len(workload.states)}]


def test_a_projector_killed_mid_batch_ends_like_an_uninterrupted_one(
    settings: Settings, workload: Workload, tmp_path: Path
) -> None:
    produce(settings, workload.events, workload.heartbeats)
    reference = tmp_path / "reference.duckdb"
    with projector_thread(settings, reference, group=f"{settings.topic_prefix}reference"):
        wait_until(lambda: caught_up(settings, reference), 120, "the reference projection")

    db = tmp_path / "killed.duckdb"
    log_path = tmp_path / "projector.log"
    total = len(workload.events)
    kills = 0
    for fraction in (0.2, 0.5, 0.8):
        process = spawn_projector(settings, db, log_path, batch_size=37)
        try:
            wait_until(
                lambda f=fraction: (
                    db.exists()
                    and query(db, "SELECT count(*) AS n FROM job_events")[0]["n"] >= f * total
                ),
                120,
                f"{fraction:.0%} of the events",
            )
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(30)
        kills += 1
    process = spawn_projector(settings, db, log_path, batch_size=37)
    try:
        wait_until(lambda: caught_up(settings, db), 120, "the restarted projector to catch up")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log_path.read_text()[-3000:]

    assert kills == 3
    assert snapshot(db) == snapshot(reference)
    assert event_offsets(db, settings) == event_offsets(reference, settings)


def test_rebuild_from_offset_zero_equals_the_live_projection(
    settings: Settings, workload: Workload, tmp_path: Path
) -> None:
    produce(settings, workload.events, workload.heartbeats)
    live = tmp_path / "live.duckdb"
    with projector_thread(settings, live):
        wait_until(lambda: caught_up(settings, live), 120, "the live projection")
        with pytest.raises(ProjectionError, match="held by a running projector"):
            rebuild(settings, live)
        rebuilt = rebuild(settings, live, out=tmp_path / "rebuilt.duckdb")

    assert rebuilt.events == len(workload.events)
    assert snapshot(tmp_path / "rebuilt.duckdb") == snapshot(live)
    assert event_offsets(tmp_path / "rebuilt.duckdb", settings) == event_offsets(live, settings)

    before = snapshot(live)
    in_place = rebuild(settings, live)
    assert in_place.path == live
    assert snapshot(live) == before
    assert not list(tmp_path.glob(".*.tmp*"))


def test_as_of_gives_the_state_at_a_past_offset_or_time(
    settings: Settings, workload: Workload, tmp_path: Path
) -> None:
    events = workload.events
    cut = len(events) // 2
    while events[cut].timestamp == events[cut - 1].timestamp:
        cut += 1
    moment = events[cut - 1].timestamp
    early = [h for h in workload.heartbeats if h.sent_at <= moment]
    late = [h for h in workload.heartbeats if h.sent_at > moment]

    db = tmp_path / "live.duckdb"
    produce(settings, events[:cut], early)
    with projector_thread(settings, db):
        wait_until(lambda: caught_up(settings, db), 120, "the first half")
    then = tmp_path / "then.duckdb"
    shutil.copy(db, then)
    offsets_then = event_offsets(db, settings)

    produce(settings, events[cut:], late)
    with projector_thread(settings, db):
        wait_until(lambda: caught_up(settings, db), 120, "the second half")
    assert snapshot(db) != snapshot(then)

    bound = ",".join(f"{p}:{o}" for p, o in sorted(offsets_then.items()))
    by_offset = rebuild(settings, db, as_of=bound, out=tmp_path / "by-offset.duckdb")
    assert snapshot(by_offset.path) == snapshot(then)
    assert event_offsets(by_offset.path, settings) == offsets_then

    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment // 1000))
    iso += f".{moment % 1000:03d}Z"
    by_time = rebuild(settings, db, as_of=iso, out=tmp_path / "by-time.duckdb")
    assert snapshot(by_time.path) == snapshot(then)

    with pytest.raises(ProjectionError, match="point-in-time"):
        Projector(settings, by_time.path).run(threading.Event())


def test_an_undecodable_record_goes_to_the_dead_letters_and_the_projection_goes_on(
    settings: Settings, workload: Workload, tmp_path: Path
) -> None:
    events = workload.events[:400]
    produce(settings, events[:200])
    produce_raw(settings, b"sub-garbage", b"\x00 this is not an event")
    produce(settings, events[200:])
    db = tmp_path / "p.duckdb"
    with projector_thread(settings, db) as projector:
        wait_until(lambda: caught_up(settings, db), 120, "the projector to pass the garbage")
        assert projector.stats.dead_letters == 1
    assert query(db, "SELECT count(*) AS n FROM job_events") == [{"n": len(events)}]

    letters = read_topic(settings, Topics(settings.topic_prefix).deadletter)
    assert len(letters) == 1
    letter = codec.decode_deadletter(letters[0])
    assert letter.topic == Topics(settings.topic_prefix).events
    assert letter.value == b"\x00 this is not an event"
    assert letter.key == b"sub-garbage"
    assert letter.consumer == f"{settings.topic_prefix}projector"
    assert "Error" in letter.error_type and letter.error_message


class _FoldThatChokesOn(Fold):
    """The projection's fold, raising on one event id as a fold bug or a broken event would."""

    def __init__(self, event_id: str) -> None:
        super().__init__()
        self.event_id = event_id

    def event(self, event: Event, position: Position | None = None) -> bool:
        if event.event_id == self.event_id:
            raise RuntimeError(f"cannot fold {event.event_id}")
        return super().event(event, position)


def test_a_record_that_cannot_be_folded_or_written_is_dead_lettered_and_the_rest_goes_on(
    settings: Settings, workload: Workload, tmp_path: Path
) -> None:
    events = workload.events[:600]
    at = events[0].timestamp
    # Each decodes, and then: DuckDB refuses its time (beyond TIMESTAMP's range); its attempt
    # number does not fit the INTEGER column; the fold raises on it.
    beyond_time = Event(
        "sub-poison-ts:1", "sub-poison-ts", "", 1, 10**16, SubmissionAccepted("c", "", (), ())
    )
    too_large = Event("sub-poison-int:1", "sub-poison-int", "a", 1, at, JobStarted(2**40, "w"))
    choking = Event(
        "sub-poison-fold:1", "sub-poison-fold", "", 1, at, SubmissionAccepted("c", "", (), ())
    )
    poison = [beyond_time, too_large, choking]
    produce(settings, events[:150])
    produce(settings, [beyond_time, *events[150:250], too_large, choking])
    produce(settings, events[250:400])
    db = tmp_path / "p.duckdb"
    with projector_thread(settings, db, fold=_FoldThatChokesOn(choking.event_id)) as projector:
        wait_until(lambda: caught_up(settings, db), 120, "the projector to pass the poison")
        assert projector.stats.dead_letters == 3
        produce(settings, events[400:])  # later batches go on as well
        wait_until(lambda: caught_up(settings, db), 120, "the projector to catch up")
        assert projector.stats.restarts == 0
        assert projector.stats.dead_letters == 3

    actual = stored_jobs(db)
    assert {key: actual_subset(row) for key, row in actual.items()} == expected_jobs(events)
    assert query(db, "SELECT count(*) AS n FROM job_events") == [{"n": len(events)}]
    assert query(
        db, "SELECT count(*) AS n FROM submissions WHERE submission_id LIKE 'sub-poison-%'"
    ) == [{"n": 0}]

    topics = Topics(settings.topic_prefix)
    letters = {
        letter.key: letter
        for letter in map(codec.decode_deadletter, read_topic(settings, topics.deadletter))
    }
    assert set(letters) == {event.submission_id.encode() for event in poison}
    for event in poison:
        letter = letters[event.submission_id.encode()]
        assert letter.value == codec.encode_event(event)  # the raw record, as it was read
        assert letter.topic == topics.events
        assert letter.consumer == f"{settings.topic_prefix}projector"
        assert f"cannot fold or write event {event.event_id}" in letter.error_message
    assert letters[b"sub-poison-ts"].error_type == "ConversionException"
    assert letters[b"sub-poison-int"].error_type == "ArrowInvalid"
    assert letters[b"sub-poison-fold"].error_type == "RuntimeError"
    assert "cannot fold sub-poison-fold:1" in letters[b"sub-poison-fold"].error_message

    # A rebuild leaves out the same records (only the fold of this test chokes on the third).
    rebuilt = rebuild(settings, db, out=tmp_path / "rebuilt.duckdb")
    assert rebuilt.dead_records == 2
    assert query(rebuilt.path, "SELECT count(*) AS n FROM job_events") == [{"n": len(events) + 1}]


def test_events_of_aborted_transactions_are_never_projected(
    settings: Settings, workload: Workload, tmp_path: Path
) -> None:
    events = workload.events[:600]
    produce(settings, events[:300])
    producer = Producer(
        settings.producer_config(**{"transactional.id": f"test-{uuid.uuid4().hex}"})
    )
    producer.init_transactions(60)
    producer.begin_transaction()
    for event in events[300:350]:  # decided, then lost with a scheduler that crashed
        producer.produce(
            Topics(settings.topic_prefix).events,
            key=event.submission_id.encode(),
            value=codec.encode_event(event),
        )
    producer.flush(30)
    producer.abort_transaction(60)
    produce(settings, events[300:])
    db = tmp_path / "p.duckdb"
    with projector_thread(settings, db) as projector:
        wait_until(lambda: caught_up(settings, db), 120, "the projector to catch up")
        assert projector.stats.duplicates == 0
    expected = expected_jobs(events)
    actual = stored_jobs(db)
    assert {key: actual_subset(row) for key, row in actual.items()} == expected
    assert query(db, "SELECT count(*) AS n FROM job_events") == [{"n": len(events)}]
    rebuilt = rebuild(settings, db, out=tmp_path / "rebuilt.duckdb")
    assert snapshot(rebuilt.path) == snapshot(db)


def read_topic(settings: Settings, topic: str, timeout: float = 30.0) -> list[bytes]:
    consumer = Consumer(
        settings.client_config(
            **{
                "group.id": f"test-{uuid.uuid4().hex}",
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        values: list[bytes] = []
        pending = set(partitions)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(100, timeout=0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(message.partition())
                    continue
                values.append(message.value() or b"")
        return values
    finally:
        consumer.close()
