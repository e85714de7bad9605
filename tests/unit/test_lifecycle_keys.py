"""Idempotency keys across partitions: a job claims its key from the key's ledger.

The job's submission and the key's ledger are decided by whichever schedulers own their
partitions; here both are driven with the pure core, and the key traffic between them (the
effects of their events) is carried by hand, in the order Kafka would deliver it.
"""

from __future__ import annotations

from collections import deque

from engine.lifecycle.decide import step
from engine.lifecycle.effects import Effect
from engine.lifecycle.records import (
    KEY_WAIT,
    Claimed,
    ClaimIdempotencyKey,
    Control,
    Dispatch,
    Event,
    Finished,
    IdempotencyKeyAnswer,
    IdempotencyKeyDecided,
    Input,
    JobSkipped,
    JobSpec,
    JobStatus,
    KeyDecision,
    Outcome,
    RejectionCode,
    ReleaseIdempotencyKey,
    Started,
    key_ledger_id,
)
from engine.lifecycle.state import SubmissionState
from tests.unit.lifecycle_dsl import POLICY, T0, cancel, given, job, ref, submit, succeeded

KEY = "invoice-2026-001"
LEDGER = key_ledger_id(KEY)


class Cluster:
    """Submissions and ledgers, each with its own state, and the key traffic in flight."""

    def __init__(self) -> None:
        self.states: dict[str, SubmissionState] = {}
        self.log: list[Event] = []
        self.in_flight: deque[Input] = deque()
        self.dispatched: list[str] = []
        self.now = T0

    def send(self, given: Input, target: str | None = None) -> list[Event]:
        """Decides one input for its target, then carries every command it caused."""
        events = self._decide(given, target)
        while self.in_flight:
            self._decide(self.in_flight.popleft(), None)
        return events

    def _decide(self, given: Input, target: str | None) -> list[Event]:
        self.now += 10
        submission_id = target or str(getattr(given, "submission_id", ""))
        outcome = step(self.states.get(submission_id), given, self.now, policy=POLICY)
        if outcome.state is not None:
            self.states[submission_id] = outcome.state
        self.log += outcome.events
        for effect in outcome.effects:
            self._carry(effect)
        return outcome.events

    def _carry(self, effect: Effect) -> None:
        if isinstance(effect, Dispatch):
            self.dispatched.append(effect.dispatch_id)
        elif isinstance(effect, Control):
            pass
        else:  # key traffic: claims and releases for the ledger, answers for submissions
            self.in_flight.append(effect)

    def status(self, submission_id: str, job_id: str) -> JobStatus:
        return self.states[submission_id].jobs[job_id].status

    def decisions(self) -> list[tuple[str, KeyDecision]]:
        return [
            (e.body.job, e.body.decision)
            for e in self.log
            if isinstance(e.body, IdempotencyKeyDecided)
        ]


def keyed(job_id: str = "bill") -> JobSpec:
    return job(job_id, idempotency_key=KEY)


def run_to_end(cluster: Cluster, sid: str, job_id: str, ok: bool = True) -> None:
    """A worker claims, starts and finishes attempt 1 of the job."""
    attempt = ref(job_id, submission_id=sid)
    outcome = Outcome.COMPLETED if ok else Outcome.FAILED
    for report in (Claimed(attempt), Started(attempt), Finished(attempt, outcome)):
        cluster.send(report, sid)


# --------------------------------------------------------------------------- the job's side


def test_a_keyed_job_waits_for_its_key_and_claims_it_from_the_ledger() -> None:
    scenario = given().when(submit(job("a", idempotency_key=KEY)))
    scenario.status(a=JobStatus.BLOCKED)
    assert scenario.job("a").waiting_on == frozenset({KEY_WAIT})
    (claim,) = scenario.last_effects
    assert claim == ClaimIdempotencyKey(
        command_id=f"{scenario.last[-1].event_id}:claim",
        submission_id=LEDGER,
        key=KEY,
        holder=f"{scenario.submission_id}/a",
        issued_at=scenario.now,
    )


def test_a_granted_key_makes_the_job_pending_or_leaves_it_to_its_dependencies() -> None:
    scenario = given(submit(job("a"), job("b", after=["a"], idempotency_key=KEY)))
    scenario.status(a=JobStatus.PENDING, b=JobStatus.BLOCKED)
    assert scenario.job("b").waiting_on == frozenset({"a", KEY_WAIT})
    blocked_at = scenario.job("b").blocked_at
    scenario.when(IdempotencyKeyAnswer("ans-1", scenario.submission_id, "b", KEY, True))
    assert scenario.job("b").waiting_on == frozenset({"a"})
    assert scenario.job("b").blocked_at == blocked_at, "still blocked since submit"
    assert scenario.last_effects == [], "a grant is not claimed again"
    scenario.step(*succeeded("a"))
    scenario.status(b=JobStatus.PENDING)


def test_an_already_completed_key_skips_the_job_and_its_dependents_go_on() -> None:
    scenario = given(submit(job("a", idempotency_key=KEY), job("b", after=["a"])))
    scenario.when(IdempotencyKeyAnswer("ans-1", scenario.submission_id, "a", KEY, False, "old/a"))
    scenario.status(a=JobStatus.SKIPPED, b=JobStatus.PENDING)
    skipped = next(e.body for e in scenario.last if isinstance(e.body, JobSkipped))
    assert skipped.completed_by == "old/a" and skipped.idempotency_key == KEY
    assert not any(isinstance(e, ReleaseIdempotencyKey) for e in scenario.last_effects)


