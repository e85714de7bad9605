"""A consistent, realistic event log made by the real decider, for tests, benchmarks and demos.

:func:`simulate` plays many submissions at once through :func:`engine.lifecycle.decide.step`
on a simulated clock (idempotency keys go through their ledgers), the way a scheduler would
see them: clients submit and cancel, workers claim, start, report progress, output and
exceptions, and finish. The mix covers every terminal status: completed, completed after a
retry, failed after retries, canceled (waiting and running), abandoned (a dependency failed),
skipped (idempotency key already completed), sub-job trees, command jobs with exit codes,
run timeouts, duplicate claims of a live attempt, takeovers from a silent worker, rejected
commands and deletions. Worker heartbeats come along for the ``workers`` table.
Workers stamp their reports a few ms before the scheduler decides on them (the trip), so
executions are measured on the worker's clock as in a live log.
"""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from typing import Any

from engine.lifecycle.decide import dispatch_id, step
from engine.lifecycle.records import (
    AttemptRef,
    AttemptReport,
    CancelJobs,
    Claimed,
    ClaimIdempotencyKey,
    DeleteJobs,
    Event,
    ExceptionReported,
    Finished,
    Heartbeat,
    IdempotencyKeyAnswer,
    Input,
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
    is_key_ledger,
)
from engine.lifecycle.state import SubmissionState

#: The clock of a simulation starts here (2024-01-01T00:00:00Z) unless told otherwise.
EPOCH_MS = 1_704_067_200_000

Step = tuple[int, Input]
Story = Generator[Step, None, None]


@dataclass
class Workload:
    """What :func:`simulate` produced.

    Attributes:
        events: every event, in the order the scheduler decided them.
        heartbeats: worker heartbeats, in time order.
        states: the final state of every submission (the decider's own fold).
        ledgers: the final state of every idempotency key's ledger.
    """

    events: list[Event] = field(default_factory=list)
    heartbeats: list[Heartbeat] = field(default_factory=list)
    states: dict[str, SubmissionState] = field(default_factory=dict)
    ledgers: dict[str, SubmissionState] = field(default_factory=dict)


class _Simulation:
    def __init__(self, seed: int, start_ms: int, workers: int) -> None:
        self.rng = random.Random(seed)
        # The reports' trip to the scheduler: a generator of its own, so the rest of a
        # seed's log does not change with it.
        self.trips = random.Random(seed + 1)
        self.now = start_ms
        self.workers = [f"w-{i + 1}" for i in range(workers)]
        self.out = Workload()
        self.completed_keys: dict[str, str] = {}

    def state(self, sid: str) -> SubmissionState | None:
        return (self.out.ledgers if is_key_ledger(sid) else self.out.states).get(sid)

    def status(self, sid: str, job_id: str) -> JobStatus:
        state = self.out.states[sid]
        return state.jobs[job_id].status

    def attempt(self, sid: str, job_id: str) -> int:
        return self.out.states[sid].jobs[job_id].attempt

    def apply(self, sid: str, given: Input) -> None:
        if isinstance(given, AttemptReport) and given.sent_at == 0:
            # The worker stamped the report a little before the scheduler decided on it.
            given = replace(given, sent_at=self.now - self.trips.randrange(1, 40))
        outcome = step(self.state(sid), given, self.now, completed_keys=self.completed_keys)
        state = outcome.state
        for event in outcome.events:
            if event.name == "JobCompleted" and state is not None:
                key = state.jobs[event.job_id].spec.idempotency_key
                if key:
                    self.completed_keys.setdefault(key, f"{sid}/{event.job_id}")
        if state is not None:
            (self.out.ledgers if is_key_ledger(sid) else self.out.states)[sid] = state
        self.out.events.extend(outcome.events)
        for effect in outcome.effects:
            # idempotency-key traffic between a job's submission and the key's ledger:
            # decided at once, as if both partitions had one scheduler
            if isinstance(
                effect, ClaimIdempotencyKey | ReleaseIdempotencyKey | IdempotencyKeyAnswer
            ):
                self.apply(effect.submission_id, effect)

    def worker(self) -> str:
        return self.rng.choice(self.workers)


