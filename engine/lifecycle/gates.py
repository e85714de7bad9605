"""What stands between PENDING and a dispatch: the job's ``not_before``, a paused queue, and
the slots of concurrency and rate limits; and the ledgers that grant those slots.

A runnable attempt passes its gates in order. Time first (``not_before``, a retry's
backoff: the attempt's timer). Then its queue: a paused queue holds it (``JobHeld``,
``queue_paused``) until a ``ConfigureQueue`` resumes the queue in its partition. Then its
limits, each a slot of a ledger: the concurrency key's (``key:<key>``) and then the queue's
(``queue:<queue>``, when the queue has limits). The attempt claims one slot at a time
(``JobHeld``, ``concurrency``; the claim is an effect of that event) and is dispatched once
every ledger granted it one. A slot is held until the attempt ends; a retry claims again.

A ledger is a pseudo-submission in the partition its id hashes to, so a limit holds
cluster-wide whatever partitions its jobs live in. It grants claims in order of priority,
then arrival, while fewer than ``max_running`` attempts hold a slot and fewer than
``rate_limit`` were granted in the last ``rate_period_ms`` (a sliding window: never more than
that many starts in any such period). A ledger waiting for its rate window has a timer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.lifecycle.policy import dispatch_id
from engine.lifecycle.records import (
    ClaimSlot,
    ConfigureQueue,
    HoldReason,
    JobDispatched,
    JobHeld,
    JobSpec,
    JobStatus,
    QueueConfigured,
    RejectionCode,
    ReleaseSlot,
    SlotAnswer,
    SlotDecided,
    SlotDecision,
    slot_ledger_id,
)
from engine.lifecycle.state import JobState, QueueConfig, SlotLedger, SlotWaiter

if TYPE_CHECKING:  # (the draft folds events with the effects, which use this module)
    from engine.lifecycle.draft import Draft

#: The longest rate window, and the most starts one window may allow (a ledger keeps the
#: times of the starts of its current window, so this bounds its state).
MAX_RATE_PERIOD_MS = 7 * 24 * 3600 * 1000
MAX_RATE_LIMIT = 10_000
#: The most attempts a limit may let run at once.
MAX_RUNNING_LIMIT = 1_000_000


@dataclass(frozen=True)
class Limit:
    """One limit a job's attempt needs a slot of."""

    name: str  # key:<key> or queue:<queue>
    max_running: int
    rate_limit: int
    rate_period_ms: int


def limits_of(spec: JobSpec, queue: QueueConfig | None) -> list[Limit]:
    """The limits an attempt of ``spec`` needs slots of, in the order it claims them."""
    out: list[Limit] = []
    if spec.concurrency_key:
        out.append(
            Limit(
                f"key:{spec.concurrency_key}",
                spec.max_running,
                spec.rate_limit,
                spec.rate_period_ms,
            )
        )
    if queue is not None and queue.limited:
        out.append(
            Limit(f"queue:{queue.queue}", queue.max_running, queue.rate_limit, queue.rate_period_ms)
        )
    return out


def gated(spec: JobSpec, queues: Mapping[str, QueueConfig]) -> bool:
    """Whether an attempt of ``spec`` must pass a gate besides time before its dispatch."""
    if spec.concurrency_key:
        return True
    queue = queues.get(spec.queue)
    return queue is not None and (queue.paused or queue.limited)


def limit_problem(max_running: int, rate_limit: int, rate_period_ms: int) -> str | None:
    """What is wrong with a set of limits, if anything."""
    if not 0 <= max_running <= MAX_RUNNING_LIMIT:
        return f"max_running must be between 0 and {MAX_RUNNING_LIMIT}, not {max_running}"
    if not 0 <= rate_limit <= MAX_RATE_LIMIT:
        return f"rate_limit must be between 0 and {MAX_RATE_LIMIT}, not {rate_limit}"
    if rate_limit > 0 and not 0 < rate_period_ms <= MAX_RATE_PERIOD_MS:
        return (
            f"a rate limit needs rate_period_ms between 1 and {MAX_RATE_PERIOD_MS}, "
            f"not {rate_period_ms}"
        )
    if rate_limit == 0 and rate_period_ms != 0:
        return "rate_period_ms is set without a rate_limit"
    return None


