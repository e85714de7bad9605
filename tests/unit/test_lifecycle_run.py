"""Running an attempt: assignment, start, progress, output, exceptions, completion, failure,
retries, timeouts, leases, workers leaving, takeovers and the fencing of stale reports."""

from __future__ import annotations

import itertools

from hypothesis import given as for_all
from hypothesis import settings
from hypothesis import strategies as st

from engine.lifecycle.decide import backoff_ms, is_stale, recover
from engine.lifecycle.records import (
    Control,
    Dispatch,
    ExceptionReported,
    FailureReason,
    Finished,
    JobAssigned,
    JobCompleted,
    JobDispatched,
    JobDuplicateClaim,
    JobExceptionRaised,
    JobFailed,
    JobOutput,
    JobPending,
    JobProgressed,
    JobRetryScheduled,
    JobSpec,
    JobStarted,
    JobStatus,
    Outcome,
    RetryPolicy,
    Started,
    SubmissionCompleted,
    SubmissionStatus,
)
from tests.unit.lifecycle_dsl import (
    POLICY,
    SUB,
    T0,
    at,
    cancel,
    claimed,
    exception,
    failed,
    finished,
    given,
    heartbeat,
    job,
    on,
    output,
    progress,
    ref,
    running,
    started,
    submit,
    tick,
    with_policy,
    worker_left,
)

FAILED_ONE = SubmissionCompleted(SubmissionStatus.FAILED, ((JobStatus.FAILED, 1),))


def kill(
    job_id: str, reason: str, *, worker: str = "w1", attempt: int = 1, sent_at: int
) -> Control:
    return Control(
        worker_id=worker,
        action="kill",
        submission_id=SUB,
        job_id=job_id,
        attempt=attempt,
        dispatch_id=f"{SUB}/{job_id}/{attempt}",
        reason=reason,
        grace_ms=POLICY.kill_grace_ms,
        sent_at=T0 + sent_at,
    )


# --------------------------------------------------------------------------- assign and start


def test_a_claim_assigns_the_pending_attempt_to_the_worker() -> None:
    scenario = (
        given(submit(job("a")))
        .when(claimed("a"), at=10)
        .then(
            on(
                "a",
                JobAssigned(
                    attempt=1,
                    dispatch_id=f"{SUB}/a/1",
                    worker_id="w1",
                    lease_ms=POLICY.lease_ms,
                    host="w1.local",
                ),
            )
        )
        .status(a=JobStatus.ASSIGNED)
    )
    assert scenario.job("a").assigned_at == T0 + 10
    assert scenario.job("a").lease_until == T0 + 10 + POLICY.lease_ms


def test_a_start_makes_the_assigned_attempt_run() -> None:
    scenario = (
        given(submit(job("a")), claimed("a"))
        .when(started("a"), at=20)
        .then(on("a", JobStarted(attempt=1, worker_id="w1", pid=4242)))
        .status(a=JobStatus.RUNNING)
    )
    assert scenario.job("a").run_at == T0 + 20


def test_a_start_seen_before_the_claim_assigns_and_starts() -> None:
    (
        given(submit(job("a")))
        .when(started("a"))
        .then(on("a", JobAssigned(1, f"{SUB}/a/1", "w1", POLICY.lease_ms)), on("a", JobStarted))
        .when(claimed("a"))
        .then_nothing()
        .status(a=JobStatus.RUNNING)
    )


def test_a_finish_seen_before_the_start_still_records_the_run() -> None:
    (
        given(submit(job("a")), claimed("a"))
        .when(finished("a"))
        .then(on("a", JobStarted), on("a", JobCompleted(attempt=1)), SubmissionCompleted)
    )


def test_repeated_claims_and_starts_of_the_same_worker_change_nothing() -> None:
    scenario = given(submit(job("a")), *running("a"))
    scenario.when(claimed("a")).then_nothing().when(started("a")).then_nothing()


# --------------------------------------------------------------------------- output, exceptions


def test_output_is_recorded() -> None:
    (
        given(submit(job("a")), *running("a"))
        .when(output("a", "hello\n", stream="stderr"))
        .then(on("a", JobOutput(1, "stderr", "hello\n", 0, False)))
    )


