"""Log output of joblog's services: text lines, or one JSON object per line."""

from __future__ import annotations

import json
import logging
import re
import threading
import time


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


class RepeatLimiter(logging.Filter):
    """Lets the first of a run of similar records through, then fewer and fewer.

    Records are similar when their logger and their message without digits agree (a broker's
    address, a count or a millisecond figure do not make a new message). After the first, a
    similar record passes again only once the current interval has gone by, the interval
    doubling up to ``max_interval_s``; the passing record says how many were held back.
    A message that has been quiet for ``max_interval_s`` starts over.
    """

    def __init__(self, first_interval_s: float = 5.0, max_interval_s: float = 60.0) -> None:
        super().__init__()
        self.first_interval_s = first_interval_s
        self.max_interval_s = max_interval_s
        self._seen: dict[tuple[str, str], list[float]] = {}  # key -> [next_at, interval, held]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, _DIGITS.sub("#", record.getMessage())[:300])
        now = time.monotonic()
        with self._lock:
            entry = self._seen.get(key)
            if entry is None or now - entry[0] > self.max_interval_s:
                self._seen[key] = [now + self.first_interval_s, self.first_interval_s, 0]
                if len(self._seen) > 1000:
                    self._seen.clear()
                return True
            if now < entry[0]:
                entry[2] += 1
                return False
            held = int(entry[2])
            entry[1] = min(entry[1] * 2, self.max_interval_s)
            entry[0] = now + entry[1]
            entry[2] = 0
        if held:
            record.msg = f"{record.getMessage()} ({held} similar held back)"
            record.args = None
        return True


_DIGITS = re.compile(r"\d+")


class _DemoteFailures(logging.Filter):
    """librdkafka's FAIL lines repeat what its error callback says: keep them for DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple) and record.args[0] == "FAIL":
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return KAFKA_CLIENT_LOG.isEnabledFor(logging.DEBUG)
        return True


#: Client errors of librdkafka (error_cb), routed to Python logging (see
#: :func:`kafka_log_settings`): a broker outage is logged once, then with backoff.
KAFKA_LOG = logging.getLogger("joblog.kafka")
KAFKA_LOG.addFilter(RepeatLimiter())
#: librdkafka's own log lines.
KAFKA_CLIENT_LOG = logging.getLogger("joblog.kafka.librdkafka")
KAFKA_CLIENT_LOG.addFilter(_DemoteFailures())
KAFKA_CLIENT_LOG.addFilter(RepeatLimiter())


#: How long a refused authentication explains a later "cannot reach the cluster".
_AUTHENTICATION_MEMORY_S = 60.0
_authentication: list[tuple[float, str]] = []


def _on_kafka_error(error: object) -> None:
    text = getattr(error, "str", lambda: str(error))()
    if getattr(error, "name", lambda: "")() == "_AUTHENTICATION":
        _authentication[:] = [(time.monotonic(), text)]
    KAFKA_LOG.warning("kafka: %s", text)


def authentication_failure() -> str | None:
    """What librdkafka said when a client of this process last failed to authenticate, if
    that was within the last minute (a refused SASL login looks like an unreachable cluster
    to the call that waited for it)."""
    if _authentication and time.monotonic() - _authentication[0][0] < _AUTHENTICATION_MEMORY_S:
        return _authentication[0][1]
    return None


def kafka_log_settings() -> dict[str, object]:
    """The librdkafka settings that send its log lines and errors to :data:`KAFKA_LOG`."""
    return {"logger": KAFKA_CLIENT_LOG, "error_cb": _on_kafka_error}