def spec_limit_problem(spec: JobSpec) -> str | None:
    """What is wrong with a job's concurrency key and limits, if anything."""
    has_limits = spec.max_running or spec.rate_limit or spec.rate_period_ms
    if not spec.concurrency_key:
        if has_limits:
            return f"job {spec.job_id!r}: max_running and rate_limit need a concurrency_key"
        return None
    if not has_limits:
        return f"job {spec.job_id!r}: concurrency_key needs max_running and/or rate_limit"
    problem = limit_problem(spec.max_running, spec.rate_limit, spec.rate_period_ms)
    return None if problem is None else f"job {spec.job_id!r}: {problem}"


# --------------------------------------------------------------------------- the job's side


def pass_gates(draft: Draft, job_id: str, granted: str = "") -> None:
    """Dispatches a PENDING attempt whose time has come, or holds it at its next gate.

    Args:
        draft: the submission.
        job_id: a PENDING job with no dispatch record yet.
        granted: the limit whose ledger has just granted the attempt its claim (it counts as
            held: the next event moves it from ``held_slot`` into ``slots``).
    """
    job = draft.job(job_id)
    queue = draft.queues.get(job.spec.queue)
    if queue is not None and queue.paused:
        if job.held is not HoldReason.QUEUE_PAUSED:
            draft.emit(
                job_id,
                JobHeld(job.attempt, HoldReason.QUEUE_PAUSED, f"queue {queue.queue} is paused"),
            )
        return
    for limit in limits_of(job.spec, queue):
        if limit.name in job.slots or limit.name == granted:
            continue
        if job.held_slot != limit.name:
            draft.emit(
                job_id,
                JobHeld(
                    job.attempt,
                    HoldReason.CONCURRENCY,
                    _waits_for(limit),
                    slot=limit.name,
                    max_running=limit.max_running,
                    rate_limit=limit.rate_limit,
                    rate_period_ms=limit.rate_period_ms,
                ),
            )
        return
    draft.emit(
        job_id,
        JobDispatched(
            attempt=job.attempt,
            queue=job.spec.queue,
            dispatch_id=dispatch_id(draft.state.submission_id, job_id, job.attempt),
        ),
    )


def _waits_for(limit: Limit) -> str:
    parts = []
    if limit.max_running:
        parts.append(f"at most {limit.max_running} running")
    if limit.rate_limit:
        parts.append(f"at most {limit.rate_limit} starts per {limit.rate_period_ms} ms")
    return f"waits for a slot of {limit.name} ({', '.join(parts)})"


def decide_slot_answer(draft: Draft, answer: SlotAnswer) -> None:
    """The job's side: the ledger granted the attempt its slot: on to the next gate."""
    state = draft.state
    if not state.accepted or answer.job_id not in state.jobs:
        return
    job = draft.job(answer.job_id)
    if (
        job.status is not JobStatus.PENDING
        or job.attempt != answer.attempt
        or job.held_slot != answer.slot
        or job.dispatch_id is not None
    ):
        return  # it ended or moved on meanwhile (its release went to the ledger), or a repeat
    pass_gates(draft, answer.job_id, granted=answer.slot)


def woken(job: JobState, queues: Mapping[str, QueueConfig]) -> bool:
    """Whether a job held by its paused queue may go on (the queue was resumed)."""
    if job.status is not JobStatus.PENDING or job.held is not HoldReason.QUEUE_PAUSED:
        return False
    queue = queues.get(job.spec.queue)
    return queue is None or not queue.paused


def slot_traffic(
    submission_id: str, job_id: str, job: JobState, event_id: str, timestamp: int
) -> list[ReleaseSlot]:
    """The releases an attempt that ends owes its ledgers (granted slots and a waiting claim)."""
    holder = f"{submission_id}/{job_id}@{job.attempt}"
    owed = sorted(job.slots | ({job.held_slot} if job.held_slot else set()))
    return [
        ReleaseSlot(
            command_id=f"{event_id}:release:{name}",
            submission_id=slot_ledger_id(name),
            ledger=name,
            holder=holder,
            issued_at=timestamp,
        )
        for name in owed
    ]


