"""Between PENDING and a dispatch: not_before, paused queues, concurrency and rate limits.

A job's submission and a limit's ledger are decided by whichever schedulers own their
partitions; here both are driven with the pure core and the slot traffic between them (the
effects of their events) is carried in the order Kafka would deliver it.
"""

from __future__ import annotations

from collections import deque

import pytest

from engine.lifecycle.decide import step
from engine.lifecycle.effects import Effect
from engine.lifecycle.gates import ledger_deadline, limit_problem
from engine.lifecycle.reasons import reason_after
from engine.lifecycle.records import (
    ClaimSlot,
    ConfigureQueue,
    Dispatch,
    Event,
    HoldReason,
    Input,
    JobDispatched,
    JobHeld,
    JobPending,
    QueueConfigured,
    RejectionCode,
    ReleaseSlot,
    SlotAnswer,
    SlotDecided,
    SlotDecision,
    Tick,
    queue_config_id,
    slot_ledger_id,
)
from engine.lifecycle.state import QueueConfig, SubmissionState
from tests.unit.lifecycle_dsl import (
    POLICY,
    SUB,
    T0,
    cancel,
    failed,
    given,
    job,
    on,
    retry_now,
    submit,
    succeeded,
    tick,
)

KEY = "customer-42"
LIMIT = f"key:{KEY}"
LEDGER = slot_ledger_id(LIMIT)


# --------------------------------------------------------------------------- not_before


def test_a_job_with_not_before_waits_for_it_then_is_dispatched() -> None:
    scenario = given().when(submit(job("a", not_before=T0 + 5_000)))
    scenario.then_includes(
        on(
            "a",
            JobPending(1, "default", dispatch_id=None, not_before=T0 + 5_000, reason="submitted"),
        )
    )
    assert scenario.deadline() == T0 + 5_000
    assert not [e for e in scenario.last_effects if isinstance(e, Dispatch)]
    scenario.when(tick(), at=T0 + 5_000).then(on("a", JobDispatched(1, "default", f"{SUB}/a/1")))
    assert [e.job_id for e in scenario.last_effects if isinstance(e, Dispatch)] == ["a"]


def test_a_not_before_in_the_past_dispatches_at_once() -> None:
    given().when(submit(job("a", not_before=T0 - 1))).then_includes(
        on("a", JobPending(1, "default", f"{SUB}/a/1", T0, "submitted"))
    )


def test_a_negative_not_before_is_rejected() -> None:
    given().when(submit(job("a", not_before=-5))).then_rejected(RejectionCode.BAD_TIMEOUT)


# --------------------------------------------------------------------------- paused queues


PAUSED = {"default": QueueConfig("default", paused=True)}


def test_a_job_of_a_paused_queue_is_held_and_goes_on_when_the_queue_resumes() -> None:
    scenario = given(queues=PAUSED).when(submit(job("a")))
    scenario.then_includes(
        on("a", JobPending), on("a", JobHeld(1, HoldReason.QUEUE_PAUSED, "queue default is paused"))
    )
    assert scenario.job("a").dispatch_id is None
    assert scenario.deadline() is None  # no timer: the queue's resume wakes it
    scenario.when(tick()).then_nothing()  # still paused
    scenario.queues["default"] = QueueConfig("default", paused=False)
    scenario.when(tick()).then(on("a", JobDispatched(1, "default", f"{SUB}/a/1")))


def test_a_retry_on_a_paused_queue_is_held_after_its_backoff() -> None:
    scenario = given(submit(job("a", retries=1, backoff_ms=100)), succeeded("a")[:2])
    scenario.queues["default"] = QueueConfig("default", paused=True)
    scenario.when(failed("a"))
    scenario.when(tick(), at=T0 + 1_000).then(on("a", JobHeld))
    scenario.then_includes(on("a", JobHeld(2, HoldReason.QUEUE_PAUSED, "queue default is paused")))


