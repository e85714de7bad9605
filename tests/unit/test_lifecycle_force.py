"""``JobSpec.force`` (Taipy's force): a job that runs even where its idempotency key would
skip it, and whose completion still completes the key for the jobs after it."""

from __future__ import annotations

from engine.lifecycle.records import JobPending, JobSkipped, JobStatus, KeyDecision
from tests.unit.lifecycle_dsl import SUB, T0, given, job, on, submit
from tests.unit.test_lifecycle_keys import KEY, Cluster, keyed, run_to_end

DONE_BY = "s-0/publish"


def test_a_forced_job_runs_though_its_key_was_completed() -> None:
    forced = job("publish", idempotency_key=KEY, force=True)
    (
        given(completed_keys={KEY: DONE_BY})
        .when(submit(forced))
        .then_includes(on("publish", JobPending(1, "default", f"{SUB}/publish/1", T0, "submitted")))
        .status(publish=JobStatus.PENDING)
    )


def test_an_unforced_job_with_a_completed_key_is_still_skipped() -> None:
    (
        given(completed_keys={KEY: DONE_BY})
        .when(submit(job("publish", idempotency_key=KEY)))
        .then_includes(on("publish", JobSkipped))
        .status(publish=JobStatus.SKIPPED)
    )


def test_a_forced_job_does_not_wait_for_the_ledger_and_runs_beside_the_holder() -> None:
    cluster = Cluster()
    cluster.send(submit(keyed(), submission_id="s1"))
    cluster.send(submit(job("bill", idempotency_key=KEY, force=True), submission_id="s2"))
    assert cluster.status("s1", "bill") is JobStatus.PENDING
    assert cluster.status("s2", "bill") is JobStatus.PENDING, "forced: it does not wait"
    assert cluster.dispatched == ["s1/bill/1", "s2/bill/1"]


def test_a_forced_job_that_completes_completes_the_key_for_later_jobs() -> None:
    cluster = Cluster()
    cluster.send(submit(job("bill", idempotency_key=KEY, force=True), submission_id="s1"))
    run_to_end(cluster, "s1", "bill")
    assert ("s1/bill", KeyDecision.DONE) in cluster.decisions()
    cluster.send(submit(keyed(), submission_id="s2"))
    assert cluster.status("s2", "bill") is JobStatus.SKIPPED
    assert cluster.dispatched == ["s1/bill/1"]


def test_a_forced_completion_while_another_job_holds_the_key_skips_the_waiters() -> None:
    cluster = Cluster()
    cluster.send(submit(keyed(), submission_id="s1"))  # holds the key
    cluster.send(submit(keyed(), submission_id="s3"))  # waits behind s1
    cluster.send(submit(job("bill", idempotency_key=KEY, force=True), submission_id="s2"))
    run_to_end(cluster, "s2", "bill")
    assert cluster.status("s3", "bill") is JobStatus.SKIPPED
    assert cluster.status("s1", "bill") is JobStatus.PENDING, "the holder runs on"
    run_to_end(cluster, "s1", "bill", ok=False)
    assert cluster.status("s1", "bill") is JobStatus.FAILED
    assert cluster.dispatched == ["s1/bill/1", "s2/bill/1"], "the waiter never ran"
