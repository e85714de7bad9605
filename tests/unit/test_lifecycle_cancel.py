"""Cancel, abandon, retry-now and delete; the outcome of a submission."""

from __future__ import annotations

from engine.lifecycle.decide import next_deadline
from engine.lifecycle.records import (
    CancelMode,
    Control,
    JobAbandoned,
    JobCanceled,
    JobCancelRequested,
    JobCompleted,
    JobDeleted,
    JobDispatched,
    JobFailed,
    JobPending,
    JobRetryScheduled,
    JobStatus,
    JobSubmitted,
    Outcome,
    RejectionCode,
    SubmissionAccepted,
    SubmissionCompleted,
    SubmissionStatus,
)
from tests.unit.lifecycle_dsl import (
    POLICY,
    SUB,
    T0,
    Fact,
    at,
    cancel,
    claimed,
    delete,
    exception,
    failed,
    finished,
    given,
    heartbeat,
    job,
    on,
    ref,
    retry_now,
    running,
    started,
    submit,
    succeeded,
    tick,
)

BY_USER = "canceled by user"
FINISH = CancelMode.FINISH


def canceled(attempt: int = 1, reason: str = BY_USER, by: str = "bob") -> JobCanceled:
    return JobCanceled(reason=reason, requested_by=by, attempt=attempt)


def left_to_finish(attempt: int = 1, worker: str = "w1") -> JobCancelRequested:
    return JobCancelRequested(attempt, worker, FINISH, BY_USER, deadline=0)


def abandoned(cause: str, status: JobStatus) -> JobAbandoned:
    return JobAbandoned(cause_job_id=cause, cause_status=status, reason=f"{cause} ended {status}")


def outcome(status: SubmissionStatus, **counts: int) -> SubmissionCompleted:
    return SubmissionCompleted(
        status, tuple(sorted((JobStatus(k.upper()), n) for k, n in counts.items()))
    )


def kill(job_id: str, reason: str, *, worker: str = "w1", sent_at: int = 0) -> Control:
    return Control(
        worker,
        "kill",
        SUB,
        job_id,
        1,
        f"{SUB}/{job_id}/1",
        reason,
        POLICY.kill_grace_ms,
        T0 + sent_at,
    )


# --------------------------------------------------------------------------- at once


def test_cancel_of_a_submitted_job_cancels_it_at_once() -> None:
    spec = job("a")
    (
        given(
            Fact("", SubmissionAccepted("submit-1", "alice", (), ("a",))),
            Fact("a", JobSubmitted(spec)),
        )
        .when(cancel("a"))
        .then(on("a", canceled(attempt=0)), outcome(SubmissionStatus.CANCELED, canceled=1))
        .status(a=JobStatus.CANCELED)
    )


def test_cancel_of_a_blocked_job_cancels_it_and_abandons_what_waits_on_it() -> None:
    (
        given(submit(job("a"), job("b", after=["a"]), job("c", after=["b"])))
        .when(cancel("b"))
        .then(on("b", canceled(attempt=0)), on("c", abandoned("b", JobStatus.CANCELED)))
        .status(a=JobStatus.PENDING, b=JobStatus.CANCELED, c=JobStatus.ABANDONED)
    )


def test_cancel_of_a_pending_job_cancels_it_without_a_kill() -> None:
    (
        given(submit(job("a")))
        .when(cancel("a", reason="not needed"), at=30)
        .then(
            on("a", canceled(reason="not needed")),
            outcome(SubmissionStatus.CANCELED, canceled=1),
        )
        .effects_are()
    )


def test_cancel_of_a_retry_waiting_for_its_backoff_cancels_it() -> None:
    scenario = given(submit(job("a", retries=1, backoff_ms=1000)), *running("a"), failed("a"))
    scenario.when(cancel("a")).then(on("a", canceled(attempt=2)), SubmissionCompleted)
    assert scenario.deadline() is None
    scenario.when(tick(), at=1000).then_nothing()


def test_cancel_of_an_assigned_job_cancels_it_and_kills_the_claim() -> None:
    (
        given(submit(job("a")), claimed("a"))
        .when(cancel("a"))
        .then(on("a", canceled()), SubmissionCompleted)
        .effects_are(kill("a", BY_USER))
    )


# --------------------------------------------------------------------------- running: kill