def test_a_repeated_or_late_answer_changes_nothing() -> None:
    scenario = given(submit(job("a", idempotency_key=KEY)))
    grant = IdempotencyKeyAnswer("ans-1", scenario.submission_id, "a", KEY, True)
    scenario.step(grant)
    scenario.status(a=JobStatus.PENDING)
    scenario.when(grant).then_nothing()
    scenario.step(cancel("a"))
    scenario.when(IdempotencyKeyAnswer("ans-2", scenario.submission_id, "a", KEY, True))
    scenario.then_nothing()


def test_a_job_that_ends_releases_its_key_completed_or_not() -> None:
    done = given(submit(job("a", idempotency_key=KEY)))
    done.step(IdempotencyKeyAnswer("ans", done.submission_id, "a", KEY, True), *succeeded("a"))
    (release,) = [e for e in done.last_effects if isinstance(e, ReleaseIdempotencyKey)]
    assert release.completed and release.holder == f"{done.submission_id}/a"

    canceled = given(submit(job("a", idempotency_key=KEY)))
    canceled.step(cancel("a"))  # still waiting for the key: the claim is withdrawn
    (release,) = [e for e in canceled.last_effects if isinstance(e, ReleaseIdempotencyKey)]
    assert not release.completed


def test_a_key_longer_than_the_limit_is_rejected() -> None:
    given().when(submit(job("a", idempotency_key="k" * 1025))).then_rejected(
        RejectionCode.BAD_IDEMPOTENCY_KEY
    )


# --------------------------------------------------------------------------- the ledger


def claim(job_ref: str, n: int = 1) -> ClaimIdempotencyKey:
    return ClaimIdempotencyKey(f"claim-{job_ref}-{n}", LEDGER, KEY, job_ref)


def release(job_ref: str, completed: bool) -> ReleaseIdempotencyKey:
    return ReleaseIdempotencyKey(f"release-{job_ref}", LEDGER, KEY, job_ref, completed)


def test_the_ledger_grants_queues_and_answers_in_order() -> None:
    cluster = Cluster()
    for holder in ("s1/a", "s2/a", "s3/a"):
        cluster._decide(claim(holder), None)
    cluster._decide(claim("s2/a", 2), None)  # a repeated claim of a waiting job: nothing new
    assert cluster.decisions() == [
        ("s1/a", KeyDecision.GRANTED),
        ("s2/a", KeyDecision.QUEUED),
        ("s3/a", KeyDecision.QUEUED),
    ]
    ledger = cluster.states[LEDGER].key_ledger
    assert ledger is not None and ledger.holder == "s1/a" and ledger.waiters == ("s2/a", "s3/a")

    cluster._decide(release("s1/a", completed=False), None)  # failed: the next one runs
    assert cluster.decisions()[-2:] == [
        ("s1/a", KeyDecision.RELEASED),
        ("s2/a", KeyDecision.GRANTED),
    ]
    answers = [e for e in cluster.in_flight if isinstance(e, IdempotencyKeyAnswer)]
    assert [(a.submission_id, a.job_id, a.granted) for a in answers] == [
        ("s1", "a", True),
        ("s2", "a", True),
    ]

    cluster._decide(release("s2/a", completed=True), None)  # done: every waiter is skipped
    assert cluster.decisions()[-2:] == [
        ("s2/a", KeyDecision.DONE),
        ("s3/a", KeyDecision.COMPLETED),
    ]
    ledger = cluster.states[LEDGER].key_ledger
    assert ledger is not None and (ledger.holder, ledger.completed_by, ledger.waiters) == (
        "",
        "s2/a",
        (),
    )
    cluster._decide(claim("s4/a"), None)
    assert cluster.decisions()[-1] == ("s4/a", KeyDecision.COMPLETED)
    cluster._decide(release("s2/a", completed=False), None)
    assert cluster.decisions()[-1] == ("s4/a", KeyDecision.COMPLETED), "done is forever"


def test_a_waiting_job_that_ends_withdraws_its_claim() -> None:
    cluster = Cluster()
    cluster._decide(claim("s1/a"), None)
    cluster._decide(claim("s2/a"), None)
    cluster._decide(release("s2/a", completed=False), None)
    assert cluster.decisions()[-1] == ("s2/a", KeyDecision.WITHDRAWN)
    cluster._decide(release("s1/a", completed=False), None)
    assert cluster.decisions()[-1] == ("s1/a", KeyDecision.RELEASED), "nobody is left to grant"


# --------------------------------------------------------------------------- end to end


def test_the_same_key_in_two_submissions_runs_once() -> None:
    cluster = Cluster()
    cluster.send(submit(keyed(), submission_id="s1"))
    cluster.send(submit(keyed(), submission_id="s2"))
    assert cluster.status("s1", "bill") is JobStatus.PENDING
    assert cluster.status("s2", "bill") is JobStatus.BLOCKED, "in flight: it waits"
    assert cluster.dispatched == ["s1/bill/1"]
    run_to_end(cluster, "s1", "bill")
    assert cluster.status("s1", "bill") is JobStatus.COMPLETED
    assert cluster.status("s2", "bill") is JobStatus.SKIPPED
    assert cluster.states["s2"].outcome is not None
    assert cluster.dispatched == ["s1/bill/1"], "the duplicate never ran"


def test_a_failed_first_run_hands_the_key_to_the_duplicate() -> None:
    cluster = Cluster()
    cluster.send(submit(keyed(), submission_id="s1"))
    cluster.send(submit(keyed(), submission_id="s2"))
    run_to_end(cluster, "s1", "bill", ok=False)
    assert cluster.status("s1", "bill") is JobStatus.FAILED
    assert cluster.status("s2", "bill") is JobStatus.PENDING
    assert cluster.dispatched == ["s1/bill/1", "s2/bill/1"]
