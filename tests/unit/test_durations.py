"""Taipy's durations from the events of one job."""

from __future__ import annotations

import pytest
from hypothesis import given as for_all
from hypothesis import settings

from engine.lifecycle.durations import (
    SCHEDULER_CLOCK,
    WORKER_CLOCK,
    Durations,
    JobTimes,
    durations,
    durations_of,
    job_times,
)
from engine.lifecycle.records import (
    CancelMode,
    Event,
    EventBody,
    FailureReason,
    JobAssigned,
    JobCompleted,
    JobFailed,
    JobPending,
    JobRetryScheduled,
    JobSpec,
    JobStarted,
    JobSubmitted,
    Outcome,
)
from tests.unit.lifecycle_dsl import (
    T0,
    at,
    cancel,
    claimed,
    failed,
    finished,
    given,
    job,
    running,
    started,
    submit,
    succeeded,
    tick,
)
from tests.unit.lifecycle_sim import Plan, plans, simulate


def of(scenario_events: list[Event], job_id: str) -> list[Event]:
    return [e for e in scenario_events if e.job_id == job_id]


def test_a_job_that_ran_once_has_taipy_s_durations() -> None:
    scenario = given(
        at(0, submit(job("a"), job("b", after=["a"]))),
        at(100, *running("a")),
        at(400, finished("a")),
        at(450, claimed("b")),
        at(475, started("b")),
        at(1_475, finished("b")),
    )
    times = job_times(scenario.events_of("b"))
    assert times == JobTimes(
        submitted_at=T0,
        blocked_at=T0,
        first_pending_at=T0 + 400,
        pending_at=T0 + 400,
        run_at=T0 + 475,
        finished_at=T0 + 1_475,
        attempt=1,
    )
    assert durations(scenario.events_of("b")) == Durations(
        execution_ms=1_000, pending_ms=75, blocked_ms=400
    )
    assert durations(scenario.events_of("a")) == Durations(
        execution_ms=300, pending_ms=100, blocked_ms=None
    )


def test_open_phases_count_up_to_now() -> None:
    scenario = given(at(0, submit(job("a"), job("b", after=["a"]))), at(100, *running("a")))
    assert durations(scenario.events_of("a"), now=T0 + 350) == Durations(250, 100, None)
    assert durations(scenario.events_of("b"), now=T0 + 350) == Durations(None, None, 350)


def test_without_a_clock_an_open_phase_has_no_duration() -> None:
    scenario = given(at(0, submit(job("a"), job("b", after=["a"]))), at(100, *running("a")))
    assert durations(scenario.events_of("a")) == Durations(None, 100, None)
    assert durations(scenario.events_of("b")) == Durations(None, None, None)


def test_a_job_that_ended_while_waiting_stops_counting_at_its_end() -> None:
    scenario = given(
        at(0, submit(job("a"), job("b", after=["a"]))),
        at(300, cancel("a")),
    )
    assert durations(scenario.events_of("a"), now=T0 + 10_000) == Durations(None, 300, None)
    assert durations(scenario.events_of("b"), now=T0 + 10_000) == Durations(None, None, 300)


def test_a_skipped_job_went_through_no_phase() -> None:
    scenario = given(submit(job("a", idempotency_key="k")), completed_keys={"k": "old/a"})
    assert durations(scenario.events_of("a"), now=T0 + 50) == Durations(None, None, None)
    assert job_times(scenario.events_of("a")).finished_at == T0


def test_a_retried_job_reports_its_last_attempt() -> None:
    spec = job("a", retries=1, backoff_ms=500)
    scenario = given(
        at(0, submit(spec)),
        at(100, *running("a")),
        at(300, failed("a")),
        at(800, tick()),
        at(850, *running("a", 2)),
        at(1_850, finished("a", attempt=2)),
    )
    times = job_times(scenario.events_of("a"))
    assert (times.first_pending_at, times.pending_at, times.run_at, times.attempt) == (
        T0,
        T0 + 300,
        T0 + 850,
        2,
    )
    assert durations(scenario.events_of("a")) == Durations(1_000, 550, None)


def test_while_a_retry_waits_its_attempt_has_not_run() -> None:
    scenario = given(
        at(0, submit(job("a", retries=1, backoff_ms=500))),
        at(100, *running("a")),
        at(300, failed("a")),
    )
    assert durations(scenario.events_of("a"), now=T0 + 400) == Durations(None, 100, None)


def test_a_takeover_restarts_the_run_and_the_lost_run_counts_as_waiting() -> None:
    scenario = given(
        at(0, submit(job("a"))),
        at(10, *running("a", worker="A")),
        at(700, claimed("a", worker="B")),
        at(720, started("a", worker="B")),
        at(1120, finished("a", worker="B")),
    )
    assert durations(scenario.events_of("a")) == Durations(400, 720, None)


def test_a_job_canceled_while_running_ran_until_its_cancel() -> None:
    scenario = given(
        at(0, submit(job("a"))),
        at(0, *running("a")),
        at(200, cancel("a", mode=CancelMode.KILL)),
        at(260, finished("a", Outcome.CANCELED)),
    )
    assert durations(scenario.events_of("a")) == Durations(260, 0, None)


