"""A simulated scheduler and worker pool that drive the pure core on a discrete clock.

One simulator serves the property tests (random :class:`Plan` values, checked at every
step), the realistic logs of :mod:`engine.lifecycle.workload` (for the projection's tests,
the benchmarks and the demo) and anything else that needs a consistent event log without
Kafka. A :class:`Plan` says everything about one submission up front: its jobs, what the
worker running each attempt will do (its :class:`Fate`), and when users cancel or delete.
:class:`Simulation` then plays any number of plans at once, the way the scheduler and its
workers would:

* the scheduler side decides every input with :func:`~engine.lifecycle.decide.step` and
  decides a ``Tick`` for a submission whenever its
  :func:`~engine.lifecycle.timers.next_deadline` is due;
* a :class:`~engine.lifecycle.records.Dispatch` effect hands the attempt to a worker, which
  claims it, starts it, reports progress (and output, warnings) and ends it as its fate
  says, heartbeating every ``heartbeat_ms`` while it runs;
* a kill :class:`~engine.lifecycle.records.Control` stops the attempt (the worker confirms
  with ``Finished(CANCELED)``) unless the worker is stubborn and runs on;
* idempotency-key and concurrency-slot traffic goes to the ledger (its own pseudo-submission,
  as on another partition) and its answers come back a little later, each lane (from one
  pseudo-submission or submission to another) in order, as one Kafka partition keeps them.

Subclasses change how an input is decided (:meth:`Simulation.apply`, e.g. to check every
step) or add inputs after a report was decided (:meth:`Simulation.deliver`).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

from engine.lifecycle.decide import Policy, next_deadline, step
from engine.lifecycle.effects import Effect
from engine.lifecycle.records import (
    AttemptRef,
    CancelJobs,
    CancelMode,
    Claimed,
    Control,
    DeleteJobs,
    Dispatch,
    Event,
    ExceptionReported,
    Finished,
    Heartbeat,
    Input,
    JobAssigned,
    JobSpec,
    Outcome,
    OutputReported,
    ProgressReported,
    Started,
    SubmitJobs,
    Tick,
    WorkerLeft,
    is_key_ledger,
    is_slot_ledger,
    key_ledger_id,
)
from engine.lifecycle.state import KeyLedger, QueueConfig, SubmissionState

#: The clock of a simulation starts here (2024-01-01T00:00:00Z) unless told otherwise.
EPOCH_MS = 1_704_067_200_000

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


class SimulationDoesNotSettle(AssertionError):
    """The simulation went on past its ``max_steps``: something keeps deciding forever."""


@dataclass(frozen=True)
class Fate:
    """What the worker running one attempt does (``kind``: one of :data:`FATES`).

    Attributes:
        worker: which of the simulation's workers claims it (modulo their number).
        claim_delay / duration: ms from the dispatch to the claim, from the start to the end.
        error_type / error_note / traceback: the failure, for ``fail`` and ``fatal``.
        result / exit_code / status_line: what a completed (or failed command) attempt says.
        progress_steps: progress reports spread over the run.
        stubborn: ignores kills (and, taken over, reports its completion anyway).
        output: ``(stream, text)`` chunks written right after the start.
        warnings: ``(type, note, severity)`` exceptions reported half way.
    """

    kind: str = "complete"
    worker: int = 0
    claim_delay: int = 5
    duration: int = 100
    error_type: str = "Flaky"
    error_note: str = ""
    traceback: str = ""
    result: str | None = "1"
    exit_code: int | None = None
    status_line: str | None = None
    progress_steps: int = 1
    stubborn: bool = False
    output: tuple[tuple[str, str], ...] = ()
    warnings: tuple[tuple[str, str, int], ...] = ()


COMPLETE = Fate()


@dataclass(frozen=True)
class Plan:
    """One submission, everything about it decided up front.

    Attributes:
        jobs: the submission's jobs.
        fates: per ``(job id, attempt)``, what its worker does (missing: :data:`COMPLETE`).
        submission_id: its id.
        at: when it is submitted, in ms after the simulation's start.
        cancels: ``(ms after its submit, job id or None for all, mode)``.
        deletes: ``(ms after its submit, job id or None for all)``.
        ticks: extra ticks, in ms after its submit.
        give_up_at: when the operator cancels whatever is left (ms after its submit).
        submitted_by / labels: the submit command's.
    """

    jobs: tuple[JobSpec, ...]
    fates: Mapping[tuple[str, int], Fate] = field(default_factory=dict)
    submission_id: str = "sub-1"
    at: int = 0
    cancels: tuple[tuple[int, str | None, CancelMode], ...] = ()
    deletes: tuple[tuple[int, str | None], ...] = ()
    ticks: tuple[int, ...] = ()
    give_up_at: int | None = None
    submitted_by: str = ""
    labels: tuple[tuple[str, str], ...] = ()


@dataclass
class Run:
    """One worker running one attempt."""

    ref: AttemptRef
    fate: Fate
    active: bool = True  # sends reports
    heartbeating: bool = True  # listed in its worker's heartbeats


@dataclass
class Workload:
    """What a simulation produced.

    Attributes:
        events: every event, in the order the scheduler decided them.
        heartbeats: the workers' own heartbeats (keyed by worker id), in time order.
        states: the final state of every submission (the decider's own fold).
        ledgers: the final state of every idempotency key's and concurrency limit's ledger.
    """

    events: list[Event] = field(default_factory=list)
    heartbeats: list[Heartbeat] = field(default_factory=list)
    states: dict[str, SubmissionState] = field(default_factory=dict)
    ledgers: dict[str, SubmissionState] = field(default_factory=dict)


class Simulation:
    """Plays plans through the pure core until nothing is left to happen.

    Args:
        plans: the submissions.
        policy: the scheduler's policy (leases, kill grace, progress interval).
        workers: the workers' ids.
        start_ms: the clock at the start.
        heartbeat_ms: how often workers heartbeat the attempts they run (default: a quarter
            of the lease).
        worker_heartbeat_ms: how often each worker's own heartbeat is recorded in
            :attr:`Workload.heartbeats` (``None``: never).
        completed_keys: idempotency keys completed before the start (key -> the job's ref).
        trip: the ms a report takes to reach the scheduler (default: none).
        stamp: whether workers stamp their reports' ``sent_at`` with their clock.
        max_steps: the most actions a run may take (``None``: no bound).
        ledger_trip: the ms a record between a submission and a ledger takes (default: 2).
        queues: the queues' settings (paused, limits), as every partition has them.
    """

    def __init__(
        self,
        plans: Iterable[Plan],
        *,
        policy: Policy | None = None,
        workers: Sequence[str] = ("w-1", "w-2", "w-3"),
        start_ms: int = EPOCH_MS,
        heartbeat_ms: int | None = None,
        worker_heartbeat_ms: int | None = None,
        completed_keys: Mapping[str, str] | None = None,
        trip: Callable[[], int] | None = None,
        stamp: bool = True,
        max_steps: int | None = None,
        ledger_trip: Callable[[], int] | None = None,
        queues: Mapping[str, QueueConfig] | None = None,
    ) -> None:
        self.plans = {plan.submission_id: plan for plan in plans}
        self.policy = policy if policy is not None else Policy()
        self.workers = tuple(workers)
        self.start_ms = start_ms
        self.now = start_ms
        self.heartbeat_ms = heartbeat_ms or max(1, self.policy.lease_ms // 4)
        self.worker_heartbeat_ms = worker_heartbeat_ms
        self.completed_keys: Mapping[str, str] = completed_keys or {}
        self.trip = trip
        self.stamp = stamp
        self.max_steps = max_steps
        self.out = Workload()
        self.agenda: list[tuple[int, int, Callable[[int], None]]] = []
        self.order = itertools.count()
        # per submission, its next deadline; the heap may hold outdated entries
        self.deadlines: dict[str, int] = {}
        self.due: list[tuple[int, str]] = []
        self.runs: dict[tuple[str, str, int, str], Run] = {}
        self.live: dict[tuple[str, str, int, str], Run] = {}  # the runs still active
        # (submission, job, attempt, worker) that another worker took the attempt over from
        self.fenced: set[tuple[str, str, int, str]] = set()
        self.steps = 0
        self.ledger_trip = ledger_trip
        self.queues: Mapping[str, QueueConfig] = queues or {}
        # (from, to) -> when the lane's last record arrives: records of a lane keep their order
        self._lanes: dict[tuple[str, str], int] = {}
        self._next_record = start_ms
        for key, by in self.completed_keys.items():
            ledger = key_ledger_id(key)
            self.out.ledgers[ledger] = SubmissionState(
                submission_id=ledger, accepted=True, key_ledger=KeyLedger(key, completed_by=by)
            )

    # ---------------------------------------------------------------- the clock

    def at(self, t: int, action: Callable[[int], None]) -> None:
        """Runs ``action(now)`` at absolute time ``t`` (or later, if the clock is past it)."""
        heapq.heappush(self.agenda, (t, next(self.order), action))

    def send(self, t: int, sid: str, report: Input) -> None:
        """A worker sends ``report`` about ``sid`` at ``t``; it reaches the scheduler after
        its trip."""
        if self.stamp:
            report = _stamped(report, t)
        delay = self.trip() if self.trip is not None else 0
        self.at(t + delay, partial(self.deliver, sid, report))

    def run(self) -> Workload:
        """Plays every plan until nothing is left to happen; returns what was decided."""
        for sid, plan in self.plans.items():
            begin = self.start_ms + plan.at
            submit = SubmitJobs(
                f"{sid}:submit", sid, plan.jobs, plan.submitted_by, plan.labels, issued_at=begin
            )
            self.at(begin, partial(self.decide, sid, submit))
            for when, job_id, mode in plan.cancels:
                cancel = CancelJobs(f"{sid}:cancel-{when}", sid, job_id, mode, requested_by="user")
                self.at(begin + when, partial(self.decide, sid, cancel))
            for when, job_id in plan.deletes:
                delete = DeleteJobs(f"{sid}:delete-{when}", sid, job_id, requested_by="user")
                self.at(begin + when, partial(self.decide, sid, delete))
            for when in plan.ticks:
                self.at(begin + when, partial(self.decide, sid, Tick()))
            if plan.give_up_at is not None:
                give_up = CancelJobs(f"{sid}:give-up", sid, None, reason="giving up")
                self.at(begin + plan.give_up_at, partial(self.decide, sid, give_up))
        self.at(self.start_ms + self.heartbeat_ms, self.heartbeats)
        while True:
            self.steps += 1
            if self.max_steps is not None and self.steps > self.max_steps:
                raise SimulationDoesNotSettle(f"still deciding after {self.max_steps} steps")
            due = self._first_due()
            upcoming = self.agenda[0][0] if self.agenda else None
            if due is not None and (upcoming is None or due[0] <= upcoming):
                heapq.heappop(self.due)
                self.decide(due[1], Tick(), max(due[0], self.now))
                continue
            if upcoming is None:
                break
            when, _, action = heapq.heappop(self.agenda)
            action(max(when, self.now))
        self._record_heartbeats(self.now, force=True)
        return self.out

    def _first_due(self) -> tuple[int, str] | None:
        while self.due:
            when, sid = self.due[0]
            if self.deadlines.get(sid) == when:
                return when, sid
            heapq.heappop(self.due)
        return None

    # ---------------------------------------------------------------- the scheduler side

    def state(self, sid: str) -> SubmissionState | None:
        """The scheduler's state of a submission (or of a key's ledger)."""
        return (self.out.ledgers if _is_ledger(sid) else self.out.states).get(sid)

    def apply(self, sid: str, given: Input, now: int) -> tuple[list[Event], list[Effect]]:
        """Decides ``given`` for ``sid`` at ``now``; returns the events and the effects."""
        outcome = step(
            self.state(sid),
            given,
            now,
            policy=self.policy,
            completed_keys=self.completed_keys,
            queues=self.queues,
        )
        if outcome.state is not None:
            (self.out.ledgers if _is_ledger(sid) else self.out.states)[sid] = outcome.state
        self.out.events.extend(outcome.events)
        return list(outcome.events), list(outcome.effects)

    def decide(self, sid: str, given: Input, now: int) -> None:
        """Decides an input and acts on its effects, as the scheduler's shell does."""
        self.now = max(self.now, now)
        now = self.now
        events, effects = self.apply(sid, given, now)
        for event in events:
            body = event.body
            if isinstance(body, JobAssigned) and body.previous_worker_id:
                self.fenced.add((sid, event.job_id, body.attempt, body.previous_worker_id))
        self.reschedule(sid)
        for effect in effects:
            if isinstance(effect, Dispatch):
                self.at(now + 1, partial(self.receive, effect))
            elif isinstance(effect, Control):
                self.at(now + 5, partial(self.kill, effect))
            else:
                delay = self.ledger_trip() if self.ledger_trip is not None else 2
                lane = (sid, effect.submission_id)
                arrives = max(now + delay, self._lanes.get(lane, 0))
                self._lanes[lane] = arrives
                self.at(arrives, partial(self.decide, effect.submission_id, effect))

    def reschedule(self, sid: str) -> None:
        """Notes when ``sid`` next needs a ``Tick`` (after its state changed)."""
        state = self.state(sid)
        due = next_deadline(state, self.policy) if state is not None else None
        if due is None:
            self.deadlines.pop(sid, None)
        elif self.deadlines.get(sid) != due:
            self.deadlines[sid] = due
            heapq.heappush(self.due, (due, sid))

    def deliver(self, sid: str, report: Input, now: int) -> None:
        """A worker's report reaches the scheduler."""
        self.decide(sid, report, now)

    def unfinished(self) -> bool:
        """Whether a plan's submission has not been submitted or has not ended yet."""
        for sid in self.plans:
            state = self.out.states.get(sid)
            if state is None or not state.done:
                return True
        return False

    # ---------------------------------------------------------------- the workers

    def receive(self, dispatch: Dispatch, now: int) -> None:
        """A worker reads a dispatch record."""
        plan = self.plans.get(dispatch.submission_id)
        fate = (plan.fates if plan else {}).get((dispatch.job_id, dispatch.attempt), COMPLETE)
        if fate.kind == "unclaimed":
            return
        worker = self.workers[fate.worker % len(self.workers)]
        self.start_run(dispatch, worker, fate, now + fate.claim_delay)

    def start_run(self, dispatch: Dispatch, worker: str, fate: Fate, t: int) -> None:
        """``worker`` claims the dispatch at ``t`` and runs it as ``fate`` says."""
        sid = dispatch.submission_id
        ref = AttemptRef(sid, dispatch.job_id, dispatch.attempt, dispatch.dispatch_id, worker)
        run = Run(ref, fate)
        self.runs[(sid, ref.job_id, ref.attempt, worker)] = run
        self.live[(sid, ref.job_id, ref.attempt, worker)] = run
        number = self.workers.index(worker) + 1
        self.report(run, t, Claimed(ref, host=f"host-{number}", pid=1000 + number))
        t += 2
        self.report(run, t, Started(ref, pid=4000 + dispatch.attempt))
        for stream, text in fate.output:
            self.report(run, t + 1, OutputReported(ref, stream, text))
        steps = fate.progress_steps
        for i in range(1, steps + 1):
            when = t + fate.duration * i // (steps + 1)
            self.report(run, when, ProgressReported(ref, i / (steps + 1), 1.0, f"step {i}"))
        middle = t + fate.duration // 2
        for type_, note, severity in fate.warnings:
            self.report(run, middle, ExceptionReported(ref, type_, note, severity))
        end = t + fate.duration
        kind = fate.kind
        if kind in ("complete", "duplicate"):
            done = Finished(
                ref,
                Outcome.COMPLETED,
                result=fate.result,
                exit_code=fate.exit_code,
                progress=1.0,
                status_line=fate.status_line,
            )
            self.report(run, end, done)
        elif kind == "fail":
            failed = Finished(
                ref,
                Outcome.FAILED,
                exit_code=fate.exit_code,
                error_type=fate.error_type,
                error_note=fate.error_note,
                traceback=fate.traceback,
            )
            self.report(run, end, failed)
        elif kind == "fatal":
            note = fate.error_note or "fatal"
            self.report(run, end, ExceptionReported(ref, fate.error_type, note, 0, fate.traceback))
        elif kind == "warn":
            self.report(run, middle, ExceptionReported(ref, "Slow", "warn", 3))
            self.report(run, end, Finished(ref, Outcome.COMPLETED))
        elif kind == "crash":
            self.at(end, lambda _t: self.stop(run, heartbeats=False))
        elif kind == "leave":
            self.report(run, end, WorkerLeft(worker, (ref,)), last=True)
        other = self.workers[(fate.worker + 1) % len(self.workers)]
        follow = replace(fate, kind="complete", stubborn=False, warnings=(), output=())
        if kind == "takeover":
            # frozen midway; claimed again once the holder missed two heartbeats (before its
            # lease runs out)
            self.at(middle, lambda _t: self.stop(run, heartbeats=False))
            again = middle + self.policy.lease_ms * 7 // 10
            self.at(again, lambda now: self.start_run(dispatch, other, follow, now))
            if fate.stubborn:
                late = Finished(ref, Outcome.COMPLETED, result=fate.result)
                self.at(again + 50, lambda now: self.send(now, sid, late))
        elif kind == "duplicate":
            self.at(middle, lambda now: self.start_run(dispatch, other, follow, now))

    def report(self, run: Run, t: int, report: Input, *, last: bool = False) -> None:
        """``run``'s worker sends ``report`` at ``t`` if it is still running then."""

        def act(now: int) -> None:
            if not run.active:
                return
            if (
                last
                or isinstance(report, Finished)
                or (isinstance(report, ExceptionReported) and report.severity == 0)
            ):
                self.stop(run, heartbeats=False)
            self.send(now, run.ref.submission_id, report)

        self.at(t, act)

    def stop(self, run: Run, *, heartbeats: bool) -> None:
        """The run sends nothing more (and, unless ``heartbeats``, is not heartbeated)."""
        run.active = False
        run.heartbeating = heartbeats
        ref = run.ref
        self.live.pop((ref.submission_id, ref.job_id, ref.attempt, ref.worker_id), None)

    def kill(self, control: Control, now: int) -> None:
        """A kill reaches the worker: it stops the attempt and confirms (unless stubborn)."""
        key = (control.submission_id, control.job_id, control.attempt, control.worker_id)
        run = self.runs.get(key)
        if run is None or not run.active or run.fate.stubborn:
            return
        self.stop(run, heartbeats=False)
        self.send(now + 5, run.ref.submission_id, Finished(run.ref, Outcome.CANCELED))

    def heartbeats(self, now: int) -> None:
        """Each worker heartbeats the attempts it runs, per submission, and goes on while a
        submission is unfinished."""
        for worker in self.workers:
            by_submission: dict[str, list[AttemptRef]] = {}
            for (sid, _, _, w), run in self.live.items():
                if w == worker and run.heartbeating:
                    by_submission.setdefault(sid, []).append(run.ref)
            for sid, refs in by_submission.items():
                beat = Heartbeat(
                    worker, "default", attempts=tuple(refs), lease_ms=self.policy.lease_ms
                )
                self.send(now, sid, beat)
        self._record_heartbeats(now)
        if self.unfinished():
            self.at(now + self.heartbeat_ms, self.heartbeats)

    def _record_heartbeats(self, now: int, *, force: bool = False) -> None:
        every = self.worker_heartbeat_ms
        if every is None or (now < self._next_record and not force):
            return
        for number, worker in enumerate(self.workers, start=1):
            used = sum(1 for (_, _, _, w) in self.live if w == worker)
            self.out.heartbeats.append(
                Heartbeat(
                    worker_id=worker,
                    queue="default",
                    host=f"host-{number}",
                    pid=1000 + number,
                    slots_total=4,
                    slots_used=min(used, 4),
                    lease_ms=self.policy.lease_ms,
                    sent_at=now,
                )
            )
        self._next_record = now + every


def _is_ledger(sid: str) -> bool:
    return is_key_ledger(sid) or is_slot_ledger(sid)


def _stamped(report: Input, t: int) -> Input:
    """``report`` with the worker's clock ``t`` as its ``sent_at`` (if it has none yet)."""
    match report:
        case (
            Claimed()
            | Started()
            | ProgressReported()
            | OutputReported()
            | ExceptionReported()
            | Finished()
            | Heartbeat()
            | WorkerLeft()
        ) if report.sent_at == 0:
            return replace(report, sent_at=t)
        case _:
            return report


def random_trip(rng: random.Random, low: int, high: int) -> Callable[[], int]:
    """A report's trip to the scheduler: ``low`` to ``high`` ms, drawn from ``rng``."""
    return lambda: rng.randint(low, high)