def test_cancel_of_a_running_job_asks_its_worker_to_kill_it() -> None:
    (
        given(submit(job("a")), *running("a"))
        .when(cancel("a"), at=100)
        .then(
            on(
                "a",
                JobCancelRequested(
                    attempt=1,
                    worker_id="w1",
                    mode=CancelMode.KILL,
                    reason=BY_USER,
                    deadline=T0 + 100 + POLICY.kill_grace_ms,
                ),
            )
        )
        .status(a=JobStatus.RUNNING)
        .effects_are(kill("a", BY_USER, sent_at=100))
    )


def test_the_worker_confirming_the_kill_cancels_the_job() -> None:
    (
        given(submit(job("a"), job("b", after=["a"])), *running("a"), cancel("a"))
        .when(finished("a", Outcome.CANCELED))
        .then(
            on("a", JobCanceled(reason=BY_USER, requested_by="", attempt=1)),
            on("b", abandoned("a", JobStatus.CANCELED)),
            outcome(SubmissionStatus.CANCELED, abandoned=1, canceled=1),
        )
    )


def test_an_unconfirmed_kill_cancels_the_job_at_its_deadline() -> None:
    scenario = given(submit(job("a"), job("b", after=["a"])), at(0, *running("a"), cancel("a")))
    deadline = POLICY.kill_grace_ms
    for beat in range(500, deadline, 500):
        scenario.step(at(beat, heartbeat("w1", ref("a"))))
    assert scenario.deadline() == T0 + deadline
    (
        scenario.when(tick(), at=deadline)
        .then(
            on("a", JobCanceled(f"{BY_USER} (the worker did not confirm the kill)", "", 1)),
            on("b", abandoned("a", JobStatus.CANCELED)),
            outcome(SubmissionStatus.CANCELED, abandoned=1, canceled=1),
        )
        .effects_are(
            kill("a", f"{BY_USER} (the worker did not confirm the kill)", sent_at=deadline)
        )
    )


def test_a_completion_after_the_kill_is_recorded_but_the_job_is_canceled() -> None:
    # A task that ignored the kill and completed: the user's cancel stands, and what
    # depends on the job never runs.
    (
        given(submit(job("a"), job("b", after=["a"])), *running("a"), cancel("a"))
        .when(finished("a"))
        .then(
            on(
                "a",
                JobCanceled(
                    f"{BY_USER} (the attempt reported COMPLETED after the kill; ignored)", "", 1
                ),
            ),
            on("b", abandoned("a", JobStatus.CANCELED)),
            outcome(SubmissionStatus.CANCELED, abandoned=1, canceled=1),
        )
        .status(a=JobStatus.CANCELED, b=JobStatus.ABANDONED)
    )


def test_a_failure_after_the_kill_is_a_cancel_and_is_not_retried() -> None:
    (
        given(submit(job("a", retries=3)), *running("a"), cancel("a"))
        .when(failed("a", "KeyboardInterrupt"))
        .then(
            on(
                "a",
                JobCanceled(
                    f"{BY_USER} (the attempt reported FAILED after the kill; ignored)", "", 1
                ),
            ),
            SubmissionCompleted,
        )
    )
    (
        given(submit(job("a", retries=3)), *running("a"), cancel("a"))
        .when(exception("a", "Killed"))
        .then_includes(on("a", JobCanceled))
    )


def test_a_worker_lost_while_the_kill_is_pending_cancels_the_job() -> None:
    (
        given(submit(job("a", retries=3)), at(0, *running("a"), cancel("a")))
        .when(tick(), at=POLICY.lease_ms)
        .then(on("a", JobCanceled(BY_USER, "", 1)), SubmissionCompleted)
    )


def test_the_run_timeout_stands_aside_while_a_kill_is_pending() -> None:
    scenario = given(submit(job("a", timeout_ms=100)), at(0, *running("a"), cancel("a")))
    scenario.step(at(100, heartbeat("w1", ref("a"))))
    scenario.when(tick(), at=100).then_nothing().status(a=JobStatus.RUNNING)


def test_a_second_cancel_of_a_job_being_killed_adds_nothing() -> None:
    given(submit(job("a")), *running("a"), cancel("a")).when(
        cancel("a", command_id="cancel-2")
    ).then_nothing()


# --------------------------------------------------------------------------- running: finish


