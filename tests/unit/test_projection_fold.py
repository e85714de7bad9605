"""The projection's fold, fed Event objects straight in: rows, durations, descriptions."""

from __future__ import annotations

import json
from typing import Any

from engine.lifecycle import records as ev
from engine.lifecycle.records import (
    CancelMode,
    Event,
    EventBody,
    FailureReason,
    Heartbeat,
    JobSpec,
    JobStatus,
    RetryPolicy,
    SubmissionStatus,
    WorkerLeft,
)
from projections.describe import describe
from projections.fold import Fold, NoRows, Position

T0 = 1_700_000_000_000
SID = "s-1"


class Log:
    """Events of one submission with consecutive sequence numbers; times in ms after T0."""

    def __init__(self, sid: str = SID) -> None:
        self.sid = sid
        self.events: list[Event] = []

    def add(self, at: int, job_id: str, body: EventBody) -> Log:
        seq = len(self.events) + 1
        self.events.append(Event(f"{self.sid}:{seq}", self.sid, job_id, seq, T0 + at, body))
        return self

    def submit(self, *specs: JobSpec, at: int = 0) -> Log:
        self.add(
            at,
            "",
            ev.SubmissionAccepted("c-1", "alice", (("team", "x"),), tuple(s.job_id for s in specs)),
        )
        for spec in specs:
            self.add(at, spec.job_id, ev.JobSubmitted(spec))
        return self


def fold(events: list[Event]) -> Fold:
    folded = Fold()
    folded.prefetch(events, (), NoRows())
    for event in events:
        folded.event(event)
    return folded


def spec(job_id: str, **fields: Any) -> JobSpec:
    fields.setdefault("task", "tasks.double")
    return JobSpec(job_id=job_id, **fields)


def run_once(log: Log, job_id: str, start: int, attempt: int = 1, worker: str = "w-1") -> Log:
    """PENDING at start, ASSIGNED +100, RUNNING +150."""
    log.add(start, job_id, ev.JobPending(attempt, "default", f"d{attempt}", T0 + start))
    log.add(start + 100, job_id, ev.JobAssigned(attempt, f"d{attempt}", worker, 30_000, host="h1"))
    log.add(start + 150, job_id, ev.JobStarted(attempt, worker, pid=42))
    return log


# --------------------------------------------------------------------------- jobs rows


def test_completed_job_row_and_taipy_durations() -> None:
    log = Log().submit(spec("a", labels=(("k", "v"),)), at=0)
    run_once(log, "a", 1_000)
    log.add(1_400, "a", ev.JobProgressed(1, 3.0, 10.0, "three of ten"))
    log.add(3_150, "a", ev.JobCompleted(1, result="42"))
    log.add(3_150, "", ev.SubmissionCompleted(SubmissionStatus.COMPLETED, (("COMPLETED", 1),)))

    job = fold(log.events).jobs[(SID, "a")]

    assert job["status"] == "COMPLETED"
    assert job["attempts"] == 1
    assert (job["worker_id"], job["host"], job["pid"]) == ("w-1", "h1", 42)
    assert job["submitted_at"] == T0
    assert job["pending_at"] == T0 + 1_000
    assert job["assigned_at"] == T0 + 1_100
    assert job["run_at"] == T0 + 1_150
    assert job["finished_at"] == T0 + 3_150
    assert job["execution_duration"] == 2.0
    assert job["pending_duration"] == 0.15
    assert job["blocked_duration"] is None
    assert (job["progress"], job["total"], job["status_line"]) == (3.0, 10.0, "three of ten")
    assert job["result"] == "42"
    assert job["labels"] == [("k", "v")]
    assert job["last_seq"] == 7


