"""The lifecycle properties' run of the simulator: every step checked, noise on demand.

:class:`~engine.lifecycle.simulation.Simulation` (the core's one simulator) plays a random
:class:`Plan`; here each of its decisions goes through
:class:`~tests.unit.lifecycle_dsl.Scenario` (decide, effects, evolve, observe, checked against
the one-pass step) and :func:`plans` draws the plans.

Noise can be added without touching anything else of the run: a duplicate of a report
delivered right after it, and reports that are stale by construction (an earlier attempt's,
a worker's that never held the attempt, one of a job that already ended), delivered inline
at the same instant. The run is otherwise identical, so its outcome must be too.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from hypothesis import strategies as st

from engine.lifecycle.decide import Policy, dispatch_id
from engine.lifecycle.effects import Effect
from engine.lifecycle.records import (
    AttemptRef,
    AttemptReport,
    CancelJobs,
    CancelMode,
    Claimed,
    Control,
    Event,
    ExceptionReported,
    Finished,
    Input,
    JobExceptionRaised,
    JobOutput,
    JobProgressed,
    JobSpec,
    JobStatus,
    OutputReported,
    ProgressReported,
    RetryPolicy,
    Started,
    WorkerLeft,
)
from engine.lifecycle.simulation import FATES, Fate, Simulation, random_trip
from engine.lifecycle.simulation import Plan as _Plan
from engine.lifecycle.state import JobState
from tests.unit.lifecycle_dsl import SUB, T0, Scenario

__all__ = ["FATES", "Fate", "Noise", "Plan", "RunOutcome", "Simulation", "outcome", "simulate"]

POLICY = Policy(lease_ms=1_000, kill_grace_ms=1_500, progress_interval_ms=200)
HEARTBEAT_MS = 250
WORKERS = ("w0", "w1", "w2")
GHOST = "ghost"
MAX_STEPS = 20_000


@dataclass(frozen=True)
class Plan(_Plan):
    """A plan of the one submission :data:`~tests.unit.lifecycle_dsl.SUB`, with the keys its
    scheduler (and the keys' ledgers) know as completed before it starts."""

    submission_id: str = SUB
    give_up_at: int | None = 8_000
    completed_keys: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Noise:
    """Injects duplicates and stale reports inline (``rng`` decides which)."""

    rng: random.Random
    duplicate: float = 0.3
    stale: float = 0.3
    injected: int = 0


@dataclass
class RunOutcome:
    """What a run ended with: per job its status and last attempt, and the submission's."""

    jobs: dict[str, tuple[JobStatus, int]]
    submission: str | None


class CheckedSimulation(Simulation):
    """The simulator with every decision of the submission made through a :class:`Scenario`."""

    def __init__(
        self, plan: Plan, *, noise: Noise | None = None, reorder: random.Random | None = None
    ) -> None:
        super().__init__(
            [plan],
            policy=POLICY,
            workers=WORKERS,
            start_ms=T0,
            heartbeat_ms=HEARTBEAT_MS,
            completed_keys=plan.completed_keys,
            trip=None if reorder is None else random_trip(reorder, 0, 150),
            stamp=False,
            max_steps=MAX_STEPS,
        )
        self.plan = plan
        self.noise = noise
        self.scenario = Scenario(policy=POLICY, completed_keys=plan.completed_keys)
        self.delivered: list[AttemptReport] = []
        # each cancel with the statuses of the jobs it names, before and after it
        self.cancels: list[tuple[CancelJobs, dict[str, JobState], dict[str, JobState]]] = []

    def apply(self, sid: str, given: Input, now: int) -> tuple[list[Event], list[Effect]]:
        if sid != SUB:
            return super().apply(sid, given, now)
        before = self._named_by(given)
        events = self.scenario.apply(given, now)
        if self.scenario.state is not None:
            self.out.states[sid] = self.scenario.state
        if isinstance(given, CancelJobs):
            self.cancels.append((given, before, self._named_by(given)))
        return events, list(self.scenario.last_effects)

    def run(self) -> Scenario:  # type: ignore[override]
        super().run()
        return self.scenario

    def _named_by(self, given: Input) -> dict[str, JobState]:
        """The jobs a cancel names (the job and its sub-jobs, or all)."""
        state = self.scenario.state
        if not isinstance(given, CancelJobs) or state is None:
            return {}
        if given.job_id is None:
            return dict(state.jobs)
        named = [given.job_id]
        for job_id in named:
            named.extend(state.children.get(job_id, ()))
        return {job_id: state.jobs[job_id] for job_id in named}

    def deliver(self, sid: str, report: Input, now: int) -> None:
        super().deliver(sid, report, now)
        if sid != SUB or not isinstance(
            report,
            Claimed | Started | ProgressReported | OutputReported | ExceptionReported | Finished,
        ):
            return
        self.delivered.append(report)
        if self.noise is not None:
            self.inject(report, self.now)
            self.reschedule(sid)

    def inject(self, report: AttemptReport, now: int) -> None:
        """Delivers a duplicate of ``report`` and reports stale by construction, at once."""
        noise = self.noise
        assert noise is not None
        rng = noise.rng
        state = self.scenario.state
        assert state is not None
        if rng.random() < noise.duplicate:
            self._noise(report, now, stale=False)
        if rng.random() < noise.stale and report.ref.attempt > 1:
            earlier = report.ref.attempt - 1
            old = replace(
                report.ref,
                attempt=earlier,
                dispatch_id=dispatch_id(SUB, report.ref.job_id, earlier),
            )
            self._noise(replace(report, ref=old), now, stale=True)
        job = state.jobs.get(report.ref.job_id)
        if (
            rng.random() < noise.stale
            and not isinstance(report, Claimed)
            and job is not None
            and job.status in (JobStatus.ASSIGNED, JobStatus.RUNNING)
        ):
            ghost = replace(report.ref, worker_id=GHOST)
            self._noise(replace(report, ref=ghost), now, stale=True)
        if rng.random() < noise.stale:
            over = [
                r
                for r in self.delivered
                if state.jobs[r.ref.job_id].is_terminal
                or state.jobs[r.ref.job_id].attempt > r.ref.attempt
            ]
            if over:
                self._noise(rng.choice(over), now, stale=True)
        if rng.random() < noise.stale and self.fenced:
            _, job_id, attempt, worker = rng.choice(sorted(self.fenced))
            theirs = [
                r
                for r in self.delivered
                if (r.ref.job_id, r.ref.attempt, r.ref.worker_id) == (job_id, attempt, worker)
            ]
            if theirs:
                self._noise(rng.choice(theirs), now, stale=True)
            ref = AttemptRef(SUB, job_id, attempt, dispatch_id(SUB, job_id, attempt), worker)
            self._noise(WorkerLeft(worker, (ref,)), now, stale=True)

    def _noise(self, report: Input, now: int, *, stale: bool) -> None:
        assert self.noise is not None
        self.noise.injected += 1
        events = self.scenario.apply(report, now)
        # a stale claim is told to stop (a kill, no event); nothing else has an effect
        kills = [e for e in self.scenario.last_effects if isinstance(e, Control)]
        assert len(kills) == len(self.scenario.last_effects), (report, events)
        assert not kills or isinstance(report, Claimed), (report, kills)
        if stale:
            assert events == [], f"a stale report decided something: {report!r} -> {events!r}"
        else:
            harmless = JobOutput | JobExceptionRaised | JobProgressed
            assert all(isinstance(e.body, harmless) for e in events), (report, events)


def simulate(
    plan: Plan, *, noise: Noise | None = None, reorder: random.Random | None = None
) -> Scenario:
    """Runs ``plan`` until nothing is left to happen; returns the scheduler's side of it."""
    return CheckedSimulation(plan, noise=noise, reorder=reorder).run()


def outcome(scenario: Scenario) -> RunOutcome:
    state = scenario.state
    assert state is not None
    return RunOutcome(
        jobs={job_id: (job.status, job.attempt) for job_id, job in state.jobs.items()},
        submission=None if state.outcome is None else str(state.outcome),
    )


# --------------------------------------------------------------------------- random plans

fates = st.builds(
    Fate,
    kind=st.sampled_from(("complete",) * 4 + FATES),
    worker=st.integers(0, 2),
    claim_delay=st.integers(0, 50),
    duration=st.integers(0, 600),
    error_type=st.sampled_from(("Flaky", "Fatal")),
    progress_steps=st.integers(0, 3),
    stubborn=st.sampled_from((False, False, False, True)),
    output=st.sampled_from(((), (("stdout", "hello\n"),))),
)


@st.composite
def plans(draw: st.DrawFn, max_jobs: int = 6) -> Plan:
    """A random DAG and tree of jobs, what each attempt's worker does, and the user's moves.

    Jobs are numbered; a job depends only on lower numbers and is a sub-job of a higher one,
    so the graph has no cycle; the submission lists them in random order.
    """
    count = draw(st.integers(1, max_jobs))
    ids = [f"j{i}" for i in range(count)]
    specs: list[JobSpec] = []
    for i, job_id in enumerate(ids):
        depends_on = draw(st.lists(st.sampled_from(ids[:i]), unique=True, max_size=2)) if i else []
        parent = draw(st.none() | st.sampled_from(ids[i + 1 :])) if i + 1 < count else None
        retry = RetryPolicy(
            max_attempts=draw(st.integers(1, 3)),
            backoff_ms=draw(st.sampled_from((0, 50, 300))),
            jitter=draw(st.sampled_from((0.0, 0.5))),
            retry_on=draw(st.sampled_from(((), ("Flaky",), ("timeout", "worker_lost")))),
        )
        specs.append(
            JobSpec(
                job_id=job_id,
                task="tasks.work",
                depends_on=tuple(depends_on),
                parent=parent,
                retry=retry,
                timeout_ms=draw(st.sampled_from((0, 0, 400))),
                queue_timeout_ms=draw(st.sampled_from((0, 0, 300))),
                idempotency_key=draw(st.sampled_from((None, None, None, "done"))),
            )
        )
    return Plan(
        jobs=tuple(draw(st.permutations(specs))),
        fates={
            (spec.job_id, attempt): draw(fates)
            for spec in specs
            for attempt in range(1, spec.retry.max_attempts + 1)
        },
        cancels=tuple(
            draw(
                st.lists(
                    st.tuples(
                        st.integers(0, 2_000),
                        st.none() | st.sampled_from(ids),
                        st.sampled_from(CancelMode),
                    ),
                    max_size=2,
                )
            )
        ),
        ticks=tuple(draw(st.lists(st.integers(0, 3_000), max_size=3))),
        completed_keys={"done": "earlier/job"} if draw(st.booleans()) else {},
    )
