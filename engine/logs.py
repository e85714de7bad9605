"""Log output of joblog's services: text lines, or one JSON object per line."""

from __future__ import annotations

import json
import logging


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
        }
        event = getattr(record, "event", None)
        fields = getattr(record, "fields", None)
        if event is not None and isinstance(fields, dict):
            entry["event"] = event
            entry.update({key: _jsonable(value) for key, value in fields.items()})
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def configure_logging(level: str, style: str = "text") -> None:
    """Sends every log record to stderr as ``text`` lines or ``json`` objects."""
    handler = logging.StreamHandler()
    if style == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
