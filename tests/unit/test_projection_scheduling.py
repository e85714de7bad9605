"""The projection's scheduling columns and views: pending reasons, queues, concurrency slots.

The events come from the core's simulator: submissions sharing a concurrency key, a queue
with settings, a job waiting for its not_before; the views are read back with SQL.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import duckdb

from engine.lifecycle.decide import step
from engine.lifecycle.records import (
    ConfigureQueue,
    Event,
    JobSpec,
    SubmitJobs,
    queue_config_id,
)
from engine.lifecycle.simulation import EPOCH_MS, Fate, Plan, Simulation
from engine.lifecycle.state import QueueConfig
from projections.fold import Fold, Position
from projections.store import ProjectionStore


def _project(events: list[Event], path: Path) -> duckdb.DuckDBPyConnection:
    with ProjectionStore(path, topic_prefix="x.") as store:
        fold = Fold()
        fold.prefetch(events, (), store)
        for offset, event in enumerate(events):
            fold.event(event, Position("x.events", 0, offset))
        store.write(fold.take())
    return duckdb.connect(str(path), read_only=True)


def _hanging_workload() -> list[Event]:
    """Two submissions share key k (1 running): one job hangs holding the slot, the other
    waits in line; a third job waits for its not_before."""
    key = {"concurrency_key": "k", "max_running": 1}
    plans = [
        Plan(
            jobs=(JobSpec("a", task="t", **key),),  # type: ignore[arg-type]
            fates={("a", 1): Fate(kind="hang")},
            submission_id="s1",
        ),
        Plan(
            jobs=(
                JobSpec("b", task="t", priority=3, **key),  # type: ignore[arg-type]
                JobSpec("c", task="t", not_before=EPOCH_MS + 3_600_000),
            ),
            submission_id="s2",
            at=50,
        ),
    ]
    simulation = Simulation(plans, max_steps=2_000)
    # stop before the end: run until the agenda holds only far-away actions
    simulation.max_steps = 400
    with contextlib.suppress(AssertionError):  # it does not settle: a job hangs
        simulation.run()
    return simulation.out.events


def test_pending_reasons_say_why_each_job_waits(tmp_path: Path) -> None:
    db = _project(_hanging_workload(), tmp_path / "p.duckdb")
    rows = db.execute(
        "SELECT submission_id, job_id, reason, position, waits_for, until FROM pending_reasons "
        "ORDER BY job_id"
    ).fetchall()
    by_job = {row[1]: row for row in rows}
    assert by_job["b"][2] == "concurrency" and by_job["b"][3] == 0 and by_job["b"][4] == "key:k"
    assert by_job["c"][2] == "not_before" and by_job["c"][5] is not None
    assert "a" not in by_job  # it runs
    slots = db.execute(
        'SELECT "limit", submission_id, job_id, attempt, state, position, max_running '
        "FROM concurrency_slots ORDER BY state"
    ).fetchall()
    assert slots == [
        ("key:k", "s1", "a", 1, "holding", None, 1),
        ("key:k", "s2", "b", 1, "waiting", 0, 1),
    ]
    columns = db.execute(
        "SELECT concurrency_key, pending_reason FROM jobs WHERE job_id = 'b'"
    ).fetchone()
    assert columns == ("k", "concurrency")


def test_the_queues_view_shows_settings_from_every_partition(tmp_path: Path) -> None:
    events: list[Event] = []
    state = None
    for partition in range(3):
        config = queue_config_id("gpu", partition)
        outcome = step(
            None,
            ConfigureQueue(f"c@{partition}", config, "gpu", paused=partition == 0, max_running=4),
            EPOCH_MS,
        )
        events += outcome.events
        state = outcome.state
    assert state is not None
    submit = step(
        None,
        SubmitJobs("c-1", "s1", (JobSpec("g", task="t", queue="gpu"),)),
        EPOCH_MS,
        queues={"gpu": QueueConfig("gpu", paused=True, max_running=4)},
    )
    events += submit.events
    db = _project(events, tmp_path / "q.duckdb")
    row = db.execute(
        "SELECT queue, paused, paused_partitions, max_running, waiting, held, workers_alive "
        "FROM queues WHERE queue = 'gpu'"
    ).fetchone()
    assert row == ("gpu", True, 1, 4, 1, 1, 0)
    reason = db.execute("SELECT reason, detail FROM pending_reasons WHERE job_id = 'g'").fetchone()
    assert reason == ("queue_paused", "queue gpu is paused")


def test_a_rerun_reopens_the_submission_row(tmp_path: Path) -> None:
    from engine.lifecycle.records import RerunJobs
    from engine.lifecycle.simulation import Plan as P

    plan = P(
        jobs=(JobSpec("x", task="t"),), fates={("x", 1): Fate(kind="fail")}, submission_id="s9"
    )
    out = Simulation([plan]).run()
    state = out.states["s9"]
    rerun = step(state, RerunJobs("r-1", "s9", "x"), EPOCH_MS + 10_000)
    db = _project([*out.events, *rerun.events], tmp_path / "r.duckdb")
    assert db.execute("SELECT status, reruns, attempts FROM jobs").fetchone() == ("PENDING", 1, 2)
    assert db.execute("SELECT done, outcome FROM submissions").fetchone() == (False, None)


def test_schedules_and_their_firings_are_views(tmp_path: Path) -> None:
    from engine.lifecycle.records import (
        ChangeSchedule,
        CreateSchedule,
        Dispatch,
        ScheduleAction,
        ScheduleOverlap,
        ScheduleSpec,
        schedule_submission_id,
    )

    sid = schedule_submission_id("every")
    spec = ScheduleSpec(
        interval_ms=60_000,
        overlap=ScheduleOverlap.SKIP,
        catchup_window_ms=0,
        end_at=EPOCH_MS + 10 * 60_000,
    )
    first_run = f"every-{_slot(EPOCH_MS)}"  # its first slot: EPOCH_MS is a whole minute

    class SlowFirstRun(Simulation):
        def receive(self, dispatch: Dispatch, now: int) -> None:
            if dispatch.submission_id != first_run:
                super().receive(dispatch, now)
                return
            # it outlasts the next slot, which is skipped
            self.start_run(dispatch, self.workers[0], Fate(duration=90_000), now + 5)

    # a long job of another submission keeps the simulated workers heartbeating
    long = {("x", 1): Fate(duration=400_000)}
    plans = [Plan(jobs=(JobSpec("x", task="t"),), fates=long, submission_id="other")]
    simulation = SlowFirstRun(plans, max_steps=20_000)
    jobs = (JobSpec("a", task="t"),)
    create = CreateSchedule("c", sid, "every", spec, jobs)
    simulation.at(EPOCH_MS, lambda now: simulation.decide(sid, create, now))
    simulation.at(
        EPOCH_MS + 5 * 60_000 + 1,
        lambda now: simulation.decide(sid, ChangeSchedule("p", sid, ScheduleAction.PAUSE), now),
    )
    simulation.run()
    db = _project(simulation.out.events, tmp_path / "p.duckdb")
    (row,) = db.execute(
        "SELECT schedule_id, status, interval_ms, overlap, fired, skipped, running, next_at, "
        "last_run FROM schedules"
    ).fetchall()
    assert row[:4] == ("every", "PAUSED", 60_000, "skip")
    firings = db.execute(
        "SELECT decision, reason, slots, run_submission_id, run_outcome FROM schedule_firings"
    ).fetchall()
    fired = [f for f in firings if f[0] == "fired"]
    assert row[4] == len(fired) >= 2 and row[5] == sum(f[2] for f in firings if f[0] == "skipped")
    assert ("skipped", "overlap", 1, None, None) in firings
    assert all(f[4] == "COMPLETED" for f in fired)
    assert row[6] == 0 and row[7] is None  # nothing runs; paused: no next slot
    assert row[8] == fired[-1][3]
    # the runs are submissions like any other, labelled with their schedule and slot
    labels = db.execute(
        "SELECT labels['joblog.schedule'], labels['joblog.slot'] FROM submissions "
        "WHERE submission_id = ?",
        [first_run],
    ).fetchone()
    assert labels == ("every", _slot(EPOCH_MS))


def _slot(ms: int) -> str:
    from engine.lifecycle.schedules import slot_text

    return slot_text(ms)
