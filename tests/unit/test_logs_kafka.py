"""librdkafka's logs and errors reach Python logging once, then with backoff."""

from __future__ import annotations

import logging

import pytest

from engine.config import Settings
from engine.logs import KAFKA_CLIENT_LOG, KAFKA_LOG, RepeatLimiter


def _record(message: str, name: str = "joblog.kafka") -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, message, None, None)


def test_similar_records_pass_once_then_with_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("engine.logs.time.monotonic", lambda: clock[0])
    limiter = RepeatLimiter(first_interval_s=5.0, max_interval_s=60.0)
    passed = []
    for step in range(200):  # 20 s of a failure every 100 ms, addresses and counts varying
        clock[0] = 100.0 + step * 0.1
        record = _record(f"127.0.0.1:{9000 + step}/bootstrap: Connect failed after {step}ms")
        if limiter.filter(record):
            passed.append(record.getMessage())
    assert len(passed) == 3  # at 0 s, after 5 s, after 10 s more
    assert "similar held back" in passed[1]
    assert limiter.filter(_record("another message"))


def test_a_quiet_message_starts_over(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr("engine.logs.time.monotonic", lambda: clock[0])
    limiter = RepeatLimiter(first_interval_s=5.0, max_interval_s=60.0)
    assert limiter.filter(_record("broker down"))
    clock[0] = 200.0
    assert limiter.filter(_record("broker down"))


def test_every_client_routes_librdkafka_to_python_logging() -> None:
    config = Settings().client_config()
    assert config["logger"] is KAFKA_CLIENT_LOG
    assert callable(config["error_cb"])
    assert KAFKA_LOG.name == "joblog.kafka"


def test_producers_accept_records_up_to_the_record_limit() -> None:
    settings = Settings()
    size = settings.producer_config()["message.max.bytes"]
    assert isinstance(size, int) and size > settings.limits.max_record_bytes
