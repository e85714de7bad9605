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

import json
import random
from collections.abc import Callable
from typing import Any

from engine.lifecycle.records import CancelMode, JobSpec, RetryPolicy
from engine.lifecycle.simulation import (
    EPOCH_MS,
    Fate,
    Plan,
    Simulation,
    Workload,
    random_trip,
)

__all__ = ["EPOCH_MS", "Workload", "simulate"]

#: The lease of the simulated workers' attempts (and so how long a takeover takes).
LEASE_MS = 30_000


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
        heartbeat_every_ms: simulated interval of each worker's own heartbeat.

    Returns:
        The events, heartbeats and final states.
    """
    rng = random.Random(seed)
    spread = 50 * submissions + 1
    plans = []
    for index in range(submissions):
        make = _STORIES[index % len(_STORIES)]
        sid = f"sub-{seed}-{index:06d}"
        plans.append(make(_Draw(rng, workers), sid, rng.randrange(0, spread)))
    simulation = Simulation(
        plans,
        workers=[f"w-{i + 1}" for i in range(workers)],
        start_ms=start_ms,
        worker_heartbeat_ms=heartbeat_every_ms,
        # the reports' trip to the scheduler: a generator of its own, so the rest of a
        # seed's log does not change with it
        trip=random_trip(random.Random(seed + 1), 1, 40),
    )
    return simulation.run()


class _Draw:
    """The random choices of one story."""

    def __init__(self, rng: random.Random, workers: int) -> None:
        self.rng = rng
        self.workers = workers

    def fate(self, kind: str = "complete", *, work_ms: int = 400, **fields: Any) -> Fate:
        """A worker chosen at random runs the attempt for about ``work_ms``."""
        rng = self.rng
        chosen: dict[str, Any] = {
            "worker": rng.randrange(self.workers),
            "claim_delay": rng.randrange(5, 60),
            "duration": work_ms + rng.randrange(0, work_ms + 1),
            "status_line": "done",
        }
        return Fate(kind, **(chosen | fields))


# --------------------------------------------------------------------------- building blocks


def _spec(job_id: str, task: str = "tasks.work", **fields: Any) -> JobSpec:
    return JobSpec(job_id=job_id, task=task, args=json.dumps({"args": [job_id]}), **fields)


def _plan(sid: str, at: int, *specs: JobSpec, **fields: Any) -> Plan:
    return Plan(
        jobs=specs,
        submission_id=sid,
        at=at,
        submitted_by="alice",
        labels=(("team", "data"),),
        **fields,
    )


# --------------------------------------------------------------------------- stories


def _completed(draw: _Draw, sid: str, at: int) -> Plan:
    fate = draw.fate(result="42", work_ms=300 + draw.rng.randrange(500))
    return _plan(sid, at, _spec("double", "tasks.double"), fates={("double", 1): fate})


def _retried(draw: _Draw, sid: str, at: int) -> Plan:
    retry = RetryPolicy(max_attempts=3, backoff_ms=0, jitter=0.0)
    failed = draw.fate("fail", error_type="ConnectionError", error_note="connection reset by peer")
    fates = {("fetch", 1): failed, ("fetch", 2): draw.fate(result='"ok"')}
    return _plan(sid, at, _spec("fetch", "tasks.fetch", retry=retry), fates=fates)


def _failed_after_retries(draw: _Draw, sid: str, at: int) -> Plan:
    retry = RetryPolicy(max_attempts=3, backoff_ms=200, backoff_multiplier=2.0, jitter=0.0)
    fates = {
        ("train", attempt): draw.fate(
            "fatal",
            work_ms=250,
            error_type="MemoryError",
            error_note=f"out of memory on attempt {attempt}",
            traceback="Traceback (most recent call last):\n  ...\nMemoryError",
            warnings=(("ResourceWarning", "memory at 90%", 2),),
        )
        for attempt in range(1, 4)
    }
    return _plan(sid, at, _spec("train", "tasks.train", retry=retry), fates=fates)


def _canceled_running(draw: _Draw, sid: str, at: int) -> Plan:
    fates = {("extract", 1): draw.fate("hang", claim_delay=10)}
    return _plan(
        sid,
        at,
        _spec("extract", "tasks.extract"),
        _spec("load", "tasks.load", depends_on=("extract",)),
        fates=fates,
        cancels=((300, "extract", CancelMode.KILL),),
    )


def _canceled_waiting(draw: _Draw, sid: str, at: int) -> Plan:
    fates = {("report", 1): draw.fate(claim_delay=60)}
    cancels = ((5, None, CancelMode.KILL), (25, "report", CancelMode.KILL))
    return _plan(sid, at, _spec("report", "tasks.report"), fates=fates, cancels=cancels)


def _abandoned(draw: _Draw, sid: str, at: int) -> Plan:
    failed = draw.fate(
        "fail",
        error_type="ValueError",
        error_note="bad row 17",
        traceback="Traceback ...\nValueError: bad row 17",
    )
    return _plan(
        sid,
        at,
        _spec("a", "tasks.prepare"),
        _spec("b", "tasks.transform", depends_on=("a",)),
        _spec("c", "tasks.publish", depends_on=("b",)),
        fates={("a", 1): failed},
    )


def _skipped(draw: _Draw, sid: str, at: int) -> Plan:
    spec = _spec("snapshot", "tasks.snapshot", idempotency_key="snapshot-2024")
    return _plan(sid, at, spec, fates={("snapshot", 1): draw.fate()})


def _tree(draw: _Draw, sid: str, at: int) -> Plan:
    fates = {
        ("frame-1", 1): draw.fate(work_ms=200),
        ("frame-2", 1): draw.fate(work_ms=250),
        ("render", 1): draw.fate(work_ms=100),
    }
    return _plan(
        sid,
        at,
        _spec("render", "tasks.render"),
        _spec("frame-1", "tasks.frame", parent="render"),
        _spec("frame-2", "tasks.frame", parent="render"),
        fates=fates,
    )


def _command(draw: _Draw, sid: str, at: int) -> Plan:
    spec = JobSpec(job_id="sh", command=("sh", "-c", "exit 3"), queue="default")
    failed = draw.fate(
        "fail",
        work_ms=80,
        claim_delay=10,
        exit_code=3,
        error_type="ExitCode",
        error_note="exited with 3",
        output=(("stdout", "starting\n"), ("stderr", "boom\n")),
    )
    # a late cancel (rejected: the job already ended) and a delete, once it failed
    return _plan(
        sid,
        at,
        spec,
        fates={("sh", 1): failed},
        cancels=((1_000, "sh", CancelMode.KILL),),
        deletes=((1_100, "sh"),),
    )


def _timed_out(draw: _Draw, sid: str, at: int) -> Plan:
    """The run timeout fires: no worker says when the attempt ended."""
    spec = _spec("crunch", "tasks.crunch", timeout_ms=500)
    return _plan(sid, at, spec, fates={("crunch", 1): draw.fate("hang", claim_delay=10)})


def _duplicate_claim(draw: _Draw, sid: str, at: int) -> Plan:
    """A dispatch redelivered after a rebalance: a second worker claims a live attempt."""
    fate = draw.fate("duplicate", claim_delay=10, result="3")
    return _plan(sid, at, _spec("index", "tasks.index"), fates={("index", 1): fate})


def _taken_over(draw: _Draw, sid: str, at: int) -> Plan:
    """The holder went silent; another worker takes the attempt over and runs it again."""
    fate = draw.fate("takeover", claim_delay=10, result="9")
    return _plan(sid, at, _spec("scan", "tasks.scan"), fates={("scan", 1): fate})


_STORIES: tuple[Callable[[_Draw, str, int], Plan], ...] = (
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
