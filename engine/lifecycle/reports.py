"""Workers' reports: staleness, claims and takeovers, progress coalescing, finishing."""

from __future__ import annotations

from dataclasses import replace

from engine.lifecycle.draft import Draft
from engine.lifecycle.policy import Policy
from engine.lifecycle.records import (
    TIMEOUT_ERROR_TYPE,
    AttemptRef,
    AttemptReport,
    CancelMode,
    Claimed,
    Control,
    ExceptionReported,
    FailureReason,
    Finished,
    Input,
    JobAssigned,
    JobCanceled,
    JobCompleted,
    JobDuplicateClaim,
    JobExceptionRaised,
    JobOutput,
    JobProgressed,
    JobStarted,
    JobStatus,
    Outcome,
    OutputReported,
    ProgressReported,
    Started,
)
from engine.lifecycle.state import (
    JobState,
    PendingProgress,
    SubmissionState,
)
from engine.lifecycle.transitions import after_terminal, cancel_killed, fail_attempt
from engine.limits import (
    describe_bytes,
    setting_name,
    truncate_middle,
    truncate_text,
)


def is_current(state: SubmissionState | None, ref: AttemptRef) -> bool:
    """Whether a report names the job's current attempt (the one a decision may act on)."""
    if state is None:
        return False
    job = state.jobs.get(ref.job_id)
    if job is None or job.is_terminal:
        return False
    return job.attempt == ref.attempt and job.dispatch_id == ref.dispatch_id


def is_stale(state: SubmissionState | None, report: Input) -> bool:
    """Whether a worker report will be ignored: unknown, finished or superseded attempt.

    A claim of the current dispatch by another worker is not stale (it is a takeover), unless
    that worker was itself taken over from: a fenced worker never gets the attempt back.
    """
    if not isinstance(
        report, Claimed | Started | ProgressReported | OutputReported | ExceptionReported | Finished
    ):
        return False
    if not is_current(state, report.ref):
        return True
    assert state is not None
    job = state.jobs[report.ref.job_id]
    if report.ref.worker_id in job.fenced_workers:
        return True
    if is_claim(report) or job.status is JobStatus.PENDING:
        return False
    return job.worker_id != report.ref.worker_id


def is_claim(report: Input) -> bool:
    """Whether a report claims its dispatch: a :class:`Claimed`, or a claiming ``Started``."""
    return isinstance(report, Claimed) or (isinstance(report, Started) and report.claimed)


STALE_CLAIM_REASON = "stale dispatch: the attempt already ended or was superseded"


def stale_reply(
    state: SubmissionState | None, report: Input, now: int, policy: Policy
) -> list[Control]:
    """What answers a stale report, without an event: nothing, except for a claim.

    A worker that claims a redelivered dispatch of an attempt that already ended or was
    superseded is told to stop it rather than let it run for nothing.
    """
    if state is None or not is_claim(report) or not is_stale(state, report):
        return []
    assert isinstance(report, Claimed | Started)
    ref = report.ref
    return [
        Control(
            worker_id=ref.worker_id,
            action="kill",
            submission_id=ref.submission_id,
            job_id=ref.job_id,
            attempt=ref.attempt,
            dispatch_id=ref.dispatch_id,
            reason=STALE_CLAIM_REASON,
            grace_ms=policy.kill_grace_ms,
            sent_at=now,
        )
    ]


