"""Invariants of the lifecycle over random submissions driven by a simulated worker pool.

Random DAGs and trees of jobs with random retry policies and timeouts meet workers that
complete, fail, raise, crash, leave, hang, never claim, or get taken over; users cancel at
random moments (kill or finish); Ticks come when timers are due and at random; the run goes
on until nothing is left to happen. Whatever happened:

* every job ends in exactly one terminal status, reached once, and nothing but a deletion
  (or the record of a cancel after a success, which abandons what follows it) follows it;
* no job runs unless everything it waits on completed (or was skipped) first, and nothing that
  waits on a failed, canceled or abandoned job ever starts;
* replaying the events from scratch gives a state equal to the live one;
* sequence numbers run 1..n without a gap; the submission completes once, with the right
  status and counts;
* exactly one dispatch record is written per dispatched attempt;
* duplicated and stale reports change nothing that matters: the same run with them injected
  decides the same facts at the same times and ends the same way.
"""

from __future__ import annotations

import os
import random
from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import given as for_all
from hypothesis import strategies as st

from engine.lifecycle.records import (
    CANCELABLE_AT_ONCE,
    CancelMode,
    CommandRejected,
    Dispatch,
    Event,
    JobAbandoned,
    JobAssigned,
    JobCanceled,
    JobCancelRequested,
    JobCompleted,
    JobDeleted,
    JobDispatched,
    JobExceptionRaised,
    JobFailed,
    JobOutput,
    JobPending,
    JobProgressed,
    JobRetryScheduled,
    JobSkipped,
    JobSpec,
    JobStarted,
    JobStatus,
    RetryPolicy,
    SubmissionCompleted,
    SubmissionStatus,
)
from tests.unit.lifecycle_dsl import Scenario
from tests.unit.lifecycle_sim import (
    FATES,
    CheckedSimulation,
    Fate,
    Noise,
    Plan,
    outcome,
    plans,
    simulate,
)

TERMINAL_EVENT = {
    JobCompleted: JobStatus.COMPLETED,
    JobFailed: JobStatus.FAILED,
    JobCanceled: JobStatus.CANCELED,
    JobAbandoned: JobStatus.ABANDONED,
    JobSkipped: JobStatus.SKIPPED,
}
RUNNING_EVENTS = (JobPending, JobAssigned, JobStarted, JobCompleted)
NOT_A_SUCCESS = (JobStatus.FAILED, JobStatus.CANCELED, JobStatus.ABANDONED)
#: Events a duplicated report may add (a second chunk of output, a second warning).
REPEATABLE = (JobOutput, JobExceptionRaised, JobProgressed)