def test_the_run_is_measured_on_the_worker_s_clock_and_the_decisions_are_kept() -> None:
    log = Log().submit(spec("a"), spec("t", timeout_ms=500))
    log.add(0, "a", ev.JobPending(1, "default", "d1", T0))
    log.add(100, "a", ev.JobAssigned(1, "d1", "w-1", 30_000))
    log.add(150, "a", ev.JobStarted(1, "w-1", started_at=T0 + 120))
    log.add(300, "a", ev.JobCompleted(1, ended_at=T0 + 221))
    run_once(log, "t", 0)
    log.add(700, "t", ev.JobFailed(1, FailureReason.TIMEOUT, "Timeout", "ran long"))

    folded = fold(log.events)
    a, t = folded.jobs[(SID, "a")], folded.jobs[(SID, "t")]
    attempt = folded.attempts[(SID, "a", 1)]

    assert (a["run_at"], a["finished_at"]) == (T0 + 150, T0 + 300)
    assert (a["worker_started_at"], a["worker_ended_at"]) == (T0 + 120, T0 + 221)
    assert (a["execution_duration"], a["execution_clock"]) == (0.101, "worker")
    assert a["pending_duration"] == 0.15
    assert (attempt["execution_duration"], attempt["execution_clock"]) == (0.101, "worker")
    assert (attempt["worker_started_at"], attempt["worker_ended_at"]) == (T0 + 120, T0 + 221)
    assert (t["worker_started_at"], t["worker_ended_at"]) == (None, None)
    assert (t["execution_duration"], t["execution_clock"]) == (0.55, "scheduler")


def test_blocked_duration_ends_at_the_first_pending() -> None:
    log = Log().submit(spec("a"), spec("b", depends_on=("a",)))
    log.add(0, "b", ev.JobBlocked(("a",)))
    run_once(log, "a", 0)
    log.add(2_000, "a", ev.JobCompleted(1))
    run_once(log, "b", 2_000)
    log.add(2_650, "b", ev.JobFailed(1, FailureReason.ERROR, "ValueError", "bad"))

    b = fold(log.events).jobs[(SID, "b")]

    assert b["blocked_at"] == T0
    assert b["blocked_duration"] == 2.0
    assert b["pending_duration"] == 0.15
    assert b["execution_duration"] == 0.5
    assert (b["status"], b["failure_reason"], b["error_type"], b["error_note"]) == (
        "FAILED",
        "error",
        "ValueError",
        "bad",
    )
    assert b["depends_on"] == ["a"]


def test_a_retried_job_measures_its_last_attempt() -> None:
    log = Log().submit(spec("a", retry=RetryPolicy(max_attempts=2)))
    run_once(log, "a", 0, worker="w-1")
    log.add(1_000, "a", ev.JobExceptionRaised(1, "Warn", "slow", 1))
    log.add(1_150, "a", ev.JobExceptionRaised(1, "IOError", "disk", 0, traceback="tb"))
    log.add(
        1_150,
        "a",
        ev.JobRetryScheduled(
            1, FailureReason.EXCEPTION, "IOError", "disk", 2, T0 + 1_650, None, "q"
        ),
    )
    log.add(1_650, "a", ev.JobDispatched(2, "q", "d2"))
    log.add(1_700, "a", ev.JobAssigned(2, "d2", "w-2", 30_000, host="h2"))
    log.add(1_750, "a", ev.JobStarted(2, "w-2"))
    log.add(2_750, "a", ev.JobCompleted(2, result="1"))

    folded = fold(log.events)
    job = folded.jobs[(SID, "a")]
    first = folded.attempts[(SID, "a", 1)]
    second = folded.attempts[(SID, "a", 2)]

    assert (job["status"], job["attempts"], job["worker_id"], job["queue"]) == (
        "COMPLETED",
        2,
        "w-2",
        "q",
    )
    assert job["pending_at"] == T0 + 1_150
    assert job["run_at"] == T0 + 1_750
    assert job["execution_duration"] == 1.0
    assert job["pending_duration"] == 0.6
    assert job["exceptions"] == 2
    assert job["traceback"] == "tb"
    assert (first["outcome"], first["error_type"], first["worker_id"]) == (
        "FAILED",
        "IOError",
        "w-1",
    )
    assert first["execution_duration"] == 1.0
    assert first["exceptions"] == 2
    assert second["dispatched_at"] == T0 + 1_650
    assert second["queue_wait"] == 0.05
    assert (second["outcome"], second["worker_id"]) == ("COMPLETED", "w-2")
    assert len(folded.take().job_exceptions) == 2


