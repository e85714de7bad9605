"""The deliveries log: one JSON line per delivery attempt.

Each line::

    {"at": "2025-01-01T12:00:00.123Z", "message_id": "msg_…", "subscription": "render-finished",
     "channel": "webhook", "target": "https://…", "event_id": "s-…:7", "event": "JobCompleted",
     "submission_id": "s-…", "job_id": "frame-001", "attempt": 1,
     "outcome": "delivered" | "retrying" | "gave_up" | "refused", "status_code": 200, "error": "",
     "response": "ok", "duration_ms": 12, "next_attempt_at": null}

``outcome`` is ``delivered`` for a success, ``retrying`` for a failure with another attempt
planned at ``next_attempt_at``, ``gave_up`` for the last failed attempt, ``revoked`` when the
partition moved to another notifier, ``refused`` when the target is outside the webhook
allow-list (``JOBLOG_WEBHOOK_ALLOW``: nothing was sent, and nothing will be), ``unrenderable``
(``attempt`` 0) when the message could not be rendered and was never sent. Query it with
DuckDB: ``SELECT * FROM read_json_auto('.joblog/deliveries.jsonl')``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from engine.lifecycle.records import Event
from engine.notify.delivery import AttemptResult, Message, message_id
from engine.notify.subscriptions import Subscription
from engine.notify.templates import iso


class DeliveryLog:
    """Appends attempts to a JSON-lines file (flushed per line); thread-safe.

    Args:
        path: the file (its directory is created); ``None`` keeps records in memory only.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")

    def record(
        self,
        message: Message,
        attempt: int,
        result: AttemptResult,
        *,
        outcome: str,
        next_attempt_at: datetime | None = None,
    ) -> dict[str, Any]:
        """Writes one attempt; returns the record."""
        event = message.event
        entry: dict[str, Any] = {
            "at": iso(datetime.now(UTC)),
            "message_id": message.message_id,
            "subscription": message.subscription.id,
            "channel": message.subscription.channel,
            "target": message.target,
            "event_id": event.event_id,
            "event": event.name,
            "submission_id": event.submission_id,
            "job_id": event.job_id,
            "attempt": attempt,
            "outcome": outcome,
            "status_code": result.status_code,
            "error": result.error,
            "response": result.response,
            "duration_ms": result.duration_ms,
            "next_attempt_at": iso(next_attempt_at) or None,
        }
        self._write(entry)
        return entry

    def _write(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.records.append(entry)
            if len(self.records) > 10_000:
                del self.records[:5_000]
            if self._file is not None:
                self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
                self._file.flush()

    def record_unrenderable(
        self, subscription: Subscription, event: Event, error: str
    ) -> dict[str, Any]:
        """Writes that ``subscription``'s message for ``event`` could not be rendered (it is
        never sent: a template or a value that cannot be rendered will not render later)."""
        entry: dict[str, Any] = {
            "at": iso(datetime.now(UTC)),
            "message_id": message_id(subscription.id, event.event_id),
            "subscription": subscription.id,
            "channel": subscription.channel,
            "target": subscription.target,
            "event_id": event.event_id,
            "event": event.name,
            "submission_id": event.submission_id,
            "job_id": event.job_id,
            "attempt": 0,
            "outcome": "unrenderable",
            "status_code": None,
            "error": error,
            "response": "",
            "duration_ms": 0,
            "next_attempt_at": None,
        }
        self._write(entry)
        return entry

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_deliveries(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a deliveries log, oldest first (a missing file has none)."""
    file = Path(path)
    if not file.exists():
        return
    with file.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)