def claim_of(
    submission_id: str, job_id: str, job: JobState, held: JobHeld, event_id: str, timestamp: int
) -> ClaimSlot:
    """The claim a ``JobHeld`` for a slot sends to the limit's ledger."""
    return ClaimSlot(
        command_id=f"{event_id}:claim",
        submission_id=slot_ledger_id(held.slot),
        ledger=held.slot,
        holder=f"{submission_id}/{job_id}@{held.attempt}",
        priority=job.spec.priority,
        max_running=held.max_running,
        rate_limit=held.rate_limit,
        rate_period_ms=held.rate_period_ms,
        issued_at=timestamp,
    )


# --------------------------------------------------------------------------- the queue's side


def decide_configure_queue(draft: Draft, command: ConfigureQueue) -> None:
    """A queue's settings in this partition: merged with what was set before."""
    current = draft.state.queue_config or QueueConfig(command.queue)
    if current.queue != command.queue:
        draft.reject(
            command.command_id,
            "ConfigureQueue",
            RejectionCode.BAD_LIMIT,
            f"{command.submission_id!r} holds the settings of queue {current.queue!r}, "
            f"not {command.queue!r}",
        )
        return
    new = QueueConfig(
        queue=command.queue,
        paused=current.paused if command.paused is None else command.paused,
        max_running=current.max_running if command.max_running is None else command.max_running,
        rate_limit=current.rate_limit if command.rate_limit is None else command.rate_limit,
        rate_period_ms=(
            current.rate_period_ms if command.rate_period_ms is None else command.rate_period_ms
        ),
    )
    if command.rate_limit == 0 and command.rate_period_ms is None:
        new = QueueConfig(new.queue, new.paused, new.max_running, 0, 0)
    problem = limit_problem(new.max_running, new.rate_limit, new.rate_period_ms)
    if problem is not None:
        draft.reject(
            command.command_id, "ConfigureQueue", RejectionCode.BAD_LIMIT, f"queue: {problem}"
        )
        return
    draft.emit(
        "",
        QueueConfigured(
            queue=new.queue,
            paused=new.paused,
            max_running=new.max_running,
            rate_limit=new.rate_limit,
            rate_period_ms=new.rate_period_ms,
            command_id=command.command_id,
            requested_by=command.requested_by,
        ),
    )


# --------------------------------------------------------------------------- the ledger's side


def _window(ledger: SlotLedger, now: int) -> tuple[int, ...]:
    """The grant times that still count against the rate limit at ``now``."""
    if ledger.rate_limit <= 0:
        return ()
    return tuple(t for t in ledger.starts if t > now - ledger.rate_period_ms)


def _room(ledger: SlotLedger, now: int) -> bool:
    if ledger.max_running > 0 and len(ledger.holders) >= ledger.max_running:
        return False
    return ledger.rate_limit <= 0 or len(_window(ledger, now)) < ledger.rate_limit


def rate_opens_at(ledger: SlotLedger, now: int) -> int | None:
    """When the rate window lets the next claim in, if only the rate holds it back."""
    if ledger.rate_limit <= 0:
        return None
    if ledger.max_running > 0 and len(ledger.holders) >= ledger.max_running:
        return None  # a release comes first
    window = _window(ledger, now)
    if len(window) < ledger.rate_limit:
        return None
    return window[len(window) - ledger.rate_limit] + ledger.rate_period_ms


def ledger_deadline(ledger: SlotLedger, now: int) -> int | None:
    """When the ledger's timer is due: the rate window opens for the first waiting claim."""
    if not ledger.waiters:
        return None
    return rate_opens_at(ledger, now)


def _decided(ledger: SlotLedger, job: str, decision: SlotDecision, **fields: int) -> SlotDecided:
    return SlotDecided(
        ledger=ledger.name,
        job=job,
        decision=decision,
        max_running=ledger.max_running,
        rate_limit=ledger.rate_limit,
        rate_period_ms=ledger.rate_period_ms,
        **fields,
    )


def _ledger(draft: Draft, name: str) -> SlotLedger:
    return draft.state.slot_ledger or SlotLedger(name)


