"""The scheduler's in-memory book of the partitions it owns. No Kafka here.

A :class:`Book` holds, per owned partition, the live :class:`SubmissionState` of every
submission, the idempotency keys completed there, and what the snapshot bookkeeping needs:
for each submission the offset of its first event that no snapshot covers yet. From those it
answers the partition's *checkpoint*: the ``events`` offset from which a rebuild must replay
(everything before it is covered by the snapshots on the ``state`` topic).

:meth:`Book.apply` runs one input through the pure core and returns the records to write;
the Kafka shell (:mod:`engine.scheduler.service`) only moves them.
"""

from __future__ import annotations

import heapq
import logging
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from engine import codec
from engine.errors import CodecError
from engine.lifecycle.admission import (
    NO_LOAD,
    UNLIMITED,
    AdmissionLimits,
    Load,
    PendingJobs,
    admit,
)
from engine.lifecycle.decide import (
    Policy,
    decide_retired,
    is_stale,
    job_deadline,
    recover,
    step,
)
from engine.lifecycle.effects import Effect
from engine.lifecycle.evolve import evolve
from engine.lifecycle.records import (
    ClaimIdempotencyKey,
    ClaimSlot,
    Command,
    Event,
    Heartbeat,
    IdempotencyKeyDecided,
    Input,
    JobCompleted,
    JobStatus,
    QueueConfigured,
    ReleaseIdempotencyKey,
    ReleaseSlot,
    ScheduleCreated,
    SlotDecided,
    SubmissionAccepted,
    SubmitJobs,
    Tick,
    Unprocessable,
    WorkerLeft,
)
from engine.lifecycle.state import QueueConfig, SubmissionState
from engine.lifecycle.timers import own_deadline
from engine.scheduler.snapshots import Written, restore_snapshots

log = logging.getLogger("joblog.scheduler.book")


@dataclass
class Decision:
    """What one input produced: events, side records, and the submission it touched."""

    submission_id: str
    events: list[Event] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)
    stale: bool = False  # a worker report the rules ignore
    # submissions of the partition whose held jobs may go on (their queue was resumed or
    # its limits changed): the shell decides a Tick for each in the same transaction
    woken: list[str] = field(default_factory=list)


