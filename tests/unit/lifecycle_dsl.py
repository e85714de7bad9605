"""A given / when / then language for the lifecycle decider.

A test reads like a row of the lifecycle table in DESIGN.md §3::

    (
        given(submit(job("a")), claimed("a"), started("a"))
        .when(finished("a"), at=500)
        .then(on("a", JobCompleted(attempt=1)), SubmissionCompleted)
    )

Every input goes through the same steps a scheduler takes: ``decide`` on the current state,
``effects`` of each event against the state just before it, ``evolve`` of each event, then
``observe`` for lease renewals and held-back progress. Each step also checks what must hold
for any input: ``decide`` leaves its state untouched and sequence numbers run on without a
gap.

Times are milliseconds after :data:`T0` (``at=500`` is ``T0 + 500``); the clock never runs
backwards. An expected event is a body (compared with ``==``), a body class (any event of
that type), or either of those bound to a job with :func:`on`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from engine.lifecycle.decide import (
    DEFAULT_POLICY,
    Policy,
    decide,
    dispatch_id,
    event_id,
    next_deadline,
    observe,
    stale_reply,
    step,
)
from engine.lifecycle.effects import Effect, effects
from engine.lifecycle.evolve import evolve
from engine.lifecycle.records import (
    AttemptRef,
    CancelJobs,
    CancelMode,
    Claimed,
    CommandRejected,
    DeleteJobs,
    Event,
    EventBody,
    ExceptionReported,
    Finished,
    Heartbeat,
    Input,
    JobSpec,
    JobStatus,
    Outcome,
    OutputReported,
    ProgressReported,
    RetryJob,
    RetryPolicy,
    Started,
    SubmitJobs,
    Tick,
    WorkerLeft,
)
from engine.lifecycle.state import JobState, QueueConfig, SubmissionState

SUB = "sub-1"
T0 = 1_700_000_000_000
#: Scheduler timings of the examples: short enough to read, distinct enough to tell apart.
POLICY = Policy(lease_ms=1_000, kill_grace_ms=2_000, progress_interval_ms=200)


# --------------------------------------------------------------------------- building inputs


def job(
    job_id: str,
    *,
    after: Iterable[str] = (),
    parent: str | None = None,
    retries: int = 0,
    backoff_ms: int = 0,
    jitter: float = 0.0,
    retry_on: tuple[str, ...] = (),
    **fields: Any,
) -> JobSpec:
    """A task job named ``job_id``; ``after`` lists its dependencies, ``retries`` its retries."""
    retry = RetryPolicy(
        max_attempts=retries + 1, backoff_ms=backoff_ms, jitter=jitter, retry_on=retry_on
    )
    fields.setdefault("task", "tasks.work")
    return JobSpec(job_id=job_id, depends_on=tuple(after), parent=parent, retry=retry, **fields)


def submit(*jobs: JobSpec, command_id: str = "submit-1", submission_id: str = SUB) -> SubmitJobs:
    return SubmitJobs(
        command_id=command_id, submission_id=submission_id, jobs=jobs, submitted_by="alice"
    )


def cancel(
    job_id: str | None = None,
    *,
    mode: CancelMode = CancelMode.KILL,
    reason: str = "",
    command_id: str = "cancel-1",
    submission_id: str = SUB,
) -> CancelJobs:
    return CancelJobs(
        command_id=command_id,
        submission_id=submission_id,
        job_id=job_id,
        mode=mode,
        reason=reason,
        requested_by="bob",
    )


def retry_now(job_id: str, *, command_id: str = "retry-1", submission_id: str = SUB) -> RetryJob:
    return RetryJob(command_id=command_id, submission_id=submission_id, job_id=job_id)


def delete(
    job_id: str | None = None,
    *,
    force: bool = False,
    command_id: str = "delete-1",
    submission_id: str = SUB,
) -> DeleteJobs:
    return DeleteJobs(
        command_id=command_id,
        submission_id=submission_id,
        job_id=job_id,
        force=force,
        requested_by="bob",
    )


def ref(job_id: str, attempt: int = 1, worker: str = "w1", submission_id: str = SUB) -> AttemptRef:
    """The attempt ``attempt`` of ``job_id`` as worker ``worker`` runs it."""
    return AttemptRef(
        submission_id=submission_id,
        job_id=job_id,
        attempt=attempt,
        dispatch_id=dispatch_id(submission_id, job_id, attempt),
        worker_id=worker,
    )


def claimed(job_id: str, attempt: int = 1, worker: str = "w1") -> Claimed:
    return Claimed(ref(job_id, attempt, worker), host=f"{worker}.local")


def started(job_id: str, attempt: int = 1, worker: str = "w1") -> Started:
    return Started(ref(job_id, attempt, worker), pid=4242)


def progress(
    job_id: str,
    value: float | None = None,
    *,
    total: float | None = None,
    line: str | None = None,
    attempt: int = 1,
    worker: str = "w1",
) -> ProgressReported:
    return ProgressReported(ref(job_id, attempt, worker), value, total, line)


def output(
    job_id: str, chunk: str, *, stream: str = "stdout", attempt: int = 1, worker: str = "w1"
) -> OutputReported:
    return OutputReported(ref(job_id, attempt, worker), stream, chunk)


def exception(
    job_id: str,
    type_: str = "Boom",
    note: str = "it broke",
    *,
    severity: int = 0,
    attempt: int = 1,
    worker: str = "w1",
) -> ExceptionReported:
    return ExceptionReported(ref(job_id, attempt, worker), type_, note, severity)


def finished(
    job_id: str,
    outcome: Outcome = Outcome.COMPLETED,
    *,
    attempt: int = 1,
    worker: str = "w1",
    **fields: Any,
) -> Finished:
    return Finished(ref(job_id, attempt, worker), outcome, **fields)


def failed(
    job_id: str, error_type: str = "ValueError", *, attempt: int = 1, worker: str = "w1"
) -> Finished:
    return finished(
        job_id,
        Outcome.FAILED,
        attempt=attempt,
        worker=worker,
        error_type=error_type,
        error_note="bad input",
    )


def heartbeat(worker: str, *attempts: AttemptRef) -> Heartbeat:
    return Heartbeat(worker_id=worker, queue="default", attempts=attempts)


def worker_left(worker: str, *unfinished: AttemptRef) -> WorkerLeft:
    return WorkerLeft(worker_id=worker, unfinished=unfinished)


def tick() -> Tick:
    return Tick()


def running(job_id: str, attempt: int = 1, worker: str = "w1") -> tuple[Claimed, Started]:
    """The reports that take a PENDING attempt to RUNNING."""
    return claimed(job_id, attempt, worker), started(job_id, attempt, worker)


def succeeded(job_id: str, attempt: int = 1, worker: str = "w1") -> tuple[Input, ...]:
    """The reports of an attempt that runs and completes."""
    return (*running(job_id, attempt, worker), finished(job_id, attempt=attempt, worker=worker))


# --------------------------------------------------------------------------- steps and matchers


@dataclass(frozen=True)
class At:
    """An input decided at ``ms`` after :data:`T0`."""

    ms: int
    input: Input


def at(ms: int, *inputs: Input) -> tuple[At, ...]:
    """Inputs decided at ``ms`` after :data:`T0` (for :func:`given`)."""
    return tuple(At(ms, given) for given in inputs)


@dataclass(frozen=True)
class Fact:
    """An event folded in as it is, without a decision (a state ``decide`` did not make)."""

    job_id: str
    body: EventBody


@dataclass(frozen=True)
class On:
    """An expected event of one job."""

    job_id: str
    body: EventBody | type[EventBody]


def on(job_id: str, body: EventBody | type[EventBody]) -> On:
    return On(job_id, body)


Expected = EventBody | type[EventBody] | On
Step = Input | At | Fact | tuple["Step", ...]


def _matches(expected: Expected, event: Event) -> bool:
    if isinstance(expected, On):
        return event.job_id == expected.job_id and _matches(expected.body, event)
    if isinstance(expected, type):
        return isinstance(event.body, expected)
    return event.body == expected


def folded(events: Iterable[Event]) -> SubmissionState:
    """The state the events add up to, folded from nothing as a rebuild folds them."""
    state: SubmissionState | None = None
    for event in events:
        state = evolve(state, event)
    assert state is not None
    return state


def describe(events: Iterable[Event]) -> str:
    return "\n".join(f"  {e.seq:>3} {e.job_id or '-':<8} {e.body!r}" for e in events) or "  (none)"


# --------------------------------------------------------------------------- the scenario


class Scenario:
    """A submission driven input by input like the scheduler drives it."""

    def __init__(
        self,
        *,
        policy: Policy = POLICY,
        completed_keys: Mapping[str, str] | None = None,
        submission_id: str = SUB,
        queues: Mapping[str, QueueConfig] | None = None,
    ) -> None:
        self.policy = policy
        self.completed_keys: Mapping[str, str] = completed_keys or {}
        self.queues: dict[str, QueueConfig] = dict(queues or {})
        self.submission_id = submission_id
        self.state: SubmissionState | None = None
        self.now = T0
        self.history: list[Event] = []
        self.last: list[Event] = []
        self.last_effects: list[Effect] = []
        self.all_effects: list[Effect] = []

    # ---------------------------------------------------------------- driving

    def apply(self, given: Input, now: int | None = None) -> list[Event]:
        """Decides ``given`` at ``now`` (absolute ms) and folds the outcome in."""
        if now is not None:
            assert now >= self.now, f"the clock runs forwards ({now} < {self.now})"
            self.now = now
        before = self._fingerprint()
        stepped = step(
            None if self.state is None else self.state.copy(),
            given,
            self.now,
            policy=self.policy,
            completed_keys=self.completed_keys,
            queues=self.queues,
        )
        events = decide(
            self.state,
            given,
            self.now,
            policy=self.policy,
            completed_keys=self.completed_keys,
            queues=self.queues,
        )
        assert self._fingerprint() == before, "decide changed the state it was given"
        # a stale claim is answered with a kill, without an event
        produced: list[Effect] = list(stale_reply(self.state, given, self.now, self.policy))
        for event in events:
            assert event.timestamp == self.now
            if event.seq == 0:
                # a rejection for a submission that does not exist, outside its sequence
                assert isinstance(event.body, CommandRejected), event
                assert self.state is None or not self.state.accepted, event
            else:
                expected_seq = (self.state.seq if self.state is not None else 0) + 1
                assert event.seq == expected_seq, f"seq {event.seq}, expected {expected_seq}"
                assert event.event_id == event_id(event.submission_id, event.seq)
            # a rejection outside the sequence may call for a record too
            produced += effects(
                self.state or SubmissionState(submission_id=event.submission_id),
                event,
                lease_ms=self.policy.lease_ms,
                kill_grace_ms=self.policy.kill_grace_ms,
            )
            self.state = evolve(self.state, event)
            self.history.append(event)
        if self.state is not None:
            observe(self.state, given, self.now, self.policy)
        # the scheduler's one-pass step must agree with decide + effects + evolve + observe
        assert stepped.events == events
        assert stepped.effects == produced
        if stepped.state is not None and self.state is not None:
            assert stepped.state == self.state
            assert _transients(stepped.state) == _transients(self.state)
        self.last = events
        self.last_effects = produced
        self.all_effects += produced
        return events

    def fold(self, fact: Fact) -> None:
        """Folds an event that no decision made (to set up an unusual state)."""
        seq = (self.state.seq if self.state is not None else 0) + 1
        event = Event(
            event_id=event_id(self.submission_id, seq),
            submission_id=self.submission_id,
            job_id=fact.job_id,
            seq=seq,
            timestamp=self.now,
            body=fact.body,
        )
        self.state = evolve(self.state, event)
        self.history.append(event)

    def step(self, *steps: Step) -> Scenario:
        for item in steps:
            if isinstance(item, tuple):
                self.step(*item)
            elif isinstance(item, At):
                self.apply(item.input, T0 + item.ms)
            elif isinstance(item, Fact):
                self.fold(item)
            else:
                self.apply(item)
        return self

    def _fingerprint(self) -> tuple[Any, ...]:
        state = self.state
        if state is None:
            return ()
        return (
            state.seq,
            state.outcome,
            state.deleted,
            tuple((k, id(v), v) for k, v in state.jobs.items()),
            tuple(state.dependents.items()),
            tuple(state.children.items()),
        )

    # ---------------------------------------------------------------- the sentences

    def when(self, given: Input, *, at: int | None = None) -> Scenario:
        """Decides ``given`` (at ``at`` ms after T0, or at the current time)."""
        self.apply(given, None if at is None else T0 + at)
        return self

    def then(self, *expected: Expected) -> Scenario:
        """The last input produced exactly these events, in this order."""
        ok = len(expected) == len(self.last) and all(
            _matches(want, got) for want, got in zip(expected, self.last, strict=True)
        )
        assert ok, (
            "expected:\n"
            + "\n".join(f"  {want!r}" for want in expected)
            + "\ngot:\n"
            + describe(self.last)
        )
        return self

    def then_nothing(self) -> Scenario:
        return self.then()

    def then_includes(self, *expected: Expected) -> Scenario:
        """The last input produced these events (in this order), among others."""
        remaining = iter(self.last)
        for want in expected:
            assert any(_matches(want, got) for got in remaining), (
                f"no {want!r} (in order) among:\n" + describe(self.last)
            )
        return self

    def then_rejected(self, code: str, *, job_id: str = "") -> Scenario:
        """The last input was a command that was rejected with ``code``, nothing else."""
        assert len(self.last) == 1, describe(self.last)
        body = self.last[0].body
        assert isinstance(body, CommandRejected), describe(self.last)
        assert body.code == code, f"rejected with {body.code!r}, expected {code!r}"
        assert body.reason
        assert self.last[0].job_id == job_id
        return self

    def status(self, **statuses: JobStatus) -> Scenario:
        """Jobs are in these statuses (keyword per job id)."""
        for job_id, want in statuses.items():
            got = self.job(job_id).status
            assert got is want, f"{job_id} is {got}, expected {want}"
        return self

    def effects_are(self, *expected: Effect) -> Scenario:
        assert self.last_effects == list(expected), (
            f"expected effects {expected!r}, got {self.last_effects!r}"
        )
        return self

    # ---------------------------------------------------------------- looking

    def job(self, job_id: str) -> JobState:
        assert self.state is not None
        return self.state.jobs[job_id]

    def deadline(self) -> int | None:
        assert self.state is not None
        return next_deadline(self.state, self.policy)

    def events_of(self, job_id: str) -> list[Event]:
        return [e for e in self.history if e.job_id == job_id]

    def sequenced(self) -> list[Event]:
        """The submission's own events (rejections of a submission that did not exist left out)."""
        return [e for e in self.history if e.seq > 0]

    def replayed(self) -> SubmissionState:
        """The state folded from scratch out of every event so far."""
        state: SubmissionState | None = None
        for event in self.history:
            state = evolve(state, event)
        assert state is not None
        return state