def test_cancel_of_a_running_job_and_abandoned_dependents() -> None:
    log = Log().submit(spec("a"), spec("b", depends_on=("a",)))
    log.add(0, "b", ev.JobBlocked(("a",)))
    run_once(log, "a", 0)
    log.add(500, "a", ev.JobCancelRequested(1, "w-1", CancelMode.KILL, "wrong input", T0 + 9_000))
    log.add(700, "a", ev.JobCanceled("wrong input", "bob", 1))
    log.add(700, "b", ev.JobAbandoned("a", JobStatus.CANCELED, "a ended CANCELED"))

    folded = fold(log.events)
    a, b = folded.jobs[(SID, "a")], folded.jobs[(SID, "b")]

    assert (a["status"], a["end_reason"], a["canceled_by"]) == ("CANCELED", "wrong input", "bob")
    assert a["execution_duration"] == 0.55
    assert folded.attempts[(SID, "a", 1)]["outcome"] == "CANCELED"
    assert (b["status"], b["end_reason"]) == ("ABANDONED", "a ended CANCELED")
    assert b["blocked_duration"] == 0.7
    assert b["execution_duration"] is None
    assert b["pending_duration"] is None


def test_a_job_canceled_while_pending_was_pending_until_it_ended() -> None:
    log = Log().submit(spec("a"))
    log.add(100, "a", ev.JobPending(1, "default", "d1", T0 + 100))
    log.add(400, "a", ev.JobCanceled("not needed", "bob", 1))

    job = fold(log.events).jobs[(SID, "a")]

    assert job["pending_duration"] == 0.3
    assert job["execution_duration"] is None


def test_skipped_deleted_and_submission_counts() -> None:
    log = Log().submit(spec("a", idempotency_key="k"), spec("b"))
    log.add(0, "a", ev.JobSkipped("key k already completed", "k", "s-0/a"))
    log.add(0, "b", ev.JobPending(1, "default", "d1", T0))
    log.add(10, "b", ev.JobAssigned(1, "d1", "w-1", 30_000))
    log.add(20, "b", ev.JobStarted(1, "w-1"))
    log.add(30, "b", ev.JobFailed(1, FailureReason.EXIT_CODE, "ExitCode", "exited 3", exit_code=3))
    log.add(
        30, "", ev.SubmissionCompleted(SubmissionStatus.FAILED, (("FAILED", 1), ("SKIPPED", 1)))
    )
    log.add(90, "b", ev.JobDeleted(False, "bob"))

    folded = fold(log.events)
    submission = folded.submissions[SID]

    assert folded.jobs[(SID, "a")]["status"] == "SKIPPED"
    assert folded.jobs[(SID, "a")]["end_reason"] == "key k already completed"
    assert folded.jobs[(SID, "b")]["exit_code"] == 3
    assert folded.jobs[(SID, "b")]["deleted"] is True
    assert (submission["jobs"], submission["skipped"], submission["failed"]) == (2, 1, 1)
    assert (submission["pending"], submission["running"], submission["submitted"]) == (0, 0, 0)
    assert (submission["done"], submission["outcome"], submission["wall_time"]) == (
        True,
        "FAILED",
        0.03,
    )
    assert (submission["deleted_jobs"], submission["submitted_by"]) == (1, "alice")


def test_progress_and_output_rows() -> None:
    log = Log().submit(JobSpec(job_id="sh", command=("sh", "-c", "echo hi")))
    run_once(log, "sh", 0)
    log.add(200, "sh", ev.JobOutput(1, "stdout", "hi\n", 0, False))
    log.add(210, "sh", ev.JobProgressed(1, None, None, "almost"))

    folded = fold(log.events)
    changes = folded.take()

    assert folded.jobs[(SID, "sh")]["command"] == "sh -c 'echo hi'"
    assert folded.jobs[(SID, "sh")]["name"] == "sh"
    assert [(o["stream"], o["chunk"], o["offset"]) for o in changes.job_outputs] == [
        ("stdout", "hi\n", 0)
    ]
    assert [(p["value"], p["status_line"]) for p in changes.progress] == [(None, "almost")]
    assert folded.jobs[(SID, "sh")]["status_line"] == "almost"


# --------------------------------------------------------------------------- history


def test_history_rows_carry_status_attempt_description_and_body() -> None:
    log = Log().submit(spec("a"))
    run_once(log, "a", 0)
    folded = fold(log.events)
    history = folded.take().job_events

    assert [(h["seq"], h["event"], h["status"], h["attempt"]) for h in history] == [
        (1, "SubmissionAccepted", "ACCEPTED", None),
        (2, "JobSubmitted", "SUBMITTED", None),
        (3, "JobPending", "PENDING", 1),
        (4, "JobAssigned", "ASSIGNED", 1),
        (5, "JobStarted", "RUNNING", 1),
    ]
    assert history[3]["description"] == "Job assigned to worker w-1 on host h1 (attempt 1)"
    assert json.loads(history[3]["body"]) == {
        "attempt": 1,
        "dispatch_id": "d1",
        "worker_id": "w-1",
        "lease_ms": 30000,
        "host": "h1",
        "previous_worker_id": "",
    }
    assert json.loads(history[1]["body"])["spec"]["task"] == "tasks.double"