def test_an_exception_with_severity_above_zero_is_recorded_and_the_job_runs_on() -> None:
    scenario = (
        given(submit(job("a")), *running("a"))
        .when(exception("a", "DiskSlow", "write took 3 s", severity=3))
        .then(on("a", JobExceptionRaised(1, "DiskSlow", "write took 3 s", 3)))
        .status(a=JobStatus.RUNNING)
    )
    assert scenario.job("a").exceptions == 1
    assert scenario.job("a").error_type == ""
    scenario.when(finished("a")).then(on("a", JobCompleted), SubmissionCompleted)


def test_an_exception_with_severity_zero_fails_the_attempt() -> None:
    scenario = (
        given(submit(job("a")), *running("a"))
        .when(exception("a", "OutOfMemory", "rss above 4 GiB"))
        .then(
            on("a", JobExceptionRaised(1, "OutOfMemory", "rss above 4 GiB", 0)),
            on("a", JobFailed(1, FailureReason.EXCEPTION, "OutOfMemory", "rss above 4 GiB")),
            FAILED_ONE,
        )
        .status(a=JobStatus.FAILED)
    )
    assert (scenario.job("a").error_type, scenario.job("a").error_note) == (
        "OutOfMemory",
        "rss above 4 GiB",
    )
    scenario.when(finished("a")).then_nothing()


def test_a_fatal_exception_is_retried_like_any_failure() -> None:
    (
        given(submit(job("a", retries=1)), *running("a"))
        .when(exception("a", "Flaky"))
        .then(on("a", JobExceptionRaised), on("a", JobRetryScheduled))
        .status(a=JobStatus.PENDING)
    )


# --------------------------------------------------------------------------- completion, failure


def test_a_completed_attempt_completes_the_job_with_its_result() -> None:
    scenario = (
        given(submit(job("a")), *running("a"))
        .when(finished("a", result="42"), at=700)
        .then(on("a", JobCompleted(attempt=1, result="42")), SubmissionCompleted)
        .status(a=JobStatus.COMPLETED)
    )
    assert scenario.job("a").result == "42"
    assert scenario.job("a").finished_at == T0 + 700
    assert scenario.deadline() is None


def test_a_failed_attempt_without_retries_fails_the_job() -> None:
    (
        given(submit(job("a")), *running("a"))
        .when(failed("a", "ValueError"))
        .then(on("a", JobFailed(1, FailureReason.ERROR, "ValueError", "bad input")), FAILED_ONE)
    )


def test_a_command_exiting_non_zero_fails_with_its_exit_code() -> None:
    (
        given(submit(job("a", task=None, command=("false",))), *running("a"))
        .when(finished("a", Outcome.FAILED, exit_code=3))
        .then(
            on("a", JobFailed(1, FailureReason.EXIT_CODE, "ExitCode", "", exit_code=3)),
            FAILED_ONE,
        )
    )


def test_a_failure_without_an_error_type_is_an_error() -> None:
    (
        given(submit(job("a")), *running("a"))
        .when(finished("a", Outcome.FAILED))
        .then(on("a", JobFailed(1, FailureReason.ERROR, "Error", "")), FAILED_ONE)
    )


# --------------------------------------------------------------------------- retries


def test_a_failed_attempt_with_retries_left_waits_for_its_backoff() -> None:
    spec = job("a", retries=2, backoff_ms=1000, jitter=0.1)
    scenario = given(submit(spec), *running("a")).when(failed("a"), at=100)
    delay = backoff_ms(spec, SUB, 1)
    assert 900 <= delay <= 1100
    scenario.then(
        on(
            "a",
            JobRetryScheduled(
                failed_attempt=1,
                reason=FailureReason.ERROR,
                error_type="ValueError",
                error_note="bad input",
                next_attempt=2,
                not_before=T0 + 100 + delay,
                dispatch_id=None,
                queue="default",
            ),
        )
    ).status(a=JobStatus.PENDING).effects_are()
    assert scenario.job("a").attempt == 2
    assert scenario.deadline() == T0 + 100 + delay


def test_the_retry_is_dispatched_when_its_backoff_is_over() -> None:
    spec = job("a", retries=1, backoff_ms=1000)
    scenario = given(submit(spec), *running("a"), failed("a"))
    scenario.when(tick(), at=999).then_nothing()
    (
        scenario.when(tick(), at=1000)
        .then(on("a", JobDispatched(attempt=2, queue="default", dispatch_id=f"{SUB}/a/2")))
        .effects_are(Dispatch(f"{SUB}/a/2", SUB, "a", 2, spec, T0 + 1000, POLICY.lease_ms))
    )
    scenario.when(tick(), at=1500).then_nothing()


