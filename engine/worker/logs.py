"""The worker's log lines: one event name and ``key=value`` fields per line.

The fields are also kept on the record (``extra``) for JSON output. Lines a broker outage
repeats (consume errors, undelivered reports, failed commits) go to :data:`kafka_log`, whose
filter lets the first through and then fewer and fewer, each saying how many were held back.
"""

from __future__ import annotations

import logging

from engine.logs import RepeatLimiter

log = logging.getLogger("joblog.worker")
kafka_log = logging.getLogger("joblog.worker.kafka")
kafka_log.addFilter(RepeatLimiter())


def fields_text(**fields: object) -> str:
    """``key=value`` pairs separated by spaces, in the order given."""
    return " ".join(f"{key}={value}" for key, value in fields.items())


def log_event(level: int, event: str, **fields: object) -> None:
    """Logs ``event`` with ``key=value`` fields to the worker's logger."""
    log_event_to(log, level, event, **fields)


def log_event_to(logger: logging.Logger, level: int, event: str, **fields: object) -> None:
    """:func:`log_event` to another logger (:data:`kafka_log` for lines an outage repeats)."""
    if logger.isEnabledFor(level):
        logger.log(
            level, "%s %s", event, fields_text(**fields), extra={"event": event, "fields": fields}
        )