@dataclass
class PartitionBook:
    """Everything the scheduler knows of one partition."""

    partition: int
    submissions: dict[str, SubmissionState] = field(default_factory=dict)
    # finished submissions restored but not decoded yet: id -> their encoded snapshot (see
    # engine.scheduler.snapshots, dormant); state() decodes one on first use
    dormant: dict[str, bytes] = field(default_factory=dict)
    completed_keys: dict[str, str] = field(default_factory=dict)
    # submission id -> offset of its first event on `events` not covered by a snapshot
    unsnapshotted_from: dict[str, int] = field(default_factory=dict)
    # (offset, submission id) of every value unsnapshotted_from took; entries whose value
    # changed since are dropped when they reach the top (see checkpoint)
    _from_heap: list[tuple[int, str]] = field(default_factory=list, repr=False)
    # submission id -> what its last committed snapshot holds (its seq, its layout)
    written: dict[str, Written] = field(default_factory=dict)
    # ids of submissions no longer kept in memory -> whether they were deleted: an id is
    # never accepted again, whatever happened to its submission
    retired: dict[str, bool] = field(default_factory=dict)
    # submission id -> when (ms) an event was first left out of its snapshot
    dirty_since: dict[str, int] = field(default_factory=dict)
    # finished submissions whose snapshot waits for the partition's next batch of them ->
    # when (ms) each was first seen finished, oldest first (see Book.to_snapshot)
    done_waiting: dict[str, int] = field(default_factory=dict)
    # the events offset of the last committed checkpoint record (-1: none since the rebuild)
    checkpoint_written: int = -1
    events_end: int = 0
    done_order: OrderedDict[str, None] = field(default_factory=OrderedDict)
    # queue -> its settings in this partition (from the queue's settings pseudo-submission)
    queues: dict[str, QueueConfig] = field(default_factory=dict)
    # queue -> the partition's PENDING jobs (admission control's exact count)
    pending: PendingJobs = field(default_factory=PendingJobs)

    def state(self, submission_id: str) -> SubmissionState | None:
        """The submission's state, decoding a dormant one (``None``: not held).

        A dormant snapshot that cannot be decoded any more leaves the submission retired:
        its id is still never accepted again, commands naming it are answered as for a
        finished submission no longer retained.
        """
        state = self.submissions.get(submission_id)
        if state is not None or submission_id not in self.dormant:
            return state
        raw = self.dormant.pop(submission_id)
        try:
            state = codec.decode_snapshot(raw)
        except CodecError as exc:
            log.error("dormant snapshot of %s unreadable, retired: %s", submission_id, exc)
            self.done_order.pop(submission_id, None)
            self.written.pop(submission_id, None)
            self.retired[submission_id] = False
            return None
        self.submissions[submission_id] = state
        return state

    @property
    def held(self) -> int:
        """The submissions held, dormant ones included."""
        return len(self.submissions) + len(self.dormant)

    def note_pending(self, state: SubmissionState, job_ids: Iterable[str], now: int) -> None:
        """Counts the jobs among ``job_ids`` that are PENDING now, uncounts the others."""
        for job_id in job_ids:
            job = state.jobs.get(job_id)
            pending = job is not None and job.status is JobStatus.PENDING
            queue = job.spec.queue if job is not None and pending else None
            self.pending.note(state.submission_id, job_id, queue, now)

    def note_completed(self, state: SubmissionState, job_id: str) -> None:
        """Indexes the idempotency key of a job that completed (the partition's fast path:
        a later job with the key is skipped without asking the key's ledger)."""
        key = state.jobs[job_id].spec.idempotency_key
        if key:
            self.completed_keys[key] = f"{state.submission_id}/{job_id}"

    def checkpoint(self, covered: Collection[str] = ()) -> int:
        """The ``events`` offset a rebuild of this partition must replay from.

        ``covered``: submissions whose snapshots the same transaction writes; the checkpoint
        record committed with them may count them as snapshotted.
        """
        heap, current = self._from_heap, self.unsnapshotted_from
        while heap and current.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # snapshotted (or moved) since: stale
        if not heap:
            return self.events_end
        if not covered or heap[0][1] not in covered:
            return min(heap[0][0], self.events_end)
        held: list[tuple[int, str]] = []
        while heap and (heap[0][1] in covered or current.get(heap[0][1]) != heap[0][0]):
            entry = heapq.heappop(heap)
            if current.get(entry[1]) == entry[0]:
                held.append(entry)  # still unsnapshotted until the commit: put back
        lowest = heap[0][0] if heap else self.events_end
        for entry in held:
            heapq.heappush(heap, entry)
        return min(lowest, self.events_end)

    def unsnapshotted(self, submission_id: str, offset: int) -> None:
        """The submission has an event at ``offset`` no snapshot covers; the lowest such
        offset of each submission is kept."""
        current = self.unsnapshotted_from.get(submission_id)
        if current is None or offset < current:
            self.unsnapshotted_from[submission_id] = offset
            heapq.heappush(self._from_heap, (offset, submission_id))