def test_a_retry_without_backoff_is_dispatched_at_once() -> None:
    spec = job("a", retries=1)
    scenario = given(submit(spec), *running("a")).when(failed("a"))
    scenario.then(
        on(
            "a",
            JobRetryScheduled(
                1, FailureReason.ERROR, "ValueError", "bad input", 2, T0, f"{SUB}/a/2", "default"
            ),
        )
    )
    scenario.effects_are(Dispatch(f"{SUB}/a/2", SUB, "a", 2, spec, T0, POLICY.lease_ms))


def test_the_backoff_grows_with_each_attempt_and_the_last_failure_is_final() -> None:
    spec = job("a", retries=2, backoff_ms=100)
    scenario = given(submit(spec), *running("a"), failed("a"))
    first = scenario.job("a").not_before - T0
    scenario.step(at(first, tick(), *running("a", 2), failed("a", attempt=2)))
    second = scenario.job("a").not_before - (T0 + first)
    assert (first, second) == (100, 200)
    scenario.step(at(first + second, tick(), *running("a", 3)))
    scenario.when(failed("a", attempt=3)).then(
        on("a", JobFailed(3, FailureReason.ERROR, "ValueError", "bad input")), FAILED_ONE
    )


def test_the_second_attempt_can_complete_the_job() -> None:
    (
        given(submit(job("a", retries=1)), *running("a"), failed("a"), *running("a", 2))
        .when(finished("a", attempt=2))
        .then(on("a", JobCompleted(attempt=2)), SubmissionCompleted)
    )


def test_only_the_listed_error_types_are_retried() -> None:
    spec = job("a", retries=3, retry_on=("ConnectionError",))
    (
        given(submit(spec), *running("a"))
        .when(failed("a", "ConnectionError"))
        .then(on("a", JobRetryScheduled))
        .step(running("a", 2))
        .when(failed("a", "ValueError", attempt=2))
        .then(on("a", JobFailed(2, FailureReason.ERROR, "ValueError", "bad input")), FAILED_ONE)
    )


def test_failure_reasons_can_be_listed_as_retryable() -> None:
    spec = job("a", retries=1, retry_on=("timeout",), timeout_ms=300)
    (
        given(submit(spec), *running("a"))
        .when(tick(), at=300)
        .then(
            on(
                "a",
                JobRetryScheduled(
                    1,
                    FailureReason.TIMEOUT,
                    "Timeout",
                    "ran longer than 300 ms",
                    2,
                    T0 + 300,
                    f"{SUB}/a/2",
                    "default",
                ),
            )
        )
    )
    (
        given(submit(spec), *running("a"))
        .when(failed("a", "ValueError"))
        .then(on("a", JobFailed), FAILED_ONE)
    )


def test_a_new_attempt_forgets_the_worker_of_the_failed_one() -> None:
    scenario = given(submit(job("a", retries=1)), *running("a")).when(failed("a"))
    state = scenario.job("a")
    assert (state.worker_id, state.run_at, state.assigned_at) == ("", None, None)
    assert (state.error_type, state.error_note) == ("ValueError", "bad input")


@settings(max_examples=200, deadline=None)
@for_all(
    base=st.integers(0, 100_000),
    multiplier=st.floats(1, 4),
    cap=st.integers(0, 200_000),
    jitter=st.floats(0, 1),
    attempt=st.integers(1, 3000),
    submission=st.text(min_size=1, max_size=5),
)
def test_the_backoff_is_the_jittered_exponential_delay_within_its_cap(
    base: int, multiplier: float, cap: int, jitter: float, attempt: int, submission: str
) -> None:
    spec = JobSpec(
        job_id="a",
        task="t",
        retry=RetryPolicy(
            max_attempts=attempt + 1,
            backoff_ms=base,
            backoff_multiplier=multiplier,
            max_backoff_ms=cap,
            jitter=jitter,
        ),
    )
    delay = backoff_ms(spec, submission, attempt)
    try:
        exact = min(base * multiplier ** (attempt - 1), cap)
    except OverflowError:
        exact = cap
    assert 0 <= delay <= cap
    assert exact * (1 - jitter) - 1 <= delay <= exact * (1 + jitter) + 1
    assert delay == backoff_ms(spec, submission, attempt), "the jitter is deterministic"


# --------------------------------------------------------------------------- timeouts


