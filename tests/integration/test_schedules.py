"""Schedules end to end on the real broker: firing, pause/resume/trigger/delete, restarts.

Each test runs its own engine (a scheduler, a worker and a projector) on topics of its own,
with interval schedules of a second or two. What is checked is read from the events (the
scheduler's decisions and their timestamps), never from the test's own timing.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from engine import cli
from engine.admin import ensure_topics
from engine.api import Job, Joblog
from engine.config import Settings
from engine.errors import ScheduleNotChanged
from engine.lifecycle.records import (
    SCHEDULE_LABEL,
    SLOT_LABEL,
    Event,
    ScheduleChanged,
    ScheduleFired,
    ScheduleSkipped,
    SubmissionAccepted,
    SubmissionCompleted,
    schedule_submission_id,
)
from engine.lifecycle.schedules import slot_text
from engine.worker import Worker
from tests.integration.conftest import KafkaUnderTest
from tests.integration.kafka_io import events_by_submission, wait_for
from tests.integration.test_client import FAST, REGISTRY, _thread
from tests.integration.test_scheduler import scheduler_thread


@pytest.fixture
def settings(kafka_cluster: KafkaUnderTest) -> Settings:
    settings = Settings.from_env(
        bootstrap_servers=kafka_cluster.bootstrap_servers,
        topic_prefix=f"sched{uuid.uuid4().hex[:8]}.",
        partitions=3,
    )
    ensure_topics(settings)
    return settings


@pytest.fixture
def workers(settings: Settings) -> Iterator[None]:
    with ExitStack() as stack:
        worker = Worker(settings, "default", 4, REGISTRY, "w-sched", options=FAST)
        stack.enter_context(_thread(worker.run, "worker"))
        assert worker.ready.wait(60), "the worker got no partitions"
        yield


@pytest.fixture
def projector(settings: Settings, tmp_path: Path) -> Iterator[Path]:
    from projections.projector import Projector

    db_path = tmp_path / "joblog.duckdb"
    projector = Projector(settings, db_path, poll_timeout=0.1)
    with _thread(projector.run, "projector"):
        assert projector.ready.wait(60), "the projector never got its partitions"
        yield db_path


def _own(settings: Settings, schedule_id: str) -> list[Event]:
    return events_by_submission(settings).get(schedule_submission_id(schedule_id), [])


def _fired(events: list[Event]) -> list[ScheduleFired]:
    return [e.body for e in events if isinstance(e.body, ScheduleFired)]


def test_a_schedule_fires_its_runs_and_obeys_pause_trigger_and_delete(
    settings: Settings, workers: None, projector: Path
) -> None:
    with (
        scheduler_thread(settings, instance_id=f"s-{uuid.uuid4().hex}"),
        Joblog(settings, db_path=projector) as jl,
    ):
        jl.schedule(
            "tick",
            Job("first", task="double", args=[1]),
            Job("second", task="double", args=[2], depends_on=["first"]),
            every="1s",
            labels={"team": "ops"},
        )
        wait_for(lambda: len(_fired(_own(settings, "tick"))) >= 3, 60, "three firings")
        jl.pause_schedule("tick")
        paused_at = next(
            e.timestamp for e in _own(settings, "tick") if isinstance(e.body, ScheduleChanged)
        )
        time.sleep(3)  # slots pass while it is paused
        run = jl.trigger_schedule("tick")
        assert run.startswith("tick-manual-")
        jl.resume_schedule("tick")
        wait_for(
            lambda: sum(not f.manual for f in _fired(_own(settings, "tick"))) >= 5,
            60,
            "firings after the resume",
        )
        jl.delete_schedule("tick")
        with pytest.raises(ScheduleNotChanged, match="unknown_schedule"):
            jl.resume_schedule("tick")
        with pytest.raises(ScheduleNotChanged, match="duplicate_schedule"):
            jl.schedule("tick", task="double", args=[3], every="1s")
        time.sleep(2)  # a deleted schedule fires no more
        events = _own(settings, "tick")
        by = events_by_submission(settings)

        fired = _fired(events)
        runs = [f.run_submission_id for f in fired]
        assert len(runs) == len(set(runs)), "a slot fired twice"
        assert run in runs
        changes = [e for e in events if isinstance(e.body, ScheduleChanged)]
        resumed_at = changes[1].timestamp
        deleted_at = changes[2].timestamp
        timed = [
            (e.timestamp, e.body)
            for e in events
            if isinstance(e.body, ScheduleFired) and not e.body.manual
        ]
        assert not [f for t, f in timed if paused_at < t < resumed_at], "fired while paused"
        assert not [f for t, f in timed if t > deleted_at], "fired after its deletion"
        assert all(f.slot % 1000 == 0 and t >= f.slot for t, f in timed)
        # each run is a submission of the two jobs, labelled with its schedule and slot
        for body in fired:
            run_events = by[body.run_submission_id]
            accepted = run_events[0].body
            assert isinstance(accepted, SubmissionAccepted)
            labels = dict(accepted.labels)
            assert labels["team"] == "ops" and labels[SCHEDULE_LABEL] == "tick"
            assert labels[SLOT_LABEL] == slot_text(body.slot)
            wait_for(
                lambda rid=body.run_submission_id: any(  # type: ignore[misc]
                    isinstance(e.body, SubmissionCompleted)
                    for e in events_by_submission(settings)[rid]
                ),
                60,
                f"run {body.run_submission_id}",
            )

        def projected() -> bool:
            rows = jl.schedules()
            return bool(rows) and rows[0]["status"] == "DELETED" and rows[0]["fired"] == len(runs)

        wait_for(projected, 60, "the schedules view")
        (row,) = jl.schedules()
        assert row["schedule_id"] == "tick" and row["interval_ms"] == 1000
        assert row["next_at"] is None and row["running"] == 0
        firings = jl.schedule_firings("tick")
        assert sorted(
            f["run_submission_id"] for f in firings if f["decision"] == "fired"
        ) == sorted(runs)
        wait_for(
            lambda: all(
                f["run_outcome"] == "COMPLETED"
                for f in jl.schedule_firings("tick")
                if f["decision"] == "fired"
            ),
            60,
            "the runs' outcomes in the view",
        )
        assert any(f["reason"] == "trigger" for f in firings)


def test_a_restarted_scheduler_fires_no_slot_twice_and_catches_up_what_it_missed(
    settings: Settings, workers: None
) -> None:
    instance = f"s-{uuid.uuid4().hex}"
    with scheduler_thread(settings, instance_id=instance), Joblog(settings) as jl:
        jl.schedule(
            "catch", task="double", args=[4], every="1s", overlap="allow_all", catchup_window="3s"
        )
        wait_for(lambda: len(_fired(_own(settings, "catch"))) >= 2, 60, "firings")
    stopped_at = int(time.time() * 1000)
    time.sleep(8)  # eight slots missed: three within the window, five beyond it
    with scheduler_thread(settings, instance_id=instance):
        wait_for(
            lambda: any(
                e.timestamp > stopped_at + 8_000 and isinstance(e.body, ScheduleFired)
                for e in _own(settings, "catch")
            ),
            90,
            "firings after the restart",
        )
        time.sleep(2)
        # A run is a command the fired slot's transaction wrote to `commands`; it is accepted
        # a moment later, so those fired so far are waited for before the scheduler stops.
        runs = [f.run_submission_id for f in _fired(_own(settings, "catch"))]
        wait_for(
            lambda: set(runs) <= events_by_submission(settings).keys(), 60, "the runs accepted"
        )
    events = _own(settings, "catch")
    fired = _fired(events)
    slots = [f.slot for f in fired]
    assert slots == sorted(set(slots)), "a slot fired twice, or out of order"
    late = [f for f in fired if f.catch_up]
    assert late, "nothing missed was caught up"
    skipped = [e.body for e in events if isinstance(e.body, ScheduleSkipped)]
    assert any(s.reason == "catch_up_window" and s.count >= 1 for s in skipped)
    # every slot from the first to the last is accounted for once: fired or skipped
    counted = sum(s.count for s in skipped if s.slot <= slots[-1])
    assert len(slots) + counted == (slots[-1] - slots[0]) // 1000 + 1
    by = events_by_submission(settings)
    assert all(sum(isinstance(e.body, SubmissionAccepted) for e in by[r]) == 1 for r in runs)


def test_the_schedules_command_line(
    settings: Settings,
    workers: None,
    projector: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("JOBLOG_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
    monkeypatch.setenv("JOBLOG_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("JOBLOG_PROJECTION_DB", str(projector))
    with scheduler_thread(settings, instance_id=f"s-{uuid.uuid4().hex}"):
        argv = ["schedules", "create", "cli", "--every", "2s", "--task", "double", "--arg", "5"]
        assert cli.main([*argv, "--paused", "--json"]) == cli.EXIT_OK
        assert json.loads(capsys.readouterr().out)["created"] is True
        assert cli.main(["schedules", "trigger", "cli", "--json"]) == cli.EXIT_OK
        run = json.loads(capsys.readouterr().out)["run_submission_id"]
        assert run.startswith("cli-manual-")
        assert cli.main(["schedules", "resume", "cli"]) == cli.EXIT_OK
        assert "resumed" in capsys.readouterr().out
        wait_for(
            lambda: sum(not f.manual for f in _fired(_own(settings, "cli"))) >= 1, 60, "a slot"
        )
        assert cli.main(["schedules", "pause", "cli"]) == cli.EXIT_OK
        capsys.readouterr()

        def listed() -> bool:
            assert cli.main(["schedules", "list", "--db", str(projector), "--json"]) == 0
            rows = json.loads(capsys.readouterr().out)
            return bool(rows) and rows[0]["status"] == "PAUSED" and rows[0]["fired"] >= 2

        wait_for(listed, 60, "the schedule in `joblog schedules list`")
        assert cli.main(["schedules", "list", "--db", str(projector)]) == 0
        table = capsys.readouterr().out
        assert "cli" in table and "PAUSED" in table and "every 2s" in table
        assert cli.main(["schedules", "show", "cli", "--db", str(projector)]) == 0
        assert run in capsys.readouterr().out
        assert cli.main(["schedules", "delete", "cli"]) == cli.EXIT_OK
        capsys.readouterr()
        assert cli.main(["schedules", "trigger", "cli"]) == cli.EXIT_FAILED
        assert "unknown_schedule" in capsys.readouterr().err
