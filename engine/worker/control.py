"""Control records addressed to a worker: kills of the attempts it runs.

The worker reads every partition of ``control`` (no group, from the end at start-up: a kill
can only be for an attempt it claimed later). A kill stops its attempt: the cooperative flag
at once, then SIGTERM/SIGKILL of its process within the grace period the scheduler gave.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message

from engine import codec, kafka
from engine.errors import CodecError
from engine.lifecycle.records import Control
from engine.worker.logs import kafka_log, log_event, log_event_to
from engine.worker.supervision import Attempts

KILL = "kill"


class ControlHandler:
    """Applies the control records addressed to one worker to its attempts.

    Args:
        worker_id: the worker's id: records for other workers are skipped.
        attempts: the attempts a kill stops.
        metrics: the worker's counters (``kills``).
    """

    def __init__(self, worker_id: str, attempts: Attempts, metrics: Counter[str]) -> None:
        self.worker_id = worker_id
        self.attempts = attempts
        self.metrics = metrics

    def apply(self, control: Control) -> None:
        """Applies ``control`` if it is addressed to this worker."""
        if control.worker_id != self.worker_id:
            return
        if control.action != KILL:
            log_event(logging.WARNING, "unknown control action", action=control.action)
            return
        slot = self.attempts.find(control)
        if slot is None or slot.run.finished is not None:
            log_event(
                logging.INFO,
                "kill for an attempt not running here",
                submission=control.submission_id,
                job=control.job_id,
                attempt=control.attempt,
            )
            return
        self.metrics["kills"] += 1
        log_event(
            logging.INFO,
            "attempt kill",
            submission=control.submission_id,
            job=control.job_id,
            attempt=control.attempt,
            reason=control.reason,
            grace_ms=control.grace_ms,
        )
        slot.run.cancel(control.reason, control.grace_ms)


def read_controls(
    consumer: Consumer,
    handler: ControlHandler,
    dead_letter: Callable[[Message, Exception], None],
) -> None:
    """Applies what ``consumer`` has fetched from ``control``, without waiting.

    Raises:
        KafkaException: the consumer hit a fatal error (it would never deliver again).
    """
    for message in consumer.consume(100, timeout=0):
        error = message.error()
        if error is not None:
            if kafka.consumer_fatal(error):
                raise KafkaException(error)
            if error.code() != KafkaError._PARTITION_EOF:
                log_event_to(kafka_log, logging.WARNING, "control consume error", error=error.str())
            continue
        try:
            control = codec.decode_control(message.value() or b"")
        except CodecError as exc:
            dead_letter(message, exc)
            continue
        handler.apply(control)