class Book:
    """The partitions one scheduler instance owns, and the timers of their submissions.

    Args:
        policy: scheduler-wide limits and timings handed to the core.
        retain_done: finished submissions kept in memory per partition (to answer cancel,
            delete and duplicate submits); the oldest are forgotten beyond it.
        admission: the limits a new submission is admitted within
            (:mod:`engine.lifecycle.admission`); :attr:`load` is the shell's last sample of
            the brokers' offsets, :attr:`partitions_total` the partition count of
            ``commands`` (a partition's share of a cluster-wide limit).
    """

    def __init__(
        self, policy: Policy, retain_done: int = 50_000, admission: AdmissionLimits = UNLIMITED
    ) -> None:
        self.policy = policy
        self.retain_done = retain_done
        self.admission = admission
        self.load: Load = NO_LOAD
        self.partitions_total = 1
        self.partitions: dict[int, PartitionBook] = {}
        self._timers: list[tuple[int, int, str]] = []
        # submission -> its earliest timer (the one in the heap); submission -> job -> the
        # job's timer. Timers are kept per job and re-armed only for the jobs an input
        # touched, so a decision costs what it changed, not the size of the submission.
        self._deadline: dict[str, int] = {}
        self._job_due: dict[str, dict[str, int]] = {}

    # ----------------------------------------------------------------- partitions

    def adopt(self, book: PartitionBook, now: int) -> None:
        """Takes over a rebuilt partition: re-arms leases and timers."""
        self.partitions[book.partition] = book
        for submission_id in book.dormant:
            book.done_order[submission_id] = None  # finished: no timer, lease or pending job
        for state in book.submissions.values():
            if state.queue_config is not None:
                book.queues[state.queue_config.queue] = state.queue_config
            recover(state, now)
            if state.done:
                book.done_order[state.submission_id] = None
            book.note_pending(state, state.jobs, now)
            self._arm(book.partition, state, state.jobs)

    def drop(self, partition: int) -> None:
        """Forgets a revoked partition."""
        book = self.partitions.pop(partition, None)
        if book is None:
            return
        for submission_id in book.submissions:
            self._deadline.pop(submission_id, None)
            self._job_due.pop(submission_id, None)

    # ----------------------------------------------------------------- decisions

    def apply(self, partition: int, submission_id: str, given: Input, now: int) -> Decision:
        """Decides one input for one submission of an owned partition and folds the result.

        Args:
            partition: the owned partition the submission lives in.
            submission_id: the submission the input is for (a heartbeat or a worker's
                departure is applied once per submission it names).
            given: the input.
            now: the scheduler's clock (ms).
        """
        book = self.partitions[partition]
        state = book.state(submission_id)
        commands = Command  # a client's command (submit, cancel, ..., add a notification)
        # a key's or a limit's first claim (or release) opens its ledger
        ledger = ClaimIdempotencyKey | ReleaseIdempotencyKey | ClaimSlot | ReleaseSlot
        if state is None and not isinstance(given, commands | ledger | Unprocessable):
            # a report or timer of a submission never seen here
            return Decision(submission_id, stale=is_stale(None, given))
        if state is None and submission_id in book.retired and not isinstance(given, ledger):
            command = given.command if isinstance(given, Unprocessable) else given
            if not isinstance(command, commands):
                return Decision(submission_id)  # key traffic for a forgotten submission
            return Decision(
                submission_id, decide_retired(command, book.retired[submission_id], now)
            )
        if state is None and isinstance(given, SubmitJobs) and self.admission != UNLIMITED:
            pending = book.pending
            throttled = admit(
                given,
                now,
                self.admission,
                pending.by_queue,
                self.load,
                lambda queue: pending.rate(queue, now),
                self.partitions_total,
            )
            if throttled is not None:
                return Decision(submission_id, [throttled])
        outcome = step(
            state,
            given,
            now,
            policy=self.policy,
            completed_keys=book.completed_keys,
            queues=book.queues,
        )
        decision = Decision(submission_id, outcome.events, outcome.effects, outcome.stale)
        state = outcome.state
        if state is None:
            return decision  # a rejection of a command naming an unknown submission
        book.submissions[submission_id] = state
        config = state.queue_config
        if config is not None and outcome.events and book.queues.get(config.queue) != config:
            book.queues[config.queue] = config
            decision.woken = self._held_on(book, config.queue)
        for event in outcome.events:
            if isinstance(event.body, JobCompleted):
                book.note_completed(state, event.job_id)
        if outcome.events:
            touched = {event.job_id for event in outcome.events if event.job_id}
            book.note_pending(state, touched, now)
            book.dirty_since.setdefault(submission_id, now)
        if state.done:
            book.done_order[submission_id] = None
            book.done_order.move_to_end(submission_id)
        else:
            book.done_order.pop(submission_id, None)  # (a rerun opened it again)
        self._arm(partition, state, self._touched(state, given, outcome.events))
        return decision

    @staticmethod
    def _held_on(book: PartitionBook, queue: str) -> list[str]:
        """The submissions with a job of ``queue`` that waits to be dispatched."""
        return [
            state.submission_id
            for state in book.submissions.values()
            if state.outcome is None
            and any(
                job.status is JobStatus.PENDING
                and job.dispatch_id is None
                and job.spec.queue == queue
                for job in state.jobs.values()
            )
        ]

    def _touched(self, state: SubmissionState, given: Input, events: list[Event]) -> set[str]:
        """The jobs whose timers an input may have moved."""
        touched = {event.job_id for event in events if event.job_id}
        if isinstance(given, Tick):
            touched.update(self._job_due.get(state.submission_id, ()))
        elif isinstance(given, Heartbeat):
            touched.update(
                r.job_id for r in given.attempts if r.submission_id == state.submission_id
            )
        elif isinstance(given, WorkerLeft):
            touched.update(
                r.job_id for r in given.unfinished if r.submission_id == state.submission_id
            )
        elif hasattr(given, "ref"):
            touched.add(given.ref.job_id)
        return touched

    # ----------------------------------------------------------------- timers

    def _arm(self, partition: int, state: SubmissionState, job_ids: Iterable[str]) -> None:
        submission_id = state.submission_id
        if state.outcome is not None:
            self._deadline.pop(submission_id, None)
            self._job_due.pop(submission_id, None)
            return
        jobs = self._job_due.setdefault(submission_id, {})
        for job_id in job_ids:
            job = state.jobs.get(job_id)
            job_due = None if job is None else job_deadline(job, self.policy)
            if job_due is None:
                jobs.pop(job_id, None)
            else:
                jobs[job_id] = job_due
        own = own_deadline(state)  # the submission's own timer, under the job id ""
        if own is None:
            jobs.pop("", None)
        else:
            jobs[""] = own
        due = min(jobs.values()) if jobs else None
        if due is None:
            self._deadline.pop(submission_id, None)
            self._job_due.pop(submission_id, None)
            return
        if self._deadline.get(state.submission_id) == due:
            return
        self._deadline[state.submission_id] = due
        heapq.heappush(self._timers, (due, partition, state.submission_id))

    def due(self, now: int) -> list[tuple[int, str]]:
        """The ``(partition, submission)`` pairs whose timers are due at ``now``."""
        out: list[tuple[int, str]] = []
        while self._timers and self._timers[0][0] <= now:
            due, partition, submission_id = heapq.heappop(self._timers)
            if self._deadline.get(submission_id) != due or partition not in self.partitions:
                continue  # superseded by a later arming, or the partition was revoked
            del self._deadline[submission_id]
            out.append((partition, submission_id))
        return out

    def next_due(self) -> int | None:
        """The earliest armed timer, if any."""
        while self._timers:
            due, _, submission_id = self._timers[0]
            if self._deadline.get(submission_id) == due:
                return due
            heapq.heappop(self._timers)
        return None

    # ----------------------------------------------------------------- snapshots

    def to_snapshot(
        self,
        partition: int,
        now: int,
        max_age_ms: int,
        every_events: int,
        touched: set[str],
        done_delay_ms: int = 0,
    ) -> list[SubmissionState]:
        """Submissions whose snapshot should be written in this transaction.

        A submission is snapshotted when it finishes, when ``every_events`` events piled
        up since its last snapshot, or when its oldest unsnapshotted event is older than
        ``max_age_ms`` (this bounds how much of ``events`` a rebuild replays).

        Finished submissions are snapshotted in batches: once the oldest of them has been
        finished for ``done_delay_ms``, all of them are written together. Short jobs finish
        in nearly every transaction; snapshotting each at once made every transaction write
        the ``state`` partition, one more partition for the brokers to append to, verify
        and mark. A deleted submission is written at once (its memory is freed after).
        """
        book = self.partitions[partition]
        dirty = book.dirty_since
        waiting = book.done_waiting
        chosen: dict[str, SubmissionState] = {}
        # Only an input changes whether a submission is done, deleted or far behind its
        # snapshot, so those are checked among the submissions this transaction touched;
        # for age, ``dirty_since`` is in the order submissions became dirty (an entry is
        # added when the first event is left out and removed at the snapshot), so the aged
        # ones are a prefix. A transaction costs what it touched, not the number of
        # submissions in flight.
        for submission_id in touched:
            since = dirty.get(submission_id)
            state = book.submissions.get(submission_id)
            if since is None or state is None:
                continue
            last = book.written.get(submission_id)
            behind = state.seq - (0 if last is None else last.seq)
            if state.deleted or behind >= every_events or now - since >= max_age_ms:
                chosen[submission_id] = state
            elif state.done:
                if done_delay_ms <= 0:
                    chosen[submission_id] = state
                else:
                    waiting.setdefault(submission_id, now)
        if waiting and now - next(iter(waiting.values())) >= done_delay_ms:
            for submission_id in list(waiting):
                state = book.submissions.get(submission_id)
                if state is None or submission_id not in dirty:
                    del waiting[submission_id]  # forgotten or snapshotted meanwhile
                else:
                    chosen.setdefault(submission_id, state)
        for submission_id, since in dirty.items():
            if now - since < max_age_ms:
                break
            state = book.submissions.get(submission_id)
            if state is not None:
                chosen.setdefault(submission_id, state)
        return list(chosen.values())

    def snapshotted(
        self, partition: int, submission_id: str, written: Written, deleted: bool
    ) -> None:
        """Records that a snapshot of a submission was committed to the ``state`` topic."""
        book = self.partitions.get(partition)
        if book is None:
            return
        book.written[submission_id] = written
        book.unsnapshotted_from.pop(submission_id, None)
        book.dirty_since.pop(submission_id, None)
        book.done_waiting.pop(submission_id, None)
        if deleted:
            self._retire(book, submission_id, deleted=True)
        self._forget_old(book)

    def delivered(self, partition: int, submission_id: str, offset: int, seq: int) -> None:
        """Records the offset of a committed event."""
        book = self.partitions.get(partition)
        if book is None:
            return
        book.events_end = max(book.events_end, offset + 1)
        last = book.written.get(submission_id)
        if seq > (0 if last is None else last.seq) and submission_id in book.submissions:
            book.unsnapshotted(submission_id, offset)

    def _forget_old(self, book: PartitionBook) -> None:
        while len(book.done_order) > self.retain_done:
            submission_id, _ = book.done_order.popitem(last=False)
            if submission_id in book.dirty_since:
                book.done_order[submission_id] = None
                break  # not snapshotted yet; forget it after its snapshot
            self._retire(book, submission_id, deleted=False)

    def _retire(self, book: PartitionBook, submission_id: str, *, deleted: bool) -> None:
        """Forgets a submission's state but not its id (see :func:`decide_retired`)."""
        book.submissions.pop(submission_id, None)
        book.dormant.pop(submission_id, None)
        book.pending.forget(submission_id)
        book.written.pop(submission_id, None)
        book.done_order.pop(submission_id, None)
        book.retired[submission_id] = deleted
        self._deadline.pop(submission_id, None)
        self._job_due.pop(submission_id, None)