def test_cancel_with_finish_lets_the_running_job_finish_and_abandons_its_dependents() -> None:
    reason = "a was canceled and left to finish"
    scenario = (
        given(submit(job("a"), job("b", after=["a"]), job("c", after=["b"])), *running("a"))
        .when(cancel("a", mode=FINISH))
        .then(
            on("a", left_to_finish()),
            on("b", JobAbandoned("a", JobStatus.RUNNING, reason)),
            on("c", JobAbandoned("b", JobStatus.ABANDONED, reason)),
        )
        .status(a=JobStatus.RUNNING)
        .effects_are()  # nothing is sent to the worker
    )
    scenario.when(finished("a")).then(
        on("a", JobCompleted), outcome(SubmissionStatus.CANCELED, abandoned=2, completed=1)
    )


def test_cancel_with_finish_of_a_job_not_running_cancels_it() -> None:
    given(submit(job("a"))).when(cancel("a", mode=FINISH)).then(
        on("a", canceled()), SubmissionCompleted
    )


def test_cancel_with_finish_of_a_parent_cancels_it_and_lets_its_running_sub_job_finish() -> None:
    (
        given(submit(job("p"), job("c", parent="p"), job("d", after=["p"])), *running("c"))
        .when(cancel("p", mode=FINISH))
        .then(
            on("c", left_to_finish()),
            on("p", canceled(attempt=0)),
            on("d", abandoned("p", JobStatus.CANCELED)),
        )
        .status(c=JobStatus.RUNNING)
    )


def test_cancel_with_finish_of_a_running_job_with_nothing_after_it_is_still_recorded() -> None:
    """The client learns the decision; a later kill cancel still kills; its timeout holds."""
    scenario = (
        given(submit(job("a", timeout_ms=60_000)), *running("a"))
        .when(cancel("a", mode=FINISH))
        .then(on("a", left_to_finish()))
        .status(a=JobStatus.RUNNING)
        .effects_are()
    )
    assert scenario.state is not None
    assert next_deadline(scenario.state, POLICY) is not None, "the run timeout still holds"
    scenario.when(cancel("a", command_id="cancel-2")).then(on("a", JobCancelRequested))
    assert [type(e).__name__ for e in scenario.last_effects] == ["Control"]


# --------------------------------------------------------------------------- rejected cancels


def test_cancel_of_a_failed_canceled_or_abandoned_job_is_rejected() -> None:
    """Taipy: a FAILED, CANCELED or ABANDONED job cannot be canceled (what follows it has
    already been abandoned)."""
    killed = (cancel("a", command_id="cancel-0"), finished("a", Outcome.CANCELED))
    for ending in ((failed("a"),), killed):
        (
            given(submit(job("a"), job("b"), job("c", after=["a"])), *running("a"), *ending)
            .when(cancel("a"))
            .then_rejected(RejectionCode.ALREADY_TERMINAL, job_id="a")
            .status(b=JobStatus.PENDING, c=JobStatus.ABANDONED)
        )
    (
        given(submit(job("a"), job("c", after=["a"])), *running("a"), failed("a"))
        .when(cancel("c"))
        .then_rejected(RejectionCode.ALREADY_TERMINAL, job_id="c")
    )


# --------------------------------------------------------------------------- after a success


def after_success(job_id: str, status: JobStatus, cause: str | None = None) -> JobAbandoned:
    cause_of = cause or "double"
    return JobAbandoned(
        cause_job_id=cause_of,
        cause_status=status,
        reason=f"double was canceled after it ended COMPLETED ({BY_USER})",
    )


def test_cancel_of_a_completed_job_abandons_what_follows_and_keeps_its_status() -> None:
    """Taipy: cancel of a COMPLETED job leaves it COMPLETED; its subsequent jobs that have not
    finished are abandoned, transitively (the seed's double_task -> print_task)."""
    scenario = (
        given(
            submit(
                job("double"),
                job("print", after=["double"]),
                job("archive", after=["print"]),
                job("other"),
            ),
            *succeeded("double"),
        )
        .when(cancel("double"))
        .then(
            on("double", left_to_finish()),
            on("print", after_success("print", JobStatus.COMPLETED)),
            on("archive", after_success("archive", JobStatus.ABANDONED, cause="print")),
        )
        .status(
            double=JobStatus.COMPLETED,
            print=JobStatus.ABANDONED,
            archive=JobStatus.ABANDONED,
            other=JobStatus.PENDING,
        )
        .effects_are()
    )
    scenario.when(claimed("print")).then_nothing()