def test_descriptions_read_like_a_job_history() -> None:
    def text(body: EventBody, job_id: str = "a") -> str:
        return describe(Event("e", SID, job_id, 1, T0, body))

    assert text(ev.SubmissionAccepted("c", "alice", (), ("a", "b"))) == (
        "Submission accepted from alice with 2 jobs"
    )
    assert text(ev.JobSubmitted(spec("a", depends_on=("x", "y")))) == (
        "Job submitted: task tasks.double on queue default, after x, y"
    )
    assert text(ev.JobBlocked(("x",))) == "Job blocked: waiting on x"
    assert text(ev.JobPending(1, "gpu", "d", T0, "submitted")) == (
        "Attempt 1 queued for a worker on queue gpu (submitted)"
    )
    assert text(ev.JobAssigned(2, "d", "w-1", 1, host="h", previous_worker_id="w-0")) == (
        "Job assigned to worker w-1 on host h, taking over from w-0 (attempt 2)"
    )
    assert text(ev.JobStarted(1, "w-1", 7)) == "Job started running on worker w-1 (pid 7)"
    assert text(ev.JobProgressed(1, 5, 20, "loading")) == "Progress 5/20 (25%): loading"
    assert text(
        ev.JobRetryScheduled(
            1, FailureReason.TIMEOUT, "Timeout", "ran long", 2, T0 + 2_500, None, "q"
        )
    ) == ("Attempt 1 failed (timeout: Timeout: ran long); attempt 2 scheduled in 2.5 s")
    assert text(ev.JobCompleted(1, exit_code=0)) == "Job completed with exit code 0"
    assert text(ev.JobFailed(3, FailureReason.WORKER_LOST, "", "worker w-1 left")) == (
        "Job failed on attempt 3: worker_lost: worker w-1 left"
    )
    assert text(ev.JobCanceled("wrong input", "bob")) == "Job canceled by bob: wrong input"
    assert text(ev.JobAbandoned("x", JobStatus.FAILED)) == "Job abandoned: x ended FAILED"
    assert text(ev.JobExceptionRaised(1, "IOError", "disk full", 0)) == (
        "Job raised fatal exception IOError: disk full"
    )
    assert text(ev.CommandRejected("c", "CancelJobs", "already_terminal", "job 'a' ended")) == (
        "CancelJobs rejected (already_terminal): job 'a' ended"
    )
    assert text(ev.SubmissionCompleted(SubmissionStatus.COMPLETED, (("COMPLETED", 2),))) == (
        "Submission finished COMPLETED: 2 COMPLETED"
    )


def test_a_duplicate_claim_is_history_and_leaves_the_status_alone() -> None:
    log = Log().submit(spec("a"))
    run_once(log, "a", 0, worker="w-1")
    log.add(300, "a", ev.JobDuplicateClaim(1, "d1", "w-2", "w-1", host="h2"))
    log.add(900, "a", ev.JobCompleted(1))

    folded = fold(log.events)
    history = folded.take().job_events
    claim = history[-2]

    assert folded.jobs[(SID, "a")]["status"] == "COMPLETED"
    assert folded.jobs[(SID, "a")]["worker_id"] == "w-1"
    assert (claim["event"], claim["status"], claim["attempt"]) == (
        "JobDuplicateClaim",
        "RUNNING",
        1,
    )
    assert claim["description"] == (
        "Duplicate execution: worker w-2 on host h2 claimed attempt 1 held by live worker w-1; "
        "claim refused, w-2 told to stop"
    )
    assert json.loads(claim["body"])["holder_worker_id"] == "w-1"


