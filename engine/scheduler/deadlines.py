"""Deadlines that a blocking librdkafka call cannot ignore.

Some transactional calls of librdkafka can block past the timeout they are given (its
``send_offsets_to_transaction`` waits for a coordinator request that is never timed out when
the group coordinator goes away, which a broker restart does). A service must neither hang
nor ignore SIGTERM because of that, so those calls run on a helper thread and the caller waits
with a deadline of its own. A call that overruns is *abandoned*: the caller gets
:class:`CallStuck`, drops the client (keeping a reference, so that it is never destroyed
while the helper thread is still inside it) and builds a new one; a new transactional
producer with the same ``transactional.id`` fences the abandoned one.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from engine.errors import BrokerError

T = TypeVar("T")

#: How long a call may run past its own timeout before it is abandoned.
GRACE_S = 5.0
#: How long a call may still run once the service was asked to stop.
STOP_GRACE_S = 3.0


class CallStuck(BrokerError):
    """A Kafka client call did not return by its deadline and was abandoned."""


class BoundedCalls:
    """Runs blocking client calls on one daemon thread, each with a deadline.

    Args:
        name: the helper thread's name.
        stop: once set, a running call gets :data:`STOP_GRACE_S` more, not its full deadline.
    """

    def __init__(self, name: str, stop: threading.Event | None = None) -> None:
        self.name = name
        self.stop = stop
        self._start()

    def _start(self) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], object], list[tuple[bool, object]], threading.Event]
        ] = queue.SimpleQueue()
        threading.Thread(
            target=self._serve, args=(self._jobs,), daemon=True, name=self.name
        ).start()

    @staticmethod
    def _serve(
        jobs: queue.SimpleQueue[
            tuple[Callable[[], object], list[tuple[bool, object]], threading.Event]
        ],
    ) -> None:
        while True:
            call, box, done = jobs.get()
            try:
                box.append((True, call()))
            except BaseException as exc:  # handed to the caller
                box.append((False, exc))
            done.set()

    def call(self, what: str, fn: Callable[[], T], timeout_s: float) -> T:
        """Runs ``fn()`` (which should itself time out after ``timeout_s``) with a deadline.

        Raises:
            CallStuck: it ran :data:`GRACE_S` past ``timeout_s`` (or :data:`STOP_GRACE_S`
                past a stop request); the helper thread is left behind with it.
            Exception: whatever ``fn`` raised.
        """
        box: list[tuple[bool, object]] = []
        done = threading.Event()
        self._jobs.put((fn, box, done))
        started = time.monotonic()
        deadline = started + timeout_s + GRACE_S
        stop_deadline: float | None = None
        while not done.wait(0.1):
            now = time.monotonic()
            if self.stop is not None and self.stop.is_set() and stop_deadline is None:
                stop_deadline = now + STOP_GRACE_S
            if now > deadline or (stop_deadline is not None and now > stop_deadline):
                self._start()  # the stuck thread keeps the old queue; later calls get a new one
                raise CallStuck(
                    f"{what} did not return within {now - started:.1f} s "
                    f"(its timeout: {timeout_s:.0f} s); the client is abandoned and rebuilt"
                )
        ok, value = box[0]
        if not ok:
            assert isinstance(value, BaseException)
            raise value
        return value  # type: ignore[return-value]
