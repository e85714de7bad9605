"""What events ask of the world: dispatch records and kill signals."""

from __future__ import annotations

from collections import Counter

from engine.lifecycle.effects import effects
from engine.lifecycle.records import (
    Control,
    Dispatch,
    Event,
    FailureReason,
    JobRetryScheduled,
    SubmissionCompleted,
)
from tests.unit.lifecycle_dsl import (
    POLICY,
    SUB,
    T0,
    at,
    cancel,
    claimed,
    failed,
    given,
    job,
    ref,
    running,
    submit,
    succeeded,
    tick,
    worker_left,
)


def test_every_dispatched_attempt_has_exactly_one_dispatch_record() -> None:
    scenario = given(
        submit(
            job("a", retries=2, backoff_ms=100),
            job("b", after=["a"], retries=1),
            job("c", parent="d"),
            job("d"),
        ),
        at(0, *running("a"), failed("a")),
        at(100, tick(), *running("a", 2), failed("a", attempt=2)),
        at(400, tick(), *running("a", 3)),
        at(410, *succeeded("a", 3)[1:], *running("b"), failed("b")),
        at(420, *succeeded("b", 2), *succeeded("c"), *succeeded("d")),
    )
    assert scenario.state is not None and scenario.state.done
    dispatches = [e for e in scenario.all_effects if isinstance(e, Dispatch)]
    counts = Counter((d.job_id, d.attempt) for d in dispatches)
    assert counts == {
        ("a", 1): 1,
        ("a", 2): 1,
        ("a", 3): 1,
        ("b", 1): 1,
        ("b", 2): 1,
        ("c", 1): 1,
        ("d", 1): 1,
    }
    assert all(d.dispatch_id == f"{SUB}/{d.job_id}/{d.attempt}" for d in dispatches)
    assert all(d.lease_ms == POLICY.lease_ms for d in dispatches)


def test_a_retry_of_a_lost_worker_kills_the_old_attempt_and_dispatches_the_new_one() -> None:
    scenario = given(submit(job("a", retries=1)), at(0, claimed("a"))).when(
        tick(), at=POLICY.lease_ms
    )
    body = scenario.last[0].body
    assert isinstance(body, JobRetryScheduled) and body.reason is FailureReason.WORKER_LOST
    kill, dispatch = scenario.last_effects
    assert isinstance(kill, Control) and (kill.worker_id, kill.attempt, kill.reason) == (
        "w1",
        1,
        "worker_lost",
    )
    assert isinstance(dispatch, Dispatch) and dispatch.attempt == 2


def test_a_failure_the_worker_reported_sends_no_kill() -> None:
    scenario = given(submit(job("a", retries=1)), *running("a")).when(failed("a"))
    assert [type(e) for e in scenario.last_effects] == [Dispatch]
    assert given(submit(job("a")), *running("a")).when(failed("a")).last_effects == []


def test_a_worker_that_left_is_still_told_to_kill() -> None:
    scenario = given(submit(job("a")), *running("a")).when(worker_left("w1", ref("a")))
    assert [type(e) for e in scenario.last_effects] == [Control]


def test_facts_without_a_job_or_without_a_consequence_have_no_effect() -> None:
    scenario = given(submit(job("a")), *succeeded("a"))
    assert scenario.state is not None
    completed = scenario.history[-1]
    assert isinstance(completed.body, SubmissionCompleted)
    assert effects(scenario.state, completed, lease_ms=1, kill_grace_ms=1) == []
    stray = Event("x", SUB, "zz", 99, T0, completed.body)
    assert effects(scenario.state, stray, lease_ms=1, kill_grace_ms=1) == []


def test_cancel_of_a_pending_job_has_nothing_to_kill() -> None:
    assert given(submit(job("a"))).when(cancel("a")).last_effects == []
