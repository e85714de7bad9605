"""The projector's start and stop around its file, and how it answers its consumer's errors,
without a broker."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message

from engine import kafka
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


class DeadConsumer:
    """A consumer whose group fenced it: every consume() hands back the fatal error."""

    def __init__(self, error: KafkaError) -> None:
        self.error = error
        self.closed = False

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        pass

    def consume(self, n: int, timeout: float) -> list[Message]:
        return [Message(error=self.error)]

    def close(self) -> None:
        self.closed = True


def test_a_consumer_that_hit_a_fatal_error_is_replaced_by_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what consume() returns once the group fenced this static member's stale twin after a
    # broker crash: code _FATAL, though fatal() is False
    fenced = KafkaError(KafkaError._FATAL, "Static consumer fenced by other consumer")
    assert not fenced.fatal()
    built: list[DeadConsumer] = []

    def consumer(*args: Any, **kwargs: Any) -> DeadConsumer:
        built.append(DeadConsumer(fenced))
        return built[-1]

    monkeypatch.setattr(kafka, "consumer", consumer)
    projector = Projector(SETTINGS, tmp_path / "p.duckdb", serve=False)
    with pytest.raises(ProjectionError, match=r"fatal Kafka error.*3 times within 120 s"):
        projector.run(threading.Event())
    assert len(built) == 3 and all(c.closed for c in built)
    assert projector.stats.restarts == 2


def test_a_transient_consumer_error_keeps_the_consumer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = threading.Event()
    built: list[DeadConsumer] = []

    class Flaky(DeadConsumer):
        def consume(self, n: int, timeout: float) -> list[Message]:
            stop.set()
            return super().consume(n, timeout)

    def consumer(*args: Any, **kwargs: Any) -> DeadConsumer:
        built.append(Flaky(KafkaError(KafkaError._TRANSPORT, "broker down")))
        return built[-1]

    monkeypatch.setattr(kafka, "consumer", consumer)
    stats = Projector(SETTINGS, tmp_path / "p.duckdb", serve=False).run(stop)
    assert len(built) == 1 and stats.restarts == 0
