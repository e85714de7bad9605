"""Blocking client calls get a deadline they cannot ignore; no broker."""

from __future__ import annotations

import threading
import time

import pytest

from engine.scheduler import deadlines
from engine.scheduler.deadlines import BoundedCalls, CallStuck


def test_a_call_returns_its_value_and_raises_its_error() -> None:
    calls = BoundedCalls("t")
    assert calls.call("add", lambda: 1 + 1, 1) == 2
    with pytest.raises(ZeroDivisionError):
        calls.call("divide", lambda: 1 // 0, 1)


def test_a_call_that_overruns_is_abandoned_and_later_calls_still_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(deadlines, "GRACE_S", 0.2)
    calls = BoundedCalls("t")
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(CallStuck, match="did not return"):
        calls.call("send_offsets_to_transaction", lambda: release.wait(30), 0.1)
    assert time.monotonic() - started < 5
    assert calls.call("next", lambda: "ok", 1) == "ok"  # on a fresh helper thread
    release.set()


def test_a_stop_request_shortens_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadlines, "STOP_GRACE_S", 0.2)
    stop = threading.Event()
    stop.set()
    calls = BoundedCalls("t", stop)
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(CallStuck):
        calls.call("commit_transaction", lambda: release.wait(30), 60)
    assert time.monotonic() - started < 5
    release.set()
