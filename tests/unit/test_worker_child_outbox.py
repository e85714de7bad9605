"""A pool child's outbox: reports sent by the thread that reports them, whole, in order; a
SIGTERM that lands mid-message is raised in the task once the message is sent."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, cast

import pytest

from engine.lifecycle.records import AttemptRef, Finished, Outcome, ProgressReported
from engine.worker.attempt import AttemptRun, ChildReady
from engine.worker.channel import Channel
from engine.worker.child import _Outbox, _Termination
from engine.worker.errors import JobCancelled

REF = AttemptRef("s", "j", 1, "s/j/1", "w")


class _Context:
    cancelled = False
    cancel_reason = ""

    def request_cancel(self, reason: str, grace_ms: int) -> None:
        self.cancelled, self.cancel_reason = True, reason


class _Run:
    def __init__(self) -> None:
        self.context = _Context()


class _SignalMidSend(Channel):
    """A channel that takes SIGTERM between the two halves of each message it sends."""

    def send(self, message: Any) -> None:
        frames = bytearray()
        scratch_a, scratch_b = socket.socketpair()
        with scratch_a, scratch_b:
            Channel(scratch_a).send(message)
            frames += scratch_b.recv(1 << 20)
        half = len(frames) // 2
        self.sock.sendall(frames[:half])
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs at the next bytecode
        for _ in range(1000):  # bytecodes on the way, where a handler would raise
            pass
        self.sock.sendall(frames[half:])


@pytest.fixture
def ends() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair()
    with left, right:
        yield left, right


@pytest.fixture
def terminating() -> Iterator[_Termination]:
    termination = _Termination()
    previous = signal.signal(signal.SIGTERM, termination.on_sigterm)
    try:
        yield termination
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def wired(
    ends: tuple[socket.socket, socket.socket], terminating: _Termination
) -> tuple[_Outbox, Channel]:
    """An outbox on one end of a socket pair, a reader on the other."""
    left, right = ends
    return _Outbox(Channel(left), terminating), Channel(right)


def take(reader: Channel) -> Any:
    message = reader.recv(timeout=5)
    assert message is not None, "no message came"
    return message


def finished() -> Finished:
    return Finished(ref=REF, outcome=Outcome.COMPLETED, result="1", sent_at=0)


def test_a_sigterm_mid_message_is_raised_once_the_message_is_whole(
    ends: tuple[socket.socket, socket.socket], terminating: _Termination
) -> None:
    left, right = ends
    run = _Run()
    terminating.run = cast(AttemptRun, run)
    outbox = _Outbox(_SignalMidSend(left), terminating)
    progress = ProgressReported(ref=REF, value=0.5, sent_at=1)
    with pytest.raises(JobCancelled, match="terminated"):
        outbox.send(progress)
    assert run.context.cancelled
    assert take(Channel(right)) == progress  # whole, not half a message
    # raised once: a second SIGTERM finds no attempt to cancel
    outbox.send(ChildReady(os.getpid()))
    assert isinstance(take(Channel(right)), ChildReady)


def test_an_attempt_sends_its_first_finished_only_until_the_child_is_ready(
    wired: tuple[_Outbox, Channel],
) -> None:
    outbox, reader = wired
    first, second = finished(), Finished(ref=REF, outcome=Outcome.FAILED)
    outbox.send(first)
    outbox.send(second)  # a task that ended twice: not sent
    outbox.send(ProgressReported(ref=REF, value=1.0, sent_at=2))  # reports still go
    outbox.send(ChildReady(7))
    outbox.send(second)  # the next attempt's own Finished, stamped when sent
    received = [take(reader) for _ in range(4)]
    assert received[0] == replace(first, sent_at=received[0].sent_at) and received[0].sent_at
    assert isinstance(received[1], ProgressReported)
    assert received[2] == ChildReady(7)
    assert received[3].outcome is Outcome.FAILED and received[3].sent_at > 0
    assert reader.recv(timeout=0.05) is None


def test_reports_of_many_threads_arrive_whole_and_in_each_threads_order(
    wired: tuple[_Outbox, Channel],
) -> None:
    outbox, reader = wired

    def report(thread: int) -> None:
        for step in range(200):
            outbox.send(ProgressReported(ref=REF, value=float(step), status_line=str(thread)))

    threads = [threading.Thread(target=report, args=(i,)) for i in range(4)]
    received: list[ProgressReported] = []
    drain = threading.Thread(target=lambda: received.extend(take(reader) for _ in range(800)))
    drain.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    drain.join(30)
    for index in range(4):
        values = [r.value for r in received if r.status_line == str(index)]
        assert values == [float(step) for step in range(200)]
