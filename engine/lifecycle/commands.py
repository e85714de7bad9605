"""The clients' commands (submit, cancel, retry, delete) and the idempotency-key traffic
between schedulers (a key's ledger granting, queueing and answering claims)."""

from __future__ import annotations

from collections.abc import Mapping

from engine.lifecycle.draft import Draft
from engine.lifecycle.gates import pass_gates
from engine.lifecycle.notifications import emit_added, submitted_problem
from engine.lifecycle.records import (
    CANCELABLE_AT_ONCE,
    KEY_WAIT,
    CancelJobs,
    CancelMode,
    ClaimIdempotencyKey,
    Command,
    CommandRejected,
    DeleteJobs,
    Event,
    IdempotencyKeyAnswer,
    IdempotencyKeyDecided,
    JobAbandoned,
    JobBlocked,
    JobCanceled,
    JobCancelRequested,
    JobDeleted,
    JobRerun,
    JobSkipped,
    JobStatus,
    JobSubmitted,
    KeyDecision,
    RejectionCode,
    ReleaseIdempotencyKey,
    RerunJobs,
    RetryJob,
    SubmissionAccepted,
    SubmitJobs,
)
from engine.lifecycle.state import (
    JobState,
    KeyLedger,
    upstream_of,
)
from engine.lifecycle.transitions import (
    abandon_dependents,
    after_terminal,
    by_priority,
    cascade,
    complete_if_done,
    make_pending,
)
from engine.lifecycle.validation import depth_first, validate_submission


def decide_retired(command: Command, deleted: bool, now: int) -> list[Event]:
    """Answers a command naming a submission whose state is no longer kept.

    Deleted submissions, and finished ones beyond the scheduler's retention, leave only their
    id behind. An id is never accepted twice: a submit is rejected as a duplicate, a second
    delete as ``deleted``, a cancel or retry as ``already_terminal``. The rejection is logged
    outside the submission's sequence (seq 0), so no event id is ever reused.
    """
    gone = "was deleted" if deleted else "finished and is no longer retained"
    if isinstance(command, SubmitJobs):
        code = RejectionCode.DUPLICATE_SUBMISSION
        reason = (
            f"submission id {command.submission_id!r} was used before ({gone}); "
            "ids are never reused"
        )
    elif isinstance(command, DeleteJobs):
        code = RejectionCode.DELETED if deleted else RejectionCode.ALREADY_TERMINAL
        reason = f"submission {command.submission_id!r} {gone}"
    else:
        code = RejectionCode.ALREADY_TERMINAL
        reason = f"submission {command.submission_id!r} {gone}"
    job_id = getattr(command, "job_id", None) or ""
    body = CommandRejected(command.command_id, type(command).__name__, str(code), reason)
    return [
        Event(
            event_id=f"{command.submission_id}:rejected:{command.command_id}",
            submission_id=command.submission_id,
            job_id=job_id,
            seq=0,
            timestamp=now,
            body=body,
        )
    ]