def test_an_attempt_running_past_its_timeout_fails_and_is_killed() -> None:
    (
        given(
            submit(job("a", timeout_ms=500)),
            at(0, *running("a")),
            at(400, heartbeat("w1", ref("a"))),
        )
        .when(tick(), at=499)
        .then_nothing()
        .when(tick(), at=500)
        .then(
            on("a", JobFailed(1, FailureReason.TIMEOUT, "Timeout", "ran longer than 500 ms")),
            FAILED_ONE,
        )
        .effects_are(kill("a", "timeout", sent_at=500))
    )


def test_an_attempt_its_worker_stopped_past_the_timeout_fails_with_reason_timeout() -> None:
    """The worker's own backstop (the scheduler's kill did not come) is a timeout too."""
    timed_out = finished(
        "a", Outcome.FAILED, error_type="Timeout", error_note="ran longer than 500 ms"
    )
    given(submit(job("a", timeout_ms=500)), *running("a")).when(timed_out).then(
        on("a", JobFailed(1, FailureReason.TIMEOUT, "Timeout", "ran longer than 500 ms")),
        FAILED_ONE,
    )
    # a task's own exception that happens to be named Timeout, on a job without a run
    # timeout, is an error like any other
    given(submit(job("a")), *running("a")).when(timed_out).then(
        on("a", JobFailed(1, FailureReason.ERROR, "Timeout", "ran longer than 500 ms")),
        FAILED_ONE,
    )


def test_the_run_timeout_counts_from_the_start() -> None:
    scenario = given(submit(job("a", timeout_ms=500)), at(0, claimed("a")), at(300, started("a")))
    assert scenario.deadline() == T0 + 800


def test_an_attempt_no_worker_claims_within_the_queue_timeout_fails() -> None:
    (
        given(submit(job("a", queue_timeout_ms=300)))
        .when(tick(), at=300)
        .then(
            on(
                "a",
                JobFailed(
                    1, FailureReason.QUEUE_TIMEOUT, "QueueTimeout", "not started within 300 ms"
                ),
            ),
            FAILED_ONE,
        )
        .effects_are()
    )


def test_an_assigned_attempt_not_started_within_the_queue_timeout_is_killed() -> None:
    (
        given(submit(job("a", queue_timeout_ms=300)), at(100, claimed("a")))
        .when(tick(), at=300)
        .then(
            on(
                "a",
                JobFailed(
                    1, FailureReason.QUEUE_TIMEOUT, "QueueTimeout", "not started within 300 ms"
                ),
            ),
            FAILED_ONE,
        )
        .effects_are(kill("a", "queue_timeout", sent_at=300))
    )


def test_a_started_attempt_has_left_the_queue() -> None:
    scenario = given(submit(job("a", queue_timeout_ms=300)), at(100, *running("a")))
    assert scenario.deadline() == T0 + 100 + POLICY.lease_ms
    scenario.when(tick(), at=300).then_nothing()


def test_the_queue_timeout_of_a_retry_starts_when_its_backoff_is_over() -> None:
    spec = job("a", retries=1, backoff_ms=5000, queue_timeout_ms=1000)
    scenario = given(submit(spec), *running("a"), failed("a"))
    assert scenario.deadline() == T0 + 5000
    scenario.when(tick(), at=5000).then(on("a", JobDispatched))
    assert scenario.deadline() == T0 + 6000
    scenario.when(tick(), at=6000).then(
        on(
            "a",
            JobFailed(2, FailureReason.QUEUE_TIMEOUT, "QueueTimeout", "not started within 1000 ms"),
        ),
        FAILED_ONE,
    )


def test_a_queue_timeout_is_retried_with_a_new_dispatch() -> None:
    (
        given(submit(job("a", retries=1, queue_timeout_ms=300)))
        .when(tick(), at=300)
        .then(
            on(
                "a",
                JobRetryScheduled(
                    1,
                    FailureReason.QUEUE_TIMEOUT,
                    "QueueTimeout",
                    "not started within 300 ms",
                    2,
                    T0 + 300,
                    f"{SUB}/a/2",
                    "default",
                ),
            )
        )
        .status(a=JobStatus.PENDING)
    )


# --------------------------------------------------------------------------- leases


def test_a_worker_silent_past_its_lease_loses_the_attempt() -> None:
    (
        given(submit(job("a")), at(0, *running("a")))
        .when(tick(), at=POLICY.lease_ms - 1)
        .then_nothing()
        .when(tick(), at=POLICY.lease_ms)
        .then(
            on(
                "a",
                JobFailed(
                    1,
                    FailureReason.WORKER_LOST,
                    "WorkerLost",
                    "worker w1 was silent past its lease",
                ),
            ),
            FAILED_ONE,
        )
        .effects_are(kill("a", "worker_lost", sent_at=POLICY.lease_ms))
    )


