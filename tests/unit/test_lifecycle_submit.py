"""Submitting: single jobs, graphs, trees, skipped jobs, duplicates and every validation rule."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.lifecycle.decide import Policy, validate_submission
from engine.lifecycle.notifications import MAX_NOTIFICATIONS
from engine.lifecycle.records import (
    AddNotification,
    ChangeSchedule,
    CommandRejected,
    CreateSchedule,
    Dispatch,
    JobBlocked,
    JobCompleted,
    JobPending,
    JobSkipped,
    JobSpec,
    JobStatus,
    JobSubmitted,
    Notification,
    RejectionCode,
    RemoveNotification,
    RerunJobs,
    RetryPolicy,
    ScheduleAction,
    ScheduleSpec,
    SubmissionAccepted,
    SubmissionCompleted,
    SubmissionStatus,
    SubmitJobs,
    Unprocessable,
    schedule_submission_id,
)
from tests.unit.lifecycle_dsl import (
    POLICY,
    SUB,
    T0,
    Scenario,
    cancel,
    delete,
    given,
    job,
    on,
    retry_now,
    submit,
    succeeded,
)


def pending(attempt: int = 1, reason: str = "submitted", job_id: str = "a") -> JobPending:
    return JobPending(
        attempt=attempt,
        queue="default",
        dispatch_id=f"{SUB}/{job_id}/{attempt}",
        not_before=T0,
        reason=reason,
    )


def accepted(*job_ids: str) -> SubmissionAccepted:
    return SubmissionAccepted(
        command_id="submit-1", submitted_by="alice", labels=(), job_ids=job_ids
    )


# --------------------------------------------------------------------------- one job


def test_a_single_job_is_submitted_then_pending_with_its_dispatch() -> None:
    a = job("a")
    (
        given()
        .when(submit(a))
        .then(accepted("a"), on("a", JobSubmitted(a)), on("a", pending(job_id="a")))
        .status(a=JobStatus.PENDING)
        .effects_are(
            Dispatch(
                dispatch_id=f"{SUB}/a/1",
                submission_id=SUB,
                job_id="a",
                attempt=1,
                spec=a,
                dispatched_at=T0,
                lease_ms=POLICY.lease_ms,
            )
        )
    )


def test_the_job_records_its_submission_time() -> None:
    scenario = given().when(submit(job("a")), at=42)
    assert scenario.job("a").submitted_at == T0 + 42
    assert scenario.job("a").pending_at == T0 + 42
    assert scenario.job("a").blocked_at is None


def test_a_completed_single_job_completes_the_submission() -> None:
    (
        given(submit(job("a")))
        .step(succeeded("a"))
        .then(
            on("a", JobCompleted(attempt=1)),
            SubmissionCompleted(SubmissionStatus.COMPLETED, ((JobStatus.COMPLETED, 1),)),
        )
    )


def test_the_same_submit_command_delivered_twice_is_a_no_op() -> None:
    given(submit(job("a"))).when(submit(job("a"))).then_nothing()


def test_another_submit_command_for_an_existing_submission_is_rejected() -> None:
    (
        given(submit(job("a")))
        .when(submit(job("b"), command_id="submit-2"))
        .then_rejected(RejectionCode.DUPLICATE_SUBMISSION)
    )


def test_a_rejected_submission_leaves_the_id_free_for_a_valid_one() -> None:
    scenario = given().when(submit()).then_rejected(RejectionCode.EMPTY_SUBMISSION)
    assert scenario.last[0].seq == 0, "a submission that does not exist has no sequence"
    scenario.when(submit(job("a"), command_id="submit-2")).then_includes(SubmissionAccepted)
    assert [e.seq for e in scenario.sequenced()] == [1, 2, 3]


# --------------------------------------------------------------------------- graphs


def test_a_job_is_blocked_until_its_dependencies_completed() -> None:
    (
        given()
        .when(submit(job("a"), job("b", after=["a"]), job("c", after=["b", "a"])))
        .then(
            SubmissionAccepted,
            on("a", JobSubmitted),
            on("b", JobSubmitted),
            on("c", JobSubmitted),
            on("a", pending(job_id="a")),
            on("b", JobBlocked(("a",))),
            on("c", JobBlocked(("a", "b"))),
        )
        .status(a=JobStatus.PENDING, b=JobStatus.BLOCKED, c=JobStatus.BLOCKED)
    )


def test_a_completion_releases_only_the_dependents_with_nothing_left_to_wait_for() -> None:
    scenario = (
        given(submit(job("a"), job("b", after=["a"]), job("c", after=["a", "b"])))
        .step(succeeded("a"))
        .then(
            on("a", JobCompleted(attempt=1)),
            on("b", pending(reason="dependencies completed", job_id="b")),
        )
        .status(b=JobStatus.PENDING, c=JobStatus.BLOCKED)
    )
    assert scenario.job("c").waiting_on == {"b"}
    scenario.step(succeeded("b")).then(
        on("b", JobCompleted(attempt=1)),
        on("c", pending(reason="dependencies completed", job_id="c")),
    )
    scenario.step(succeeded("c")).then(
        on("c", JobCompleted),
        SubmissionCompleted(SubmissionStatus.COMPLETED, ((JobStatus.COMPLETED, 3),)),
    )


def test_a_diamond_runs_its_join_once_both_branches_completed() -> None:
    scenario = given(
        submit(job("a"), job("b", after=["a"]), job("c", after=["a"]), job("d", after=["b", "c"]))
    ).step(succeeded("a"))
    scenario.then(on("a", JobCompleted), on("b", JobPending), on("c", JobPending))
    scenario.step(succeeded("c")).then(on("c", JobCompleted)).status(d=JobStatus.BLOCKED)
    scenario.step(succeeded("b")).then(on("b", JobCompleted), on("d", JobPending))


def test_jobs_listed_before_their_dependencies_still_wait_for_them() -> None:
    (
        given()
        .when(submit(job("b", after=["a"]), job("a")))
        .then_includes(on("a", JobPending), on("b", JobBlocked(("a",))))
    )


# --------------------------------------------------------------------------- trees


def tree() -> tuple[JobSpec, ...]:
    """r has sub-jobs a and b; a has sub-jobs a1 and a2 (parents listed first)."""
    return (
        job("r"),
        job("a", parent="r"),
        job("a1", parent="a"),
        job("a2", parent="a"),
        job("b", parent="r"),
    )


def test_a_tree_runs_its_leaves_first_in_depth_first_order() -> None:
    (
        given()
        .when(submit(*tree()))
        .then(
            SubmissionAccepted,
            *(on(j, JobSubmitted) for j in ("r", "a", "a1", "a2", "b")),
            on("a1", JobPending),
            on("a2", JobPending),
            on("a", JobBlocked(("a1", "a2"))),
            on("b", JobPending),
            on("r", JobBlocked(("a", "b"))),
        )
    )


def test_the_dispatch_order_of_a_tree_is_depth_first() -> None:
    scenario = given().when(submit(*tree()))
    assert [effect.job_id for effect in scenario.last_effects] == ["a1", "a2", "b"]


def test_a_parent_runs_only_once_all_its_sub_jobs_completed() -> None:
    scenario = given(submit(*tree())).step(succeeded("a1")).status(a=JobStatus.BLOCKED)
    scenario.step(succeeded("b")).status(r=JobStatus.BLOCKED)
    scenario.step(succeeded("a2")).then(on("a2", JobCompleted), on("a", JobPending))
    scenario.status(r=JobStatus.BLOCKED)
    scenario.step(succeeded("a")).then(on("a", JobCompleted), on("r", JobPending))
    scenario.step(succeeded("r")).then(
        on("r", JobCompleted),
        SubmissionCompleted(SubmissionStatus.COMPLETED, ((JobStatus.COMPLETED, 5),)),
    )


def test_a_parent_listed_after_its_sub_jobs_is_blocked_on_them() -> None:
    (
        given()
        .when(submit(job("c1", parent="p"), job("c2", parent="p"), job("p")))
        .then_includes(
            on("c1", JobPending), on("c2", JobPending), on("p", JobBlocked(("c1", "c2")))
        )
    )


def test_a_parent_may_also_depend_on_other_jobs() -> None:
    scenario = given(submit(job("x"), job("p", after=["x"]), job("c", parent="p")))
    assert scenario.job("p").waiting_on == {"x", "c"}
    scenario.step(succeeded("c")).status(p=JobStatus.BLOCKED)
    scenario.step(succeeded("x")).then(on("x", JobCompleted), on("p", JobPending))


# --------------------------------------------------------------------------- skipped


def test_a_job_whose_idempotency_key_already_completed_is_skipped() -> None:
    (
        given(completed_keys={"nightly-1": "old-sub/load"})
        .when(submit(job("a", idempotency_key="nightly-1")))
        .then(
            SubmissionAccepted,
            on("a", JobSubmitted),
            on(
                "a",
                JobSkipped(
                    reason="idempotency key 'nightly-1' already completed by old-sub/load",
                    idempotency_key="nightly-1",
                    completed_by="old-sub/load",
                ),
            ),
            SubmissionCompleted(SubmissionStatus.COMPLETED, ((JobStatus.SKIPPED, 1),)),
        )
        .status(a=JobStatus.SKIPPED)
        .effects_are()
    )


def test_the_dependents_of_a_skipped_job_run() -> None:
    (
        given(completed_keys={"k": "old/a"})
        .when(submit(job("a", idempotency_key="k"), job("b", after=["a"])))
        .then_includes(
            on("a", JobSkipped), on("b", JobPending(1, "default", f"{SUB}/b/1", T0, "submitted"))
        )
        .status(a=JobStatus.SKIPPED, b=JobStatus.PENDING)
    )


def test_a_skipped_sub_job_lets_its_parent_run_when_the_others_completed() -> None:
    scenario = given(
        submit(job("p"), job("c1", parent="p", idempotency_key="k"), job("c2", parent="p")),
        completed_keys={"k": "old/c1"},
    )
    scenario.status(c1=JobStatus.SKIPPED, p=JobStatus.BLOCKED)
    assert scenario.job("p").waiting_on == {"c2"}
    scenario.step(succeeded("c2")).then(on("c2", JobCompleted), on("p", JobPending))


def test_a_key_not_completed_here_is_asked_of_its_ledger() -> None:
    scenario = (
        given(completed_keys={"other": "old/x"})
        .when(submit(job("a", idempotency_key="k")))
        .status(a=JobStatus.BLOCKED)
    )
    assert [type(e).__name__ for e in scenario.last_effects] == ["ClaimIdempotencyKey"]


def test_completed_and_skipped_jobs_complete_the_submission() -> None:
    (
        given(submit(job("a", idempotency_key="k"), job("b")), completed_keys={"k": "old/a"})
        .step(succeeded("b"))
        .then(
            on("b", JobCompleted),
            SubmissionCompleted(
                SubmissionStatus.COMPLETED, ((JobStatus.COMPLETED, 1), (JobStatus.SKIPPED, 1))
            ),
        )
    )


# --------------------------------------------------------------------------- validation


def _retry(**changes: object) -> JobSpec:
    return JobSpec(job_id="a", task="t", retry=RetryPolicy(**changes))  # type: ignore[arg-type]


#: (what is wrong, the jobs, the code)
REJECTED_SUBMISSIONS: list[tuple[str, tuple[JobSpec, ...], RejectionCode]] = [
    ("no jobs", (), RejectionCode.EMPTY_SUBMISSION),
    ("same id twice", (job("a"), job("a")), RejectionCode.DUPLICATE_JOB_ID),
    ("slash in job id", (job("a/b"),), RejectionCode.INVALID_JOB_ID),
    ("empty job id", (job(""),), RejectionCode.INVALID_JOB_ID),
    ("job id starts with dash", (job("-a"),), RejectionCode.INVALID_JOB_ID),
    ("job id too long", (job("x" * 201),), RejectionCode.INVALID_JOB_ID),
    ("bad queue", (job("a", queue="gpu/1"),), RejectionCode.INVALID_JOB_ID),
    ("unknown dep", (job("a", after=["z"]),), RejectionCode.UNKNOWN_DEPENDENCY),
    ("unknown parent", (job("a", parent="z"),), RejectionCode.UNKNOWN_PARENT),
    ("depends on itself", (job("a", after=["a"]),), RejectionCode.CYCLE),
    ("own parent", (job("a", parent="a"),), RejectionCode.CYCLE),
    (
        "dependency cycle",
        (job("a", after=["c"]), job("b", after=["a"]), job("c", after=["b"])),
        RejectionCode.CYCLE,
    ),
    (
        "sub-job depends on its parent",
        (job("p"), job("c", parent="p", after=["p"])),
        RejectionCode.CYCLE,
    ),
    ("neither task nor command", (job("a", task=None),), RejectionCode.NO_TASK),
    ("empty argv", (job("a", task=None, command=("",)),), RejectionCode.NO_TASK),
    ("both", (job("a", command=("ls",)),), RejectionCode.TASK_AND_COMMAND),
    ("no attempt", (_retry(max_attempts=0),), RejectionCode.BAD_RETRY),
    ("negative backoff", (_retry(backoff_ms=-1),), RejectionCode.BAD_RETRY),
    ("negative cap", (_retry(max_backoff_ms=-1),), RejectionCode.BAD_RETRY),
    ("shrinking", (_retry(backoff_multiplier=0.5),), RejectionCode.BAD_RETRY),
    ("jitter above 1", (_retry(jitter=1.5),), RejectionCode.BAD_RETRY),
    ("negative jitter", (_retry(jitter=-0.1),), RejectionCode.BAD_RETRY),
    ("run timeout", (job("a", timeout_ms=-1),), RejectionCode.BAD_TIMEOUT),
    ("queue timeout", (job("a", queue_timeout_ms=-5),), RejectionCode.BAD_TIMEOUT),
    ("args not JSON", (job("a", args="{"),), RejectionCode.BAD_ARGS),
    ("args not an object", (job("a", args="[1, 2]"),), RejectionCode.BAD_ARGS),
]


@pytest.mark.parametrize(
    ("jobs", "code"),
    [pytest.param(jobs, code, id=name) for name, jobs, code in REJECTED_SUBMISSIONS],
)
def test_a_submission_that_breaks_a_rule_is_rejected(
    jobs: tuple[JobSpec, ...], code: RejectionCode
) -> None:
    scenario = given().when(submit(*jobs)).then_rejected(code)
    body = scenario.last[0].body
    assert isinstance(body, CommandRejected)
    assert (body.command_id, body.command_type) == ("submit-1", "SubmitJobs")
    assert scenario.state is not None and not scenario.state.accepted
    assert validate_submission(submit(*jobs)) is not None


def test_a_submission_id_with_a_slash_is_rejected() -> None:
    given().when(submit(job("a"), submission_id="a/b")).then_rejected(RejectionCode.INVALID_JOB_ID)


def test_too_many_jobs_are_rejected() -> None:
    policy = Policy(max_jobs=2)
    scenario = given(policy=policy).when(submit(job("a"), job("b"), job("c")))
    scenario.then_rejected(RejectionCode.TOO_MANY_JOBS)
    given(policy=policy).when(submit(job("a"), job("b"))).then_includes(SubmissionAccepted)


def test_arguments_larger_than_the_limit_are_rejected() -> None:
    policy = Policy(max_args_bytes=20)
    big = '{"args": ["' + "x" * 20 + '"]}'
    given(policy=policy).when(submit(job("a", args=big))).then_rejected(
        RejectionCode.ARGS_TOO_LARGE
    )


def test_a_valid_submission_passes_validation() -> None:
    assert (
        validate_submission(submit(*tree(), job("x", after=["r"], command=("ls",), task=None)))
        is None
    )


# --------------------------------------------------------------------------- every code


def test_every_rejection_code_is_emitted_by_some_command() -> None:
    """Each code of RejectionCode has a command that gets it (a new code needs an example)."""
    finished_a = given(submit(job("a"), job("b")), *succeeded("a"))
    examples: dict[RejectionCode, Scenario] = {
        code: given().when(submit(*jobs)) for _, jobs, code in REJECTED_SUBMISSIONS
    }
    examples[RejectionCode.TOO_MANY_JOBS] = given(policy=Policy(max_jobs=1)).when(
        submit(job("a"), job("b"))
    )
    examples[RejectionCode.ARGS_TOO_LARGE] = given(policy=Policy(max_args_bytes=1)).when(
        submit(job("a"))
    )
    examples[RejectionCode.DUPLICATE_SUBMISSION] = given(submit(job("a"))).when(
        submit(job("a"), command_id="again")
    )
    examples[RejectionCode.UNKNOWN_SUBMISSION] = given().when(cancel())
    examples[RejectionCode.UNKNOWN_JOB] = given(submit(job("a"))).when(retry_now("zz"))
    examples[RejectionCode.ALREADY_TERMINAL] = finished_a.when(retry_now("a"))
    examples[RejectionCode.NOT_WAITING] = given(submit(job("a"))).when(retry_now("a"))
    examples[RejectionCode.NOT_TERMINAL] = given(submit(job("a"))).when(delete("a"))
    examples[RejectionCode.DELETED] = given(submit(job("a"), job("b")), *succeeded("a")).step(
        delete("a"), delete("a", command_id="delete-2")
    )
    examples[RejectionCode.UNPROCESSABLE] = given(submit(job("a"))).when(
        Unprocessable(cancel("a"), "its decision is larger than the record limit")
    )
    examples[RejectionCode.BAD_IDEMPOTENCY_KEY] = given().when(
        submit(job("a", idempotency_key="k" * 2000))
    )
    notification = Notification("x", "https://example.com/hook", persistent=True)
    hooked = SubmitJobs("submit-1", SUB, (job("a"),), notifications=(notification,))
    examples[RejectionCode.BAD_NOTIFICATION] = given(submit(job("a"))).when(
        AddNotification("add-1", SUB, Notification("x", "gopher://example.com"))
    )
    examples[RejectionCode.UNKNOWN_NOTIFICATION] = given(submit(job("a"))).when(
        RemoveNotification("remove-1", SUB, "x")
    )
    examples[RejectionCode.DUPLICATE_NOTIFICATION] = given(hooked).when(
        AddNotification("add-1", SUB, notification)
    )
    examples[RejectionCode.TOO_MANY_NOTIFICATIONS] = given().when(
        replace(hooked, notifications=(notification,) * (MAX_NOTIFICATIONS + 1))
    )
    examples[RejectionCode.BAD_LIMIT] = given().when(
        submit(job("a", concurrency_key="customer-42"))  # a key without a limit
    )
    examples[RejectionCode.NOT_RERUNNABLE] = given(submit(job("a"))).when(
        RerunJobs("rerun-1", SUB, "a")
    )
    schedule = CreateSchedule(
        "schedule-1",
        schedule_submission_id("nightly"),
        "nightly",
        ScheduleSpec(interval_ms=60_000),
        (job("a"),),
    )
    examples[RejectionCode.BAD_SCHEDULE] = given().when(
        replace(schedule, spec=ScheduleSpec(interval_ms=60_000, timezone="Mars/Olympus"))
    )
    examples[RejectionCode.DUPLICATE_SCHEDULE] = given(schedule).when(
        replace(schedule, command_id="schedule-2")
    )
    examples[RejectionCode.UNKNOWN_SCHEDULE] = given().when(
        ChangeSchedule("change-1", schedule_submission_id("nightly"), ScheduleAction.PAUSE)
    )
    assert set(examples) == set(RejectionCode)
    for code, scenario in examples.items():
        codes = [e.body.code for e in scenario.last if isinstance(e.body, CommandRejected)]
        assert codes == [code], (code, scenario.last)