def decide_submit(draft: Draft, command: SubmitJobs, completed_keys: Mapping[str, str]) -> None:
    state = draft.state
    if state.accepted:
        if state.command_id == command.command_id:
            return  # the same command delivered twice: already done
        draft.reject(
            command.command_id,
            "SubmitJobs",
            RejectionCode.DUPLICATE_SUBMISSION,
            f"submission {command.submission_id!r} exists; choose a new submission id",
        )
        return
    problem = validate_submission(command, draft.policy) or submitted_problem(
        command.notifications, (spec.job_id for spec in command.jobs)
    )
    if problem is not None:
        code, reason = problem
        draft.reject(command.command_id, "SubmitJobs", code, reason)
        return
    draft.emit(
        "",
        SubmissionAccepted(
            command_id=command.command_id,
            submitted_by=command.submitted_by,
            labels=command.labels,
            job_ids=tuple(spec.job_id for spec in command.jobs),
        ),
    )
    for notification in command.notifications:
        emit_added(draft, notification, command.command_id, command.submitted_by)
    for spec in command.jobs:
        draft.emit(spec.job_id, JobSubmitted(spec))
    # with priorities that differ, the runnable jobs are made pending last, most urgent first
    ranked = len({spec.priority for spec in command.jobs}) > 1
    ready: list[str] = []
    for job_id in depth_first(command.jobs):
        job = draft.job(job_id)
        if job.is_terminal:
            continue  # abandoned by an upstream skipped... never; kept for safety
        key = job.spec.idempotency_key
        forced = job.spec.force  # Taipy's force: run even where the key would skip it
        if key and key in completed_keys and not forced:
            draft.emit(
                job_id,
                JobSkipped(
                    reason=f"idempotency key {key!r} already completed by {completed_keys[key]}",
                    idempotency_key=key,
                    completed_by=completed_keys[key],
                ),
            )
            continue
        waiting = sorted(
            job_id_
            for job_id_ in upstream_of(job.spec, state.children.get(job_id, ()))
            if not draft.job(job_id_).status.is_success
        )
        if key and not forced:
            # decided by the key's ledger, whatever partition it lives in: the job waits
            # for its answer (the claim is an effect of this event)
            waiting.insert(0, KEY_WAIT)
        if waiting:
            draft.emit(job_id, JobBlocked(tuple(waiting)))
        elif ranked:
            ready.append(job_id)
        else:
            make_pending(draft, job_id, attempt=1, reason="submitted")
    for job_id in by_priority(draft, ready):  # the first dispatched are the most urgent
        make_pending(draft, job_id, attempt=1, reason="submitted")
    complete_if_done(draft)


def _known_job(draft: Draft, command_id: str, command_type: str, job_id: str | None) -> bool:
    state = draft.state
    if not state.accepted:
        draft.reject(
            command_id,
            command_type,
            RejectionCode.UNKNOWN_SUBMISSION,
            f"no submission {state.submission_id!r}",
            job_id or "",
        )
        return False
    if job_id is not None and job_id not in state.jobs:
        draft.reject(
            command_id,
            command_type,
            RejectionCode.UNKNOWN_JOB,
            f"submission {state.submission_id!r} has no job {job_id!r}",
            job_id,
        )
        return False
    return True


def _descendants(draft: Draft, job_id: str) -> list[str]:
    """The job's sub-jobs, their sub-jobs, ..., deepest first."""
    out: list[str] = []
    for child in draft.state.children.get(job_id, ()):
        out.extend(_descendants(draft, child))
        out.append(child)
    return out


def decide_cancel(draft: Draft, command: CancelJobs) -> None:
    if not _known_job(draft, command.command_id, "CancelJobs", command.job_id):
        return
    state = draft.state
    if command.job_id is None:
        targets = [job_id for job_id, job in state.jobs.items() if not job.is_terminal]
        if not targets:
            draft.reject(
                command.command_id,
                "CancelJobs",
                RejectionCode.ALREADY_TERMINAL,
                f"every job of {state.submission_id!r} already ended",
            )
            return
    else:
        job = draft.job(command.job_id)
        if job.deleted:
            draft.reject(
                command.command_id,
                "CancelJobs",
                RejectionCode.DELETED,
                f"job {command.job_id!r} was deleted",
                command.job_id,
            )
            return
        if job.status.is_success:
            cancel_after_success(draft, command, command.job_id)
            return
        if job.is_terminal:
            draft.reject(
                command.command_id,
                "CancelJobs",
                RejectionCode.ALREADY_TERMINAL,
                f"job {command.job_id!r} already ended {job.status}; only unfinished jobs, "
                "and COMPLETED or SKIPPED ones (to abandon what follows them), can be canceled",
                command.job_id,
            )
            return
        targets = [j for j in _descendants(draft, command.job_id) if not draft.job(j).is_terminal]
        targets.append(command.job_id)
    reason = command.reason or "canceled by user"
    canceled: list[str] = []
    for job_id in targets:
        job = draft.job(job_id)
        if job.is_terminal:
            continue
        if job.status in CANCELABLE_AT_ONCE:
            draft.emit(
                job_id,
                JobCanceled(reason=reason, requested_by=command.requested_by, attempt=job.attempt),
            )
            canceled.append(job_id)
        elif command.mode is CancelMode.FINISH:
            # Taipy's rule: it runs on with its own outcome, what waits on it will not run.
            # The request is an event of its own, so the client learns it was taken.
            if job.cancel is None:
                draft.emit(job_id, _left_to_finish(job, reason))
            abandon_dependents(
                draft, job_id, f"{job_id} was canceled and left to finish", frozenset(targets)
            )
        elif job.cancel is None or job.cancel.mode is CancelMode.FINISH:
            draft.emit(
                job_id,
                JobCancelRequested(
                    attempt=job.attempt,
                    worker_id=job.worker_id,
                    mode=CancelMode.KILL,
                    reason=reason,
                    deadline=draft.now + draft.policy.kill_grace_ms,
                ),
            )
    cascade(draft, canceled)
    complete_if_done(draft)


