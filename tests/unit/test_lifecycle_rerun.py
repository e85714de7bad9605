"""Rerun: a failed, canceled or abandoned job runs again in the same submission and history."""

from __future__ import annotations

from engine.lifecycle.records import (
    JobAbandoned,
    JobBlocked,
    JobPending,
    JobRerun,
    JobRetryScheduled,
    JobStatus,
    RejectionCode,
    RerunJobs,
    SubmissionCompleted,
    SubmissionStatus,
)
from tests.unit.lifecycle_dsl import SUB, T0, failed, given, job, on, submit, succeeded


def rerun(job_id: str | None = None, command_id: str = "rerun-1") -> RerunJobs:
    return RerunJobs(command_id, SUB, job_id, requested_by="bob")


def _failed_chain():  # type: ignore[no-untyped-def]
    return given(
        submit(job("a"), job("b", after=["a"]), job("c", after=["b"])),
        succeeded("a")[:2],
        failed("a"),
    ).status(a=JobStatus.FAILED, b=JobStatus.ABANDONED, c=JobStatus.ABANDONED)


def test_a_rerun_runs_the_failed_job_and_what_it_abandoned_with_a_new_attempt() -> None:
    scenario = _failed_chain().when(rerun("a"))
    scenario.then(
        on("a", JobRerun(2, JobStatus.FAILED, "rerun-1", "bob")),
        on("b", JobRerun(1, JobStatus.ABANDONED, "rerun-1", "bob")),
        on("c", JobRerun(1, JobStatus.ABANDONED, "rerun-1", "bob")),
        on("b", JobBlocked(("a",))),
        on("c", JobBlocked(("b",))),
        on("a", JobPending(2, "default", f"{SUB}/a/2", T0, "rerun")),
    )
    assert scenario.state is not None and scenario.state.outcome is None
    scenario.when(succeeded("a", attempt=2)[0]).when(succeeded("a", attempt=2)[1])
    scenario.when(succeeded("a", attempt=2)[2]).then_includes(
        on("b", JobPending(1, "default", f"{SUB}/b/1", T0, "dependencies completed"))
    )


def test_rerun_of_an_abandoned_job_takes_what_abandoned_it_along() -> None:
    scenario = _failed_chain().when(rerun("c"))
    rerun_ids = [e.job_id for e in scenario.last if isinstance(e.body, JobRerun)]
    assert rerun_ids == ["a", "b", "c"]


def test_a_rerun_submission_completes_again_once_its_jobs_succeed() -> None:
    scenario = _failed_chain().when(rerun())
    for job_id, attempt in (("a", 2), ("b", 1), ("c", 1)):
        for report in succeeded(job_id, attempt):
            scenario.when(report)
    assert scenario.history[-1].body == SubmissionCompleted(
        SubmissionStatus.COMPLETED, ((JobStatus.COMPLETED, 3),)
    )
    assert scenario.replayed() == scenario.state


def test_a_rerun_has_its_own_retry_budget() -> None:
    scenario = given(
        submit(job("a", retries=1, backoff_ms=0)),
        succeeded("a")[:2],
        failed("a"),
        succeeded("a", attempt=2)[:2],
        failed("a", attempt=2),
    ).status(a=JobStatus.FAILED)
    scenario.when(rerun("a")).then_includes(
        on("a", JobPending(3, "default", f"{SUB}/a/3", T0, "rerun"))
    )
    scenario.when(succeeded("a", attempt=3)[0]).when(succeeded("a", attempt=3)[1])
    scenario.when(failed("a", attempt=3)).then_includes(on("a", JobRetryScheduled))
    assert scenario.job("a").attempt == 4


def test_rerun_of_a_job_that_did_not_fail_is_rejected() -> None:
    scenario = given(submit(job("a")), succeeded("a")).when(rerun("a"))
    scenario.then_rejected(RejectionCode.NOT_RERUNNABLE, job_id="a")
    given(submit(job("a")), succeeded("a")).when(rerun()).then_rejected(
        RejectionCode.NOT_RERUNNABLE
    )


def test_a_rerun_abandoned_job_never_abandoned_again_by_a_stale_cause() -> None:
    scenario = _failed_chain().when(rerun("a"))
    assert not [e for e in scenario.last if isinstance(e.body, JobAbandoned)]