def test_cancel_of_a_completed_job_with_nothing_after_it_is_recorded() -> None:
    """The client's handle learns the decision from the recorded request; nothing else
    changes, a second cancel is recorded too, and the submission completes once."""
    scenario = (
        given(submit(job("double")), *succeeded("double"))
        .when(cancel("double"))
        .then(on("double", left_to_finish()))
        .status(double=JobStatus.COMPLETED)
        .effects_are()
    )
    scenario.when(cancel("double", command_id="cancel-2")).then(on("double", left_to_finish()))
    assert scenario.job("double").status is JobStatus.COMPLETED
    assert scenario.replayed() == scenario.state


def test_cancel_of_a_skipped_job_abandons_what_follows() -> None:
    keyed = job("double", idempotency_key="k")
    (
        given(submit(keyed, job("print", after=["double"])), completed_keys={"k": "s-0/double"})
        .when(cancel("double"))
        .then(
            on("double", JobCancelRequested(0, "", FINISH, BY_USER, deadline=0)),
            on(
                "print",
                JobAbandoned(
                    "double",
                    JobStatus.SKIPPED,
                    f"double was canceled after it ended SKIPPED ({BY_USER})",
                ),
            ),
            outcome(SubmissionStatus.CANCELED, abandoned=1, skipped=1),
        )
        .status(double=JobStatus.SKIPPED)
    )


def test_cancel_of_a_completed_job_abandons_an_assigned_dependent_and_kills_its_claim() -> None:
    reason = f"double was canceled after it ended COMPLETED ({BY_USER})"
    (
        given(submit(job("double"), job("print", after=["double"])), *succeeded("double"))
        .step(claimed("print", worker="w2"))
        .when(cancel("double"))
        .then(
            on("double", left_to_finish()),
            on("print", after_success("print", JobStatus.COMPLETED)),
            outcome(SubmissionStatus.CANCELED, abandoned=1, completed=1),
        )
        .effects_are(kill("print", reason, worker="w2"))
    )


def test_cancel_of_a_completed_job_kills_a_running_dependent_by_default() -> None:
    """joblog's rule for what runs (cancel wins): a running dependent is killed and ends
    CANCELED; what follows it is abandoned at once."""
    reason = f"double was canceled after it ended COMPLETED ({BY_USER})"
    scenario = (
        given(
            submit(job("double"), job("print", after=["double"]), job("archive", after=["print"])),
            *succeeded("double"),
            *running("print", worker="w2"),
        )
        .when(cancel("double"))
        .then(
            on("double", left_to_finish()),
            on(
                "print",
                JobCancelRequested(1, "w2", CancelMode.KILL, reason, T0 + POLICY.kill_grace_ms),
            ),
            on("archive", after_success("archive", JobStatus.RUNNING, cause="print")),
        )
        .effects_are(kill("print", reason, worker="w2"))
    )
    scenario.when(finished("print", worker="w2")).then(
        on("print", JobCanceled),
        outcome(SubmissionStatus.CANCELED, abandoned=1, canceled=1, completed=1),
    )


def test_cancel_with_finish_of_a_completed_job_lets_a_running_dependent_finish() -> None:
    """Taipy's rule for what runs: it finishes; what follows it will not run."""
    scenario = (
        given(
            submit(job("double"), job("print", after=["double"]), job("archive", after=["print"])),
            *succeeded("double"),
            *running("print", worker="w2"),
        )
        .when(cancel("double", mode=FINISH))
        .then(
            on("double", left_to_finish()),
            on("archive", after_success("archive", JobStatus.RUNNING, cause="print")),
        )
        .status(print=JobStatus.RUNNING)
        .effects_are()
    )
    scenario.when(finished("print", worker="w2")).then(
        on("print", JobCompleted),
        outcome(SubmissionStatus.CANCELED, abandoned=1, completed=2),
    )


# --------------------------------------------------------------------------- the seed's examples


def test_taipy_example_cancel_of_the_blocked_print_task() -> None:
    """(3) double RUNNING, (4) print BLOCKED; cancel print; (5) double COMPLETED,
    (6) print CANCELED."""
    scenario = given(submit(job("double"), job("print", after=["double"])), *running("double"))
    scenario.status(double=JobStatus.RUNNING, print=JobStatus.BLOCKED)
    scenario.when(cancel("print")).then(on("print", canceled(attempt=0)))
    scenario.when(finished("double")).then(on("double", JobCompleted), SubmissionCompleted)
    scenario.status(double=JobStatus.COMPLETED, print=JobStatus.CANCELED)