def _left_to_finish(job: JobState, reason: str) -> JobCancelRequested:
    """The record of a cancel that sends nothing to a worker (Taipy's rule): the job keeps
    its outcome, or runs on to one."""
    return JobCancelRequested(
        attempt=job.attempt,
        worker_id=job.worker_id,
        mode=CancelMode.FINISH,
        reason=reason,
        deadline=0,
    )


def cancel_after_success(draft: Draft, command: CancelJobs, job_id: str) -> None:
    """Taipy's cancel of a job that already COMPLETED or was SKIPPED: its status stays, and
    the jobs after it that have not finished will not run.

    The request is recorded on the job as ``JobCancelRequested`` with mode FINISH (nothing is
    sent to a worker), so the client learns it was taken even when nothing follows the job.
    Then every job that waits on it, directly or through a chain, is looked at once: one
    that has not started (SUBMITTED, BLOCKED, PENDING, ASSIGNED) is ABANDONED (an assigned
    one's worker gets a kill); a RUNNING one is killed with the cancel's mode KILL (the
    default: it ends CANCELED) or left to finish with mode FINISH; a terminal one is left as
    it is. The chain is followed through all of them, so what follows a job left running is
    abandoned too.
    """
    job = draft.job(job_id)
    reason = command.reason or "canceled by user"
    draft.emit(job_id, _left_to_finish(job, reason))
    note = f"{job_id} was canceled after it ended {job.status} ({reason})"
    seen = {job_id}
    queue = [job_id]
    while queue:
        current = queue.pop(0)
        for dependent_id in draft.state.dependents.get(current, ()):
            if dependent_id in seen:
                continue
            seen.add(dependent_id)
            queue.append(dependent_id)
            dependent = draft.job(dependent_id)
            if dependent.is_terminal:
                continue
            if dependent.status is JobStatus.RUNNING:
                killing = dependent.cancel is not None and dependent.cancel.mode is CancelMode.KILL
                if command.mode is CancelMode.KILL and not killing:
                    draft.emit(
                        dependent_id,
                        JobCancelRequested(
                            attempt=dependent.attempt,
                            worker_id=dependent.worker_id,
                            mode=CancelMode.KILL,
                            reason=note,
                            deadline=draft.now + draft.policy.kill_grace_ms,
                        ),
                    )
                continue
            draft.emit(
                dependent_id,
                JobAbandoned(
                    cause_job_id=current, cause_status=draft.job(current).status, reason=note
                ),
            )
    complete_if_done(draft)


def decide_retry_now(draft: Draft, command: RetryJob) -> None:
    if not _known_job(draft, command.command_id, "RetryJob", command.job_id):
        return
    job = draft.job(command.job_id)
    if job.status is JobStatus.PENDING and job.dispatch_id is None and job.held is not None:
        draft.reject(
            command.command_id,
            "RetryJob",
            RejectionCode.NOT_WAITING,
            f"job {command.job_id!r} is held back ({job.held}), not waiting for a retry's "
            "backoff: it goes on when its gate opens",
            command.job_id,
        )
        return
    if job.status is JobStatus.PENDING and job.dispatch_id is None:
        pass_gates(draft, command.job_id)  # now rather than at its not_before
        return
    code = RejectionCode.ALREADY_TERMINAL if job.is_terminal else RejectionCode.NOT_WAITING
    draft.reject(
        command.command_id,
        "RetryJob",
        code,
        f"job {command.job_id!r} is {job.status}, not waiting for a retry; "
        "submit it again to run it anew",
        command.job_id,
    )


