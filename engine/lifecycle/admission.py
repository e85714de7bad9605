"""Admission control: a new submission is taken only while the engine keeps up.

When the engine is behind, a backlog that grows without bound helps no one: every job waits
longer, memory grows, and a projection that lags answers queries with old news. So the
scheduler answers a new submit with a :class:`~engine.lifecycle.records.SubmissionThrottled`
event instead of accepting it while one of three figures is over its limit:

- ``pending_jobs``: the jobs of a queue that are PENDING (runnable, dispatched or held, not
  started), counted exactly by the scheduler in the submission's partition. The limit is for
  the whole queue; a partition takes its share, ``ceil(limit / partitions)``, so the queue
  as a whole never holds more than the limit plus one admitted submission per partition.
- ``dispatch_backlog``: the records of the queue's dispatch topic its workers' group has not
  committed yet (dispatched and not yet done), measured from the brokers' offsets.
- ``projection_lag``: the events the projector's group has not committed yet.

The last two are sampled off the hot path (:class:`Load`, a few seconds old at most); the
first is exact at the moment of the decision. A submit of a schedule's run is never
throttled (the schedule's overlap policy bounds those, and a run that never starts would
hold its schedule), and neither is anything but a new submission: cancels, retries and
reports of jobs already admitted are what lets the engine catch up.

``retry_after_ms`` is how long the measured drain rate needs to bring the figure back under
its limit, within [:data:`MIN_RETRY_AFTER_MS`, :data:`MAX_RETRY_AFTER_MS`]; the client adds
jitter and tries again with a new command id (the submission id stays free).

Pure: :func:`admit` decides from the command, the counts and the sampled load it is given.
A decision is an event on the log like any other, so replays never re-decide it.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from engine.lifecycle.records import Event, SubmissionThrottled, SubmitJobs, ThrottleCause

#: The shortest wait a throttled client is told (a drain measured as fast never says "now").
MIN_RETRY_AFTER_MS = 500
#: The longest: a client told more would rather see the engine again sooner.
MAX_RETRY_AFTER_MS = 30_000
#: The wait when nothing drains (no worker, no projector): ask again in a while.
IDLE_RETRY_AFTER_MS = 5_000
#: Command ids of the runs a schedule submits for itself, never throttled.
SCHEDULE_RUN_PREFIX = "#schedule-"


@dataclass(frozen=True)
class AdmissionLimits:
    """The limits admission control keeps; ``0`` turns a limit off.

    Attributes:
        max_pending_jobs: PENDING jobs per queue, over the whole cluster (each partition
            takes its share).
        max_dispatch_backlog: dispatch records of a queue not yet done by its workers.
        max_projection_lag: events not yet folded by the projector's group.
    """

    max_pending_jobs: int = 1_000_000
    max_dispatch_backlog: int = 0
    max_projection_lag: int = 0

    def __post_init__(self) -> None:
        for name in ("max_pending_jobs", "max_dispatch_backlog", "max_projection_lag"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (off) or more, not {getattr(self, name)}")

    @property
    def sampled(self) -> bool:
        """Whether a limit needs the brokers' offsets (:class:`Load`)."""
        return bool(self.max_dispatch_backlog or self.max_projection_lag)


#: Admission control off.
UNLIMITED = AdmissionLimits(max_pending_jobs=0)


@dataclass(frozen=True)
class Load:
    """What the brokers' offsets said at ``sampled_at`` (ms), and how fast it drains.

    Attributes:
        dispatch_backlog: queue -> dispatch records its workers' group has not committed.
        dispatch_drain: queue -> records committed per second since the previous sample.
        projection_lag: events the projector's group has not committed (``0`` when no
            projector ever committed: there is no projection to wait for).
        projection_drain: events committed per second since the previous sample.
    """

    dispatch_backlog: Mapping[str, int] = field(default_factory=dict)
    dispatch_drain: Mapping[str, float] = field(default_factory=dict)
    projection_lag: int = 0
    projection_drain: float = 0.0
    sampled_at: int = 0


#: Nothing measured yet.
NO_LOAD = Load()


def share(limit: int, partitions: int) -> int:
    """A partition's share of a cluster-wide limit."""
    return max(1, math.ceil(limit / max(1, partitions)))


def retry_after_ms(excess: int, drain_per_s: float) -> int:
    """How long ``drain_per_s`` needs to take ``excess`` away, within the bounds."""
    if drain_per_s <= 0:
        return IDLE_RETRY_AFTER_MS
    wait = int(1000 * excess / drain_per_s)
    return min(MAX_RETRY_AFTER_MS, max(MIN_RETRY_AFTER_MS, wait))


def exempt(command: SubmitJobs) -> bool:
    """Whether the submit is never throttled (a schedule's run)."""
    return command.command_id.startswith(SCHEDULE_RUN_PREFIX)