def test_executions_count_claims_takeovers_and_duplicate_claims() -> None:
    log = Log().submit(spec("a", retry=RetryPolicy(max_attempts=2)))
    run_once(log, "a", 0, worker="w-1")
    log.add(300, "a", ev.JobDuplicateClaim(1, "d1", "w-2", "w-1"))
    log.add(400, "a", ev.JobRetryScheduled(1, FailureReason.ERROR, "E", "", 2, T0 + 400, "d2", "q"))
    log.add(450, "a", ev.JobAssigned(2, "d2", "w-3", 30_000))
    log.add(500, "a", ev.JobStarted(2, "w-3"))
    log.add(30_000, "a", ev.JobAssigned(2, "d2", "w-1", 30_000, previous_worker_id="w-3"))
    log.add(30_050, "a", ev.JobStarted(2, "w-1"))
    log.add(30_500, "a", ev.JobCompleted(2))

    folded = fold(log.events)
    job = folded.jobs[(SID, "a")]
    first, second = folded.attempts[(SID, "a", 1)], folded.attempts[(SID, "a", 2)]

    assert (job["executions"], job["takeovers"], job["duplicate_claims"]) == (4, 1, 1)
    assert job["workers_seen"] == ["w-1", "w-2", "w-3"]
    assert (first["executions"], first["duplicate_claims"], first["takeovers"]) == (2, 1, 0)
    assert first["workers_seen"] == ["w-1", "w-2"]
    assert (second["executions"], second["duplicate_claims"], second["takeovers"]) == (2, 0, 1)
    assert (second["workers_seen"], second["worker_id"]) == (["w-3", "w-1"], "w-1")


def test_a_pending_time_beyond_the_calendar_is_described_anyway() -> None:
    pending = Event("e", SID, "a", 1, T0, ev.JobPending(1, "q", None, 10**18))
    assert describe(pending) == (
        "Attempt 1 waits until 1000000000000000000 ms after the epoch before dispatch to queue q"
    )


# --------------------------------------------------------------------------- replays


def test_a_replayed_event_changes_nothing() -> None:
    log = Log().submit(spec("a"))
    run_once(log, "a", 0)
    folded = fold(log.events)
    first = folded.take()

    assert all(folded.event(event) is False for event in log.events)
    again = folded.take()
    assert not again.job_events and not again.jobs
    assert folded.stats.duplicates == len(log.events)
    assert len(first.job_events) == len(log.events)


def test_rejections_outside_a_sequence_are_kept_once() -> None:
    rejection = Event(
        "s-9:rejected:c-7",
        "s-9",
        "",
        0,
        T0,
        ev.CommandRejected("c-7", "CancelJobs", "unknown_submission", "no s-9"),
    )
    folded = Fold()
    assert folded.event(rejection) is True
    assert folded.event(rejection) is False
    changes = folded.take()
    assert [row["event_id"] for row in changes.job_events] == ["s-9:rejected:c-7"]
    assert changes.job_events[0]["status"] is None
    assert "s-9" not in folded.submissions


def test_offsets_advance_to_the_highest_record_of_each_partition() -> None:
    folded = Fold()
    folded.advance(Position("t", 0, 9))
    folded.advance(Position("t", 0, 4))
    folded.advance(Position("t", 1, 0))
    assert folded.take().offsets == {("t", 0): 10, ("t", 1): 1}


# --------------------------------------------------------------------------- workers


def test_workers_from_heartbeats_and_departures() -> None:
    folded = Fold()
    folded.report(Heartbeat("w-1", "gpu", "h1", 11, 4, 1, lease_ms=10_000, sent_at=T0), T0)
    folded.report(Heartbeat("w-1", "gpu", "h1", 11, 4, 3, sent_at=T0 + 5_000), T0 + 5_000)
    folded.report(Heartbeat("w-1", "gpu", "h1", 11, 4, 2, sent_at=T0 + 1_000), T0 + 6_000)
    worker = folded.workers["w-1"]
    assert (worker["slots_used"], worker["last_heartbeat"], worker["heartbeats"]) == (
        3,
        T0 + 5_000,
        3,
    )
    assert worker["first_seen"] == T0

    folded.report(WorkerLeft("w-1", (), sent_at=T0 + 7_000), T0 + 7_000)
    assert (folded.workers["w-1"]["left"], folded.workers["w-1"]["left_at"]) == (True, T0 + 7_000)
    folded.report(Heartbeat("w-1", "gpu", sent_at=T0 + 9_000), T0 + 9_000)
    assert folded.workers["w-1"]["left"] is False
    assert len(folded.take().workers) == 1
