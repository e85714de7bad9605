"""Warm child processes for Python attempts, forked from the template and reused.

A :class:`ChildPool` keeps up to ``size`` child processes forked from the worker's template
(:mod:`engine.worker.forkserver`), each connected to the worker by a :class:`Channel` and
waiting for its next attempt (Celery's prefork pool, with the template as the clean parent).
An attempt takes a child with :meth:`ChildPool.acquire`, runs on it, and gives it back with
:meth:`ChildPool.release`: the child goes back to the idle list, or it is *retired* (its
channel closed, SIGKILL through the template) and a fresh one is forked in the background
to take its place:

==============================================  ============================================
why a child is retired                          retire reason (``ChildPool.stats``)
==============================================  ============================================
its attempt was killed (cancel, run timeout)    ``killed``
it died (a signal, ``os._exit``, memory limit)  ``died``
it ran ``max_attempts_per_child`` attempts      ``max_attempts``
its RSS after an attempt is above               ``rss``
``recycle_rss_bytes``
it left threads running, so it exited itself    ``exited``
==============================================  ============================================

``PoolOptions(size=0, max_attempts_per_child=1)`` is the process-per-attempt mode: no warm
child, one ``fork`` per attempt, the child exits after it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections import Counter
from dataclasses import dataclass

from engine.worker.channel import Channel
from engine.worker.forkserver import (
    ChildProcess,
    ForkServer,
    ForkServerError,
    keep_from_children,
    release_fd,
)

log = logging.getLogger("joblog.worker")

KILLED = "killed"
DIED = "died"
MAX_ATTEMPTS = "max_attempts"
RSS = "rss"
EXITED = "exited"

_REFILL_BACKOFF_S = 1.0
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes(pid: int) -> int | None:
    """The resident memory (RSS) of process ``pid``, from ``/proc`` (``None`` if unknown)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            fields = statm.read().split()
        return int(fields[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return None


@dataclass(frozen=True)
class PoolOptions:
    """How many warm children, and when one is replaced.

    Attributes:
        size: children forked ahead of time and kept idle between attempts (the worker's
            concurrency); 0 forks each child when an attempt needs it.
        max_attempts_per_child: a child is replaced after this many attempts (1: a fresh
            process per attempt; 0: no limit).
        recycle_rss_bytes: a child whose resident memory is above this after an attempt is
            replaced (0: never for its size).
    """

    size: int = 0
    max_attempts_per_child: int = 1
    recycle_rss_bytes: int = 0


#: The process-per-attempt mode: no warm children, each attempt in a fresh fork.
PER_ATTEMPT = PoolOptions()


@dataclass(eq=False)
class PooledChild:
    """One child process of the pool and the worker's end of its channel.

    Attributes:
        process: the process (its pid and, once reaped, its wait status).
        channel: the worker's end of its socket.
        attempts: how many attempts were given to it.
    """

    process: ChildProcess
    channel: Channel
    attempts: int = 0

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.process.pid


class ChildPool:
    """The worker's child processes for Python attempts.

    Args:
        server: the template that forks them.
        options: size, recycling after a number of attempts or above a memory size.

    Thread-safe: attempts acquire and release children from their own threads.
    """

    def __init__(self, server: ForkServer, options: PoolOptions = PER_ATTEMPT) -> None:
        self.server = server
        self.options = options
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._idle: list[PooledChild] = []
        self._live = 0  # idle + in use
        self._closed = False
        self._wanted = threading.Event()
        self._refill: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        """Whether the template runs (without it no child can be forked)."""
        return self.server.alive

    @property
    def idle(self) -> list[int]:
        """The pids of the children waiting for an attempt."""
        with self._lock:
            return [child.pid for child in self._idle]

    def start(self) -> None:
        """Forks the warm children (``size`` of them) and starts the thread that replaces the
        retired ones. A child that cannot be forked now is tried again later."""
        self._fill()
        if self.options.size > 0:
            self._refill = threading.Thread(
                target=self._keep_filled, name="joblog-pool-refill", daemon=True
            )
            self._refill.start()

    def close(self) -> None:
        """Retires every idle child; children in use are retired when released."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._live -= len(idle)
        self._wanted.set()
        for child in idle:
            self._kill(child)
        if self._refill is not None:
            self._refill.join(2.0)

    # ------------------------------------------------------------------ attempts

    def acquire(self) -> PooledChild:
        """A child for one attempt: a warm one if any is idle, else a new fork.

        Raises:
            ForkServerError: the template is gone or could not fork.
        """
        while True:
            with self._lock:
                child = self._idle.pop() if self._idle else None
                if child is None:
                    self._live += 1
                    break
            if child.process.exited.is_set():  # died while idle (the OOM killer, ...)
                self._forget(child, DIED)
                continue
            child.attempts += 1
            self.stats["reused" if child.attempts > 1 else "warm"] += 1
            return child
        try:
            child = self._fork()
        except ForkServerError:
            with self._lock:
                self._live -= 1
            raise
        child.attempts = 1
        self.stats["forked_on_demand"] += 1
        return child

    def is_last(self, child: PooledChild) -> bool:
        """Whether the attempt the child runs now is its last (it exits after it)."""
        limit = self.options.max_attempts_per_child
        return limit > 0 and child.attempts >= limit

    def release(self, child: PooledChild, retire: str | None) -> None:
        """Gives a child back after its attempt.

        Args:
            child: what :meth:`acquire` returned.
            retire: why it must not run another attempt (``killed``, ``died``, ...), or
                ``None`` if it may.
        """
        if retire in (None, EXITED) and self.is_last(child):
            retire = MAX_ATTEMPTS
        if retire is None and self.options.recycle_rss_bytes > 0:
            rss = resident_bytes(child.pid)
            if rss is not None and rss > self.options.recycle_rss_bytes:
                retire = RSS
        if retire is None and child.process.exited.is_set():
            retire = DIED
        if retire is None:
            with self._lock:
                if not self._closed and self._live <= self.options.size:
                    self._idle.append(child)
                    return
            retire = MAX_ATTEMPTS if self.options.size == 0 else "surplus"
        self._forget(child, retire)

    def signal(self, child: PooledChild, signum: int) -> None:
        """Sends ``signum`` to a child (through the template: a reused pid is never hit)."""
        self.server.signal(child.process, signum)

    # ------------------------------------------------------------------ forking

    def _fork(self) -> PooledChild:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        keep_from_children(ours.fileno())
        try:
            process = self.server.spawn(theirs)
        except ForkServerError:
            release_fd(ours.fileno())
            ours.close()
            raise
        return PooledChild(process, Channel(ours))

    def _forget(self, child: PooledChild, reason: str) -> None:
        self.stats[f"retired.{reason}"] += 1
        self._kill(child)
        with self._lock:
            self._live -= 1
        self._wanted.set()

    def _kill(self, child: PooledChild) -> None:
        # Closing the channel alone ends it (EOF); SIGKILL also ends a child that is stuck.
        release_fd(child.channel.fileno())
        with contextlib.suppress(OSError):
            child.channel.close()
        self.server.signal(child.process, signal.SIGKILL)

    def _fill(self) -> bool:
        """Forks children until ``size`` are live; ``False`` if a fork failed."""
        while True:
            with self._lock:
                if self._closed or self._live >= self.options.size:
                    return True
                self._live += 1
            try:
                child = self._fork()
            except ForkServerError as exc:
                with self._lock:
                    self._live -= 1
                log.warning("pool child not forked error=%s", exc)
                return False
            self.stats["forked"] += 1
            with self._lock:
                if not self._closed:
                    self._idle.append(child)
                    continue
                self._live -= 1
            self._kill(child)
            return True

    def _keep_filled(self) -> None:
        while not self._closed:
            self._wanted.wait()
            self._wanted.clear()
            if self._closed:
                return
            if not self.server.alive:
                continue  # the worker makes a new template, and a new pool with it
            if not self._fill():
                self._wanted.wait(_REFILL_BACKOFF_S)
                self._wanted.set()