def simulate(
    submissions: int,
    *,
    seed: int = 7,
    start_ms: int = EPOCH_MS,
    workers: int = 4,
    heartbeat_every_ms: int = 5_000,
) -> Workload:
    """Plays ``submissions`` submissions of mixed outcome, interleaved on one clock.

    Args:
        submissions: how many submissions to play (stories are drawn in a fixed rotation).
        seed: seeds every choice, so the same arguments give the same log.
        start_ms: the simulated clock at the start.
        workers: how many workers claim attempts.
        heartbeat_every_ms: simulated interval of each worker's heartbeat.

    Returns:
        The events, heartbeats and final states.
    """
    sim = _Simulation(seed, start_ms, workers)
    # (due, tie-break, story, submission id, the input due then): a story's delay comes
    # before its input, and the story only goes on once that input was decided.
    queue: list[tuple[int, int, Story, str, Input | None]] = []
    spread = 50 * submissions + 1
    for index in range(submissions):
        make = _STORIES[index % len(_STORIES)]
        sid = f"sub-{seed}-{index:06d}"
        due = start_ms + sim.rng.randrange(0, spread)
        heapq.heappush(queue, (due, index, make(sim, sid), sid, None))
    next_beat = start_ms
    while queue:
        due, index, story, sid, given = heapq.heappop(queue)
        while next_beat <= due:
            _beat(sim, next_beat)
            next_beat += heartbeat_every_ms
        sim.now = max(sim.now, due)
        if given is not None:
            sim.apply(sid, given)
        try:
            delay, given = next(story)
        except StopIteration:
            continue
        heapq.heappush(queue, (sim.now + delay, index, story, sid, given))
    _beat(sim, max(next_beat, sim.now))
    return sim.out


def _beat(sim: _Simulation, at: int) -> None:
    for number, worker in enumerate(sim.workers):
        sim.out.heartbeats.append(
            Heartbeat(
                worker_id=worker,
                queue="default",
                host=f"host-{number + 1}",
                pid=1000 + number,
                slots_total=4,
                slots_used=sim.rng.randrange(0, 5),
                lease_ms=30_000,
                sent_at=at,
            )
        )


# --------------------------------------------------------------------------- building blocks


def _spec(job_id: str, task: str = "tasks.work", **fields: Any) -> JobSpec:
    return JobSpec(job_id=job_id, task=task, args=json.dumps({"args": [job_id]}), **fields)


def _submit(sid: str, *specs: JobSpec) -> SubmitJobs:
    return SubmitJobs(
        command_id=f"{sid}:submit",
        submission_id=sid,
        jobs=specs,
        submitted_by="alice",
        labels=(("team", "data"),),
    )


def _ref(sim: _Simulation, sid: str, job_id: str, worker: str) -> AttemptRef:
    attempt = sim.attempt(sid, job_id)
    return AttemptRef(sid, job_id, attempt, dispatch_id(sid, job_id, attempt), worker)


def _run(
    sim: _Simulation,
    sid: str,
    job_id: str,
    outcome: Outcome = Outcome.COMPLETED,
    *,
    work_ms: int = 400,
    **finish: Any,
) -> Story:
    """A worker claims, starts, reports progress and finishes the job's current attempt."""
    worker = sim.worker()
    ref = _ref(sim, sid, job_id, worker)
    yield sim.rng.randrange(5, 60), Claimed(ref, host=f"host-{worker[2:]}", pid=4000)
    yield sim.rng.randrange(1, 20), Started(ref, pid=4000 + sim.rng.randrange(100))
    yield work_ms // 2, ProgressReported(ref, 1.0, 2.0, "half way")
    yield (
        work_ms // 2 + sim.rng.randrange(0, work_ms),
        Finished(
            ref,
            outcome,
            progress=2.0,
            total=2.0,
            status_line="done",
            **finish,
        ),
    )


