"""The threads that supervise attempts: kept between attempts, one attempt at a time each."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable


class AttemptThreads:
    """Daemon threads that run attempts, one attempt at a time each, kept for the next one.

    Starting a thread per attempt made the loop wait for each new thread to get the GIL
    (about a millisecond while other attempts hold it); handing work to a kept thread is a
    queue put. A thread is started only when none is idle, so there are about as many
    threads as attempts ever ran at once.
    """

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._started = 0

    @property
    def started(self) -> int:
        """How many threads were started so far."""
        return self._started

    def run(self, work: Callable[[], None]) -> None:
        """Runs ``work`` on an idle thread, or on a new one when none is idle."""
        with self._lock:
            start = self._idle == 0
            if start:
                self._started += 1
            else:
                self._idle -= 1
        if start:
            threading.Thread(
                target=self._serve, name=f"joblog-attempt-{self._started}", daemon=True
            ).start()
        self._work.put(work)

    def _serve(self) -> None:
        while (work := self._work.get()) is not None:
            work()
            with self._lock:
                self._idle += 1

    def close(self) -> None:
        """Lets every thread end once it is done with its attempt."""
        for _ in range(self._started):
            self._work.put(None)