def test_retry_now_of_a_held_job_is_rejected_with_why() -> None:
    scenario = given(submit(job("a")), queues=PAUSED).when(retry_now("a"))
    scenario.then_rejected(RejectionCode.NOT_WAITING, job_id="a")
    assert "queue_paused" in scenario.last[-1].body.reason  # type: ignore[union-attr]


def test_queue_settings_merge_and_reject_bad_limits() -> None:
    config = queue_config_id("gpu", 0)
    scenario = given(submission_id=config).when(ConfigureQueue("c-1", config, "gpu", paused=True))
    scenario.then(QueueConfigured("gpu", True, 0, 0, 0, "c-1"))
    scenario.when(ConfigureQueue("c-2", config, "gpu", max_running=4)).then(
        QueueConfigured("gpu", True, 4, 0, 0, "c-2")
    )
    scenario.when(ConfigureQueue("c-3", config, "gpu", paused=False, rate_limit=5)).then_rejected(
        RejectionCode.BAD_LIMIT
    )
    scenario.when(
        ConfigureQueue("c-4", config, "gpu", paused=False, rate_limit=5, rate_period_ms=1_000)
    ).then(QueueConfigured("gpu", False, 4, 5, 1_000, "c-4"))
    assert scenario.state is not None and scenario.state.queue_config == QueueConfig(
        "gpu", False, 4, 5, 1_000
    )


def test_new_queue_limits_are_sent_to_the_queue_ledger() -> None:
    config = queue_config_id("gpu", 2)
    scenario = given(submission_id=config).when(ConfigureQueue("c-1", config, "gpu", max_running=3))
    (claim,) = scenario.last_effects
    assert isinstance(claim, ClaimSlot)
    assert (claim.submission_id, claim.holder, claim.max_running) == (
        slot_ledger_id("queue:gpu"),
        "",
        3,
    )
    scenario.when(ConfigureQueue("c-2", config, "gpu", paused=True))
    assert scenario.last_effects == []  # the limits did not change


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"concurrency_key": KEY}, "needs max_running"),
        ({"max_running": 2}, "need a concurrency_key"),
        ({"concurrency_key": KEY, "max_running": -1}, "max_running must be"),
        ({"concurrency_key": KEY, "rate_limit": 5}, "rate_period_ms"),
        ({"concurrency_key": KEY, "rate_limit": 10**6, "rate_period_ms": 1000}, "rate_limit must"),
    ],
)
def test_bad_limits_are_rejected_with_a_reason(fields: dict[str, object], says: str) -> None:
    scenario = given().when(submit(job("a", **fields)))
    scenario.then_rejected(RejectionCode.BAD_LIMIT)
    assert says in scenario.last[-1].body.reason  # type: ignore[union-attr]


def test_limit_problem_accepts_no_limits_and_sane_ones() -> None:
    assert limit_problem(0, 0, 0) is None
    assert limit_problem(5, 10, 60_000) is None
    assert limit_problem(0, 0, 5) is not None


# --------------------------------------------------------------------------- the slot traffic


class Cluster:
    """Submissions and ledgers decided by the pure core, their slot traffic carried in order."""

    def __init__(self, queues: dict[str, QueueConfig] | None = None) -> None:
        self.states: dict[str, SubmissionState] = {}
        self.now = T0
        self.queues = queues or {}
        self.events: list[Event] = []
        self.dispatched: list[Dispatch] = []
        self.inbox: deque[Effect] = deque()

    def apply(self, sid: str, given: Input) -> list[Event]:
        outcome = step(self.states.get(sid), given, self.now, policy=POLICY, queues=self.queues)
        if outcome.state is not None:
            self.states[sid] = outcome.state
        self.events += outcome.events
        for effect in outcome.effects:
            if isinstance(effect, Dispatch):
                self.dispatched.append(effect)
            elif isinstance(effect, ClaimSlot | ReleaseSlot | SlotAnswer):
                self.inbox.append(effect)
        return outcome.events

    def settle(self) -> None:
        while self.inbox:
            effect = self.inbox.popleft()
            assert isinstance(effect, ClaimSlot | ReleaseSlot | SlotAnswer)
            self.apply(effect.submission_id, effect)

    def submit(self, sid: str, *jobs: object, **fields: object) -> None:
        specs = [job(str(j), concurrency_key=KEY, max_running=2, **fields) for j in jobs]
        self.apply(sid, submit(*specs, submission_id=sid, command_id=f"{sid}:submit"))
        self.settle()

    def run(self, sid: str, job_id: str, attempt: int = 1) -> None:
        for report in succeeded(job_id, attempt):
            report = _for(report, sid)
            self.apply(sid, report)
        self.settle()

    def dispatched_ids(self) -> list[str]:
        return [f"{d.submission_id}/{d.job_id}" for d in self.dispatched]

    def ledger(self) -> SubmissionState:
        return self.states[LEDGER]