def _wait_retry(sim: _Simulation, sid: str, job_id: str) -> Story:
    """Ticks until the job's retry is dispatched."""
    state = sim.out.states[sid]
    job = state.jobs[job_id]
    if job.status is JobStatus.PENDING and job.dispatch_id is None:
        yield max(1, job.not_before - sim.now), Tick()


# --------------------------------------------------------------------------- stories


def _completed(sim: _Simulation, sid: str) -> Story:
    yield 0, _submit(sid, _spec("double", "tasks.double"))
    yield from _run(sim, sid, "double", result="42", work_ms=300 + sim.rng.randrange(500))


def _retried(sim: _Simulation, sid: str) -> Story:
    retry = RetryPolicy(max_attempts=3, backoff_ms=0, jitter=0.0)
    yield 0, _submit(sid, _spec("fetch", "tasks.fetch", retry=retry))
    yield from _run(
        sim,
        sid,
        "fetch",
        Outcome.FAILED,
        error_type="ConnectionError",
        error_note="connection reset by peer",
    )
    yield from _run(sim, sid, "fetch", result='"ok"')


def _failed_after_retries(sim: _Simulation, sid: str) -> Story:
    retry = RetryPolicy(max_attempts=3, backoff_ms=200, backoff_multiplier=2.0, jitter=0.0)
    yield 0, _submit(sid, _spec("train", "tasks.train", retry=retry))
    for attempt in range(1, 4):
        worker = sim.worker()
        ref = _ref(sim, sid, "train", worker)
        yield sim.rng.randrange(5, 40), Claimed(ref, host=f"host-{worker[2:]}")
        yield 3, Started(ref, pid=5000 + attempt)
        yield 100, ExceptionReported(ref, "ResourceWarning", "memory at 90%", severity=2)
        yield (
            150,
            ExceptionReported(
                ref,
                "MemoryError",
                f"out of memory on attempt {attempt}",
                severity=0,
                traceback="Traceback (most recent call last):\n  ...\nMemoryError",
            ),
        )
        yield from _wait_retry(sim, sid, "train")


def _canceled_running(sim: _Simulation, sid: str) -> Story:
    yield (
        0,
        _submit(
            sid,
            _spec("extract", "tasks.extract"),
            _spec("load", "tasks.load", depends_on=("extract",)),
        ),
    )
    worker = sim.worker()
    ref = _ref(sim, sid, "extract", worker)
    yield 10, Claimed(ref, host=f"host-{worker[2:]}")
    yield 5, Started(ref, pid=6000)
    yield 300, CancelJobs(f"{sid}:cancel", sid, "extract", reason="wrong input", requested_by="bob")
    yield 50, Finished(ref, Outcome.CANCELED)


def _canceled_waiting(sim: _Simulation, sid: str) -> Story:
    yield 0, _submit(sid, _spec("report", "tasks.report"))
    yield 5, CancelJobs(f"{sid}:cancel", sid, None, reason="not needed", requested_by="bob")
    yield 20, CancelJobs(f"{sid}:cancel-again", sid, "report", requested_by="bob")


def _abandoned(sim: _Simulation, sid: str) -> Story:
    yield (
        0,
        _submit(
            sid,
            _spec("a", "tasks.prepare"),
            _spec("b", "tasks.transform", depends_on=("a",)),
            _spec("c", "tasks.publish", depends_on=("b",)),
        ),
    )
    yield from _run(
        sim,
        sid,
        "a",
        Outcome.FAILED,
        error_type="ValueError",
        error_note="bad row 17",
        traceback="Traceback ...\nValueError: bad row 17",
    )