def decide_delete(draft: Draft, command: DeleteJobs) -> None:
    if not _known_job(draft, command.command_id, "DeleteJobs", command.job_id):
        return
    state = draft.state
    targets = list(state.jobs) if command.job_id is None else [command.job_id]
    live = [job_id for job_id in targets if not draft.job(job_id).deleted]
    if not live:
        draft.reject(
            command.command_id,
            "DeleteJobs",
            RejectionCode.DELETED,
            "already deleted",
            command.job_id or "",
        )
        return
    unfinished = [job_id for job_id in live if not draft.job(job_id).is_terminal]
    if unfinished and not command.force:
        draft.reject(
            command.command_id,
            "DeleteJobs",
            RejectionCode.NOT_TERMINAL,
            f"{len(unfinished)} job(s) not finished ({', '.join(unfinished[:5])}); "
            "cancel them first or delete with force",
            command.job_id or "",
        )
        return
    canceled = []
    for job_id in unfinished:
        job = draft.job(job_id)
        if not job.is_terminal:
            draft.emit(
                job_id,
                JobCanceled(
                    reason="deleted with force",
                    requested_by=command.requested_by,
                    attempt=job.attempt,
                ),
            )
            canceled.append(job_id)
    cascade(draft, canceled)
    complete_if_done(draft)
    for job_id in live:
        draft.emit(job_id, JobDeleted(forced=command.force, requested_by=command.requested_by))


def decide_claim_key(draft: Draft, command: ClaimIdempotencyKey) -> None:
    """The ledger's side: grant the key, queue the claim, or answer that it was completed."""
    ledger = draft.state.key_ledger or KeyLedger(command.key)
    job = command.holder
    if ledger.completed_by:
        decision = IdempotencyKeyDecided(
            command.key, job, KeyDecision.COMPLETED, other=ledger.completed_by
        )
    elif ledger.holder in ("", job):
        decision = IdempotencyKeyDecided(command.key, job, KeyDecision.GRANTED)
    elif job in ledger.waiters:
        return  # already queued
    else:
        decision = IdempotencyKeyDecided(command.key, job, KeyDecision.QUEUED, other=ledger.holder)
    draft.emit("", decision)


def decide_release_key(draft: Draft, command: ReleaseIdempotencyKey) -> None:
    """The ledger's side: a job that claimed the key ended.

    A completing holder makes the key done for good and every waiting job is answered
    "completed"; a holder that failed, was canceled or abandoned hands the key to the job
    that waited longest, which then runs. A job that ended while waiting withdraws.
    """
    ledger = draft.state.key_ledger or KeyLedger(command.key)
    job, key = command.holder, command.key
    if ledger.completed_by:
        return  # done for good; a late or repeated release changes nothing
    if ledger.holder == job or (command.completed and job not in ledger.waiters):
        # (a job completing a key it does not hold ran before the ledger knew of it, or was
        # forced: JobSpec.force; either way the key is completed now, and a holder still
        # running ends without changing that)
        if command.completed:
            draft.emit("", IdempotencyKeyDecided(key, job, KeyDecision.DONE))
            for waiter in ledger.waiters:
                draft.emit("", IdempotencyKeyDecided(key, waiter, KeyDecision.COMPLETED, job))
            return
        draft.emit("", IdempotencyKeyDecided(key, job, KeyDecision.RELEASED))
        if ledger.waiters:
            draft.emit("", IdempotencyKeyDecided(key, ledger.waiters[0], KeyDecision.GRANTED))
    elif job in ledger.waiters:
        draft.emit("", IdempotencyKeyDecided(key, job, KeyDecision.WITHDRAWN))