#: The events a submission's or pseudo-submission's stream can begin with: a submission's
#: acceptance, a key's or a limit's ledger's first decision, a queue's first settings.
_FIRST_EVENTS = (
    SubmissionAccepted | IdempotencyKeyDecided | SlotDecided | QueueConfigured | ScheduleCreated
)


class Replay:
    """Restores one partition's book: its snapshots, then the tail of its events. No Kafka.

    :func:`engine.scheduler.rebuild.rebuild` reads the records and hands them here; a
    replay never re-decides anything, it only folds what was decided.

    Args:
        partition: the partition.
        latest: the latest ``state`` record of each key (what compaction keeps), without the
            checkpoint.
    """

    def __init__(
        self,
        partition: int,
        latest: Mapping[bytes, bytes | None],
        dormant: Mapping[bytes, int] | None = None,
    ) -> None:
        self.book = PartitionBook(partition)
        self.replayed = 0
        self.skipped = 0
        restored = restore_snapshots(latest, dormant)
        book = self.book
        book.submissions.update(restored.states)
        book.dormant.update(restored.dormant)
        book.written.update(restored.written)
        book.retired.update(dict.fromkeys(restored.deleted, True))
        for state in restored.states.values():
            for job_id, job in state.jobs.items():
                if job.status is JobStatus.COMPLETED:
                    book.note_completed(state, job_id)
        #: some snapshot could not be read: its events must be replayed from the beginning
        self.incomplete = bool(restored.unreadable)

    def events_from(self, checkpoint: int) -> int:
        """The ``events`` offset the tail starts at, given the partition's checkpoint."""
        return 0 if self.incomplete else checkpoint

    def event(self, offset: int, event: Event) -> None:
        """Folds one event of the tail (at ``offset`` on ``events``)."""
        book = self.book
        dormant = book.dormant and event.submission_id in book.dormant
        if dormant and event.seq <= book.written[event.submission_id].seq:
            self.skipped += 1  # covered by the snapshot: it stays dormant
            return
        known = book.state(event.submission_id)
        if event.submission_id in book.retired:
            self.skipped += 1  # deleted: only its id is kept
            return
        if event.seq == 0 or (known is not None and event.seq <= known.seq):
            self.skipped += 1  # a rejection outside any sequence, or covered by the snapshot
            return
        if known is None and not isinstance(event.body, _FIRST_EVENTS):
            self.skipped += 1  # its beginning is gone: the submission was deleted
            return
        self.replayed += 1
        state = evolve(known, event)
        book.submissions[event.submission_id] = state
        book.unsnapshotted(event.submission_id, offset)
        book.dirty_since.setdefault(event.submission_id, 0)
        if isinstance(event.body, JobCompleted):
            book.note_completed(state, event.job_id)

    def end(self, events_end: int) -> PartitionBook:
        """The book, with ``events_end`` the end of the partition's ``events``."""
        self.book.events_end = max(self.book.events_end, events_end)
        return self.book