def test_a_clock_behind_the_events_counts_no_time() -> None:
    scenario = given(at(0, submit(job("a"))), at(100, *running("a")))
    assert durations(scenario.events_of("a"), now=T0 + 50) == Durations(0, 100, None)


def test_events_of_several_jobs_are_refused() -> None:
    scenario = given(submit(job("a"), job("b")))
    with pytest.raises(ValueError, match="single job"):
        durations(scenario.history[1:])


def test_the_order_of_the_events_does_not_matter() -> None:
    scenario = given(at(0, submit(job("a"))), at(5, *succeeded("a")))
    events = scenario.events_of("a")
    assert durations(reversed(events)) == durations(events)


def test_no_events_no_times() -> None:
    assert job_times([]) == JobTimes()
    assert durations_of(JobTimes(), now=T0) == Durations(None, None, None)


@settings(max_examples=40, deadline=None)
@for_all(plans(max_jobs=4))
def test_the_times_are_those_the_state_folds(plan: Plan) -> None:
    scenario = simulate(plan)
    assert scenario.state is not None
    for job_id, state in scenario.state.jobs.items():
        times = job_times(of(scenario.history, job_id))
        assert (
            times.submitted_at,
            times.blocked_at,
            times.pending_at,
            times.run_at,
            times.finished_at,
            times.attempt,
        ) == (
            state.submitted_at,
            state.blocked_at,
            state.pending_at,
            state.run_at,
            state.finished_at,
            state.attempt,
        )
        spans = durations(of(scenario.history, job_id))
        assert all(
            span is None or span >= 0
            for span in (spans.execution_ms, spans.pending_ms, spans.blocked_ms)
        )


# --------------------------------------------------------------------------- the worker's clock


def _job(*bodies: tuple[int, EventBody]) -> list[Event]:
    return [
        Event(f"s:{seq}", "s", "a", seq, T0 + at, body)
        for seq, (at, body) in enumerate(bodies, start=1)
    ]


def _ran(started_at: int, ended_at: int, end: EventBody | None = None) -> list[Event]:
    """Pending at 0, assigned at 50, started (decided) at 100, ended (decided) at 1_100."""
    return _job(
        (0, JobSubmitted(JobSpec("a", task="t"))),
        (0, JobPending(1, "q", "d1", T0)),
        (50, JobAssigned(1, "d1", "w-1", 30_000)),
        (100, JobStarted(1, "w-1", started_at=started_at)),
        (1_100, end or JobCompleted(1, ended_at=ended_at)),
    )


def test_a_run_is_measured_on_the_worker_s_clock_when_it_said_both_times() -> None:
    events = _ran(started_at=T0 + 80, ended_at=T0 + 1_000)
    times = job_times(events)
    assert (times.run_at, times.finished_at) == (T0 + 100, T0 + 1_100)
    assert (times.worker_started_at, times.worker_ended_at) == (T0 + 80, T0 + 1_000)
    assert times.execution_clock == WORKER_CLOCK
    # Execution on the worker's clock; pending on the scheduler's, to its decision of the start.
    assert durations(events) == Durations(execution_ms=920, pending_ms=100, blocked_ms=None)


def test_without_both_worker_times_the_scheduler_s_decisions_measure_the_run() -> None:
    timed_out = _ran(T0 + 80, 0, JobFailed(1, FailureReason.TIMEOUT, "Timeout", "ran long"))
    unstamped = _ran(started_at=0, ended_at=T0 + 1_000)
    backwards = _ran(started_at=T0 + 1_000, ended_at=T0 + 900)  # a worker's clock stepped back
    for events in (timed_out, unstamped, backwards):
        assert job_times(events).execution_clock == SCHEDULER_CLOCK
        assert durations(events).execution_ms == 1_000


def test_a_running_job_counts_from_the_scheduler_s_start_to_now() -> None:
    events = _ran(T0 + 80, 0)[:-1]
    assert job_times(events).execution_clock is None
    assert durations(events, now=T0 + 600).execution_ms == 500


def test_a_retry_forgets_the_worker_times_of_the_failed_attempt() -> None:
    events = _job(
        (0, JobSubmitted(JobSpec("a", task="t"))),
        (0, JobPending(1, "q", "d1", T0)),
        (50, JobAssigned(1, "d1", "w-1", 30_000)),
        (100, JobStarted(1, "w-1", started_at=T0 + 90)),
        (500, JobRetryScheduled(1, FailureReason.ERROR, "E", "", 2, T0 + 500, "d2", "q")),
        (550, JobAssigned(2, "d2", "w-2", 30_000)),
        (600, JobStarted(2, "w-2")),  # an older worker: no clock
        (900, JobCompleted(2, ended_at=T0 + 880)),
    )
    times = job_times(events)
    assert times.worker_started_at is None and times.worker_ended_at == T0 + 880
    assert times.execution_clock == SCHEDULER_CLOCK
    assert durations(events).execution_ms == 300
