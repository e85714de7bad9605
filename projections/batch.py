"""A batch of consumed records as the projection takes it: decode each record, then fold the
batch in order.

The live projector (:mod:`projections.projector`) and a rebuild (:mod:`projections.rebuild`)
read the log through this one pipeline, so they cannot drift apart. They differ only in what
they do with a record that does not decode: the projector dead-letters an undecodable event
(the record keeps the consumed message and the error for it), a rebuild counts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import Message

from engine import codec
from engine.errors import CodecError
from engine.lifecycle.records import Event, Heartbeat, WorkerLeft
from projections.fold import Fold, Position, RowLoader


@dataclass(frozen=True)
class Record:
    """One consumed record as the fold takes it: an event, a worker report, or neither (a
    record that only moves the offset: undecodable, left out, or a report the projection
    skips).

    Attributes:
        position: where the record is.
        message: the consumed record, kept as it was (for its dead letter).
        event: the decoded event (records of ``events``).
        report: the decoded heartbeat or departure (records of ``reports``).
        error: why the value did not decode.
    """

    position: Position
    message: Message
    event: Event | None = None
    report: Heartbeat | WorkerLeft | None = None
    error: CodecError | None = None

    def passed_over(self) -> Record:
        """The same record, folded as a position only."""
        return Record(self.position, self.message)


def decode(message: Message, events_topic: str) -> Record:
    """Decodes a consumed record (one without an error) of ``events`` or ``reports``.

    Args:
        message: the consumed record.
        events_topic: the name of ``events``; any other topic is read as ``reports``.

    Returns:
        The record with its event, its report (only heartbeats and departures are kept), or
        the codec error that stopped it.
    """
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None
    position = Position(topic, partition, offset)
    raw = message.value() or b""
    try:
        if topic == events_topic:
            return Record(position, message, event=codec.decode_event(raw))
        report = codec.decode_report(raw)
    except CodecError as exc:
        return Record(position, message, error=exc)
    if isinstance(report, Heartbeat | WorkerLeft):
        return Record(position, message, report=report)
    return Record(position, message)


def fold_records(fold: Fold, records: Sequence[Record], rows: RowLoader) -> None:
    """Folds records in order, after reading the rows they touch that are not in memory.

    Args:
        fold: the fold.
        records: the batch (or a piece of it), in the order it was read.
        rows: where rows not in memory are read from (the projection file).

    Raises:
        Exception: what reading the rows or the fold raised (the fold's changes are then
            partial: drop them with :meth:`Fold.forget`).
    """
    fold.prefetch(
        (r.event for r in records if r.event is not None),
        (r.report for r in records if r.report is not None),
        rows,
    )
    for record in records:
        if record.event is not None:
            fold.event(record.event, record.position)
        elif record.report is not None:
            fold.report(record.report, record.message.timestamp()[1])
            fold.advance(record.position)
        else:
            fold.advance(record.position)


__all__ = ["Record", "decode", "fold_records"]