def test_a_lost_worker_attempt_is_retried() -> None:
    (
        given(submit(job("a", retries=1)), at(0, claimed("a")))
        .when(tick(), at=POLICY.lease_ms)
        .then(on("a", JobRetryScheduled))
        .status(a=JobStatus.PENDING)
    )


def test_a_heartbeat_renews_the_lease_and_decides_nothing() -> None:
    scenario = given(submit(job("a")), at(0, *running("a")))
    scenario.when(heartbeat("w1", ref("a")), at=800).then_nothing()
    assert scenario.deadline() == T0 + 800 + POLICY.lease_ms
    scenario.when(tick(), at=POLICY.lease_ms).then_nothing()
    scenario.when(tick(), at=800 + POLICY.lease_ms).then(on("a", JobFailed), FAILED_ONE)


def test_any_report_of_the_attempt_renews_the_lease() -> None:
    scenario = given(submit(job("a")), at(0, *running("a")), at(900, output("a", "x")))
    assert scenario.job("a").lease_until == T0 + 900 + POLICY.lease_ms


def test_a_heartbeat_renews_only_what_the_worker_runs() -> None:
    scenario = given(
        submit(job("a", retries=1), job("b")), at(0, *running("a"), *running("b", worker="w2"))
    )
    scenario.when(
        heartbeat("w1", ref("a", worker="w1"), ref("b", worker="w1"), ref("a", attempt=2)), at=500
    )
    assert scenario.job("a").lease_until == T0 + 500 + POLICY.lease_ms
    assert scenario.job("b").lease_until == T0 + POLICY.lease_ms


def test_leases_are_transient_and_re_armed_after_a_rebuild() -> None:
    scenario = given(submit(job("a")), at(0, *running("a")), at(900, heartbeat("w1", ref("a"))))
    rebuilt = scenario.replayed()
    assert rebuilt == scenario.state, "leases do not take part in equality"
    assert rebuilt.jobs["a"].lease_until == T0 + POLICY.lease_ms, "replay knows no heartbeat"
    recover(rebuilt, T0 + 5_000)
    assert rebuilt.jobs["a"].lease_until == T0 + 5_000 + POLICY.lease_ms


# --------------------------------------------------------------------------- workers leaving


def test_a_worker_leaving_with_an_unfinished_attempt_loses_it() -> None:
    (
        given(submit(job("a")), *running("a"))
        .when(worker_left("w1", ref("a")))
        .then(
            on(
                "a",
                JobFailed(
                    1, FailureReason.WORKER_LOST, "worker_left", "worker w1 left before finishing"
                ),
            ),
            FAILED_ONE,
        )
    )


def test_a_worker_leaving_is_retried_and_ignores_other_submissions_and_attempts() -> None:
    scenario = given(submit(job("a", retries=1)), *running("a"))
    scenario.when(worker_left("w1", ref("a", submission_id="other"), ref("a", attempt=2)))
    scenario.then_nothing()
    scenario.when(worker_left("w1", ref("a"))).then(on("a", JobRetryScheduled))
    scenario.when(worker_left("w1", ref("a"))).then_nothing()


# --------------------------------------------------------------------------- takeover, fencing


# A holder that missed two heartbeats (a third of its lease left) counts as gone.
SILENT = POLICY.lease_ms - POLICY.lease_ms // 3 + 1


def test_a_claim_of_an_attempt_whose_holder_heartbeats_is_refused_and_recorded() -> None:
    scenario = given(submit(job("a")), at(0, *running("a", worker="A")))
    scenario.step(at(300, heartbeat("A", ref("a", worker="A"))))
    (
        scenario.when(claimed("a", worker="B"), at=500)
        .then(on("a", JobDuplicateClaim(1, f"{SUB}/a/1", "B", "A", host="B.local")))
        .status(a=JobStatus.RUNNING)
        .effects_are(kill("a", "A holds this attempt and is alive", worker="B", sent_at=500))
    )
    assert scenario.job("a").worker_id == "A"
    for report in (started("a", worker="B"), finished("a", worker="B")):
        scenario.when(report).then_nothing().status(a=JobStatus.RUNNING)
    scenario.when(finished("a", worker="A")).then(on("a", JobCompleted), SubmissionCompleted)