def _skipped(sim: _Simulation, sid: str) -> Story:
    yield 0, _submit(sid, _spec("snapshot", "tasks.snapshot", idempotency_key="snapshot-2024"))
    if sim.status(sid, "snapshot") is not JobStatus.SKIPPED:
        yield from _run(sim, sid, "snapshot", result="1")


def _tree(sim: _Simulation, sid: str) -> Story:
    yield (
        0,
        _submit(
            sid,
            _spec("render", "tasks.render"),
            _spec("frame-1", "tasks.frame", parent="render"),
            _spec("frame-2", "tasks.frame", parent="render"),
        ),
    )
    yield from _run(sim, sid, "frame-1", work_ms=200)
    yield from _run(sim, sid, "frame-2", work_ms=250)
    yield from _run(sim, sid, "render", work_ms=100)


def _command(sim: _Simulation, sid: str) -> Story:
    spec = JobSpec(job_id="sh", command=("sh", "-c", "exit 3"), queue="default")
    yield 0, _submit(sid, spec)
    worker = sim.worker()
    ref = _ref(sim, sid, "sh", worker)
    yield 10, Claimed(ref, host=f"host-{worker[2:]}")
    yield 2, Started(ref, pid=7000)
    yield 30, OutputReported(ref, "stdout", "starting\n")
    yield 10, OutputReported(ref, "stderr", "boom\n", offset=0)
    yield 40, Finished(ref, Outcome.FAILED, exit_code=3, error_note="exited with 3")
    yield 50, CancelJobs(f"{sid}:late-cancel", sid, "sh", requested_by="bob")
    yield 50, DeleteJobs(f"{sid}:delete", sid, "sh", requested_by="bob")


def _timed_out(sim: _Simulation, sid: str) -> Story:
    """The run timeout fires: no worker says when the attempt ended."""
    yield 0, _submit(sid, _spec("crunch", "tasks.crunch", timeout_ms=500))
    worker = sim.worker()
    ref = _ref(sim, sid, "crunch", worker)
    yield 10, Claimed(ref, host=f"host-{worker[2:]}")
    yield 3, Started(ref, pid=8000)
    yield 600, Tick()
    yield 100, Finished(ref, Outcome.COMPLETED, result="late")  # stale: already failed


def _duplicate_claim(sim: _Simulation, sid: str) -> Story:
    """A dispatch redelivered after a rebalance: a second worker claims a live attempt."""
    yield 0, _submit(sid, _spec("index", "tasks.index"))
    holder, other = sim.rng.sample(sim.workers, 2)
    ref = _ref(sim, sid, "index", holder)
    yield 10, Claimed(ref, host=f"host-{holder[2:]}")
    yield 4, Started(ref, pid=8100)
    yield 150, Claimed(replace(ref, worker_id=other), host=f"host-{other[2:]}")
    yield 250, Finished(ref, Outcome.COMPLETED, result="3")


def _taken_over(sim: _Simulation, sid: str) -> Story:
    """The holder went silent; another worker takes the attempt over and runs it again."""
    yield 0, _submit(sid, _spec("scan", "tasks.scan"))
    first, second = sim.rng.sample(sim.workers, 2)
    ref = _ref(sim, sid, "scan", first)
    yield 10, Claimed(ref, host=f"host-{first[2:]}")
    yield 4, Started(ref, pid=8200)
    took = replace(ref, worker_id=second)
    yield 21_000, Claimed(took, host=f"host-{second[2:]}")
    yield 5, Started(took, pid=8300)
    yield 300, Finished(took, Outcome.COMPLETED, result="9")


_STORIES: tuple[Callable[[_Simulation, str], Story], ...] = (
    _completed,
    _retried,
    _completed,
    _failed_after_retries,
    _canceled_running,
    _skipped,
    _abandoned,
    _tree,
    _canceled_waiting,
    _command,
    _timed_out,
    _duplicate_claim,
    _taken_over,
)