def decide_claim_slot(draft: Draft, claim: ClaimSlot) -> None:
    """The ledger's side: apply the claim's limits, then grant the claim or queue it."""
    ledger = _ledger(draft, claim.ledger)
    limits = (claim.max_running, claim.rate_limit, claim.rate_period_ms)
    changed = limits != (ledger.max_running, ledger.rate_limit, ledger.rate_period_ms)
    if changed and limit_problem(*limits) is None:
        ledger = SlotLedger(ledger.name, *limits, ledger.holders, ledger.waiters, ledger.starts)
        draft.emit("", _decided(ledger, "", SlotDecision.LIMITS))
    holder = claim.holder
    if holder and holder not in ledger.holders and all(w.job != holder for w in ledger.waiters):
        if not ledger.waiters and _room(ledger, draft.now):
            draft.emit("", _decided(ledger, holder, SlotDecision.GRANTED, priority=claim.priority))
        else:
            ahead = sum(1 for w in ledger.waiters if w.priority >= claim.priority)
            until = rate_opens_at(ledger, draft.now) or 0
            draft.emit(
                "",
                _decided(
                    ledger,
                    holder,
                    SlotDecision.QUEUED,
                    priority=claim.priority,
                    position=ahead,
                    until=until,
                ),
            )
    grant_waiting(draft)


def decide_release_slot(draft: Draft, release: ReleaseSlot) -> None:
    """The ledger's side: the attempt ended; its slot goes to the next claims in line."""
    ledger = _ledger(draft, release.ledger)
    holder = release.holder
    if holder in ledger.holders:
        draft.emit("", _decided(ledger, holder, SlotDecision.RELEASED))
    elif any(w.job == holder for w in ledger.waiters):
        draft.emit("", _decided(ledger, holder, SlotDecision.WITHDRAWN))
    else:
        return  # released before, or never claimed here: nothing changes
    grant_waiting(draft)


def grant_waiting(draft: Draft) -> None:
    """Grants the claims at the head of the line while the limits leave room."""
    while True:
        ledger = draft.state.slot_ledger
        if ledger is None or not ledger.waiters or not _room(ledger, draft.now):
            return
        head: SlotWaiter = ledger.waiters[0]
        draft.emit("", _decided(ledger, head.job, SlotDecision.GRANTED, priority=head.priority))


def evolve_slot_ledger(
    ledger: SlotLedger, body: SlotDecided, seq: int, timestamp: int
) -> SlotLedger:
    """Folds one decision into a slot ledger."""
    holders = ledger.holders
    waiters = ledger.waiters
    starts = ledger.starts
    job = body.job
    match body.decision:
        case SlotDecision.GRANTED:
            waiters = tuple(w for w in waiters if w.job != job)
            holders = (*holders, job)
            if body.rate_limit > 0:
                starts = (
                    *(t for t in starts if t > timestamp - body.rate_period_ms),
                    timestamp,
                )
        case SlotDecision.QUEUED:
            waiter = SlotWaiter(job, body.priority, seq)
            # grant order: higher priority first, then arrival
            at = sum(1 for w in waiters if w.priority >= body.priority)
            waiters = (*waiters[:at], waiter, *waiters[at:])
        case SlotDecision.RELEASED:
            holders = tuple(h for h in holders if h != job)
        case SlotDecision.WITHDRAWN:
            waiters = tuple(w for w in waiters if w.job != job)
        case SlotDecision.LIMITS:
            pass
    if body.rate_limit <= 0:
        starts = ()
    return SlotLedger(
        ledger.name,
        body.max_running,
        body.rate_limit,
        body.rate_period_ms,
        holders,
        waiters,
        starts,
    )


def slot_answer(body: SlotDecided, event_id: str, timestamp: int) -> SlotAnswer:
    """The grant, for the job's submission."""
    ref, _, attempt = body.job.rpartition("@")
    submission_id, _, job_id = ref.partition("/")
    return SlotAnswer(
        command_id=f"{event_id}:answer",
        submission_id=submission_id,
        job_id=job_id,
        attempt=int(attempt),
        slot=body.ledger,
        issued_at=timestamp,
    )