def given(
    *steps: Step,
    policy: Policy = POLICY,
    completed_keys: Mapping[str, str] | None = None,
    queues: Mapping[str, QueueConfig] | None = None,
    submission_id: str = SUB,
) -> Scenario:
    """A submission that went through ``steps`` (inputs, :func:`at` groups, facts)."""
    return Scenario(
        policy=policy, completed_keys=completed_keys, queues=queues, submission_id=submission_id
    ).step(*steps)


def with_policy(**changes: Any) -> Policy:
    return replace(POLICY, **changes)


__all__ = [
    "DEFAULT_POLICY",
    "POLICY",
    "SUB",
    "T0",
    "At",
    "Fact",
    "On",
    "Scenario",
    "at",
    "cancel",
    "claimed",
    "delete",
    "describe",
    "exception",
    "failed",
    "finished",
    "given",
    "heartbeat",
    "job",
    "on",
    "output",
    "progress",
    "ref",
    "retry_now",
    "running",
    "started",
    "submit",
    "succeeded",
    "tick",
    "with_policy",
    "worker_left",
]


def _transients(state: SubmissionState) -> dict[str, tuple[object, object]]:
    """The bookkeeping equality ignores (leases, held progress), job by job."""
    return {job_id: (job.lease_until, job.held_progress) for job_id, job in state.jobs.items()}
