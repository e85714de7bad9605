"""Attempt supervision: the attempts a worker runs now, each on a kept thread, and how each
one ends (DESIGN.md §5).

:class:`Attempts` starts an :class:`~engine.worker.attempt.AttemptRun` per dispatch (its
``Claimed`` report first), runs it on an :class:`~engine.worker.threads.AttemptThreads`
thread, and hands the ended ones back to the worker's loop (:meth:`Attempts.reap`), which
then commits their dispatch offsets. An attempt given back to the scheduler at shutdown
(``WorkerLeft``) is *abandoned*: its later reports are dropped and its dispatch is not
committed, so it is redelivered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from engine.lifecycle.records import (
    AttemptRef,
    AttemptReport,
    Claimed,
    Control,
    Dispatch,
    Finished,
    Outcome,
    Started,
)
from engine.limits import Limits
from engine.worker.attempt import AttemptOptions, AttemptRun
from engine.worker.context import wall_ms
from engine.worker.logs import log, log_event
from engine.worker.offsets import Partition
from engine.worker.pool import ChildPool
from engine.worker.tasks import TaskRegistry
from engine.worker.threads import AttemptThreads


@dataclass
class Slot:
    """One attempt running on this worker.

    Attributes:
        run: the attempt.
        lease_ms: how long the scheduler waits for its next heartbeat.
        offsets: the dispatch records it came from (more than one after a redelivery).
        ended: set once its thread is done with it.
        abandoned: reported in ``WorkerLeft``: its later reports are dropped.
        claim_sent: the scheduler was told of the claim (see :meth:`Attempts.report`).
    """

    run: AttemptRun
    lease_ms: int
    offsets: list[tuple[Partition, int]]
    ended: threading.Event = field(default_factory=threading.Event)
    abandoned: bool = False
    claim_sent: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class Attempts:
    """The attempts running on a worker, by dispatch id.

    Args:
        worker_id: the worker's id, in the attempts' reports.
        registry: the tasks the attempts may run.
        options: progress interval, output limits, kill steps and memory limit.
        limits: the record limits the reports must fit.
        send: produces a report of an attempt.
        metrics: the worker's counters (``claimed``, ``finished.<OUTCOME>``).
        host: the worker's host, in ``Claimed``.
        pid: the worker's pid, in ``Claimed``.
    """

    def __init__(
        self,
        worker_id: str,
        registry: TaskRegistry,
        options: AttemptOptions,
        limits: Limits,
        send: Callable[[AttemptReport], None],
        metrics: Counter[str],
        host: str,
        pid: int,
    ) -> None:
        self.worker_id = worker_id
        self.registry = registry
        self.options = options
        self.limits = limits
        self.metrics = metrics
        self.host = host
        self.pid = pid
        self.max_running = 0
        self._send = send
        self._running: dict[str, Slot] = {}
        self._done: list[str] = []
        self._done_lock = threading.Lock()
        self._wake = threading.Event()
        self._threads = AttemptThreads()

    def __len__(self) -> int:
        return len(self._running)

    def slots(self) -> list[Slot]:
        """The attempts running now (a copy)."""
        return list(self._running.values())

    def refs(self) -> list[AttemptRef]:
        """The references of the attempts running now."""
        return [slot.run.ref for slot in self.slots()]

    def get(self, dispatch_id: str) -> Slot | None:
        """The attempt of ``dispatch_id``, if it runs here."""
        return self._running.get(dispatch_id)

    def find(self, control: Control) -> Slot | None:
        """The attempt a control record is for: by its dispatch id, else by its job and
        attempt number."""
        if control.dispatch_id:
            return self._running.get(control.dispatch_id)
        wanted = (control.submission_id, control.job_id, control.attempt)
        for slot in self.slots():
            ref = slot.run.ref
            if (ref.submission_id, ref.job_id, ref.attempt) == wanted:
                return slot
        return None

    def report(self, slot: Slot, report: AttemptReport) -> None:
        """Sends a report of ``slot``'s attempt, unless the attempt was given back.

        The claim goes with the attempt's first report: a ``Started`` then says it is the
        claim too (one report, one decision of the scheduler, instead of two); any other
        first report is preceded by a ``Claimed``.
        """
        with slot.lock:
            if slot.abandoned:
                return
            if not slot.claim_sent:
                slot.claim_sent = True
                if isinstance(report, Started) and report.ref == slot.run.ref:
                    report = replace(report, claimed=True, host=self.host)
                else:
                    ref = slot.run.ref
                    self._send(Claimed(ref=ref, host=self.host, pid=self.pid, sent_at=wall_ms()))
            self._send(report)

    def start(
        self,
        dispatch: Dispatch,
        partition: Partition,
        offset: int,
        lease_ms: int,
        pool: ChildPool | None,
    ) -> Slot:
        """Claims ``dispatch`` and runs it on a thread (the claim is reported with the
        attempt's first report)."""
        slot = Slot(
            run=AttemptRun(
                dispatch,
                self.worker_id,
                self.registry,
                lambda report: self.report(slot, report),
                self.options,
                limits=self.limits,
                pool=pool,
            ),
            lease_ms=lease_ms,
            offsets=[(partition, offset)],
        )
        self._running[dispatch.dispatch_id] = slot
        self.max_running = max(self.max_running, len(self._running))
        self.metrics["claimed"] += 1
        ref = slot.run.ref
        log_event(
            logging.INFO,
            "attempt claimed",
            submission=ref.submission_id,
            job=ref.job_id,
            attempt=ref.attempt,
            kind=slot.run.kind,
            running=len(self._running),
        )
        self._threads.run(lambda: self._execute(slot))
        return slot

    def _execute(self, slot: Slot) -> None:
        try:
            self._execute_attempt(slot)
        finally:
            slot.ended.set()

    def _execute_attempt(self, slot: Slot) -> None:
        run = slot.run
        try:
            finished = run.execute()
        except Exception as exc:  # a bug of the worker itself: still end the attempt
            log.exception("attempt crashed the worker code")
            finished = Finished(
                ref=run.ref,
                outcome=Outcome.FAILED,
                error_type="WorkerError",
                error_note=f"{type(exc).__name__}: {exc}",
                sent_at=wall_ms(),
            )
            self.report(slot, finished)
        ref = run.ref
        log_event(
            logging.INFO,
            "attempt finished",
            submission=ref.submission_id,
            job=ref.job_id,
            attempt=ref.attempt,
            outcome=finished.outcome.value,
            exit_code=finished.exit_code,
            error_type=finished.error_type or "-",
        )
        self.metrics[f"finished.{finished.outcome.value}"] += 1
        with self._done_lock:
            self._done.append(ref.dispatch_id)
        self._wake.set()

    def reap(self) -> list[Slot]:
        """Removes the attempts that ended since the last call and returns them."""
        with self._done_lock:
            done, self._done = self._done, []
        ended = [self._running.pop(dispatch_id, None) for dispatch_id in done]
        return [slot for slot in ended if slot is not None]

    def wait_for_an_end(self, timeout_s: float) -> None:
        """Waits up to ``timeout_s`` for an attempt to end (at once if one ended unreaped)."""
        self._wake.clear()
        with self._done_lock:
            ended = bool(self._done)
        if not ended:
            self._wake.wait(timeout_s)

    def pump(self) -> None:
        """Lets every running attempt send what it has due (progress, output)."""
        for slot in self.slots():
            slot.run.pump()

    def stop(self, slots: list[Slot], reason: str, grace_ms: int, deadline: float) -> None:
        """Kills ``slots`` and waits, until ``deadline`` (monotonic), for their threads."""
        for slot in slots:
            slot.run.cancel(reason, grace_ms)
        for slot in slots:
            slot.ended.wait(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Lets the attempt threads end once they are done."""
        self._threads.close()