def check_invariants(plan: Plan, scenario: Scenario) -> None:
    state = scenario.state
    assert state is not None and state.accepted
    events = scenario.sequenced()
    assert len(events) == len(scenario.history), "a valid submission has no unsequenced event"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))

    # one terminal status per job, reached once, followed by nothing but a deletion (or a
    # cancel after a success, recorded with mode FINISH: Taipy's rule)
    ended: dict[str, tuple[int, JobStatus]] = {}
    for spec in plan.jobs:
        mine = [
            e for e in events if e.job_id == spec.job_id and not isinstance(e.body, CommandRejected)
        ]
        terminal = [i for i, e in enumerate(mine) if type(e.body) in TERMINAL_EVENT]
        assert len(terminal) == 1, f"{spec.job_id}: {[e.name for e in mine]}"
        last = mine[terminal[0]]
        assert all(
            isinstance(e.body, JobDeleted)
            or (isinstance(e.body, JobCancelRequested) and e.body.mode is CancelMode.FINISH)
            for e in mine[terminal[0] + 1 :]
        )
        status = TERMINAL_EVENT[type(last.body)]
        assert state.jobs[spec.job_id].status is status
        ended[spec.job_id] = (last.seq, status)

    # nothing runs before what it waits on succeeded; nothing runs after a failure upstream
    children: dict[str, set[str]] = {spec.job_id: set() for spec in plan.jobs}
    for spec in plan.jobs:
        if spec.parent is not None:
            children[spec.parent].add(spec.job_id)
    for spec in plan.jobs:
        upstream = set(spec.depends_on) | children[spec.job_id]
        ran = [e for e in events if e.job_id == spec.job_id and isinstance(e.body, RUNNING_EVENTS)]
        if ran:
            for other in upstream:
                seq, status = ended[other]
                assert status.is_success, f"{spec.job_id} ran though {other} ended {status}"
                assert seq < ran[0].seq, f"{spec.job_id} ran before {other} ended"
        if any(ended[other][1] in NOT_A_SUCCESS for other in upstream):
            started = [e for e in ran if isinstance(e.body, JobStarted | JobCompleted)]
            assert not started, f"{spec.job_id} ran after a failure upstream"

    # the submission completes once, after the last job, with the right status and counts
    completions = [e for e in events if isinstance(e.body, SubmissionCompleted)]
    assert len(completions) == 1
    completion = completions[0]
    assert isinstance(completion.body, SubmissionCompleted)
    assert completion.seq > max(seq for seq, _ in ended.values())
    counts = Counter(job.status for job in state.jobs.values())
    assert completion.body.counts == tuple(sorted(counts.items()))
    if counts[JobStatus.FAILED]:
        assert completion.body.status is SubmissionStatus.FAILED
    elif counts[JobStatus.CANCELED] or counts[JobStatus.ABANDONED]:
        assert completion.body.status is SubmissionStatus.CANCELED
    else:
        assert completion.body.status is SubmissionStatus.COMPLETED

    # replay == live
    assert scenario.replayed() == state

    # one dispatch record per dispatched attempt
    dispatched: Counter[tuple[str, int]] = Counter()
    for event in events:
        body = event.body
        if isinstance(body, JobPending | JobDispatched) and body.dispatch_id is not None:
            dispatched[(event.job_id, body.attempt)] += 1
        elif isinstance(body, JobRetryScheduled) and body.dispatch_id is not None:
            dispatched[(event.job_id, body.next_attempt)] += 1
    records = Counter(
        (effect.job_id, effect.attempt)
        for effect in scenario.all_effects
        if isinstance(effect, Dispatch)
    )
    assert records == dispatched
    assert set(records.values()) <= {1}


def check_cancels(simulation: CheckedSimulation) -> None:
    """A cancel ends what it names at once, kills what runs, or (finish) lets it run."""
    for command, before, after in simulation.cancels:
        if command.job_id is not None and before[command.job_id].is_terminal:
            continue  # rejected
        for job_id, job in before.items():
            now = after[job_id]
            if job.status in CANCELABLE_AT_ONCE:
                assert now.status is JobStatus.CANCELED, (command, job_id, job.status)
            elif job.status is JobStatus.RUNNING:
                assert now.status is JobStatus.RUNNING, (command, job_id)
                assert now.cancel is not None, (command, job_id)  # the request is recorded
                if command.mode is CancelMode.FINISH:
                    # left to finish: a kill asked for before stays asked for
                    assert job.cancel is None or now.cancel == job.cancel, (command, job_id)
                    assert now.cancel.mode is (
                        CancelMode.FINISH if job.cancel is None else job.cancel.mode
                    )


def decisive(events: list[Event]) -> list[tuple[int, str, object]]:
    """The facts that do not repeat with a repeated report, with their times."""
    return [(e.timestamp, e.job_id, e.body) for e in events if not isinstance(e.body, REPEATABLE)]


#: JOBLOG_PROPERTY_EXAMPLES=2000 runs a longer search than the default, which CI uses
EXAMPLES = int(os.environ.get("JOBLOG_PROPERTY_EXAMPLES", "60"))

FAST = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