def test_taipy_example_cancel_of_the_running_double_task() -> None:
    """(5) double COMPLETED, (6) print ABANDONED with mode FINISH (Taipy's rule); with the
    default KILL, joblog's own rule, double is CANCELED and print ABANDONED."""
    graph = submit(job("double"), job("print", after=["double"]))
    finish = given(graph, *running("double"))
    finish.when(cancel("double", mode=FINISH)).then(
        on("double", left_to_finish()),
        on(
            "print",
            JobAbandoned("double", JobStatus.RUNNING, "double was canceled and left to finish"),
        ),
    )
    finish.when(finished("double")).then(on("double", JobCompleted), SubmissionCompleted)
    finish.status(double=JobStatus.COMPLETED, print=JobStatus.ABANDONED)
    kill_ = given(graph, *running("double"))
    kill_.when(cancel("double")).then(on("double", JobCancelRequested))
    kill_.when(finished("double", Outcome.CANCELED)).then(
        on("double", JobCanceled),
        on("print", abandoned("double", JobStatus.CANCELED)),
        SubmissionCompleted,
    )
    kill_.status(double=JobStatus.CANCELED, print=JobStatus.ABANDONED)


def test_cancel_of_a_submission_that_already_ended_is_rejected() -> None:
    given(submit(job("a")), *succeeded("a")).when(cancel()).then_rejected(
        RejectionCode.ALREADY_TERMINAL
    )


def test_cancel_of_an_unknown_job_or_submission_is_rejected() -> None:
    given(submit(job("a"))).when(cancel("zz")).then_rejected(RejectionCode.UNKNOWN_JOB, job_id="zz")
    scenario = given().when(cancel("a")).then_rejected(RejectionCode.UNKNOWN_SUBMISSION, job_id="a")
    assert scenario.last[0].seq == 0


def test_cancel_of_a_deleted_job_is_rejected() -> None:
    (
        given(submit(job("a"), job("b")), *succeeded("a"), delete("a"))
        .when(cancel("a"))
        .then_rejected(RejectionCode.DELETED, job_id="a")
    )


# --------------------------------------------------------------------------- trees, submissions


def test_cancel_of_a_parent_cancels_its_sub_jobs_deepest_first() -> None:
    (
        given(submit(job("r"), job("a", parent="r"), job("a1", parent="a"), job("b", parent="r")))
        .when(cancel("r"))
        .then(
            on("a1", canceled()),
            on("a", canceled(attempt=0)),
            on("b", canceled()),
            on("r", canceled(attempt=0)),
            outcome(SubmissionStatus.CANCELED, canceled=4),
        )
    )


def test_cancel_of_a_parent_kills_its_running_sub_jobs() -> None:
    scenario = (
        given(submit(job("p"), job("c1", parent="p"), job("c2", parent="p")), *running("c1"))
        .when(cancel("p"))
        .then(on("c1", JobCancelRequested), on("c2", canceled()), on("p", canceled(attempt=0)))
        .status(c1=JobStatus.RUNNING)
    )
    scenario.when(finished("c1", Outcome.CANCELED)).then(
        on("c1", JobCanceled), outcome(SubmissionStatus.CANCELED, canceled=3)
    )


def test_cancel_of_a_sub_job_abandons_its_parent() -> None:
    (
        given(submit(job("r"), job("a", parent="r"), job("a1", parent="a"), job("b", parent="r")))
        .when(cancel("a1"))
        .then(
            on("a1", canceled()),
            on("a", abandoned("a1", JobStatus.CANCELED)),
            on("r", abandoned("a", JobStatus.ABANDONED)),
        )
        .status(b=JobStatus.PENDING)
    )


def test_cancel_of_the_submission_cancels_every_unfinished_job() -> None:
    (
        given(
            submit(job("done"), job("run"), job("wait"), job("later", after=["wait"])),
            *succeeded("done"),
            *running("run"),
        )
        .when(cancel())
        .then(
            on("run", JobCancelRequested),
            on("wait", canceled()),
            on("later", canceled(attempt=0)),
        )
        .when(finished("run", Outcome.CANCELED))
        .then(on("run", JobCanceled), outcome(SubmissionStatus.CANCELED, canceled=3, completed=1))
    )