def admit(
    command: SubmitJobs,
    now: int,
    limits: AdmissionLimits,
    pending: Mapping[str, int],
    load: Load = NO_LOAD,
    started: Callable[[str], float] | None = None,
    partitions: int = 1,
) -> Event | None:
    """``None`` when the new submission may be decided now, else its throttle event.

    Args:
        command: the submit of a submission not seen before.
        now: the scheduler's clock (ms).
        limits: the limits to keep.
        pending: queue -> PENDING jobs in the submission's partition.
        load: the last sample of the brokers' offsets.
        started: queue -> the rate (per second) at which the partition's PENDING jobs of
            the queue have been leaving PENDING lately (:meth:`PendingJobs.rate`).
        partitions: the partition count of ``commands`` (a partition's share of
            ``max_pending_jobs``).
    """
    if exempt(command):
        return None
    queues: dict[str, int] = {}  # jobs per queue (a plain loop: Counter() costs 3x on this path)
    for spec in command.jobs:
        queues[spec.queue] = queues.get(spec.queue, 0) + 1
    if limits.max_pending_jobs:
        allowed = share(limits.max_pending_jobs, partitions)
        for queue in sorted(queues):
            held = pending.get(queue, 0)
            # an empty queue takes any submission (its size is bounded by the graph limit)
            if held and held + queues[queue] > allowed:
                drain = started(queue) if started is not None else 0.0
                return _throttled(
                    command,
                    now,
                    ThrottleCause.PENDING_JOBS,
                    queue,
                    held,
                    allowed,
                    retry_after_ms(held + queues[queue] - allowed, drain),
                    f"queue {queue!r} has {held} pending jobs in this submission's partition, "
                    f"its share of max_pending_jobs={limits.max_pending_jobs} is {allowed}",
                )
    if limits.max_dispatch_backlog:
        for queue in sorted(queues):
            backlog = load.dispatch_backlog.get(queue, 0)
            if backlog >= limits.max_dispatch_backlog:
                return _throttled(
                    command,
                    now,
                    ThrottleCause.DISPATCH_BACKLOG,
                    queue,
                    backlog,
                    limits.max_dispatch_backlog,
                    retry_after_ms(
                        backlog - limits.max_dispatch_backlog + 1,
                        load.dispatch_drain.get(queue, 0.0),
                    ),
                    f"queue {queue!r} has {backlog} dispatched jobs its workers have not done, "
                    f"max_dispatch_backlog={limits.max_dispatch_backlog}",
                )
    if limits.max_projection_lag and load.projection_lag >= limits.max_projection_lag:
        return _throttled(
            command,
            now,
            ThrottleCause.PROJECTION_LAG,
            "",
            load.projection_lag,
            limits.max_projection_lag,
            retry_after_ms(
                load.projection_lag - limits.max_projection_lag + 1, load.projection_drain
            ),
            f"the projection is {load.projection_lag} events behind, "
            f"max_projection_lag={limits.max_projection_lag}",
        )
    return None


def _throttled(
    command: SubmitJobs,
    now: int,
    cause: ThrottleCause,
    queue: str,
    load: int,
    limit: int,
    wait_ms: int,
    detail: str,
) -> Event:
    return Event(
        event_id=f"{command.submission_id}:throttled:{command.command_id}",
        submission_id=command.submission_id,
        job_id="",
        seq=0,
        timestamp=now,
        body=SubmissionThrottled(
            command_id=command.command_id,
            cause=str(cause),
            retry_after_ms=wait_ms,
            queue=queue,
            load=load,
            limit=limit,
            detail=f"{detail}; retry in about {wait_ms / 1000:g} s",
        ),
    )


#: Departures from PENDING remembered per queue, for :meth:`PendingJobs.rate`.
RATE_WINDOW = 256


class PendingJobs:
    """The PENDING jobs of one partition, per queue, kept up to date event by event.

    :meth:`note` is told, for every job an input touched, the job's queue if it is PENDING
    after the input and ``None`` otherwise; :attr:`by_queue` is the count :func:`admit`
    reads, and :meth:`rate` how fast jobs have been leaving PENDING lately.
    """

    def __init__(self) -> None:
        self.by_queue: Counter[str] = Counter()
        self._queue_of: dict[str, dict[str, str]] = {}
        self._left: dict[str, deque[int]] = {}

    def rate(self, queue: str, now: int) -> float:
        """Jobs of ``queue`` that left PENDING per second, over the last
        :data:`RATE_WINDOW` departures up to ``now`` (ms); ``0.0`` when unknown."""
        left = self._left.get(queue)
        if not left or now <= left[0]:
            return 0.0
        return 1000 * len(left) / (now - left[0])

    def note(self, submission_id: str, job_id: str, queue: str | None, now: int = 0) -> None:
        """The job is PENDING on ``queue`` now, or not pending (``None``), at ``now`` (ms)."""
        jobs = self._queue_of.get(submission_id)
        was = None if jobs is None else jobs.get(job_id)
        if was == queue:
            return
        if was is not None:
            assert jobs is not None
            del jobs[job_id]
            if not jobs:
                del self._queue_of[submission_id]
            self._drop(was)
            left = self._left.get(was)
            if left is None:
                left = self._left[was] = deque(maxlen=RATE_WINDOW)
            left.append(now)
        if queue is not None:
            self._queue_of.setdefault(submission_id, {})[job_id] = queue
            self.by_queue[queue] += 1

    def forget(self, submission_id: str) -> None:
        """The submission left memory (retired or deleted)."""
        for queue in self._queue_of.pop(submission_id, {}).values():
            self._drop(queue)

    def _drop(self, queue: str) -> None:
        self.by_queue[queue] -= 1
        if self.by_queue[queue] <= 0:
            del self.by_queue[queue]