def decide_report(draft: Draft, report: Input) -> None:
    assert isinstance(
        report, Claimed | Started | ProgressReported | OutputReported | ExceptionReported | Finished
    )
    if is_stale(draft.state, report):
        return
    report = _fit(report, draft.policy)
    ref = report.ref
    job_id = ref.job_id
    job = draft.job(job_id)
    if isinstance(report, Started) and report.claimed:
        _claim(draft, ref, report.host)
        job = draft.job(job_id)
        if job.status is JobStatus.ASSIGNED and job.worker_id == ref.worker_id:
            draft.emit(
                job_id,
                JobStarted(
                    attempt=ref.attempt,
                    worker_id=ref.worker_id,
                    pid=report.pid,
                    started_at=report.sent_at,
                ),
            )
        return
    if isinstance(report, Claimed):
        _claim(draft, ref, report.host)
        return
    if job.status is JobStatus.PENDING:
        # The claim was not seen (e.g. the report order was broken by a producer retry):
        # any report of the current dispatch proves the worker has it.
        _assign(draft, ref)
        job = draft.job(job_id)
    if isinstance(report, Started):
        if job.status is JobStatus.ASSIGNED:
            draft.emit(
                job_id,
                JobStarted(
                    attempt=ref.attempt,
                    worker_id=ref.worker_id,
                    pid=report.pid,
                    started_at=report.sent_at,
                ),
            )
    elif isinstance(report, ProgressReported):
        last = job.last_progress_at
        if last is None or draft.now - last >= draft.policy.progress_interval_ms:
            latest = latest_progress(
                report.value, report.total, report.status_line, job.held_progress
            )
            draft.emit(
                job_id, JobProgressed(ref.attempt, latest.value, latest.total, latest.status_line)
            )
    elif isinstance(report, OutputReported):
        draft.emit(
            job_id,
            JobOutput(ref.attempt, report.stream, report.chunk, report.offset, report.truncated),
        )
    elif isinstance(report, ExceptionReported):
        draft.emit(
            job_id,
            JobExceptionRaised(
                ref.attempt, report.type, report.note, report.severity, report.traceback
            ),
        )
        if report.severity == 0:
            fail_attempt(
                draft,
                job_id,
                FailureReason.EXCEPTION,
                report.type,
                report.note,
                traceback=report.traceback,
                ended_at=report.sent_at,
            )
    else:
        _finish(draft, job_id, report)


def _fit(report: AttemptReport, policy: Policy) -> AttemptReport:
    """A worker's report with its texts cut to the limits (any worker, in any language, may
    send more than joblog's own workers do), so every event fits one record."""
    if isinstance(report, ProgressReported) and report.status_line is not None:
        line = truncate_text(report.status_line, policy.max_status_line_bytes)
        return report if line is report.status_line else replace(report, status_line=line)
    if isinstance(report, OutputReported):
        chunk = truncate_text(report.chunk, policy.max_output_chunk_bytes)
        if chunk is report.chunk:
            return report
        return replace(report, chunk=chunk, truncated=True)
    if isinstance(report, ExceptionReported):
        return replace(
            report,
            type=truncate_text(report.type, 200),
            note=truncate_text(report.note, policy.max_note_bytes),
            traceback=truncate_middle(report.traceback, policy.max_traceback_bytes),
        )
    if isinstance(report, Finished):
        fitted = replace(
            report,
            error_type=truncate_text(report.error_type, 200),
            error_note=truncate_text(report.error_note, policy.max_note_bytes),
            traceback=truncate_middle(report.traceback, policy.max_traceback_bytes),
            status_line=(
                None
                if report.status_line is None
                else truncate_text(report.status_line, policy.max_status_line_bytes)
            ),
        )
        result = report.result
        size = 0 if result is None else len(result.encode("utf-8"))
        if size > policy.max_result_bytes and report.outcome is Outcome.COMPLETED:
            assert result is not None
            setting = setting_name("max_result_bytes")
            fitted = replace(
                fitted,
                outcome=Outcome.FAILED,
                result=None,
                error_type="ResultTooLarge",
                error_note=(
                    f"result is {describe_bytes(size)}, the limit is "
                    f"{describe_bytes(policy.max_result_bytes)} ({setting}); "
                    f"head: {result[:200]}"
                ),
            )
        return fitted
    return report


def latest_progress(
    value: float | None, total: float | None, status_line: str | None, held: PendingProgress | None
) -> PendingProgress:
    """A progress report's values, with the fields it leaves out taken from the held ones."""
    if held is None:
        return PendingProgress(value, total, status_line)
    return PendingProgress(
        held.value if value is None else value,
        held.total if total is None else total,
        held.status_line if status_line is None else status_line,
    )