def test_cancel_with_finish_of_the_submission_cancels_all_but_the_running_jobs() -> None:
    (
        given(submit(job("run"), job("next", after=["run"])), *running("run"))
        .when(cancel(mode=FINISH))
        .then(on("run", left_to_finish()), on("next", canceled(attempt=0)))
        .status(run=JobStatus.RUNNING)
        .when(finished("run"))
        .then(on("run", JobCompleted), outcome(SubmissionStatus.CANCELED, canceled=1, completed=1))
    )


# --------------------------------------------------------------------------- abandoned


def test_a_failure_abandons_a_chain_of_dependents() -> None:
    (
        given(
            submit(job("a"), job("b", after=["a"]), job("c", after=["b"]), job("x")), *running("a")
        )
        .when(failed("a"))
        .then(
            on("a", JobFailed),
            on("b", abandoned("a", JobStatus.FAILED)),
            on("c", abandoned("b", JobStatus.ABANDONED)),
        )
        .status(x=JobStatus.PENDING)
        .step(succeeded("x"))
        .then(
            on("x", JobCompleted),
            outcome(SubmissionStatus.FAILED, abandoned=2, completed=1, failed=1),
        )
    )


def test_a_job_waiting_on_two_failed_branches_is_abandoned_once() -> None:
    scenario = given(
        submit(job("a"), job("b"), job("j", after=["a", "b"])),
        *running("a"),
        *running("b", worker="w2"),
    )
    scenario.when(failed("a")).then(on("a", JobFailed), on("j", abandoned("a", JobStatus.FAILED)))
    scenario.when(failed("b", worker="w2")).then(
        on("b", JobFailed), outcome(SubmissionStatus.FAILED, abandoned=1, failed=2)
    )


def test_a_failed_sub_job_abandons_its_ancestors_and_their_dependents() -> None:
    (
        given(
            submit(job("r"), job("a", parent="r"), job("a1", parent="a"), job("z", after=["r"])),
            *running("a1"),
        )
        .when(failed("a1"))
        .then(
            on("a1", JobFailed),
            on("a", abandoned("a1", JobStatus.FAILED)),
            on("r", abandoned("a", JobStatus.ABANDONED)),
            on("z", abandoned("r", JobStatus.ABANDONED)),
            outcome(SubmissionStatus.FAILED, abandoned=3, failed=1),
        )
    )


def test_a_retry_does_not_abandon_anything() -> None:
    (
        given(submit(job("a", retries=1), job("b", after=["a"])), *running("a"))
        .when(failed("a"))
        .then(on("a", JobRetryScheduled))
        .status(b=JobStatus.BLOCKED)
    )


# --------------------------------------------------------------------------- retry now


def test_retry_now_dispatches_a_retry_waiting_for_its_backoff() -> None:
    spec = job("a", retries=1, backoff_ms=60_000)
    scenario = given(submit(spec), *running("a"), failed("a"))
    scenario.when(retry_now("a"), at=10).then(on("a", JobDispatched(2, "default", f"{SUB}/a/2")))
    assert [effect.job_id for effect in scenario.last_effects] == ["a"]
    scenario.when(tick(), at=60_000).then_nothing()
    scenario.when(retry_now("a", command_id="retry-2")).then_rejected(
        RejectionCode.NOT_WAITING, job_id="a"
    )


def test_retry_now_of_a_job_that_waits_for_nothing_is_rejected() -> None:
    given(submit(job("a"))).when(retry_now("a")).then_rejected(
        RejectionCode.NOT_WAITING, job_id="a"
    )
    given(submit(job("a")), *running("a")).when(retry_now("a")).then_rejected(
        RejectionCode.NOT_WAITING, job_id="a"
    )
    given(submit(job("a")), *succeeded("a")).when(retry_now("a")).then_rejected(
        RejectionCode.ALREADY_TERMINAL, job_id="a"
    )


def test_retry_now_of_an_unknown_job_or_submission_is_rejected() -> None:
    given(submit(job("a"))).when(retry_now("zz")).then_rejected(
        RejectionCode.UNKNOWN_JOB, job_id="zz"
    )
    given().when(retry_now("a")).then_rejected(RejectionCode.UNKNOWN_SUBMISSION, job_id="a")


