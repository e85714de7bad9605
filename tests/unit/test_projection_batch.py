"""The one decode -> fold pipeline of the projector and a rebuild, without a broker."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka import Message

from engine import codec
from engine.errors import CodecError
from engine.lifecycle.records import AttemptRef, Claimed, WorkerLeft
from engine.lifecycle.workload import simulate
from projections.batch import Record, decode, fold_records
from projections.fold import Fold, Position
from projections.store import ProjectionStore

EVENTS, REPORTS = "x.events", "x.reports"


def message(topic: str, offset: int, value: bytes, timestamp_ms: int = 0) -> Message:
    return Message(
        topic=topic, partition=0, offset=offset, key=b"k", value=value, timestamp=(1, timestamp_ms)
    )


def test_an_event_decodes_into_a_record_that_keeps_its_message() -> None:
    (event, *_) = simulate(1).events
    consumed = message(EVENTS, 7, codec.encode_event(event))
    record = decode(consumed, EVENTS)
    assert record == Record(Position(EVENTS, 0, 7), consumed, event=event)


def test_an_undecodable_record_keeps_its_error_and_its_message_for_the_dead_letter() -> None:
    consumed = message(EVENTS, 3, b"\x00not avro")
    record = decode(consumed, EVENTS)
    assert record.event is None and record.report is None
    assert isinstance(record.error, CodecError) and record.error.raw == b"\x00not avro"
    assert record.message is consumed
    assert decode(message(REPORTS, 3, b""), EVENTS).error is not None


def test_only_heartbeats_and_departures_of_reports_are_kept() -> None:
    heartbeat = simulate(1).heartbeats[0]
    left = WorkerLeft(worker_id="w-1", sent_at=5)
    claimed = Claimed(AttemptRef("s", "a", 1, "d", "w-1"), sent_at=5)
    assert decode(message(REPORTS, 0, codec.encode_report(heartbeat)), EVENTS).report == heartbeat
    assert decode(message(REPORTS, 1, codec.encode_report(left)), EVENTS).report == left
    skipped = decode(message(REPORTS, 2, codec.encode_report(claimed)), EVENTS)
    assert (skipped.event, skipped.report, skipped.error) == (None, None, None)
    assert decode(message(EVENTS, 0, codec.encode_report(claimed)), EVENTS).error is not None


def test_folding_a_batch_equals_folding_its_events_one_by_one(tmp_path: Path) -> None:
    workload = simulate(3)
    records = [
        decode(message(EVENTS, offset, codec.encode_event(event)), EVENTS)
        for offset, event in enumerate(workload.events)
    ]
    records.insert(2, decode(message(EVENTS, len(records), b"bad"), EVENTS))
    heartbeat = workload.heartbeats[0]
    records.append(decode(message(REPORTS, 0, codec.encode_report(heartbeat), 1234), EVENTS))
    with ProjectionStore(tmp_path / "p.duckdb", topic_prefix="x.") as store:
        piped = Fold()
        fold_records(piped, records, store)
        by_hand = Fold()
        for record in records:
            if record.event is not None:
                by_hand.event(record.event, record.position)
            elif record.report is not None:
                by_hand.report(record.report, 1234)
                by_hand.advance(record.position)
            else:
                by_hand.advance(record.position)
        assert piped.take() == by_hand.take()


def test_a_record_passed_over_only_moves_the_offset() -> None:
    (event, *_) = simulate(1).events
    record = decode(message(EVENTS, 9, codec.encode_event(event)), EVENTS).passed_over()
    assert (record.event, record.report, record.position.offset) == (None, None, 9)
