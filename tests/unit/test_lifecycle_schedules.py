"""Schedules in the pure core: when they fire, what a firing submits, overlap, catch-up,
pause/resume/trigger/delete, and that a slot fires once however often it is decided."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from engine.lifecycle.describe import describe as describe_event
from engine.lifecycle.records import (
    SCHEDULE_LABEL,
    SLOT_LABEL,
    ChangeSchedule,
    CommandRejected,
    CreateSchedule,
    JobSpec,
    RejectionCode,
    ScheduleAction,
    ScheduleChanged,
    ScheduleCreated,
    ScheduleFired,
    ScheduleOverlap,
    ScheduleRunEnded,
    ScheduleRunSeen,
    ScheduleSkipped,
    ScheduleSpec,
    SubmissionCompleted,
    SubmitJobs,
    Tick,
    schedule_submission_id,
)
from engine.lifecycle.schedules import (
    MAX_CATCH_UP_FIRINGS,
    next_slot,
    run_rejected,
    run_submission_id,
    slot_text,
    spec_problem,
)
from tests.unit.lifecycle_dsl import SUB, T0, Scenario, given, job, submit, succeeded

SID = schedule_submission_id("nightly")
MINUTE = 60_000
#: The first whole minute after T0, and the slots of an every-minute schedule after it.
M0 = (T0 // MINUTE + 1) * MINUTE


def create(
    spec: ScheduleSpec | None = None,
    *jobs: JobSpec,
    command_id: str = "create-1",
    paused: bool = False,
) -> CreateSchedule:
    return CreateSchedule(
        command_id,
        SID,
        "nightly",
        spec or ScheduleSpec(interval_ms=MINUTE),
        jobs or (job("extract"), job("load", after=("extract",))),
        labels=(("team", "data"),),
        paused=paused,
        requested_by="alice",
    )


def change(action: ScheduleAction, command_id: str = "change-1") -> ChangeSchedule:
    return ChangeSchedule(command_id, SID, action, requested_by="alice")


def run_ended(run: str, status: str = "COMPLETED") -> ScheduleRunEnded:
    return ScheduleRunEnded(f"{run}:9:run-ended", SID, run, status)


def tick_at(scenario: Scenario, ms: int) -> list[object]:
    return [e.body for e in scenario.apply(Tick(), ms)]


def fired(scenario: Scenario) -> list[ScheduleFired]:
    return [e.body for e in scenario.history if isinstance(e.body, ScheduleFired)]


def schedule_of(scenario: Scenario) -> ScheduleCreated:
    body = scenario.history[0].body
    assert isinstance(body, ScheduleCreated)
    return body


# --------------------------------------------------------------------------- slots


def test_an_interval_schedule_fires_at_each_multiple_of_its_interval() -> None:
    spec = ScheduleSpec(interval_ms=MINUTE)
    assert next_slot(spec, M0 - 1) == M0
    assert next_slot(spec, M0) == M0 + MINUTE  # strictly after
    shifted = ScheduleSpec(interval_ms=MINUTE, offset_ms=15_000)
    assert next_slot(shifted, M0) == M0 + 15_000


def test_start_and_end_bound_the_slots() -> None:
    spec = ScheduleSpec(interval_ms=MINUTE, start_at=M0 + 5 * MINUTE, end_at=M0 + 6 * MINUTE)
    assert next_slot(spec, M0) == M0 + 5 * MINUTE
    assert next_slot(spec, M0 + 5 * MINUTE) == M0 + 6 * MINUTE
    assert next_slot(spec, M0 + 6 * MINUTE) == 0  # past the end: none


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_a_cron_schedule_reads_its_expression_in_its_time_zone_across_dst() -> None:
    spec = ScheduleSpec(cron="30 2 * * *", timezone="Europe/Berlin")
    # the night clocks go forward (2026-03-29, 02:00 -> 03:00): 02:30 does not exist
    spring = next_slot(spec, _ms("2026-03-29T00:00:00+01:00"))
    assert spring == _ms("2026-03-29T03:00:00+02:00")
    assert next_slot(spec, spring) == _ms("2026-03-30T02:30:00+02:00")
    # the night they go back (2026-10-25): 02:30 comes twice; it fires once
    autumn = next_slot(spec, _ms("2026-10-25T00:00:00+02:00"))
    assert autumn == _ms("2026-10-25T02:30:00+02:00")
    assert next_slot(spec, autumn) == _ms("2026-10-26T02:30:00+01:00")
    weekdays = ScheduleSpec(cron="0 9 * * 1-5", timezone="America/New_York")
    friday = _ms("2026-12-04T09:00:00-05:00")
    assert next_slot(weekdays, friday) == _ms("2026-12-07T09:00:00-05:00")  # Monday


def test_a_run_is_named_after_its_slot_in_utc() -> None:
    slot = _ms("2026-12-03T15:00:00+01:00")
    assert slot_text(slot) == "20261203T140000Z"
    assert run_submission_id("nightly", slot) == "nightly-20261203T140000Z"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        (ScheduleSpec(), "exactly one of a cron expression and an interval"),
        (ScheduleSpec(cron="* * * * *", interval_ms=MINUTE), "exactly one"),
        (ScheduleSpec(cron="61 * * * *"), "cron expression"),
        (ScheduleSpec(cron="every day"), "cron expression"),
        (ScheduleSpec(interval_ms=MINUTE, timezone="Mars/Olympus"), "unknown time zone"),
        (ScheduleSpec(interval_ms=10), "at least 1000 ms"),
        (ScheduleSpec(interval_ms=MINUTE, offset_ms=MINUTE), "offset"),
        (ScheduleSpec(interval_ms=MINUTE, catchup_window_ms=-1), "negative"),
        (ScheduleSpec(interval_ms=MINUTE, start_at=10, end_at=5), "end comes before"),
    ],
)
def test_a_bad_spec_is_named(spec: ScheduleSpec, says: str) -> None:
    problem = spec_problem(spec)
    assert problem is not None and says in problem


# --------------------------------------------------------------------------- create


def test_a_created_schedule_is_armed_for_its_first_slot() -> None:
    scenario = given(create(), submission_id=SID)
    body = schedule_of(scenario)
    assert body.next_at == M0 and not body.paused and body.command_id == "create-1"
    assert scenario.deadline() == M0
    assert "Schedule nightly created (every 1m, overlap skip)" in describe_event(
        scenario.history[0]
    )


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (replace(create(), schedule_id="bad id!"), RejectionCode.BAD_SCHEDULE),
        (replace(create(), schedule_id="x" * 200), RejectionCode.BAD_SCHEDULE),
        (create(ScheduleSpec(cron="nonsense")), RejectionCode.BAD_SCHEDULE),
        (create(ScheduleSpec(interval_ms=MINUTE), job("a", after=("a",))), None),
        (create(ScheduleSpec(interval_ms=MINUTE), job("a"), job("a")), None),
    ],
)
def test_an_invalid_schedule_is_rejected_and_never_fires(
    command: CreateSchedule, code: RejectionCode | None
) -> None:
    scenario = given(submission_id=SID).when(command)
    assert len(scenario.last) == 1
    body = scenario.last[0].body
    assert isinstance(body, CommandRejected) and body.command_type == "CreateSchedule"
    if code is not None:
        assert body.code == code
    assert scenario.state is None or scenario.state.schedule is None
    assert tick_at(scenario, M0 + 10 * MINUTE) == []


def test_the_same_create_again_is_a_no_op_and_another_with_its_id_is_refused() -> None:
    scenario = given(create(), submission_id=SID)
    scenario.when(create()).then_nothing()
    scenario.when(create(command_id="create-2")).then_rejected("duplicate_schedule")


# --------------------------------------------------------------------------- firing


def test_each_slot_fires_once_and_submits_the_run_in_the_same_decision() -> None:
    scenario = given(create(), submission_id=SID)
    assert tick_at(scenario, M0 - 1) == []  # not yet
    bodies = tick_at(scenario, M0)
    assert bodies == [ScheduleFired(M0, f"nightly-{slot_text(M0)}", False, False, M0 + MINUTE)]
    (run,) = scenario.last_effects
    assert isinstance(run, SubmitJobs)
    assert run.submission_id == f"nightly-{slot_text(M0)}"
    assert run.command_id == f"{scenario.last[0].event_id}:submit"
    assert [j.job_id for j in run.jobs] == ["extract", "load"]
    assert dict(run.labels) == {
        "team": "data",
        SCHEDULE_LABEL: "nightly",
        SLOT_LABEL: slot_text(M0),
    }
    assert run.submitted_by == "schedule:nightly"
    # decided again at the same time, or a little later: nothing more
    assert tick_at(scenario, M0) == []
    assert tick_at(scenario, M0 + 500) == []
    assert scenario.deadline() == M0 + MINUTE


def test_a_rebuilt_schedule_does_not_fire_a_slot_again() -> None:
    scenario = given(create(ScheduleSpec(interval_ms=MINUTE, overlap=ScheduleOverlap.ALLOW_ALL)))
    tick_at(scenario, M0)
    tick_at(scenario, M0 + MINUTE)
    rebuilt = Scenario(submission_id=SID)
    rebuilt.state = scenario.replayed()
    rebuilt.now = scenario.now
    assert rebuilt.state == scenario.state
    assert tick_at(rebuilt, M0 + MINUTE) == []
    assert [type(b) for b in tick_at(rebuilt, M0 + 2 * MINUTE)] == [ScheduleFired]


def test_overlap_skip_skips_slots_while_a_run_is_going() -> None:
    scenario = given(create(), submission_id=SID)
    tick_at(scenario, M0)
    first = f"nightly-{slot_text(M0)}"
    assert tick_at(scenario, M0 + MINUTE) == [
        ScheduleSkipped(M0 + MINUTE, "overlap", 1, M0 + 2 * MINUTE)
    ]
    scenario.when(run_ended(first))
    assert [e.body for e in scenario.last] == [ScheduleRunSeen(first, "COMPLETED")]
    assert [type(b) for b in tick_at(scenario, M0 + 2 * MINUTE)] == [ScheduleFired]
    # the end of a run it does not wait for (told twice): nothing
    scenario.when(run_ended(first)).then_nothing()


def test_overlap_buffer_one_keeps_one_slot_for_when_the_run_ends() -> None:
    spec = ScheduleSpec(interval_ms=MINUTE, overlap=ScheduleOverlap.BUFFER_ONE)
    scenario = given(create(spec), submission_id=SID)
    tick_at(scenario, M0)
    assert tick_at(scenario, M0 + MINUTE) == [
        ScheduleSkipped(M0 + MINUTE, "buffered", 1, M0 + 2 * MINUTE)
    ]
    assert tick_at(scenario, M0 + 2 * MINUTE) == [
        ScheduleSkipped(M0 + 2 * MINUTE, "overlap", 1, M0 + 3 * MINUTE)
    ]
    scenario.now = M0 + 2 * MINUTE + 30_000
    scenario.when(run_ended(f"nightly-{slot_text(M0)}", "FAILED"))
    seen, late = (e.body for e in scenario.last)
    assert isinstance(seen, ScheduleRunSeen) and seen.status == "FAILED"
    assert isinstance(late, ScheduleFired)
    assert late.slot == M0 + MINUTE and late.catch_up
    assert late.run_submission_id == f"nightly-{slot_text(M0 + MINUTE)}"
    assert late.next_at == M0 + 3 * MINUTE
    assert isinstance(scenario.last_effects[0], SubmitJobs)


def test_overlap_allow_all_fires_every_slot() -> None:
    spec = ScheduleSpec(interval_ms=MINUTE, overlap=ScheduleOverlap.ALLOW_ALL)
    scenario = given(create(spec), submission_id=SID)
    for n in range(5):
        assert [type(b) for b in tick_at(scenario, M0 + n * MINUTE)] == [ScheduleFired]
    assert len({f.run_submission_id for f in fired(scenario)}) == 5


# --------------------------------------------------------------------------- catch-up


def test_after_downtime_slots_within_the_window_fire_and_older_ones_are_skipped() -> None:
    spec = ScheduleSpec(
        interval_ms=MINUTE, overlap=ScheduleOverlap.ALLOW_ALL, catchup_window_ms=3 * MINUTE
    )
    scenario = given(create(spec), submission_id=SID)
    back = M0 + 10 * MINUTE  # down for ten slots
    bodies = tick_at(scenario, back)
    skipped, *late = bodies
    assert skipped == ScheduleSkipped(M0 + 6 * MINUTE, "catch_up_window", 7, M0 + 7 * MINUTE)
    assert [b.slot for b in late if isinstance(b, ScheduleFired)] == [
        M0 + n * MINUTE for n in (7, 8, 9, 10)
    ]
    assert [b.catch_up for b in late if isinstance(b, ScheduleFired)] == [True] * 3 + [False]
    assert scenario.deadline() == M0 + 11 * MINUTE


def test_catch_up_with_overlap_skip_fires_the_first_and_skips_the_rest() -> None:
    spec = ScheduleSpec(interval_ms=MINUTE, catchup_window_ms=5 * MINUTE)
    scenario = given(create(spec), submission_id=SID)
    bodies = tick_at(scenario, M0 + 4 * MINUTE)
    assert [type(b) for b in bodies] == [ScheduleFired, ScheduleSkipped]
    assert bodies[1] == ScheduleSkipped(M0 + 4 * MINUTE, "overlap", 4, M0 + 5 * MINUTE)


def test_a_window_of_zero_fires_only_the_slot_that_is_due_now() -> None:
    spec = ScheduleSpec(interval_ms=MINUTE, catchup_window_ms=0)
    scenario = given(create(spec), submission_id=SID)
    bodies = tick_at(scenario, M0 + 3 * MINUTE)
    assert bodies[0] == ScheduleSkipped(M0 + 2 * MINUTE, "catch_up_window", 3, M0 + 3 * MINUTE)
    assert [type(b) for b in bodies[1:]] == [ScheduleFired]


def test_a_year_of_downtime_costs_one_bounded_decision() -> None:
    spec = ScheduleSpec(
        interval_ms=1_000, overlap=ScheduleOverlap.ALLOW_ALL, catchup_window_ms=10 * MINUTE
    )
    scenario = given(create(spec), submission_id=SID)
    back = M0 + 365 * 86_400_000
    bodies = tick_at(scenario, back)
    skipped = [b for b in bodies if isinstance(b, ScheduleSkipped)]
    fires = [b for b in bodies if isinstance(b, ScheduleFired)]
    assert skipped[0].reason == "catch_up_window"
    assert len(fires) == MAX_CATCH_UP_FIRINGS
    assert sum(b.count for b in skipped if b.reason == "catch_up_limit") > 0
    assert scenario.deadline() == back + 1_000
    assert tick_at(scenario, back) == []


# --------------------------------------------------------------------------- changes


def test_pause_stops_the_timer_and_resume_starts_at_the_next_slot() -> None:
    scenario = given(create(), submission_id=SID)
    scenario.when(change(ScheduleAction.PAUSE))
    assert [e.body for e in scenario.last] == [
        ScheduleChanged(ScheduleAction.PAUSE, 0, "change-1", "alice")
    ]
    assert scenario.deadline() is None
    assert tick_at(scenario, M0 + 5 * MINUTE) == []
    scenario.now = M0 + 5 * MINUTE + 10
    scenario.when(change(ScheduleAction.RESUME, "change-2"))
    assert scenario.deadline() == M0 + 6 * MINUTE  # what was missed while paused is not run
    assert [b.slot for b in tick_at(scenario, M0 + 6 * MINUTE)] == [M0 + 6 * MINUTE]


@pytest.mark.parametrize("action", list(ScheduleAction))
def test_a_slot_due_before_a_change_fires_first(action: ScheduleAction) -> None:
    """A change decided after a slot came but before its timer fired: the slot is fired
    first, whatever the change (found by the schedule property test: a resume just after
    the last slot lost it)."""
    scenario = given(create(), submission_id=SID)
    scenario.apply(change(action), M0 + 7)
    bodies = [e.body for e in scenario.last]
    assert isinstance(bodies[0], ScheduleFired) and bodies[0].slot == M0
    assert not bodies[0].manual


def test_resuming_a_running_schedule_changes_nothing() -> None:
    scenario = given(create(), submission_id=SID)
    scenario.apply(change(ScheduleAction.RESUME), M0 - 10)
    (body,) = [e.body for e in scenario.last]
    assert isinstance(body, ScheduleChanged) and body.next_at == M0
    assert scenario.deadline() == M0


def test_a_schedule_created_paused_waits_for_its_resume() -> None:
    scenario = given(create(paused=True), submission_id=SID)
    assert scenario.deadline() is None
    assert tick_at(scenario, M0 + MINUTE) == []


def test_trigger_fires_once_now_even_while_paused_and_does_not_move_the_slots() -> None:
    scenario = given(create(paused=True), submission_id=SID)
    scenario.now = M0 - 10_000
    scenario.when(change(ScheduleAction.TRIGGER, "trigger-1"))
    (body,) = [e.body for e in scenario.last]
    assert isinstance(body, ScheduleFired) and body.manual and body.command_id == "trigger-1"
    assert body.run_submission_id == "nightly-manual-2"
    assert isinstance(scenario.last_effects[0], SubmitJobs)
    assert "Schedule triggered" in describe_event(scenario.last[0])
    scenario.when(change(ScheduleAction.RESUME, "resume-1"))
    assert scenario.deadline() == M0


def test_a_deleted_schedule_never_fires_and_its_id_is_not_reused() -> None:
    scenario = given(create(), submission_id=SID).when(change(ScheduleAction.DELETE))
    assert scenario.deadline() is None
    assert tick_at(scenario, M0 + MINUTE) == []
    scenario.when(change(ScheduleAction.RESUME, "change-2")).then_rejected("unknown_schedule")
    scenario.when(create(command_id="create-2")).then_rejected("duplicate_schedule")


def test_changing_a_schedule_that_does_not_exist_is_refused() -> None:
    given(submission_id=SID).when(change(ScheduleAction.TRIGGER)).then_rejected("unknown_schedule")


# --------------------------------------------------------------------------- the runs' side


def test_the_end_of_a_run_is_told_to_its_schedule() -> None:
    run = SubmitJobs(
        "#schedule-nightly:2:submit",
        SUB,  # the run's id (the reports of the DSL name this one)
        (job("a"),),
        labels=((SCHEDULE_LABEL, "nightly"), (SLOT_LABEL, "20261203T140000Z")),
    )
    scenario = given(run, *succeeded("a"))
    done = [e for e in scenario.history if isinstance(e.body, SubmissionCompleted)]
    assert done
    assert (
        ScheduleRunEnded(
            f"{done[0].event_id}:run-ended",
            SID,
            SUB,
            "COMPLETED",
            done[0].timestamp,
        )
        in scenario.all_effects
    )


def test_a_run_that_cannot_be_submitted_ends_at_once_for_its_schedule() -> None:
    taken = given(submit(job("a")))  # a user's submission took the run's id
    taken.when(SubmitJobs("#schedule-nightly:2:submit", taken.state.submission_id, (job("b"),)))
    assert [e.body.code for e in taken.last if isinstance(e.body, CommandRejected)] == [
        "duplicate_submission"
    ]
    (told,) = taken.last_effects
    assert isinstance(told, ScheduleRunEnded) and told.status == "REJECTED"
    assert told.submission_id == SID
    # a rejection of anything else says nothing to any schedule
    assert run_rejected("submit-2", "sub-1", T0) == []
    assert run_rejected("#schedule-x:abc:submit", "sub-1", T0) == []


def test_every_schedule_event_reads_as_a_sentence() -> None:
    spec = ScheduleSpec(
        interval_ms=MINUTE, overlap=ScheduleOverlap.BUFFER_ONE, catchup_window_ms=MINUTE
    )
    scenario = given(create(spec), submission_id=SID)
    tick_at(scenario, M0)
    tick_at(scenario, M0 + MINUTE)
    tick_at(scenario, M0 + 5 * MINUTE)
    scenario.when(run_ended(f"nightly-{slot_text(M0)}"))
    scenario.when(change(ScheduleAction.PAUSE))
    lines = [describe_event(e) for e in scenario.history]
    assert all(line and "Schedule" in line for line in lines), lines
    assert any("waits for the previous run to end" in line for line in lines)
    assert any("missed longer ago than the catch-up window" in line for line in lines)
    assert datetime.fromtimestamp(M0 / 1000, UTC).strftime("%H:%M") in " ".join(lines)
