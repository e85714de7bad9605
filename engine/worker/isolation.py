"""Where a worker runs Python tasks: the task template and the pool of children forked from
it, started before any Kafka client, and started again when the template dies.

The template is forked before any Kafka client exists, so no librdkafka thread, socket or
buffer is copied into it or into the task processes forked from it. A template that dies
takes its children with it (their attempts fail with ``WorkerChildDied``); the next attempts
get a new template, at most every ``_FORK_RETRY_S``.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

from engine.worker.forkserver import ForkServer, ForkServerError
from engine.worker.logs import log_event
from engine.worker.pool import PER_ATTEMPT, ChildPool, PoolOptions
from engine.worker.tasks import TaskRegistry

#: Where a Python task runs: a warm child process of the pool (the default), a fresh child
#: process per attempt, or a worker thread.
Isolation = Literal["pool", "process-per-attempt", "thread"]
POOL: Isolation = "pool"
PROCESS_PER_ATTEMPT: Isolation = "process-per-attempt"
THREAD: Isolation = "thread"
ISOLATIONS: tuple[Isolation, ...] = (POOL, PROCESS_PER_ATTEMPT, THREAD)

_FORK_RETRY_S = 5.0


def pool_options(
    isolation: Isolation, concurrency: int, max_attempts_per_child: int, memory_limit_bytes: int
) -> PoolOptions:
    """The pool a worker of ``concurrency`` slots keeps for ``isolation``."""
    if isolation == PROCESS_PER_ATTEMPT:
        return PER_ATTEMPT
    # A child that kept more than half the memory limit would leave its next attempt less
    # than half of it: replaced.
    return PoolOptions(
        size=concurrency,
        max_attempts_per_child=max(0, max_attempts_per_child),
        recycle_rss_bytes=memory_limit_bytes // 2,
    )


class TaskProcesses:
    """The task template and its pool of children (nothing in thread mode or without tasks).

    Args:
        registry: the tasks the children run.
        isolation: where Python tasks run.
        options: the pool's size and recycling.
    """

    def __init__(self, registry: TaskRegistry, isolation: Isolation, options: PoolOptions) -> None:
        self.registry = registry
        self.isolation = isolation
        self.options = options
        self.server: ForkServer | None = None
        self.pool: ChildPool | None = None
        #: Templates started again after the last one ended.
        self.restarts = 0
        self._next_try = 0.0

    @property
    def wanted(self) -> bool:
        """Whether Python tasks run in child processes."""
        return self.isolation != THREAD and len(self.registry) > 0

    def start(self, *, first: bool = True) -> None:
        """Forks the task template and the pool's warm children.

        Raises:
            ForkServerError: the first template could not be forked (the worker does not
                start); a later failure only fails the attempts until a fork works again.
        """
        if not self.wanted:
            return
        from engine.worker.child import run_attempt_child

        registry = self.registry
        server = ForkServer(lambda sock, template: run_attempt_child(sock, template, registry))
        # Kept even if it did not start: its attempts then fail (WorkerChildDied) instead of
        # running unisolated on a thread, and the loop tries again.
        self.server = server
        self.pool = pool = ChildPool(server, self.options)
        try:
            server.start()
        except ForkServerError as exc:
            if first:
                raise
            log_event(logging.ERROR, "task template not started", error=exc)
            return
        pool.start()
        log_event(logging.DEBUG, "task template started", pid=server.pid, warm=len(pool.idle))

    def check(self) -> None:
        """Starts a new template when the last one ended (at most every ``_FORK_RETRY_S``)."""
        server = self.server
        if server is None or server.alive or time.monotonic() < self._next_try:
            return
        self._next_try = time.monotonic() + _FORK_RETRY_S
        if self.pool is not None:
            self.pool.close()
        if server.pid is not None:
            log_event(
                logging.ERROR, "task template process ended; starting a new one", pid=server.pid
            )
            server.close(timeout=1.0)
        self.restarts += 1
        self.start(first=False)

    def close(self) -> None:
        """Stops the pool's children and the template."""
        if self.pool is not None:
            self.pool.close()
        if self.server is not None:
            self.server.close()
            self.server = None
