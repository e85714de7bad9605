"""What runs inside the child process of one Python attempt.

The child is forked from the template (:mod:`engine.worker.forkserver`), so the registry is
already there. It reads the attempt from its socket, runs it exactly as a thread-mode worker
would (:class:`engine.worker.attempt.AttemptRun`, whose context reports through the socket),
and exits with ``os._exit``. Three threads:

* the main thread runs the task;
* a writer sends the reports, in order, from a queue (so a signal that interrupts the task
  never leaves half a message on the socket); the task's thread waits until its report was
  sent, so what a task reported before it crashed reaches the worker;
* a reader takes the worker's messages (``("cancel", reason, grace_ms)`` sets the cancelled
  flag and terminates the task's commands), sends held-back progress every 50 ms, and ends the
  process when the socket reaches EOF: the worker is gone, so is the attempt.

SIGTERM raises :class:`JobCancelled` in the task once (its ``finally`` blocks run); the worker
sends SIGKILL when the grace period is over. SIGINT is ignored: the worker decides.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import replace
from types import FrameType
from typing import Any

from engine.lifecycle.records import AttemptReport, Finished, Outcome
from engine.worker.attempt import AttemptRun, AttemptStart
from engine.worker.channel import Channel, ChannelClosed
from engine.worker.context import wall_ms
from engine.worker.errors import JobCancelled
from engine.worker.forkserver import die_with_parent
from engine.worker.tasks import TaskRegistry

_PUMP_S = 0.05
_WRITER_DRAIN_S = 10.0
_SEND_WAIT_S = 5.0
_STOP = object()


def run_attempt_child(sock: socket.socket, template_pid: int, registry: TaskRegistry) -> None:
    """The child's whole life: one attempt, then ``os._exit``. Never returns."""
    die_with_parent(template_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    channel = Channel(sock)
    try:
        start = channel.recv(timeout=30.0)
    except ChannelClosed:
        os._exit(1)
    if not isinstance(start, AttemptStart):
        os._exit(1)
    outbox = _Outbox()
    run = AttemptRun(
        start.dispatch,
        start.worker_id,
        registry,
        outbox.send,
        start.options,
        limits=start.limits,
    )
    writer = threading.Thread(target=outbox.write, args=(channel,), daemon=True)
    writer.start()
    threading.Thread(target=_read, args=(channel, run), daemon=True).start()
    terminating = _Termination(run)
    signal.signal(signal.SIGTERM, terminating.on_sigterm)
    code = 0
    try:
        run.execute()
    except BaseException as exc:  # a SIGTERM that landed outside the task's own code
        terminating.armed = False
        outbox.queue.put(_ended_by(run, exc))
        code = 0 if isinstance(exc, JobCancelled) else 1
    terminating.armed = False
    outbox.queue.put(_STOP)
    writer.join(_WRITER_DRAIN_S)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


class _Termination:
    """SIGTERM: raise :class:`JobCancelled` in the task, once."""

    def __init__(self, run: AttemptRun) -> None:
        self.run = run
        self.armed = True

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if not self.armed:
            return
        self.armed = False
        context = self.run.context
        if not context.cancelled:
            context.request_cancel("terminated", 0)
        raise JobCancelled(context.cancel_reason or "terminated")


def _ended_by(run: AttemptRun, exc: BaseException) -> Finished:
    finished = run.finished
    if finished is not None:
        return finished
    progress = run.context.progress
    cancelled = run.context.cancelled
    return Finished(
        ref=run.ref,
        outcome=Outcome.CANCELED if cancelled else Outcome.FAILED,
        error_type=JobCancelled.__name__ if cancelled else type(exc).__name__,
        error_note=run.context.cancel_reason if cancelled else str(exc),
        traceback="" if cancelled else traceback.format_exc(),
        progress=progress.value,
        total=progress.total,
        status_line=progress.status_line,
        sent_at=wall_ms(),
    )


class _Outbox:
    """Reports on their way to the worker: queued by any thread, sent by the writer."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._sent = 0
        self._queued = 0
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)

    def send(self, report: AttemptReport) -> None:
        """Queues ``report`` and waits (a little) until the writer sent it."""
        with self._lock:
            self._queued += 1
            number = self._queued
            self.queue.put(report)
        with self._progress:
            self._progress.wait_for(lambda: self._sent >= number, _SEND_WAIT_S)

    def write(self, channel: Channel) -> None:
        """The writer thread: sends what is queued, in order, the first ``Finished`` last."""
        sent_finished = False
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            report: AttemptReport = item
            if isinstance(report, Finished):
                if sent_finished:
                    continue  # the first Finished is the attempt's
                sent_finished = True
                report = replace(report, sent_at=report.sent_at or wall_ms())
            try:
                channel.send(report)
            except ChannelClosed:
                os._exit(1)
            with self._progress:
                self._sent += 1
                self._progress.notify_all()


def _read(channel: Channel, run: AttemptRun) -> None:
    while True:
        try:
            message = channel.recv(timeout=_PUMP_S)
        except ChannelClosed:
            # The worker is gone (or gave the attempt up): nothing may run on without it.
            os._exit(1)
        if isinstance(message, tuple) and message and message[0] == "cancel":
            run.cancel(str(message[1]), int(message[2]))
        run.pump()
        time.sleep(0)