def decide_key_answer(draft: Draft, answer: IdempotencyKeyAnswer) -> None:
    """The job's side: the ledger granted the key (the job runs once its dependencies
    allow) or another job completed it (SKIPPED, like a key completed in this partition)."""
    state = draft.state
    if not state.accepted or answer.job_id not in state.jobs:
        return
    job = draft.job(answer.job_id)
    if job.status is not JobStatus.BLOCKED or KEY_WAIT not in job.waiting_on:
        return  # it ended meanwhile (its release went to the ledger), or a repeated answer
    if answer.granted:
        remaining = job.waiting_on - {KEY_WAIT}
        if remaining:
            draft.emit(answer.job_id, JobBlocked(tuple(sorted(remaining))))
        else:
            attempt = max(1, job.attempt)  # (a rerun job keeps the attempt number it was given)
            make_pending(draft, answer.job_id, attempt, reason="idempotency key granted")
        return
    draft.emit(
        answer.job_id,
        JobSkipped(
            reason=f"idempotency key {answer.key!r} already completed by {answer.completed_by}",
            idempotency_key=answer.key,
            completed_by=answer.completed_by,
        ),
    )
    after_terminal(draft, answer.job_id)


RERUNNABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELED, JobStatus.ABANDONED})


def _rerun_set(draft: Draft, roots: list[str]) -> list[str]:
    """The jobs a rerun of ``roots`` runs again: the roots, the jobs upstream of them that did
    not succeed (an abandoned job reruns with what abandoned it), and the jobs downstream that
    were abandoned (what a failure took with it); in submission order."""
    state = draft.state
    chosen: set[str] = set()
    todo = list(roots)
    while todo:
        job_id = todo.pop()
        if job_id in chosen:
            continue
        job = draft.job(job_id)
        if job.status not in RERUNNABLE or job.deleted:
            continue
        chosen.add(job_id)
        todo.extend(upstream_of(job.spec, state.children.get(job_id, ())))
        for dependent in state.dependents.get(job_id, ()):
            if draft.job(dependent).status is JobStatus.ABANDONED:
                todo.append(dependent)
    return [job_id for job_id in state.jobs if job_id in chosen]


def decide_rerun(draft: Draft, command: RerunJobs) -> None:
    """Runs failed, canceled and abandoned jobs again, in the same submission and history.

    Each job gets a new attempt number (the next after its last) and a fresh retry budget;
    the jobs are then decided as at submit: BLOCKED behind what they wait on, or PENDING.
    """
    if not _known_job(draft, command.command_id, "RerunJobs", command.job_id):
        return
    state = draft.state
    if command.job_id is not None:
        job = draft.job(command.job_id)
        if job.status not in RERUNNABLE or job.deleted:
            why = "deleted" if job.deleted else str(job.status)
            draft.reject(
                command.command_id,
                "RerunJobs",
                RejectionCode.NOT_RERUNNABLE,
                f"job {command.job_id!r} is {why}; only FAILED, CANCELED and ABANDONED jobs "
                "can be rerun",
                command.job_id,
            )
            return
        roots = [command.job_id]
    else:
        roots = [j for j, job in state.jobs.items() if job.status in RERUNNABLE]
    targets = _rerun_set(draft, roots)
    if not targets:
        draft.reject(
            command.command_id,
            "RerunJobs",
            RejectionCode.NOT_RERUNNABLE,
            "no FAILED, CANCELED or ABANDONED job to rerun",
        )
        return
    for job_id in targets:
        job = draft.job(job_id)
        draft.emit(
            job_id,
            JobRerun(
                attempt=job.attempt + 1,
                previous_status=job.status,
                command_id=command.command_id,
                requested_by=command.requested_by,
            ),
        )
    chosen = set(targets)
    ready: list[str] = []
    for job_id in depth_first(tuple(draft.job(j).spec for j in state.jobs)):
        if job_id not in chosen:
            continue
        job = draft.job(job_id)
        waiting = sorted(
            upstream
            for upstream in upstream_of(job.spec, state.children.get(job_id, ()))
            if not draft.job(upstream).status.is_success
        )
        if job.spec.idempotency_key and not job.spec.force:
            waiting.insert(0, KEY_WAIT)  # claimed again: the key may have completed meanwhile
        if waiting:
            draft.emit(job_id, JobBlocked(tuple(waiting)))
        else:
            ready.append(job_id)
    for job_id in by_priority(draft, ready):
        make_pending(draft, job_id, attempt=draft.job(job_id).attempt, reason="rerun")
