"""What runs inside a child process of the pool: attempts, one at a time.

The child is forked from the template (:mod:`engine.worker.forkserver`), so the registry is
already there. It waits for an :class:`AttemptStart` on its socket, runs the attempt exactly as
a thread-mode worker would (:class:`engine.worker.attempt.AttemptRun`, whose context reports
through the socket), and then either exits with ``os._exit`` (the attempt was its last, it was
cancelled, or it left threads running) or sends :class:`ChildReady` and waits for the next
one. Two threads for the child's whole life:

* the main thread runs the attempts;
* a reader takes the worker's messages (the next :class:`AttemptStart`; ``("cancel",
  dispatch_id, reason, grace_ms)`` sets the running attempt's cancelled flag and terminates
  its commands), sends held-back progress every 50 ms while an attempt runs (between
  attempts it sleeps until a message comes), and ends the process when the socket reaches
  EOF: the worker is gone, or it retired this child.

A report is sent by the thread that reports it, one sender at a time and in order, before
the report call returns: what a task reported before it crashed has reached the worker. A
SIGTERM that comes while the main thread is in the middle of a message waits until the
message is whole (it never leaves half a message on the socket). Sending in place spares
the hand-over of every report to a writer thread (BENCHMARKS.md, "the pool's hand-overs").

SIGTERM raises :class:`JobCancelled` in the running task once (its ``finally`` blocks run); the
worker sends SIGKILL when the grace period is over. SIGINT is ignored: the worker decides.
Between attempts the child goes back to the directory it started in; what else a task changes
in its process (module globals, caches, the environment) stays for the child's next attempts.
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

from engine.lifecycle.records import AttemptReport, Finished, Outcome
from engine.worker.attempt import AttemptRun, AttemptStart, ChildReady
from engine.worker.channel import Channel, ChannelClosed
from engine.worker.context import wall_ms
from engine.worker.errors import JobCancelled
from engine.worker.forkserver import die_with_parent
from engine.worker.tasks import TaskRegistry

_PUMP_S = 0.05


def run_attempt_child(sock: socket.socket, template_pid: int, registry: TaskRegistry) -> None:
    """The child's whole life: attempts until one is its last, then ``os._exit``. Never
    returns."""
    die_with_parent(template_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    channel = Channel(sock)
    starts: queue.SimpleQueue[AttemptStart] = queue.SimpleQueue()
    terminating = _Termination()
    outbox = _Outbox(channel, terminating)
    current = _Current()
    threading.Thread(target=_read, args=(channel, starts, current), daemon=True).start()
    own_threads = set(threading.enumerate())
    home = os.getcwd()
    ready = ChildReady(os.getpid())
    signal.signal(signal.SIGTERM, terminating.on_sigterm)
    while True:
        # A pool child waits as long as the pool keeps it: EOF on the socket ends it.
        start = starts.get()
        code, run = _run_one(start, registry, outbox, current, terminating)
        current.ended += 1
        if start.last or run.context.cancelled or _threads_left(own_threads):
            break
        with contextlib.suppress(OSError):
            os.chdir(home)
        _flush_streams()
        outbox.send(ready)
    _flush_streams()
    os._exit(code)


def _run_one(
    start: AttemptStart,
    registry: TaskRegistry,
    outbox: _Outbox,
    current: _Current,
    terminating: _Termination,
) -> tuple[int, AttemptRun]:
    """Runs one attempt; its ``Finished`` is sent when this returns."""
    run = AttemptRun(
        start.dispatch,
        start.worker_id,
        registry,
        outbox.send,
        start.options,
        limits=start.limits,
    )
    run.context.own_process = True
    current.run = run
    terminating.run = run
    code = 0
    try:
        run.execute()
    except BaseException as exc:  # a SIGTERM that landed outside the task's own code
        terminating.run = None
        outbox.send(_ended_by(run, exc))
        code = 0 if isinstance(exc, JobCancelled) else 1
    terminating.run = None
    current.run = None
    return code, run


def _threads_left(own: set[threading.Thread]) -> bool:
    """Whether a task left threads running (the child then exits rather than run on)."""
    return any(thread not in own and thread.is_alive() for thread in threading.enumerate())


def _flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


class _Current:
    """The attempt running now, for the reader thread (``None`` between attempts), and how
    many attempts the main thread has finished."""

    def __init__(self) -> None:
        self.run: AttemptRun | None = None
        self.ended = 0


class _Termination:
    """SIGTERM: raise :class:`JobCancelled` in the running task, once; not in the middle of
    a message the main thread is sending (then right after it)."""

    def __init__(self) -> None:
        self.run: AttemptRun | None = None
        self.sending = False
        self.deferred = False

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self.sending:
            self.deferred = True
            return
        run = self.run
        if run is None:
            return
        self.run = None
        context = run.context
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
    """Reports on their way to the worker, sent by the thread that reports them.

    One sender at a time, in the order the reports came; an attempt's first ``Finished`` is
    sent, a later one (a task that ended twice) is not, until the next attempt.
    """

    def __init__(self, channel: Channel, terminating: _Termination) -> None:
        self._channel = channel
        self._terminating = terminating
        self._lock = threading.Lock()
        self._main = threading.main_thread().ident
        self._sent_finished = False

    def send(self, message: AttemptReport | ChildReady) -> None:
        """Sends ``message`` before returning; ends the process if the worker is gone.

        Raises:
            JobCancelled: a SIGTERM came while the main thread was sending (raised once the
                message is sent, never between taking it and sending it).
        """
        if threading.get_ident() != self._main:
            self._take_and_send(message)  # signal handlers run on the main thread only
            return
        terminating = self._terminating
        terminating.sending = True  # from before the lock: a message taken is a message sent
        try:
            self._take_and_send(message)
        finally:
            terminating.sending = False
            if terminating.deferred:
                terminating.deferred = False
                terminating.on_sigterm(signal.SIGTERM, None)

    def _take_and_send(self, message: AttemptReport | ChildReady) -> None:
        with self._lock:
            if isinstance(message, ChildReady):
                self._sent_finished = False  # the next attempt's Finished is its own
            elif isinstance(message, Finished):
                if self._sent_finished:
                    return
                self._sent_finished = True
                if not message.sent_at:
                    message = replace(message, sent_at=wall_ms())
            try:
                self._channel.send(message)
            except ChannelClosed:
                os._exit(1)


def _read(channel: Channel, starts: queue.SimpleQueue[AttemptStart], current: _Current) -> None:
    handed = 0
    while True:
        # Every 50 ms while an attempt it handed over is not finished (held-back progress is
        # due); between attempts nothing is, so an idle child sleeps until a message comes.
        idle = handed == current.ended
        try:
            message = channel.recv(timeout=None if idle else _PUMP_S)
        except ChannelClosed:
            # The worker is gone (or retired this child): nothing may run on without it.
            os._exit(1)
        run = current.run
        if isinstance(message, AttemptStart):
            handed += 1
            starts.put(message)
        elif (
            isinstance(message, tuple)
            and message[:1] == ("cancel",)
            and run is not None
            and run.ref.dispatch_id == message[1]  # a late cancel finds no attempt: ignored
        ):
            run.cancel(str(message[2]), int(message[3]))
        if run is not None:
            run.pump()
        time.sleep(0)
