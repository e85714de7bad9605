"""Leases: the heartbeats that keep a worker's attempts alive, and the ``WorkerLeft`` that
gives them back when it stops (DESIGN.md §4, worker liveness).

Pure: the records are built here and sent by the worker. Heartbeats go out every lease/3
(the shortest lease of the attempts running, else the default): one per submission with
running attempts (keyed by the submission, so the scheduler instance that owns it sees it),
and one keyed by the worker id with no attempts (the worker's own liveness).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from engine.lifecycle.records import AttemptRef, Heartbeat, WorkerLeft


@dataclass(frozen=True)
class WorkerIdentity:
    """Who a worker is, in its heartbeats."""

    worker_id: str
    queue: str
    host: str
    pid: int
    slots_total: int


def by_submission(refs: Iterable[AttemptRef]) -> dict[str, list[AttemptRef]]:
    """``refs`` grouped by their submission id, in their order."""
    grouped: dict[str, list[AttemptRef]] = {}
    for ref in refs:
        grouped.setdefault(ref.submission_id, []).append(ref)
    return grouped


class HeartbeatClock:
    """Says when heartbeats are due and builds them.

    Args:
        identity: the worker's identity.
        default_lease_ms: the lease when no attempt runs (or none said otherwise).
    """

    def __init__(self, identity: WorkerIdentity, default_lease_ms: int) -> None:
        self.identity = identity
        self.default_lease_ms = default_lease_ms
        self._last = 0.0

    def lease_ms(self, leases_ms: Iterable[int]) -> int:
        """The lease heartbeats keep: the shortest of the running attempts', else the
        default."""
        return min(leases_ms, default=self.default_lease_ms)

    def due(
        self,
        now: float,
        leases_ms: list[int],
        alive: list[AttemptRef],
        sent_at: int,
    ) -> list[tuple[str, Heartbeat]]:
        """The heartbeats to send at ``now`` (monotonic seconds), with their keys.

        Args:
            now: the monotonic clock.
            leases_ms: the lease of every attempt running (also those given back).
            alive: the attempts this worker still answers for.
            sent_at: wall-clock milliseconds for the records.

        Returns:
            Nothing when the last heartbeats went out less than lease/3 ago; else one per
            submission of ``alive`` and one keyed by the worker id.
        """
        lease_ms = self.lease_ms(leases_ms)
        if now - self._last < lease_ms / 3000:
            return []
        self._last = now
        me = self.identity

        def heartbeat(attempts: tuple[AttemptRef, ...]) -> Heartbeat:
            return Heartbeat(
                worker_id=me.worker_id,
                queue=me.queue,
                host=me.host,
                pid=me.pid,
                slots_total=me.slots_total,
                slots_used=len(leases_ms),
                attempts=attempts,
                lease_ms=lease_ms,
                sent_at=sent_at,
            )

        beats = [(sid, heartbeat(tuple(refs))) for sid, refs in by_submission(alive).items()]
        beats.append((me.worker_id, heartbeat(())))
        return beats


def left(
    worker_id: str, unfinished: list[AttemptRef], sent_at: int
) -> list[tuple[str, WorkerLeft]]:
    """The ``WorkerLeft`` reports of a worker that stops: one per submission of its
    ``unfinished`` attempts (the scheduler retries them) and one keyed by the worker id."""
    reports = [
        (sid, WorkerLeft(worker_id=worker_id, unfinished=tuple(refs), sent_at=sent_at))
        for sid, refs in by_submission(unfinished).items()
    ]
    reports.append((worker_id, WorkerLeft(worker_id=worker_id, sent_at=sent_at)))
    return reports
