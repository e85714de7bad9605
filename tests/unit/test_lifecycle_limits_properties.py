"""Properties of concurrency and rate limits, in any interleaving the simulator can draw.

Several submissions share concurrency keys; their workers complete, fail, crash or hang;
users cancel; the slot traffic between submissions and ledgers takes random times (each lane
in order, as a Kafka partition keeps it). At every step:

* a ledger never lets more than ``max_running`` attempts hold a slot, and never grants more
  than ``rate_limit`` in any ``rate_period_ms``;
* no more jobs of a key are dispatched, assigned or running than its ``max_running``;
* a grant goes to the waiting claim of the highest priority (arrival breaks ties);
* every job that is not running and not finished has a pending reason, and the reason is
  true of the job's state (``concurrency``: it waits for a slot; ``worker``: it is
  dispatched; ``dependencies``: it is blocked; ...);

and once nothing is left to happen, every job ended and every ledger is empty (no slot is
leaked, no claim forgotten).
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.lifecycle.decide import Policy
from engine.lifecycle.effects import Effect
from engine.lifecycle.gates import evolve_slot_ledger
from engine.lifecycle.reasons import PendingReason, reason_after
from engine.lifecycle.records import (
    CancelMode,
    Event,
    Input,
    JobSpec,
    JobStatus,
    RetryPolicy,
    SlotDecided,
    SlotDecision,
    is_slot_ledger,
    slot_ledger_id,
)
from engine.lifecycle.simulation import Fate, Plan, Simulation
from engine.lifecycle.state import QueueConfig, SlotLedger, SubmissionState

POLICY = Policy(lease_ms=1_000, kill_grace_ms=1_500, progress_interval_ms=200)
KEYS = {"k1": (1, 0, 0), "k2": (2, 0, 0), "k3": (3, 2, 500)}  # key -> limits
LIVE = (JobStatus.ASSIGNED, JobStatus.RUNNING)


class CheckedLimits(Simulation):
    """A simulation that checks the limits after every decision."""

    grants: dict[str, list[int]]
    reasons: dict[tuple[str, str], PendingReason]

    def apply(self, sid: str, given: Input, now: int) -> tuple[list[Event], list[Effect]]:
        before = self.state(sid)
        ledger = None if before is None else before.slot_ledger
        events, effects = super().apply(sid, given, now)
        for event in events:
            body = event.body
            reason = reason_after(body, event.timestamp)
            if reason is not None and event.job_id:
                self.reasons[(event.submission_id, event.job_id)] = reason
            if not isinstance(body, SlotDecided):
                continue
            if body.decision is SlotDecision.GRANTED:
                grants = self.grants.setdefault(body.ledger, [])
                grants.append(event.timestamp)
                if body.rate_limit:
                    recent = [t for t in grants if t > event.timestamp - body.rate_period_ms]
                    assert len(recent) <= body.rate_limit, (body.ledger, recent)
                waiting = () if ledger is None else ledger.waiters
                others = [w.priority for w in waiting if w.job != body.job]
                assert not others or body.priority >= max(others), (body, waiting)
            ledger = evolve_slot_ledger(
                ledger or SlotLedger(body.ledger), body, event.seq, event.timestamp
            )
        self._check_holders()
        state = self.state(sid)
        if state is not None and state.slot_ledger is None:
            self._check_reasons(state)
        return events, effects

    def _check_reasons(self, state: SubmissionState) -> None:
        for job_id, job in state.jobs.items():
            if job.is_terminal or job.status is JobStatus.RUNNING:
                continue
            reason = self.reasons.get((state.submission_id, job_id))
            assert reason, (job_id, job.status, reason)
            code = reason.code
            if job.status is JobStatus.BLOCKED:
                assert code in ("dependencies", "idempotency_key"), (job_id, reason)
            elif job.status is JobStatus.ASSIGNED:
                assert code == "assigned", (job_id, reason)
            elif job.status is JobStatus.PENDING:
                if code == "concurrency":
                    assert job.held_slot and job.dispatch_id is None, (job_id, job)
                elif code == "worker":
                    assert job.dispatch_id is not None, (job_id, job)
                elif code in ("backoff", "not_before"):
                    assert job.dispatch_id is None and job.not_before == reason.until, job
                else:
                    raise AssertionError(f"{job_id}: PENDING with reason {reason}")

    def _check_holders(self) -> None:
        for ledger_state in self.out.ledgers.values():
            ledger = ledger_state.slot_ledger
            if ledger is not None and ledger.max_running:
                assert len(ledger.holders) <= ledger.max_running, ledger
        running: dict[str, int] = {}
        for state in self.out.states.values():
            for job in state.jobs.values():
                key = job.spec.concurrency_key
                dispatched = job.status is JobStatus.PENDING and job.dispatch_id is not None
                if key and (job.status in LIVE or dispatched):
                    running[key] = running.get(key, 0) + 1
        for key, count in running.items():
            limit = KEYS[key][0]
            if limit:
                assert count <= limit, (key, count)


@st.composite
def workloads(draw: st.DrawFn) -> tuple[list[Plan], int, dict[str, QueueConfig]]:
    plans = []
    for s in range(draw(st.integers(1, 4))):
        jobs: list[JobSpec] = []
        fates: dict[tuple[str, int], Fate] = {}
        cancels: list[tuple[int, str | None, CancelMode]] = []
        for j in range(draw(st.integers(1, 4))):
            key = draw(st.sampled_from(sorted(KEYS)))
            max_running, rate, period = KEYS[key]
            job_id = f"j{j}"
            after = (f"j{j - 1}",) if j and draw(st.booleans()) else ()
            jobs.append(
                JobSpec(
                    job_id=job_id,
                    task="t",
                    depends_on=after,
                    queue=draw(st.sampled_from(["default", "gpu"])),
                    concurrency_key=key,
                    max_running=max_running,
                    rate_limit=rate,
                    rate_period_ms=period,
                    priority=draw(st.integers(0, 3)),
                    retry=RetryPolicy(max_attempts=draw(st.integers(1, 2)), backoff_ms=50),
                )
            )
            for attempt in (1, 2):
                kind = draw(st.sampled_from(["complete", "complete", "fail", "crash", "hang"]))
                fates[(job_id, attempt)] = Fate(
                    kind=kind, duration=draw(st.integers(10, 400)), worker=draw(st.integers(0, 2))
                )
            if draw(st.integers(0, 4)) == 0:
                cancels.append((draw(st.integers(0, 2_000)), job_id, CancelMode.KILL))
        plans.append(
            Plan(
                jobs=tuple(jobs),
                fates=fates,
                submission_id=f"s{s}",
                at=draw(st.integers(0, 300)),
                cancels=tuple(cancels),
                give_up_at=20_000,
            )
        )
    queues = {}
    if draw(st.booleans()):
        queues["gpu"] = QueueConfig("gpu", max_running=draw(st.integers(1, 2)))
    return plans, draw(st.integers(0, 2**32)), queues


@settings(max_examples=150, deadline=None)
@given(workloads())
def test_limits_hold_in_every_interleaving_and_nothing_leaks(
    workload: tuple[list[Plan], int, dict[str, QueueConfig]],
) -> None:
    plans, seed, queues = workload
    rng = random.Random(seed)
    simulation = CheckedLimits(
        plans,
        policy=POLICY,
        heartbeat_ms=250,
        trip=lambda: rng.randint(0, 30),
        ledger_trip=lambda: rng.randint(1, 60),
        queues=queues,
        max_steps=50_000,
    )
    simulation.grants = {}
    simulation.reasons = {}
    out = simulation.run()
    for sid, state in out.states.items():
        assert state.done, (sid, {j: s.status for j, s in state.jobs.items()})
    for ledger_state in out.ledgers.values():
        ledger = ledger_state.slot_ledger
        if ledger is not None:
            assert ledger.holders == (), ledger
            assert ledger.waiters == (), ledger
    ledgers = {sid for sid in out.ledgers if is_slot_ledger(sid)}
    used = {slot_ledger_id(f"key:{key}") for key in KEYS}
    assert ledgers <= used | {slot_ledger_id("queue:gpu")}


@settings(max_examples=30, deadline=None)
@given(workloads())
def test_a_ledger_replayed_from_its_events_is_the_ledger_decided(
    workload: tuple[list[Plan], int, dict[str, QueueConfig]],
) -> None:
    from engine.lifecycle.evolve import evolve

    plans, seed, _ = workload
    rng = random.Random(seed)
    simulation = CheckedLimits(plans, policy=POLICY, ledger_trip=lambda: rng.randint(1, 60))
    simulation.grants = {}
    simulation.reasons = {}
    out = simulation.run()
    replayed: dict[str, SubmissionState] = {}
    for event in out.events:
        if is_slot_ledger(event.submission_id):
            replayed[event.submission_id] = evolve(replayed.get(event.submission_id), event)
    for sid, state in replayed.items():
        assert state.slot_ledger == out.ledgers[sid].slot_ledger
