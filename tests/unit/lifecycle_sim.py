"""A simulated scheduler loop with a pool of workers, for the lifecycle properties.

A :class:`Plan` says everything random about a run up front: the jobs (a random DAG and a
random tree, random retry policies and timeouts), what the worker running each attempt will
do (its :class:`Fate`), when users cancel, and when the operator gives up on the whole
submission. :func:`simulate` then drives the pure core the way the scheduler does, with a
discrete clock:

* the scheduler side decides every input with :class:`~tests.unit.lifecycle_dsl.Scenario`
  (decide, effects, evolve, observe) and decides a ``Tick`` whenever ``next_deadline`` is due;
* a :class:`~engine.lifecycle.records.Dispatch` effect hands the attempt to a worker, which
  claims it, starts it, reports progress and ends it as its fate says, heartbeating every
  :data:`HEARTBEAT_MS` while it runs;
* a kill :class:`~engine.lifecycle.records.Control` stops the attempt (the worker confirms
  with ``Finished(CANCELED)``) unless the worker is stubborn and runs on.

Noise can be added without touching anything else of the run: a duplicate of a report
delivered right after it, and reports that are stale by construction (an earlier attempt's,
a worker's that never held the attempt, one of a job that already ended), delivered inline
at the same instant. The run is otherwise identical, so its outcome must be too.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial

from hypothesis import strategies as st

from engine.lifecycle.decide import Policy, dispatch_id, next_deadline, step
from engine.lifecycle.records import (
    AttemptRef,
    AttemptReport,
    CancelJobs,
    CancelMode,
    Claimed,
    ClaimIdempotencyKey,
    Control,
    Dispatch,
    ExceptionReported,
    Finished,
    Heartbeat,
    IdempotencyKeyAnswer,
    Input,
    JobAssigned,
    JobExceptionRaised,
    JobOutput,
    JobProgressed,
    JobSpec,
    JobStatus,
    Outcome,
    OutputReported,
    ProgressReported,
    ReleaseIdempotencyKey,
    RetryPolicy,
    Started,
    SubmitJobs,
    Tick,
    WorkerLeft,
    key_ledger_id,
)
from engine.lifecycle.state import JobState, KeyLedger, SubmissionState
from tests.unit.lifecycle_dsl import SUB, T0, Scenario

POLICY = Policy(lease_ms=1_000, kill_grace_ms=1_500, progress_interval_ms=200)
HEARTBEAT_MS = 250
WORKERS = ("w0", "w1", "w2")
GHOST = "ghost"
MAX_STEPS = 20_000

#: What the worker running an attempt does:
#: complete / fail (Finished), fatal (a severity-0 exception), warn (a severity-3 exception,
#: then complete), crash (goes silent: no report, no heartbeat), leave (WorkerLeft), hang
#: (runs until killed), unclaimed (the dispatch is never claimed), takeover (the worker
#: freezes midway, another worker claims the same dispatch once the first missed two
#: heartbeats and completes it; the first revives and reports completion if stubborn),
#: duplicate (another worker claims the same dispatch midway while the first heartbeats:
#: the claim is refused and the first completes).
FATES = (
    "complete",
    "fail",
    "fatal",
    "warn",
    "crash",
    "leave",
    "hang",
    "unclaimed",
    "takeover",
    "duplicate",
)


@dataclass(frozen=True)
class Fate:
    kind: str
    worker: int = 0
    claim_delay: int = 5
    duration: int = 100
    error_type: str = "Flaky"
    progress_steps: int = 1
    stubborn: bool = False
    output: bool = False


@dataclass(frozen=True)
class Plan:
    jobs: tuple[JobSpec, ...]
    fates: Mapping[tuple[str, int], Fate]
    cancels: tuple[tuple[int, str | None, CancelMode], ...] = ()
    ticks: tuple[int, ...] = ()
    completed_keys: Mapping[str, str] = field(default_factory=dict)
    give_up_at: int = 8_000


@dataclass
class Run:
    """One worker running one attempt."""

    ref: AttemptRef
    fate: Fate
    active: bool = True  # sends reports
    heartbeating: bool = True  # listed in its worker's heartbeats


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


class Simulation:
    def __init__(
        self,
        plan: Plan,
        *,
        noise: Noise | None = None,
        reorder: random.Random | None = None,
    ) -> None:
        self.plan = plan
        self.noise = noise
        self.reorder = reorder
        self.scenario = Scenario(policy=POLICY, completed_keys=plan.completed_keys)
        self.agenda: list[tuple[int, int, Callable[[int], None]]] = []
        self.order = itertools.count()
        self.runs: dict[tuple[str, int, str], Run] = {}
        self.delivered: list[AttemptReport] = []
        # (job, attempt, worker) that another worker took the attempt over from
        self.fenced: set[tuple[str, int, str]] = set()
        # each cancel with the statuses of the jobs it names, before and after it
        self.cancels: list[tuple[CancelJobs, dict[str, JobState], dict[str, JobState]]] = []
        self.steps = 0
        # the ledgers of idempotency keys (their own pseudo-submissions), seeded with the
        # keys the plan says were completed before
        self.ledgers: dict[str, SubmissionState] = {
            key_ledger_id(key): SubmissionState(
                submission_id=key_ledger_id(key),
                accepted=True,
                key_ledger=KeyLedger(key, completed_by=by),
            )
            for key, by in plan.completed_keys.items()
        }

    # ---------------------------------------------------------------- the clock

    def at(self, t: int, action: Callable[[int], None]) -> None:
        heapq.heappush(self.agenda, (t, next(self.order), action))

    def send(self, t: int, report: Input) -> None:
        """A worker sends ``report`` at ``t``; it reaches the scheduler then (or later)."""
        if self.reorder is not None:
            t += self.reorder.randint(0, 150)
        self.at(t, partial(self.deliver, report))

    def run(self) -> Scenario:
        plan = self.plan
        self.at(0, partial(self.decide, SubmitJobs("submit-1", SUB, plan.jobs)))
        for when, job_id, mode in plan.cancels:
            command = CancelJobs(f"cancel-{when}", SUB, job_id, mode, requested_by="user")
            self.at(when, partial(self.decide, command))
        for when in plan.ticks:
            self.at(when, partial(self.decide, Tick()))
        give_up = CancelJobs("give-up", SUB, None, CancelMode.KILL, reason="giving up")
        self.at(plan.give_up_at, partial(self.decide, give_up))
        self.at(HEARTBEAT_MS, self.heartbeats)
        while True:
            self.steps += 1
            assert self.steps < MAX_STEPS, "the simulation does not settle"
            state = self.scenario.state
            due = next_deadline(state, POLICY) if state is not None else None
            upcoming = self.agenda[0][0] if self.agenda else None
            if due is not None and (upcoming is None or due <= T0 + upcoming):
                self.decide(Tick(), max(due - T0, self.scenario.now - T0))
                continue
            if upcoming is None:
                break
            when, _, action = heapq.heappop(self.agenda)
            action(max(when, self.scenario.now - T0))
        return self.scenario

    # ---------------------------------------------------------------- the scheduler side

    def decide(self, given: Input, now: int) -> None:
        before = self._named_by(given)
        events = self.scenario.apply(given, T0 + now)
        if isinstance(given, CancelJobs):
            self.cancels.append((given, before, self._named_by(given)))
        for event in events:
            if isinstance(event.body, JobAssigned) and event.body.previous_worker_id:
                self.fenced.add((event.job_id, event.body.attempt, event.body.previous_worker_id))
        for effect in self.scenario.last_effects:
            if isinstance(effect, Dispatch):
                self.at(now + 1, partial(self.receive, effect))
            elif isinstance(effect, Control):
                self.at(now + 5, partial(self.kill, effect))
            elif isinstance(effect, ClaimIdempotencyKey | ReleaseIdempotencyKey):
                self.at(now + 2, partial(self.ledger, effect))

    def ledger(self, command: ClaimIdempotencyKey | ReleaseIdempotencyKey, now: int) -> None:
        """The key's ledger decides (as another partition's scheduler would); its answers
        come back to the submission a little later."""
        outcome = step(self.ledgers.get(command.submission_id), command, T0 + now, policy=POLICY)
        if outcome.state is not None:
            self.ledgers[command.submission_id] = outcome.state
        for effect in outcome.effects:
            assert isinstance(effect, IdempotencyKeyAnswer)
            self.at(now + 2, partial(self.decide, effect))

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

    def deliver(self, report: Input, now: int) -> None:
        self.decide(report, now)
        if not isinstance(
            report,
            Claimed | Started | ProgressReported | OutputReported | ExceptionReported | Finished,
        ):
            return
        self.delivered.append(report)
        if self.noise is not None:
            self.inject(report, now)

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
            job_id, attempt, worker = rng.choice(sorted(self.fenced))
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
        events = self.scenario.apply(report, T0 + now)
        # a stale claim is told to stop (a kill, no event); nothing else has an effect
        kills = [e for e in self.scenario.last_effects if isinstance(e, Control)]
        assert len(kills) == len(self.scenario.last_effects), (report, events)
        assert not kills or isinstance(report, Claimed), (report, kills)
        if stale:
            assert events == [], f"a stale report decided something: {report!r} -> {events!r}"
        else:
            harmless = JobOutput | JobExceptionRaised | JobProgressed
            assert all(isinstance(e.body, harmless) for e in events), (report, events)

    # ---------------------------------------------------------------- the workers

    def receive(self, dispatch: Dispatch, now: int) -> None:
        fate = self.plan.fates[(dispatch.job_id, dispatch.attempt)]
        if fate.kind == "unclaimed":
            return
        worker = WORKERS[fate.worker % len(WORKERS)]
        self.start_run(dispatch, worker, fate, now + fate.claim_delay)

    def start_run(self, dispatch: Dispatch, worker: str, fate: Fate, t: int) -> None:
        ref = AttemptRef(SUB, dispatch.job_id, dispatch.attempt, dispatch.dispatch_id, worker)
        run = Run(ref, fate)
        self.runs[(ref.job_id, ref.attempt, worker)] = run
        self.report(run, t, Claimed(ref, host=worker))
        t += 2
        self.report(run, t, Started(ref, pid=1))
        steps = fate.progress_steps
        for i in range(1, steps + 1):
            when = t + fate.duration * i // (steps + 1)
            self.report(run, when, ProgressReported(ref, i / (steps + 1), 1.0, f"step {i}"))
        if fate.output:
            self.report(run, t + 1, OutputReported(ref, "stdout", "hello\n"))
        end = t + fate.duration
        kind = fate.kind
        if kind in ("complete", "duplicate"):
            self.report(run, end, Finished(ref, Outcome.COMPLETED, result="1", progress=1.0))
        elif kind == "fail":
            self.report(run, end, Finished(ref, Outcome.FAILED, error_type=fate.error_type))
        elif kind == "fatal":
            self.report(run, end, ExceptionReported(ref, fate.error_type, "fatal", 0))
        elif kind == "warn":
            self.report(run, t + fate.duration // 2, ExceptionReported(ref, "Slow", "warn", 3))
            self.report(run, end, Finished(ref, Outcome.COMPLETED))
        elif kind == "crash":
            self.at(end, lambda _t: self.stop(run, heartbeats=False))
        elif kind == "leave":
            self.report(run, end, WorkerLeft(worker, (ref,)), last=True)
        other = WORKERS[(fate.worker + 1) % len(WORKERS)]
        follow = replace(fate, kind="complete", stubborn=False)
        middle = t + fate.duration // 2
        if kind == "takeover":
            # frozen midway; claimed again once the holder missed two heartbeats (before its
            # lease runs out)
            self.at(middle, lambda _t: self.stop(run, heartbeats=False))
            again = middle + POLICY.lease_ms * 7 // 10
            self.at(again, lambda now: self.start_run(dispatch, other, follow, now))
            if fate.stubborn:
                late = Finished(ref, Outcome.COMPLETED, result="1")
                self.at(again + 50, lambda now: self.send(now, late))
        elif kind == "duplicate":
            self.at(middle, lambda now: self.start_run(dispatch, other, follow, now))

    def report(self, run: Run, t: int, report: Input, *, last: bool = False) -> None:
        def act(now: int) -> None:
            if not run.active:
                return
            if (
                last
                or isinstance(report, Finished)
                or (isinstance(report, ExceptionReported) and report.severity == 0)
            ):
                self.stop(run, heartbeats=False)
            self.send(now, report)

        self.at(t, act)

    def stop(self, run: Run, *, heartbeats: bool) -> None:
        run.active = False
        run.heartbeating = heartbeats

    def kill(self, control: Control, now: int) -> None:
        run = self.runs.get((control.job_id, control.attempt, control.worker_id))
        if run is None or not run.active or run.fate.stubborn:
            return
        self.stop(run, heartbeats=False)
        self.send(now + 5, Finished(run.ref, Outcome.CANCELED))

    def heartbeats(self, now: int) -> None:
        for worker in WORKERS:
            refs = tuple(
                run.ref
                for (_, _, w), run in self.runs.items()
                if w == worker and run.heartbeating and run.active
            )
            if refs:
                self.send(
                    now, Heartbeat(worker, "default", attempts=refs, lease_ms=POLICY.lease_ms)
                )
        state = self.scenario.state
        if state is None or not state.done:
            self.at(now + HEARTBEAT_MS, self.heartbeats)


def simulate(
    plan: Plan, *, noise: Noise | None = None, reorder: random.Random | None = None
) -> Scenario:
    """Runs ``plan`` until nothing is left to happen; returns the scheduler's side of it."""
    return Simulation(plan, noise=noise, reorder=reorder).run()


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
    output=st.booleans(),
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