# --------------------------------------------------------------------------- delete


def test_a_terminal_job_can_be_deleted_and_its_state_remains() -> None:
    scenario = (
        given(submit(job("a"), job("b")), *succeeded("a"))
        .when(delete("a"))
        .then(on("a", JobDeleted(forced=False, requested_by="bob")))
        .status(a=JobStatus.COMPLETED)
    )
    assert scenario.job("a").deleted
    assert scenario.state is not None and not scenario.state.deleted
    scenario.when(delete("a", command_id="delete-2")).then_rejected(
        RejectionCode.DELETED, job_id="a"
    )


def test_an_unfinished_job_is_not_deleted_without_force() -> None:
    given(submit(job("a")), *running("a")).when(delete("a")).then_rejected(
        RejectionCode.NOT_TERMINAL, job_id="a"
    ).status(a=JobStatus.RUNNING)
    given(submit(job("a"), job("b")), *succeeded("a")).when(delete()).then_rejected(
        RejectionCode.NOT_TERMINAL
    )


def test_a_forced_delete_cancels_kills_and_then_deletes() -> None:
    (
        given(submit(job("a"), job("b", after=["a"])), *running("a"))
        .when(delete("a", force=True))
        .then(
            on("a", canceled(reason="deleted with force")),
            on("b", abandoned("a", JobStatus.CANCELED)),
            outcome(SubmissionStatus.CANCELED, abandoned=1, canceled=1),
            on("a", JobDeleted(forced=True, requested_by="bob")),
        )
        .effects_are(kill("a", "deleted with force"))
    )


def test_deleting_the_whole_submission_deletes_every_job() -> None:
    scenario = (
        given(submit(job("a"), job("b")), *succeeded("a"), *succeeded("b", worker="w2"))
        .when(delete())
        .then(on("a", JobDeleted), on("b", JobDeleted))
    )
    assert scenario.state is not None and scenario.state.deleted
    scenario.when(delete(command_id="delete-2")).then_rejected(RejectionCode.DELETED)
    scenario.when(finished("a")).then_nothing()


def test_a_forced_delete_of_the_submission_ends_it_first() -> None:
    (
        given(submit(job("a"), job("b")), *running("a"))
        .when(delete(force=True))
        .then(
            on("a", JobCanceled),
            on("b", JobCanceled),
            outcome(SubmissionStatus.CANCELED, canceled=2),
            on("a", JobDeleted(True, "bob")),
            on("b", JobDeleted(True, "bob")),
        )
    )


def test_delete_of_an_unknown_job_or_submission_is_rejected() -> None:
    given(submit(job("a"))).when(delete("zz")).then_rejected(RejectionCode.UNKNOWN_JOB, job_id="zz")
    given().when(delete()).then_rejected(RejectionCode.UNKNOWN_SUBMISSION)


def test_nothing_but_a_deletion_follows_a_terminal_event_of_a_job() -> None:
    scenario = given(submit(job("a")), *running("a"), failed("a"))
    for late in (started("a"), finished("a"), cancel("a"), retry_now("a"), tick()):
        scenario.when(late)
        assert all(e.name == "CommandRejected" for e in scenario.last), scenario.last
    scenario.when(delete("a")).then(on("a", JobDeleted))


# --------------------------------------------------------------------------- the submission


def test_the_submission_outcome_is_failed_if_any_job_failed() -> None:
    (
        given(submit(job("a"), job("b"), job("c")), *running("a"), cancel("b"))
        .when(failed("a"))
        .then(on("a", JobFailed))
        .step(succeeded("c", worker="w2"))
        .then(
            on("c", JobCompleted),
            outcome(SubmissionStatus.FAILED, canceled=1, completed=1, failed=1),
        )
    )


def test_the_submission_completes_once() -> None:
    scenario = given(submit(job("a")), *succeeded("a"))
    scenario.when(tick(), at=10_000).then_nothing()
    completions = [e for e in scenario.history if isinstance(e.body, SubmissionCompleted)]
    assert len(completions) == 1
    assert scenario.state is not None and scenario.state.done


def test_pending_jobs_are_never_submitted_twice() -> None:
    scenario = given(submit(job("a"), job("b", after=["a"])), *succeeded("a"))
    pendings = [e.job_id for e in scenario.history if isinstance(e.body, JobPending)]
    assert pendings == ["a", "b"]