def is_news(job: JobState, progress: PendingProgress) -> bool:
    """Whether ``progress`` changes what the log says of the job's progress."""
    return any(
        new is not None and new != logged
        for new, logged in (
            (progress.value, job.progress),
            (progress.total, job.total),
            (progress.status_line, job.status_line),
        )
    )


def _claim(draft: Draft, ref: AttemptRef, host: str) -> None:
    """A worker claims the attempt: assigned, taken over from a silent holder, or refused
    while its holder is alive."""
    job_id = ref.job_id
    job = draft.job(job_id)
    if job.status is JobStatus.PENDING:
        _assign(draft, ref, host=host)
    elif job.worker_id != ref.worker_id:
        if holder_alive(job, draft.now):
            # The dispatch record was redelivered to another worker (a rebalance gave
            # its partition away) while its holder still heartbeats: the holder keeps
            # the attempt, the claimer is told to stop and fenced.
            draft.emit(
                job_id,
                JobDuplicateClaim(
                    attempt=ref.attempt,
                    dispatch_id=ref.dispatch_id,
                    worker_id=ref.worker_id,
                    holder_worker_id=job.worker_id,
                    host=host,
                ),
            )
        else:
            # The holder went silent (crashed, or lost its partition): the newcomer
            # takes over at once instead of waiting out the lease; the old one is fenced.
            _assign(draft, ref, host=host, previous_worker_id=job.worker_id)


def _assign(draft: Draft, ref: AttemptRef, *, host: str = "", previous_worker_id: str = "") -> None:
    draft.emit(
        ref.job_id,
        JobAssigned(
            attempt=ref.attempt,
            dispatch_id=ref.dispatch_id,
            worker_id=ref.worker_id,
            lease_ms=draft.policy.lease_ms,
            host=host,
            previous_worker_id=previous_worker_id,
        ),
    )


def _finish(draft: Draft, job_id: str, report: Finished) -> None:
    job = draft.job(job_id)
    if job.status is JobStatus.ASSIGNED:
        draft.emit(job_id, JobStarted(attempt=job.attempt, worker_id=job.worker_id))
    final = latest_progress(report.progress, report.total, report.status_line, job.held_progress)
    if is_news(job, final):
        draft.emit(job_id, JobProgressed(job.attempt, final.value, final.total, final.status_line))
    cancel = job.cancel
    if cancel is not None and cancel.mode is CancelMode.KILL:
        late = "" if report.outcome is Outcome.CANCELED else str(report.outcome)
        cancel_killed(draft, job_id, late, report.sent_at)
    elif report.outcome is Outcome.COMPLETED:
        draft.emit(
            job_id,
            JobCompleted(
                attempt=job.attempt,
                result=report.result,
                exit_code=report.exit_code,
                ended_at=report.sent_at,
            ),
        )
        after_terminal(draft, job_id)
    elif report.outcome is Outcome.CANCELED:
        draft.emit(
            job_id,
            JobCanceled(
                reason=cancel.reason if cancel else "canceled by the worker",
                requested_by=cancel.requested_by if cancel else "",
                attempt=job.attempt,
                ended_at=report.sent_at,
            ),
        )
        after_terminal(draft, job_id)
    else:
        if report.error_type == TIMEOUT_ERROR_TYPE and job.spec.timeout_ms > 0:
            reason = FailureReason.TIMEOUT  # the worker stopped it past its run timeout
        elif report.exit_code not in (None, 0):
            reason = FailureReason.EXIT_CODE
        else:
            reason = FailureReason.ERROR
        error_type = report.error_type or (
            "ExitCode" if reason is FailureReason.EXIT_CODE else "Error"
        )
        fail_attempt(
            draft,
            job_id,
            reason,
            error_type,
            report.error_note,
            traceback=report.traceback,
            exit_code=report.exit_code,
            ended_at=report.sent_at,
        )


def holder_alive(job: JobState, now: int) -> bool:
    """Whether the worker holding a job's attempt still heartbeats.

    Workers heartbeat three times per lease; a holder that missed two heartbeats in a row
    (less than a third of its lease left) counts as gone and may be taken over from.
    """
    if job.lease_ms <= 0 or job.lease_until is None:
        return False
    return job.lease_until >= now + job.lease_ms // 3
