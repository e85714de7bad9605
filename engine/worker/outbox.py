"""What a worker produces: its reports (size-checked, through a full producer queue) and its
dead letters, and which dispatches it finished (delivered ``Finished`` reports).

* Every report is encoded and checked against the record limit before it is produced. Only a
  ``Finished`` report above the limit is still sent, shrunk to a failure that names the limit
  (:func:`shrunk`), so a misconfiguration fails the attempt instead of losing its end.
* While the cluster is away the producer's local queue fills: a report waits for deliveries
  to drain it for up to ``_PRODUCE_BLOCK_S``, then is dropped (the lease makes it good).
* A dispatch whose ``Finished`` report was delivered is remembered (the last
  ``_RECENTLY_FINISHED``), so a redelivery of it is not run a second time here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from engine import codec, kafka
from engine.errors import CodecError
from engine.lifecycle.records import AttemptReport, Finished, Outcome
from engine.worker.logs import kafka_log, log_event, log_event_to

_RECENTLY_FINISHED = 10_000
_PRODUCE_BLOCK_S = 10.0

#: A producer's delivery callback.
OnDelivery = Callable[[KafkaError | None, Message], None]


def shrunk(report: Finished, size: int, limit: int) -> Finished:
    """``report`` as a failure small enough for a record, saying which limit it broke."""
    return replace(
        report,
        outcome=Outcome.FAILED,
        result=None,
        traceback="",
        error_type="ReportTooLarge",
        error_note=(
            f"the attempt's Finished report is {size} bytes, above the record limit of {limit} "
            "bytes (JOBLOG_MAX_RECORD_BYTES); raise it or lower the other JOBLOG_MAX_* limits"
        )[:2000],
        status_line=None,
    )


def encode_within(report: Any, limit: int) -> bytes | None:
    """The bytes of ``report`` if they fit ``limit``; a ``Finished`` one is shrunk to fit.

    Returns:
        ``None`` (and logs why) when the report cannot be encoded, or is not a ``Finished``
        report and is larger than ``limit``.
    """
    try:
        value = codec.encode_report(report)
    except CodecError as exc:
        log_event(logging.ERROR, "report not encodable", report=type(report).__name__, error=exc)
        return None
    if len(value) <= limit:
        return value
    # Cannot happen with limits that fit the record (engine.limits); a last guard so a
    # misconfiguration fails the attempt instead of losing its Finished.
    log_event(
        logging.ERROR,
        "report larger than a record",
        report=type(report).__name__,
        size=len(value),
        limit=limit,
    )
    if not isinstance(report, Finished):
        return None
    return codec.encode_report(shrunk(report, len(value), limit))


class FinishedDispatches:
    """The dispatch ids whose ``Finished`` report was delivered: the last ``capacity``."""

    def __init__(self, capacity: int = _RECENTLY_FINISHED) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, dispatch_id: str) -> None:
        """Remembers ``dispatch_id``, forgetting the oldest one past the capacity."""
        with self._lock:
            self._ids[dispatch_id] = None
            while len(self._ids) > self.capacity:
                self._ids.popitem(last=False)

    def __contains__(self, dispatch_id: object) -> bool:
        with self._lock:
            return dispatch_id in self._ids


class Outbox:
    """Produces a worker's reports and dead letters on its idempotent producer.

    Args:
        producer: the worker's producer.
        reports_topic: where reports go.
        deadletter_topic: where undecodable records go.
        limit: the largest record, in bytes.
        source: who dead-lettered a record (in the dead letter).
        metrics: the worker's counters (``dead_letters``).
        finished: where delivered ``Finished`` reports are remembered.
    """

    def __init__(
        self,
        producer: Producer,
        reports_topic: str,
        deadletter_topic: str,
        limit: int,
        source: str,
        metrics: Counter[str],
        finished: FinishedDispatches,
    ) -> None:
        self.producer = producer
        self.reports_topic = reports_topic
        self.deadletter_topic = deadletter_topic
        self.limit = limit
        self.source = source
        self.metrics = metrics
        self.finished = finished

    def send_attempt_report(self, report: AttemptReport) -> None:
        """Sends a report of an attempt, keyed by its submission id; a delivered
        ``Finished`` report is remembered in :attr:`finished`."""
        on_delivery = None
        if isinstance(report, Finished):
            dispatch_id = report.ref.dispatch_id

            def on_delivery(error: KafkaError | None, _message: Message) -> None:
                if error is None:
                    self.finished.add(dispatch_id)

        self.send(report.ref.submission_id, report, on_delivery)

    def send(self, key: str, report: Any, on_delivery: OnDelivery | None = None) -> None:
        """Produces ``report`` keyed by ``key``; logs (never raises) what could not be sent."""
        value = encode_within(report, self.limit)
        if value is None:
            return
        callback = on_delivery or _on_delivery
        deadline = time.monotonic() + _PRODUCE_BLOCK_S
        while True:
            try:
                self.producer.produce(
                    self.reports_topic, key=key.encode(), value=value, on_delivery=callback
                )
                return
            except BufferError:
                # The local queue is full (the cluster is away): let deliveries drain it, for
                # a while; a report dropped after that is made good by the lease.
                if time.monotonic() >= deadline:
                    log_event_to(
                        kafka_log,
                        logging.ERROR,
                        "report dropped, the producer queue stays full",
                        report=type(report).__name__,
                    )
                    return
                self.producer.poll(0.1)
            except KafkaException as exc:
                log_event_to(
                    kafka_log,
                    logging.ERROR,
                    "report not produced",
                    report=type(report).__name__,
                    error=exc,
                )
                return

    def dead_letter(self, message: Message, error: Exception) -> None:
        """Sends an undecodable record to the dead-letter topic, with the reason."""
        self.metrics["dead_letters"] += 1
        log_event(
            logging.WARNING,
            "dead letter",
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            error=error,
        )
        letter = kafka.dead_letter(message, error, self.source)
        kafka.send_dead_letter(self.producer, self.deadletter_topic, letter)


def _on_delivery(error: KafkaError | None, _message: Message) -> None:
    if error is not None:
        log_event_to(kafka_log, logging.ERROR, "report not delivered", error=error.str())