def test_another_worker_claiming_the_same_dispatch_takes_over_and_the_old_one_is_killed() -> None:
    (
        given(submit(job("a")), at(0, *running("a", worker="A")))
        .when(claimed("a", worker="B"), at=SILENT)
        .then(
            on(
                "a",
                JobAssigned(
                    1, f"{SUB}/a/1", "B", POLICY.lease_ms, host="B.local", previous_worker_id="A"
                ),
            )
        )
        .status(a=JobStatus.ASSIGNED)
        .effects_are(kill("a", "another worker took over", worker="A", sent_at=SILENT))
    )


def test_after_a_takeover_the_old_worker_is_fenced() -> None:
    scenario = given(
        submit(job("a")), at(0, *running("a", worker="A")), at(SILENT, claimed("a", worker="B"))
    )
    for report in (
        started("a", worker="A"),
        progress("a", 0.5, worker="A"),
        exception("a", worker="A"),
        finished("a", worker="A"),
        claimed("a", worker="A"),
        worker_left("A", ref("a", worker="A")),
    ):
        scenario.when(report).then_nothing().status(a=JobStatus.ASSIGNED)
        assert scenario.job("a").worker_id == "B"
    scenario.when(started("a", worker="B")).then(on("a", JobStarted(1, "B", 4242)))
    scenario.when(finished("a", worker="B")).then(on("a", JobCompleted), SubmissionCompleted)


def test_a_heartbeat_of_the_old_worker_does_not_renew_the_new_lease() -> None:
    scenario = given(
        submit(job("a")), at(0, *running("a", worker="A")), at(SILENT, claimed("a", worker="B"))
    )
    scenario.when(heartbeat("A", ref("a", worker="A")), at=SILENT + 900)
    assert scenario.job("a").lease_until == T0 + SILENT + POLICY.lease_ms


def test_a_new_attempt_is_open_to_a_fenced_worker() -> None:
    scenario = given(
        submit(job("a", retries=1)),
        at(0, *running("a", worker="A")),
        at(SILENT, claimed("a", worker="B"), failed("a", worker="B")),
    )
    scenario.when(claimed("a", 2, worker="A")).then(on("a", JobAssigned))


def test_a_takeover_of_a_started_attempt_stays_bounded_by_its_run_timeout() -> None:
    spec = job("a", timeout_ms=2_000, queue_timeout_ms=300)
    policy = with_policy(lease_ms=1_200)  # A, silent since 0, is gone by 1,000
    scenario = given(
        submit(spec),
        at(0, *running("a", worker="A")),
        at(1_000, claimed("a", worker="B")),
        policy=policy,
    )
    assert scenario.job("a").worker_id == "B"
    scenario.when(tick(), at=1_000).then_nothing()
    assert scenario.deadline() == T0 + 2_000  # the run timeout, before B's lease ends
    scenario.step(at(1_900, heartbeat("B", ref("a", worker="B"))))
    scenario.when(tick(), at=2_000).then(
        on("a", JobFailed(1, FailureReason.TIMEOUT, "Timeout", "ran longer than 2000 ms")),
        FAILED_ONE,
    )


def test_reports_of_an_earlier_attempt_are_stale() -> None:
    scenario = given(submit(job("a", retries=1)), *running("a"), failed("a"), *running("a", 2))
    for report in (
        claimed("a"),
        started("a"),
        progress("a", 1),
        output("a", "x"),
        exception("a"),
        finished("a"),
    ):
        assert is_stale(scenario.state, report)
        scenario.when(report).then_nothing()
    scenario.status(a=JobStatus.RUNNING)


def test_reports_after_the_terminal_status_are_stale() -> None:
    scenario = given(submit(job("a")), *running("a"), finished("a"))
    for report in (
        claimed("a"),
        started("a"),
        progress("a", 1),
        exception("a"),
        failed("a"),
        claimed("a", worker="B"),
    ):
        assert is_stale(scenario.state, report)
        scenario.when(report).then_nothing()
    assert scenario.job("a").status is JobStatus.COMPLETED


def test_reports_of_an_unknown_job_or_submission_are_stale() -> None:
    scenario = given(submit(job("a")))
    assert is_stale(scenario.state, started("zz"))
    assert is_stale(None, started("a"))
    scenario.when(started("zz")).then_nothing()
    assert given().when(finished("a")).last == []