#: runs the same plan twice (or shuffles its reports): fewer examples for the same budget
FAST_PAIRS = settings(FAST, max_examples=max(1, EXAMPLES * 2 // 3))


@FAST
@for_all(plans())
def test_every_run_keeps_the_lifecycle_invariants(plan: Plan) -> None:
    simulation = CheckedSimulation(plan)
    check_invariants(plan, simulation.run())
    check_cancels(simulation)


@FAST_PAIRS
@for_all(plans(), st.integers(0, 2**32 - 1))
def test_duplicated_and_stale_reports_change_nothing_that_matters(plan: Plan, seed: int) -> None:
    clean = simulate(plan)
    noise = Noise(random.Random(seed))
    noisy = simulate(plan, noise=noise)
    check_invariants(plan, noisy)
    assert outcome(noisy) == outcome(clean)
    assert decisive(noisy.sequenced()) == decisive(clean.sequenced())


@FAST_PAIRS
@for_all(plans(), st.integers(0, 2**32 - 1))
def test_reports_reordered_in_flight_keep_the_invariants(plan: Plan, seed: int) -> None:
    check_invariants(plan, simulate(plan, reorder=random.Random(seed)))


def test_the_simulation_reaches_every_kind_of_ending() -> None:
    """The properties above are only as good as the runs they see: check the pool's variety."""
    rng = random.Random(7)
    seen: Counter[str] = Counter()
    for _ in range(150):
        scenario = simulate(_random_plan(rng))
        seen.update(e.name for e in scenario.history)
    for name in (
        "JobCompleted",
        "JobFailed",
        "JobCanceled",
        "JobAbandoned",
        "JobSkipped",
        "JobRetryScheduled",
        "JobDispatched",
        "JobCancelRequested",
        "JobProgressed",
        "JobExceptionRaised",
    ):
        assert seen[name], f"no {name} in 150 runs"
    assert any(
        isinstance(e.body, JobAssigned) and e.body.previous_worker_id
        for e in simulate(_takeover_plan()).history
    )
    duplicate = simulate(_takeover_plan("duplicate")).history
    assert [e.name for e in duplicate].count("JobDuplicateClaim") == 1
    assert not any(isinstance(e.body, JobAssigned) and e.body.previous_worker_id for e in duplicate)


def _random_plan(rng: random.Random) -> Plan:
    count = rng.randint(1, 5)
    ids = [f"j{i}" for i in range(count)]
    specs = []
    for i, job_id in enumerate(ids):
        specs.append(
            JobSpec(
                job_id=job_id,
                task="t",
                depends_on=tuple(rng.sample(ids[:i], min(i, rng.randint(0, 2)))),
                parent=rng.choice([None, *ids[i + 1 :]]),
                retry=RetryPolicy(max_attempts=rng.randint(1, 3), backoff_ms=rng.choice([0, 100])),
                timeout_ms=rng.choice([0, 400]),
                queue_timeout_ms=rng.choice([0, 300]),
                idempotency_key=rng.choice([None, None, None, "done"]),
            )
        )
    kinds = ("complete",) * 3 + FATES
    return Plan(
        jobs=tuple(specs),
        fates={
            (spec.job_id, attempt): Fate(
                kind=rng.choice(kinds),
                worker=rng.randint(0, 2),
                duration=rng.randint(0, 600),
                progress_steps=rng.randint(0, 3),
                stubborn=rng.random() < 0.2,
            )
            for spec in specs
            for attempt in range(1, spec.retry.max_attempts + 1)
        },
        cancels=((rng.randint(0, 1500), rng.choice([None, *ids]), rng.choice(list(CancelMode))),)
        if rng.random() < 0.5
        else (),
        completed_keys={"done": "earlier/job"},
    )


def _takeover_plan(kind: str = "takeover") -> Plan:
    spec = JobSpec(job_id="a", task="t")
    return Plan(jobs=(spec,), fates={("a", 1): Fate(kind=kind, duration=400, stubborn=True)})