def _for(report: Input, sid: str) -> Input:
    from dataclasses import replace

    ref = report.ref  # type: ignore[union-attr]
    new = replace(ref, submission_id=sid, dispatch_id=f"{sid}/{ref.job_id}/{ref.attempt}")
    return replace(report, ref=new)  # type: ignore[type-var]


def test_a_keyed_job_claims_a_slot_and_is_dispatched_once_granted() -> None:
    cluster = Cluster()
    events = cluster.apply(
        "s-1", submit(job("a", concurrency_key=KEY, max_running=1), submission_id="s-1")
    )
    held = [e.body for e in events if isinstance(e.body, JobHeld)]
    assert held == [
        JobHeld(
            1, HoldReason.CONCURRENCY, f"waits for a slot of {LIMIT} (at most 1 running)", LIMIT, 1
        )
    ]
    (claim,) = cluster.inbox
    assert isinstance(claim, ClaimSlot) and claim.holder == "s-1/a@1" and claim.max_running == 1
    cluster.settle()
    assert cluster.dispatched_ids() == ["s-1/a"]
    assert cluster.ledger().slot_ledger is not None
    assert cluster.ledger().slot_ledger.holders == ("s-1/a@1",)


def test_at_most_max_running_hold_a_slot_across_submissions() -> None:
    cluster = Cluster()
    cluster.submit("s-1", "a", "b")
    cluster.submit("s-2", "c")
    assert cluster.dispatched_ids() == ["s-1/a", "s-1/b"]
    ledger = cluster.ledger().slot_ledger
    assert ledger is not None and [w.job for w in ledger.waiters] == ["s-2/c@1"]
    queued = [e.body for e in cluster.events if isinstance(e.body, SlotDecided)][-1]
    assert queued.decision is SlotDecision.QUEUED and queued.position == 0
    cluster.run("s-1", "a")  # a completes: its slot goes to c
    assert cluster.dispatched_ids() == ["s-1/a", "s-1/b", "s-2/c"]


def test_waiting_claims_are_granted_by_priority_then_arrival() -> None:
    cluster = Cluster()
    cluster.submit("s-0", "a", "b")  # both slots taken
    cluster.submit("s-1", "low", priority=0)
    cluster.submit("s-2", "high", priority=9)
    cluster.submit("s-3", "mid", priority=5)
    cluster.submit("s-4", "high2", priority=9)
    ledger = cluster.ledger().slot_ledger
    assert ledger is not None
    assert [w.job for w in ledger.waiters] == [
        "s-2/high@1",
        "s-4/high2@1",
        "s-3/mid@1",
        "s-1/low@1",
    ]
    cluster.run("s-0", "a")
    cluster.run("s-0", "b")
    assert cluster.dispatched_ids()[2:] == ["s-2/high", "s-4/high2"]


def test_a_canceled_waiting_job_withdraws_its_claim() -> None:
    cluster = Cluster()
    cluster.submit("s-1", "a", "b")
    cluster.submit("s-2", "c")
    cluster.apply("s-2", cancel("c", submission_id="s-2"))
    cluster.settle()
    ledger = cluster.ledger().slot_ledger
    assert ledger is not None and ledger.waiters == ()
    decisions = [e.body.decision for e in cluster.events if isinstance(e.body, SlotDecided)]
    assert decisions[-1] is SlotDecision.WITHDRAWN