def test_a_report_from_a_worker_that_does_not_hold_the_attempt_is_stale() -> None:
    scenario = given(submit(job("a")), *running("a", worker="A"))
    assert is_stale(scenario.state, finished("a", worker="ghost"))
    assert not is_stale(scenario.state, claimed("a", worker="ghost")), "a claim is a takeover"
    assert not is_stale(scenario.state, tick())
    scenario.when(finished("a", worker="ghost")).then_nothing()


def test_a_report_for_a_retry_waiting_for_its_backoff_is_stale() -> None:
    scenario = given(submit(job("a", retries=1, backoff_ms=500)), *running("a"), failed("a"))
    assert is_stale(scenario.state, claimed("a", 2))
    scenario.when(claimed("a", 2)).then_nothing()


# --------------------------------------------------------------------------- progress


def test_the_first_progress_report_is_recorded() -> None:
    scenario = (
        given(submit(job("a")), *running("a"))
        .when(progress("a", 1, total=10, line="reading"), at=5)
        .then(on("a", JobProgressed(1, 1, 10, "reading")))
    )
    job_state = scenario.job("a")
    assert (job_state.progress, job_state.total, job_state.status_line) == (1, 10, "reading")
    assert job_state.last_progress_at == T0 + 5


def test_progress_within_the_interval_is_held_back_and_the_latest_flushed_by_a_tick() -> None:
    scenario = given(submit(job("a")), at(0, *running("a"), progress("a", 1)))
    scenario.when(progress("a", 2), at=50).then_nothing()
    scenario.when(progress("a", 3), at=120).then_nothing()
    assert scenario.deadline() == T0 + POLICY.progress_interval_ms
    scenario.when(tick(), at=199).then_nothing()
    scenario.when(tick(), at=200).then(on("a", JobProgressed(1, 3, None, None)))
    assert scenario.job("a").held_progress is None
    scenario.when(tick(), at=500).then_nothing()


def test_progress_after_the_interval_is_recorded_at_once() -> None:
    (
        given(submit(job("a")), at(0, *running("a"), progress("a", 1)))
        .when(progress("a", 2), at=200)
        .then(on("a", JobProgressed(1, 2, None, None)))
    )


def test_a_newer_recorded_value_supersedes_the_held_one() -> None:
    scenario = given(
        submit(job("a")), at(0, *running("a"), progress("a", 1)), at(50, progress("a", 2))
    )
    scenario.when(progress("a", 3), at=200).then(on("a", JobProgressed(1, 3, None, None)))
    scenario.when(tick(), at=400).then_nothing()
    assert scenario.job("a").progress == 3


def test_a_report_dropped_in_the_same_millisecond_is_held() -> None:
    scenario = given(submit(job("a")), at(0, *running("a"), progress("a", 1)))
    scenario.when(progress("a", 2), at=0).then_nothing()
    scenario.when(tick(), at=200).then(on("a", JobProgressed(1, 2, None, None)))


def test_held_fields_are_merged_with_a_later_partial_report() -> None:
    scenario = given(
        submit(job("a")),
        at(0, *running("a"), progress("a", 1, total=10)),
        at(50, progress("a", 5)),
        at(60, progress("a", line="halfway")),
    )
    scenario.when(tick(), at=200).then(on("a", JobProgressed(1, 5, None, "halfway")))
    job_state = scenario.job("a")
    assert (job_state.progress, job_state.total, job_state.status_line) == (5, 10, "halfway")


def test_the_final_values_of_a_finish_are_never_lost() -> None:
    (
        given(submit(job("a")), at(0, *running("a"), progress("a", 1)))
        .when(finished("a", progress=10, total=10, status_line="done"), at=10)
        .then(on("a", JobProgressed(1, 10, 10, "done")), on("a", JobCompleted), SubmissionCompleted)
    )


def test_a_finish_flushes_the_held_progress() -> None:
    (
        given(submit(job("a")), at(0, *running("a"), progress("a", 1)), at(10, progress("a", 9)))
        .when(finished("a"), at=20)
        .then(on("a", JobProgressed(1, 9, None, None)), on("a", JobCompleted), SubmissionCompleted)
    )


def test_a_finish_repeating_the_recorded_progress_adds_no_progress_event() -> None:
    (
        given(submit(job("a")), at(0, *running("a"), progress("a", 1, total=4)))
        .when(finished("a", progress=1), at=20)
        .then(on("a", JobCompleted), SubmissionCompleted)
    )


def test_a_failed_finish_also_records_its_final_progress() -> None:
    (
        given(submit(job("a")), *running("a"))
        .when(finished("a", Outcome.FAILED, error_type="E", status_line="gave up"))
        .then(on("a", JobProgressed(1, None, None, "gave up")), on("a", JobFailed), FAILED_ONE)
    )