def test_a_failed_attempt_releases_its_slot_and_the_retry_claims_again() -> None:
    cluster = Cluster()
    spec = job("a", concurrency_key=KEY, max_running=1, retries=1, backoff_ms=0)
    cluster.apply("s-1", submit(spec, submission_id="s-1"))
    cluster.settle()
    for report in succeeded("a")[:2]:
        cluster.apply("s-1", _for(report, "s-1"))
    cluster.apply("s-1", _for(failed("a"), "s-1"))
    cluster.settle()
    ledger = cluster.ledger().slot_ledger
    assert ledger is not None and ledger.holders == ()  # attempt 1 released it
    cluster.apply("s-1", Tick())  # the retry is due at once: it claims again
    cluster.settle()
    assert cluster.ledger().slot_ledger.holders == ("s-1/a@2",)  # type: ignore[union-attr]
    assert [d.attempt for d in cluster.dispatched] == [1, 2]


def test_a_rate_limit_allows_n_starts_per_period_and_arms_a_timer() -> None:
    cluster = Cluster()
    specs = [
        job(j, concurrency_key=KEY, rate_limit=2, rate_period_ms=1_000) for j in ("a", "b", "c")
    ]
    cluster.apply("s-1", submit(*specs, submission_id="s-1"))
    cluster.settle()
    assert cluster.dispatched_ids() == ["s-1/a", "s-1/b"]
    ledger = cluster.ledger().slot_ledger
    assert ledger is not None
    assert ledger_deadline(ledger, cluster.now) == T0 + 1_000
    queued = [e.body for e in cluster.events if isinstance(e.body, SlotDecided)][-1]
    assert queued.decision is SlotDecision.QUEUED and queued.until == T0 + 1_000
    cluster.now = T0 + 999
    cluster.apply(LEDGER, Tick())
    cluster.settle()
    assert len(cluster.dispatched) == 2  # not yet
    cluster.now = T0 + 1_000
    cluster.apply(LEDGER, Tick())
    cluster.settle()
    assert cluster.dispatched_ids() == ["s-1/a", "s-1/b", "s-1/c"]


def test_a_job_needs_a_slot_of_its_key_and_of_its_queue() -> None:
    queues = {"gpu": QueueConfig("gpu", max_running=1)}
    cluster = Cluster(queues)
    spec = job("a", concurrency_key=KEY, max_running=5, queue="gpu")
    cluster.apply("s-1", submit(spec, submission_id="s-1"))
    cluster.settle()
    holds = [e.body.slot for e in cluster.events if isinstance(e.body, JobHeld)]
    assert holds == [LIMIT, "queue:gpu"]
    assert cluster.dispatched_ids() == ["s-1/a"]
    state = cluster.states["s-1"].jobs["a"]
    assert state.slots == frozenset({LIMIT, "queue:gpu"}) and state.held_slot == ""


def test_a_late_answer_for_an_ended_attempt_changes_nothing() -> None:
    cluster = Cluster()
    cluster.submit("s-1", "a")
    events = cluster.apply("s-1", SlotAnswer("x", "s-1", "a", 1, LIMIT))
    assert events == []


# --------------------------------------------------------------------------- pending reasons


def test_every_waiting_job_has_a_reason() -> None:
    reasons = {}
    scenario = given(queues=PAUSED).when(
        submit(job("a"), job("b", after=["a"]), job("c", not_before=T0 + 60_000))
    )
    for event in scenario.last:
        reason = reason_after(event.body, event.timestamp)
        if reason is not None and event.job_id:
            reasons[event.job_id] = reason
    assert reasons["a"].code == "queue_paused"
    assert reasons["b"].code == "dependencies" and "a" in reasons["b"].detail
    assert reasons["c"].code == "not_before" and reasons["c"].until == T0 + 60_000