@settings(max_examples=100, deadline=None)
@for_all(
    st.lists(
        st.tuples(
            st.integers(0, 300),
            st.one_of(st.none(), st.integers(0, 100)),
            st.one_of(st.none(), st.sampled_from(["x", "y", "z"])),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_coalesced_progress_is_rate_limited_and_ends_on_the_latest_values(
    reports: list[tuple[int, int | None, str | None]],
) -> None:
    scenario = given(submit(job("a")), *running("a"))
    now = 0
    latest: dict[str, object] = {"value": None, "line": None}
    for gap, value, line in reports:
        now += gap
        scenario.when(progress("a", value, line=line), at=now)
        deadline = scenario.deadline()
        if deadline is not None and deadline <= T0 + now:
            scenario.when(tick())
        latest["value"] = value if value is not None else latest["value"]
        latest["line"] = line if line is not None else latest["line"]
    scenario.when(tick(), at=now + POLICY.progress_interval_ms)
    times = [e.timestamp for e in scenario.history if isinstance(e.body, JobProgressed)]
    assert all(
        later - earlier >= POLICY.progress_interval_ms
        for earlier, later in itertools.pairwise(times)
    )
    job_state = scenario.job("a")
    assert (job_state.progress, job_state.status_line) == (latest["value"], latest["line"])
    assert job_state.held_progress is None


# --------------------------------------------------------------------------- pending reasons


def test_a_pending_event_names_its_queue_and_attempt() -> None:
    scenario = given().when(submit(job("a", queue="gpu")))
    scenario.then_includes(on("a", JobPending(1, "gpu", f"{SUB}/a/1", T0, "submitted")))


def test_a_result_over_the_limit_fails_the_attempt_and_keeps_its_head() -> None:
    policy = with_policy(max_result_bytes=100)
    scenario = given(submit(job("a")), *running("a"), policy=policy)
    big = '"' + "x" * 500 + '"'
    scenario.when(Finished(ref("a"), Outcome.COMPLETED, result=big)).then_includes(
        on("a", JobFailed)
    )
    job_a = scenario.job("a")
    assert job_a.error_type == "ResultTooLarge"
    assert "JOBLOG_MAX_RESULT_BYTES" in job_a.error_note and '"xxx' in job_a.error_note
    assert job_a.result is None


def test_texts_from_workers_are_cut_to_their_limits() -> None:
    policy = with_policy(max_note_bytes=50, max_traceback_bytes=80)
    scenario = given(submit(job("a")), *running("a"), policy=policy)
    scenario.when(ExceptionReported(ref("a"), "Warn", "n" * 1000, severity=3, traceback="t" * 1000))
    (event,) = scenario.last
    assert isinstance(event.body, JobExceptionRaised)
    assert len(event.body.note.encode()) <= 50 and event.body.note.endswith("[truncated]")
    assert len(event.body.traceback.encode()) <= 80


# --------------------------------------------------------------------------- claim with start


def _claiming_start(job_id: str, worker: str = "w1", attempt: int = 1) -> Started:
    return Started(ref(job_id, attempt, worker), pid=77, claimed=True, host=f"{worker}.local")


def test_a_claiming_start_assigns_and_starts_in_one_decision() -> None:
    scenario = given(submit(job("a"))).when(_claiming_start("a"))
    scenario.then(
        on("a", JobAssigned(1, f"{SUB}/a/1", "w1", POLICY.lease_ms, host="w1.local")),
        on("a", JobStarted(1, "w1", pid=77, started_at=0)),
    )
    scenario.status(a=JobStatus.RUNNING)


def test_a_claiming_start_of_a_held_attempt_by_another_live_worker_is_refused() -> None:
    scenario = given(submit(job("a")), *running("a", worker="w1"), heartbeat("w1", ref("a")))
    scenario.when(_claiming_start("a", worker="w2"))
    scenario.then(on("a", JobDuplicateClaim))
    scenario.status(a=JobStatus.RUNNING)
    assert scenario.job("a").worker_id == "w1"


def test_a_claiming_start_of_an_ended_attempt_is_answered_with_a_kill() -> None:
    scenario = given(submit(job("a")), cancel("a")).when(_claiming_start("a"))
    scenario.then_nothing()
    (kill,) = scenario.last_effects
    assert isinstance(kill, Control) and kill.worker_id == "w1"
