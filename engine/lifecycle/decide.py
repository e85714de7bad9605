"""The decision: ``decide(state, input, now) -> [events]``. Every lifecycle rule lives here.

Pure: no Kafka, no clock, no randomness that a replay could not repeat (retry jitter is drawn
from a generator seeded by the attempt's identity). ``decide`` never changes ``state``; it
folds the events it emits into a draft (copy-on-write over the state's mappings) so that
one input can cascade (a completion unblocks dependents, a failure abandons them, the last
terminal job completes the submission).

Besides events, a scheduler keeps transient bookkeeping that is not worth a record on the
log: :func:`observe` renews worker leases and holds back progress that coalescing dropped,
and :func:`recover` re-arms leases after a rebuild. :func:`next_deadline` says when the
submission's next timer is due, and a :class:`~engine.lifecycle.records.Tick` fires it.
"""

from __future__ import annotations

import json
import random
import re
from collections import ChainMap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from engine.lifecycle.effects import Effect, effects
from engine.lifecycle.evolve import evolve
from engine.lifecycle.records import (
    CANCELABLE_AT_ONCE,
    KEY_WAIT,
    AttemptRef,
    AttemptReport,
    CancelJobs,
    CancelMode,
    Claimed,
    ClaimIdempotencyKey,
    CommandRejected,
    DeleteJobs,
    Event,
    EventBody,
    ExceptionReported,
    FailureReason,
    Finished,
    Heartbeat,
    IdempotencyKeyAnswer,
    IdempotencyKeyDecided,
    Input,
    JobAbandoned,
    JobAssigned,
    JobBlocked,
    JobCanceled,
    JobCancelRequested,
    JobCompleted,
    JobDeleted,
    JobDispatched,
    JobDuplicateClaim,
    JobExceptionRaised,
    JobFailed,
    JobOutput,
    JobPending,
    JobProgressed,
    JobRetryScheduled,
    JobSkipped,
    JobSpec,
    JobStarted,
    JobStatus,
    JobSubmitted,
    KeyDecision,
    Outcome,
    OutputReported,
    ProgressReported,
    RejectionCode,
    ReleaseIdempotencyKey,
    RetryJob,
    Started,
    SubmissionAccepted,
    SubmissionCompleted,
    SubmissionStatus,
    SubmitJobs,
    Tick,
    Unprocessable,
    WorkerLeft,
)
from engine.lifecycle.state import (
    JobState,
    KeyLedger,
    PendingProgress,
    SubmissionState,
    upstream_of,
)
from engine.limits import (
    DEFAULT_LIMITS,
    Limits,
    describe_bytes,
    setting_name,
    truncate_middle,
    truncate_text,
)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,199}$")
_QUEUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_ACTIVE = frozenset({JobStatus.ASSIGNED, JobStatus.RUNNING})
#: The longest idempotency key, in bytes (UTF-8).
MAX_IDEMPOTENCY_KEY_BYTES = 1024


@dataclass(frozen=True)
class Policy:
    """Scheduler-wide limits and timings (not per job).

    Attributes:
        lease_ms: how long a worker may stay silent before its attempts are lost.
        kill_grace_ms: how long a kill may take before the job is CANCELED without the
            worker's confirmation (beyond the worker's own grace period).
        progress_interval_ms: at most one progress event per job per this interval.
        max_jobs: jobs in one submission.
        max_args_bytes: size of one job's JSON arguments.
        max_result_bytes: size of one task's JSON result; a larger one fails the attempt.
        max_note_bytes / max_status_line_bytes / max_traceback_bytes /
        max_output_chunk_bytes: longer texts from workers are truncated.
        (The defaults are :mod:`engine.limits`; :meth:`from_limits` takes configured ones.)
    """

    lease_ms: int = 30_000
    kill_grace_ms: int = 15_000
    progress_interval_ms: int = 200
    max_jobs: int = DEFAULT_LIMITS.max_jobs
    max_args_bytes: int = DEFAULT_LIMITS.max_args_bytes
    max_result_bytes: int = DEFAULT_LIMITS.max_result_bytes
    max_note_bytes: int = DEFAULT_LIMITS.max_note_bytes
    max_status_line_bytes: int = DEFAULT_LIMITS.max_status_line_bytes
    max_traceback_bytes: int = DEFAULT_LIMITS.max_traceback_bytes
    max_output_chunk_bytes: int = DEFAULT_LIMITS.max_output_chunk_bytes

    @classmethod
    def from_limits(cls, limits: Limits, **timings: int) -> Policy:
        """A policy with the given size limits and timings."""
        return cls(
            max_jobs=limits.max_jobs,
            max_args_bytes=limits.max_args_bytes,
            max_result_bytes=limits.max_result_bytes,
            max_note_bytes=limits.max_note_bytes,
            max_status_line_bytes=limits.max_status_line_bytes,
            max_traceback_bytes=limits.max_traceback_bytes,
            max_output_chunk_bytes=limits.max_output_chunk_bytes,
            **timings,
        )


DEFAULT_POLICY = Policy()
_NO_KEYS: Mapping[str, str] = {}


def event_id(submission_id: str, seq: int) -> str:
    """The deterministic id of a submission's ``seq``-th event."""
    return f"{submission_id}:{seq}"


def dispatch_id(submission_id: str, job_id: str, attempt: int) -> str:
    """The deterministic id of an attempt's dispatch record."""
    return f"{submission_id}/{job_id}/{attempt}"


def decide(
    state: SubmissionState | None,
    given: Input,
    now: int,
    *,
    policy: Policy = DEFAULT_POLICY,
    completed_keys: Mapping[str, str] = _NO_KEYS,
) -> list[Event]:
    """Decides what happens when ``given`` meets the submission in ``state``.

    Args:
        state: the submission's state, or ``None`` if nothing is known of it. Not modified.
        given: a command, a worker report, or a :class:`Tick`.
        now: the scheduler's clock, in ms; every event is stamped with it.
        policy: scheduler-wide limits and timings.
        completed_keys: idempotency key -> ``submission_id/job_id`` that completed it.

    Returns:
        The new events of this submission, with consecutive sequence numbers.
    """
    submission_id = _submission_of(given, state)
    if submission_id is None:
        return []
    draft = _Draft(state, submission_id, now, policy)
    _decide_into(draft, given, completed_keys)
    return draft.events


@dataclass
class Step:
    """One input fully applied: its events, the records they call for, the state after.

    ``state`` is ``None`` when the input concerned no known submission and created none.
    """

    events: list[Event]
    effects: list[Effect]
    state: SubmissionState | None


def step(
    state: SubmissionState | None,
    given: Input,
    now: int,
    *,
    policy: Policy = DEFAULT_POLICY,
    completed_keys: Mapping[str, str] = _NO_KEYS,
) -> Step:
    """decide, effects, evolve and observe in one pass: the scheduler's hot path.

    The same rules as :func:`decide` followed by folding each event (with
    :func:`~engine.lifecycle.effects.effects` taken just before it) and :func:`observe`,
    without folding every event twice. Unlike :func:`decide` it updates ``state`` in place.
    """
    submission_id = _submission_of(given, state)
    if submission_id is None:
        return Step([], [], state)
    draft = _Draft(state, submission_id, now, policy, collect_effects=True)
    _decide_into(draft, given, completed_keys)
    if state is None:
        if not draft.state.accepted:
            return Step(draft.events, draft.effects, None)
        state = SubmissionState(submission_id=submission_id)
    _merge(draft.state, state)
    observe(state, given, now, policy)
    return Step(draft.events, draft.effects, state)


def _merge(draft: SubmissionState, into: SubmissionState) -> None:
    """Writes what a draft changed (its ChainMaps' first maps and its scalars) into a state."""
    for name in ("jobs", "dependents", "children"):
        overlay = getattr(draft, name)
        assert isinstance(overlay, ChainMap)
        getattr(into, name).update(overlay.maps[0])
    into.seq = draft.seq
    into.last_timestamp = draft.last_timestamp
    into.accepted = draft.accepted
    into.command_id = draft.command_id
    into.outcome = draft.outcome
    into.deleted = draft.deleted
    into.submitted_by = draft.submitted_by
    into.labels = draft.labels
    into.key_ledger = draft.key_ledger
    into.open_jobs = draft.open_jobs


def _decide_into(draft: _Draft, given: Input, completed_keys: Mapping[str, str]) -> None:
    submission_id = draft.state.submission_id
    if isinstance(given, Unprocessable):
        command = given.command
        draft.reject(
            command.command_id,
            type(command).__name__,
            RejectionCode.UNPROCESSABLE,
            given.reason,
            getattr(command, "job_id", None) or "",
        )
    elif isinstance(given, SubmitJobs):
        _submit(draft, given, completed_keys)
    elif isinstance(given, CancelJobs):
        _cancel(draft, given)
    elif isinstance(given, RetryJob):
        _retry_now(draft, given)
    elif isinstance(given, DeleteJobs):
        _delete(draft, given)
    elif isinstance(given, Tick):
        _fire_timers(draft)
    elif isinstance(given, WorkerLeft):
        for ref in given.unfinished:
            if (
                ref.submission_id == submission_id
                and is_current(draft.state, ref)
                and draft.job(ref.job_id).worker_id in ("", ref.worker_id)
            ):
                _fail_attempt(
                    draft,
                    ref.job_id,
                    FailureReason.WORKER_LOST,
                    "worker_left",
                    f"worker {ref.worker_id} left before finishing",
                )
    elif isinstance(given, Heartbeat):
        pass  # leases are renewed by observe(); a heartbeat decides nothing
    elif isinstance(given, ClaimIdempotencyKey):
        _claim_key(draft, given)
    elif isinstance(given, ReleaseIdempotencyKey):
        _release_key(draft, given)
    elif isinstance(given, IdempotencyKeyAnswer):
        _key_answered(draft, given)
    else:
        _report(draft, given)


def _submission_of(given: Input, state: SubmissionState | None) -> str | None:
    if isinstance(
        given,
        SubmitJobs
        | CancelJobs
        | RetryJob
        | DeleteJobs
        | ClaimIdempotencyKey
        | ReleaseIdempotencyKey
        | IdempotencyKeyAnswer,
    ):
        return given.submission_id
    if isinstance(given, Unprocessable):
        return given.command.submission_id
    if isinstance(given, Tick | Heartbeat | WorkerLeft):
        return None if state is None else state.submission_id
    return given.ref.submission_id


class _Draft:
    """A submission being decided: the events so far folded over the original state."""

    def __init__(
        self,
        state: SubmissionState | None,
        submission_id: str,
        now: int,
        policy: Policy,
        *,
        collect_effects: bool = False,
    ) -> None:
        base = state or SubmissionState(submission_id=submission_id)
        self.state = SubmissionState(
            submission_id=submission_id,
            seq=base.seq,
            last_timestamp=base.last_timestamp,
            accepted=base.accepted,
            command_id=base.command_id,
            jobs=ChainMap({}, base.jobs),
            dependents=ChainMap({}, base.dependents),
            children=ChainMap({}, base.children),
            outcome=base.outcome,
            deleted=base.deleted,
            submitted_by=base.submitted_by,
            labels=base.labels,
            key_ledger=base.key_ledger,
            open_jobs=base.open_jobs,
        )
        self.now = now
        self.policy = policy
        self.events: list[Event] = []
        self.collect_effects = collect_effects
        self.effects: list[Effect] = []

    def job(self, job_id: str) -> JobState:
        return self.state.jobs[job_id]

    def emit(self, job_id: str, body: EventBody) -> None:
        seq = self.state.seq + 1
        event = Event(
            event_id=event_id(self.state.submission_id, seq),
            submission_id=self.state.submission_id,
            job_id=job_id,
            seq=seq,
            timestamp=self.now,
            body=body,
        )
        self.events.append(event)
        if self.collect_effects:
            self.effects.extend(
                effects(
                    self.state,
                    event,
                    lease_ms=self.policy.lease_ms,
                    kill_grace_ms=self.policy.kill_grace_ms,
                )
            )
        evolve(self.state, event)

    def reject(
        self, command_id: str, command_type: str, code: RejectionCode, reason: str, job_id: str = ""
    ) -> None:
        body = CommandRejected(command_id, command_type, str(code), reason)
        if self.state.accepted:
            self.emit(job_id, body)
            return
        # The submission does not exist (unknown, or its SubmitJobs was invalid): the
        # rejection is logged outside its sequence (seq 0), so that a later valid submission
        # with this id still starts at seq 1 and no event id is ever reused.
        self.events.append(
            Event(
                event_id=f"{self.state.submission_id}:rejected:{command_id}",
                submission_id=self.state.submission_id,
                job_id=job_id,
                seq=0,
                timestamp=self.now,
                body=body,
            )
        )


def decide_retired(
    command: SubmitJobs | CancelJobs | RetryJob | DeleteJobs, deleted: bool, now: int
) -> list[Event]:
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


# --------------------------------------------------------------------------- submit


def _submit(draft: _Draft, command: SubmitJobs, completed_keys: Mapping[str, str]) -> None:
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
    problem = validate_submission(command, draft.policy)
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
    for spec in command.jobs:
        draft.emit(spec.job_id, JobSubmitted(spec))
    for job_id in _depth_first(command.jobs):
        job = draft.job(job_id)
        if job.is_terminal:
            continue  # abandoned by an upstream skipped... never; kept for safety
        key = job.spec.idempotency_key
        if key and key in completed_keys:
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
        if key:
            # decided by the key's ledger, whatever partition it lives in: the job waits
            # for its answer (the claim is an effect of this event)
            waiting.insert(0, KEY_WAIT)
        if waiting:
            draft.emit(job_id, JobBlocked(tuple(waiting)))
        else:
            _make_pending(draft, job_id, attempt=1, reason="submitted")
    _complete_if_done(draft)


def validate_submission(
    command: SubmitJobs, policy: Policy = DEFAULT_POLICY
) -> tuple[RejectionCode, str] | None:
    """Checks a submission; returns ``(code, reason)`` of the first problem, or ``None``."""
    jobs = command.jobs
    if not _ID.match(command.submission_id):
        return RejectionCode.INVALID_JOB_ID, (
            f"submission id {command.submission_id!r} must be 1-200 characters of "
            "letters, digits and ._:@+=- (no '/')"
        )
    if not jobs:
        return RejectionCode.EMPTY_SUBMISSION, "a submission needs at least one job"
    if len(jobs) > policy.max_jobs:
        return RejectionCode.TOO_MANY_JOBS, (
            f"{len(jobs)} jobs in one submission; the limit is {policy.max_jobs}"
        )
    ids: set[str] = set()
    for spec in jobs:
        if not _ID.match(spec.job_id):
            return RejectionCode.INVALID_JOB_ID, (
                f"job id {spec.job_id!r} must be 1-200 characters of letters, digits "
                "and ._:@+=- (no '/')"
            )
        if spec.job_id in ids:
            return RejectionCode.DUPLICATE_JOB_ID, f"job id {spec.job_id!r} appears twice"
        ids.add(spec.job_id)
    for spec in jobs:
        problem = _validate_job(spec, ids, policy)
        if problem is not None:
            return problem
    cycle = _find_cycle(jobs)
    if cycle:
        return RejectionCode.CYCLE, "dependency cycle: " + " -> ".join(cycle)
    return None


def _validate_job(spec: JobSpec, ids: set[str], policy: Policy) -> tuple[RejectionCode, str] | None:
    name = spec.job_id
    if spec.task is not None and spec.command is not None:
        return RejectionCode.TASK_AND_COMMAND, f"job {name!r} has both a task and a command"
    if not spec.task and not spec.command:
        return RejectionCode.NO_TASK, f"job {name!r} needs a task name or a command"
    if spec.command is not None and not spec.command[0]:
        return RejectionCode.NO_TASK, f"job {name!r} has an empty command"
    if not _QUEUE.match(spec.queue):
        return RejectionCode.INVALID_JOB_ID, (
            f"job {name!r}: queue {spec.queue!r} must be letters, digits and ._-"
        )
    if len(spec.args.encode()) > policy.max_args_bytes:
        return RejectionCode.ARGS_TOO_LARGE, (
            f"job {name!r}: arguments are {len(spec.args.encode())} bytes; the limit is "
            f"{policy.max_args_bytes} (pass a reference to the data instead)"
        )
    try:
        args = json.loads(spec.args)
    except ValueError as exc:
        return RejectionCode.BAD_ARGS, f"job {name!r}: arguments are not JSON ({exc})"
    if not isinstance(args, dict):
        return RejectionCode.BAD_ARGS, (
            f"job {name!r}: arguments must be a JSON object with 'args' and/or 'kwargs'"
        )
    retry = spec.retry
    if retry.max_attempts < 1:
        return RejectionCode.BAD_RETRY, f"job {name!r}: max_attempts must be at least 1"
    if retry.backoff_ms < 0 or retry.max_backoff_ms < 0:
        return RejectionCode.BAD_RETRY, f"job {name!r}: backoff must not be negative"
    if retry.backoff_multiplier < 1:
        return RejectionCode.BAD_RETRY, f"job {name!r}: backoff_multiplier must be >= 1"
    if not 0 <= retry.jitter <= 1:
        return RejectionCode.BAD_RETRY, f"job {name!r}: jitter must be between 0 and 1"
    key = spec.idempotency_key
    if key is not None and len(key.encode()) > MAX_IDEMPOTENCY_KEY_BYTES:
        return RejectionCode.BAD_IDEMPOTENCY_KEY, (
            f"job {name!r}: idempotency key is {len(key.encode())} bytes; the limit is "
            f"{MAX_IDEMPOTENCY_KEY_BYTES}"
        )
    if spec.timeout_ms < 0 or spec.queue_timeout_ms < 0:
        return RejectionCode.BAD_TIMEOUT, f"job {name!r}: timeouts must not be negative"
    for upstream in spec.depends_on:
        if upstream not in ids:
            return RejectionCode.UNKNOWN_DEPENDENCY, (
                f"job {name!r} depends on {upstream!r}, which is not in the submission"
            )
        if upstream == name:
            return RejectionCode.CYCLE, f"job {name!r} depends on itself"
    if spec.parent is not None:
        if spec.parent not in ids:
            return RejectionCode.UNKNOWN_PARENT, (
                f"job {name!r} is a sub-job of {spec.parent!r}, which is not in the submission"
            )
        if spec.parent == name:
            return RejectionCode.CYCLE, f"job {name!r} is its own parent"
    return None


def _edges(jobs: Iterable[JobSpec]) -> dict[str, list[str]]:
    """job -> what must finish before it (dependencies and sub-jobs), in submission order."""
    upstream: dict[str, list[str]] = {}
    for spec in jobs:
        upstream.setdefault(spec.job_id, []).extend(spec.depends_on)
        if spec.parent is not None:
            upstream.setdefault(spec.parent, []).append(spec.job_id)
    return upstream


def _find_cycle(jobs: tuple[JobSpec, ...]) -> list[str]:
    upstream = _edges(jobs)
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(upstream, white)
    for root in upstream:
        if color[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path = [root]
        color[root] = grey
        while stack:
            node, index = stack[-1]
            edges = upstream[node]
            if index < len(edges):
                stack[-1] = (node, index + 1)
                nxt = edges[index]
                if color[nxt] == grey:
                    return [*path[path.index(nxt) :], nxt]
                if color[nxt] == white:
                    color[nxt] = grey
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                color[node] = black
                stack.pop()
                path.pop()
    return []


def _depth_first(jobs: tuple[JobSpec, ...]) -> list[str]:
    """Jobs in depth-first post-order: sub-jobs and dependencies before what waits on them."""
    upstream = _edges(jobs)
    seen: set[str] = set()
    order: list[str] = []
    for spec in jobs:
        if spec.job_id in seen:
            continue
        stack: list[tuple[str, int]] = [(spec.job_id, 0)]
        seen.add(spec.job_id)
        while stack:
            node, index = stack[-1]
            edges = upstream[node]
            if index < len(edges):
                stack[-1] = (node, index + 1)
                if edges[index] not in seen:
                    seen.add(edges[index])
                    stack.append((edges[index], 0))
            else:
                order.append(node)
                stack.pop()
    return order


# --------------------------------------------------------------------------- run, retry, fail


def _make_pending(draft: _Draft, job_id: str, attempt: int, reason: str) -> None:
    spec = draft.job(job_id).spec
    draft.emit(
        job_id,
        JobPending(
            attempt=attempt,
            queue=spec.queue,
            dispatch_id=dispatch_id(draft.state.submission_id, job_id, attempt),
            not_before=draft.now,
            reason=reason,
        ),
    )


def backoff_ms(spec: JobSpec, submission_id: str, failed_attempt: int) -> int:
    """The delay before the attempt after ``failed_attempt``, jittered deterministically."""
    policy = spec.retry
    cap = float(policy.max_backoff_ms)
    try:
        base = policy.backoff_ms * policy.backoff_multiplier ** (failed_attempt - 1)
    except OverflowError:
        base = cap
    base = min(base, cap)
    if policy.jitter > 0 and base > 0:
        rng = random.Random(f"{submission_id}/{spec.job_id}/{failed_attempt}")
        base *= 1 + rng.uniform(-policy.jitter, policy.jitter)
    # max_backoff_ms bounds the delay itself: jitter may shorten a capped delay, not lengthen it
    return max(0, min(round(base), policy.max_backoff_ms))


def _retryable(spec: JobSpec, reason: FailureReason, error_type: str) -> bool:
    retry_on = spec.retry.retry_on
    return not retry_on or error_type in retry_on or str(reason) in retry_on


def _fail_attempt(
    draft: _Draft,
    job_id: str,
    reason: FailureReason,
    error_type: str,
    note: str,
    *,
    traceback: str = "",
    exit_code: int | None = None,
    ended_at: int = 0,
) -> None:
    job = draft.job(job_id)
    if job.cancel is not None and job.cancel.mode is CancelMode.KILL:
        _cancel_killed(draft, job_id, "", ended_at)
        return
    spec = job.spec
    if job.attempt < spec.retry.max_attempts and _retryable(spec, reason, error_type):
        delay = backoff_ms(spec, draft.state.submission_id, job.attempt)
        next_attempt = job.attempt + 1
        draft.emit(
            job_id,
            JobRetryScheduled(
                failed_attempt=job.attempt,
                reason=reason,
                error_type=error_type,
                error_note=note,
                next_attempt=next_attempt,
                not_before=draft.now + delay,
                dispatch_id=(
                    dispatch_id(draft.state.submission_id, job_id, next_attempt)
                    if delay == 0
                    else None
                ),
                queue=spec.queue,
            ),
        )
        return
    draft.emit(
        job_id,
        JobFailed(
            attempt=job.attempt,
            reason=reason,
            error_type=error_type,
            error_note=note,
            traceback=traceback,
            exit_code=exit_code,
            ended_at=ended_at,
        ),
    )
    _after_terminal(draft, job_id)


def _cancel_killed(draft: _Draft, job_id: str, late_outcome: str, ended_at: int) -> None:
    """Ends a job whose attempt was sent a kill: CANCELED, whatever the attempt reported.

    A finish report that arrives after an accepted kill-cancel is recorded in the reason
    (``late_outcome``) but does not change the outcome, so a canceled job's dependents are
    abandoned even when its task ignored the kill and completed.
    """
    job = draft.job(job_id)
    assert job.cancel is not None
    reason = job.cancel.reason or "canceled"
    if late_outcome:
        reason = f"{reason} (the attempt reported {late_outcome} after the kill; ignored)"
    draft.emit(
        job_id,
        JobCanceled(
            reason=reason,
            requested_by=job.cancel.requested_by,
            attempt=job.attempt,
            ended_at=ended_at,
        ),
    )
    _after_terminal(draft, job_id)


def _after_terminal(draft: _Draft, job_id: str) -> None:
    """Cascades a terminal status: release or abandon what waits on it, complete the submission."""
    _cascade(draft, [job_id])
    _complete_if_done(draft)


def _cascade(draft: _Draft, roots: list[str]) -> None:
    queue = list(roots)
    while queue:
        job_id = queue.pop(0)
        job = draft.job(job_id)
        for dependent_id in draft.state.dependents.get(job_id, ()):
            dependent = draft.job(dependent_id)
            if dependent.is_terminal or dependent.status is not JobStatus.BLOCKED:
                continue
            if job.status.is_success:
                if not dependent.waiting_on:
                    _make_pending(draft, dependent_id, attempt=1, reason="dependencies completed")
            else:
                draft.emit(
                    dependent_id,
                    JobAbandoned(
                        cause_job_id=job_id,
                        cause_status=job.status,
                        reason=f"{job_id} ended {job.status}",
                    ),
                )
                queue.append(dependent_id)


def _abandon_dependents(
    draft: _Draft, job_id: str, reason: str, spare: frozenset[str] = frozenset()
) -> None:
    """Taipy's cancel of a RUNNING job with ``finish``: it runs on, what waits on it won't.

    Jobs in ``spare`` are left alone: the same cancel names them, so they end CANCELED.
    """
    queue = [job_id]
    while queue:
        current = queue.pop(0)
        for dependent_id in draft.state.dependents.get(current, ()):
            dependent = draft.job(dependent_id)
            if dependent.is_terminal or dependent_id in spare:
                continue
            draft.emit(
                dependent_id,
                JobAbandoned(
                    cause_job_id=current, cause_status=draft.job(current).status, reason=reason
                ),
            )
            queue.append(dependent_id)


def _complete_if_done(draft: _Draft) -> None:
    state = draft.state
    if state.outcome is not None or not state.accepted or state.open_jobs > 0:
        return
    counts: dict[str, int] = {}
    for job in state.jobs.values():
        if not job.is_terminal:
            return
        counts[job.status] = counts.get(job.status, 0) + 1
    if counts.get(JobStatus.FAILED):
        status = SubmissionStatus.FAILED
    elif counts.get(JobStatus.CANCELED) or counts.get(JobStatus.ABANDONED):
        status = SubmissionStatus.CANCELED
    else:
        status = SubmissionStatus.COMPLETED
    draft.emit("", SubmissionCompleted(status, tuple(sorted(counts.items()))))


# --------------------------------------------------------------------------- cancel, retry, delete


def _known_job(draft: _Draft, command_id: str, command_type: str, job_id: str | None) -> bool:
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


def _descendants(draft: _Draft, job_id: str) -> list[str]:
    """The job's sub-jobs, their sub-jobs, ..., deepest first."""
    out: list[str] = []
    for child in draft.state.children.get(job_id, ()):
        out.extend(_descendants(draft, child))
        out.append(child)
    return out


def _cancel(draft: _Draft, command: CancelJobs) -> None:
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
        if job.is_terminal:
            draft.reject(
                command.command_id,
                "CancelJobs",
                RejectionCode.ALREADY_TERMINAL,
                f"job {command.job_id!r} already ended {job.status}; "
                "only unfinished jobs can be canceled",
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
            _abandon_dependents(
                draft, job_id, f"{job_id} was canceled and left to finish", frozenset(targets)
            )
        elif job.cancel is None:
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
    _cascade(draft, canceled)
    _complete_if_done(draft)


def _retry_now(draft: _Draft, command: RetryJob) -> None:
    if not _known_job(draft, command.command_id, "RetryJob", command.job_id):
        return
    job = draft.job(command.job_id)
    if job.status is JobStatus.PENDING and job.dispatch_id is None:
        draft.emit(
            command.job_id,
            JobDispatched(
                attempt=job.attempt,
                queue=job.spec.queue,
                dispatch_id=dispatch_id(draft.state.submission_id, command.job_id, job.attempt),
            ),
        )
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


def _delete(draft: _Draft, command: DeleteJobs) -> None:
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
    _cascade(draft, canceled)
    _complete_if_done(draft)
    for job_id in live:
        draft.emit(job_id, JobDeleted(forced=command.force, requested_by=command.requested_by))


# --------------------------------------------------------------------------- idempotency keys


def _claim_key(draft: _Draft, command: ClaimIdempotencyKey) -> None:
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


def _release_key(draft: _Draft, command: ReleaseIdempotencyKey) -> None:
    """The ledger's side: a job that claimed the key ended.

    A completing holder makes the key done for good and every waiting job is answered
    "completed"; a holder that failed, was canceled or abandoned hands the key to the job
    that waited longest, which then runs. A job that ended while waiting withdraws.
    """
    ledger = draft.state.key_ledger or KeyLedger(command.key)
    job, key = command.holder, command.key
    if ledger.completed_by:
        return  # done for good; a late or repeated release changes nothing
    if ledger.holder == job or (command.completed and not ledger.holder):
        # (a job completing a key that nothing holds ran before the ledger knew of it)
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


def _key_answered(draft: _Draft, answer: IdempotencyKeyAnswer) -> None:
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
            _make_pending(draft, answer.job_id, attempt=1, reason="idempotency key granted")
        return
    draft.emit(
        answer.job_id,
        JobSkipped(
            reason=f"idempotency key {answer.key!r} already completed by {answer.completed_by}",
            idempotency_key=answer.key,
            completed_by=answer.completed_by,
        ),
    )
    _after_terminal(draft, answer.job_id)


# --------------------------------------------------------------------------- reports


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
    if isinstance(report, Claimed) or job.status is JobStatus.PENDING:
        return False
    return job.worker_id != report.ref.worker_id


def _report(draft: _Draft, report: Input) -> None:
    assert isinstance(
        report, Claimed | Started | ProgressReported | OutputReported | ExceptionReported | Finished
    )
    if is_stale(draft.state, report):
        return
    report = _fit(report, draft.policy)
    ref = report.ref
    job_id = ref.job_id
    job = draft.job(job_id)
    if isinstance(report, Claimed):
        if job.status is JobStatus.PENDING:
            _assign(draft, ref, host=report.host)
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
                        host=report.host,
                    ),
                )
            else:
                # The holder went silent (crashed, or lost its partition): the newcomer
                # takes over at once instead of waiting out the lease; the old one is fenced.
                _assign(draft, ref, host=report.host, previous_worker_id=job.worker_id)
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
            latest = _latest(report.value, report.total, report.status_line, job.held_progress)
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
            _fail_attempt(
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


def _latest(
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


def _is_news(job: JobState, progress: PendingProgress) -> bool:
    """Whether ``progress`` changes what the log says of the job's progress."""
    return any(
        new is not None and new != logged
        for new, logged in (
            (progress.value, job.progress),
            (progress.total, job.total),
            (progress.status_line, job.status_line),
        )
    )


def _assign(
    draft: _Draft, ref: AttemptRef, *, host: str = "", previous_worker_id: str = ""
) -> None:
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


def _finish(draft: _Draft, job_id: str, report: Finished) -> None:
    job = draft.job(job_id)
    if job.status is JobStatus.ASSIGNED:
        draft.emit(job_id, JobStarted(attempt=job.attempt, worker_id=job.worker_id))
    final = _latest(report.progress, report.total, report.status_line, job.held_progress)
    if _is_news(job, final):
        draft.emit(job_id, JobProgressed(job.attempt, final.value, final.total, final.status_line))
    cancel = job.cancel
    if cancel is not None and cancel.mode is CancelMode.KILL:
        late = "" if report.outcome is Outcome.CANCELED else str(report.outcome)
        _cancel_killed(draft, job_id, late, report.sent_at)
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
        _after_terminal(draft, job_id)
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
        _after_terminal(draft, job_id)
    else:
        reason = (
            FailureReason.EXIT_CODE if report.exit_code not in (None, 0) else FailureReason.ERROR
        )
        error_type = report.error_type or (
            "ExitCode" if reason is FailureReason.EXIT_CODE else "Error"
        )
        _fail_attempt(
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


# --------------------------------------------------------------------------- timers


def _queue_timeout_at(job: JobState) -> int | None:
    """When the attempt's wait for a worker times out.

    The wait starts when the attempt may run (a retry's backoff is not queueing) and ends at
    its first start: an attempt another worker took over after it started is not queued again.
    """
    timeout = job.spec.queue_timeout_ms
    if timeout <= 0 or job.status not in (JobStatus.PENDING, JobStatus.ASSIGNED):
        return None
    if job.run_at is not None:
        return None
    assert job.pending_at is not None
    return max(job.pending_at, job.not_before) + timeout


def _run_timeout_at(job: JobState) -> int | None:
    """When the started attempt times out (also while a takeover waits for its restart)."""
    timeout = job.spec.timeout_ms
    if timeout <= 0 or job.status not in _ACTIVE or job.run_at is None or job.cancel is not None:
        return None
    return job.run_at + timeout


def job_deadline(job: JobState, policy: Policy = DEFAULT_POLICY) -> int | None:
    """When the job's next timer is due, if it has one."""
    if job.is_terminal:
        return None
    due: list[int] = []
    status = job.status
    if status is JobStatus.PENDING and job.dispatch_id is None:
        due.append(job.not_before)
    for timeout_at in (_queue_timeout_at(job), _run_timeout_at(job)):
        if timeout_at is not None:
            due.append(timeout_at)
    if status in _ACTIVE and job.lease_until is not None:
        due.append(job.lease_until)
    if job.cancel is not None and job.cancel.mode is CancelMode.KILL:
        due.append(job.cancel.deadline)
    if job.held_progress is not None and job.last_progress_at is not None:
        due.append(job.last_progress_at + policy.progress_interval_ms)
    return min(due) if due else None


def next_deadline(state: SubmissionState, policy: Policy = DEFAULT_POLICY) -> int | None:
    """When a :class:`Tick` should next be decided for this submission (``None``: never)."""
    if state.outcome is not None:
        return None
    best: int | None = None
    for job in state.jobs.values():
        due = job_deadline(job, policy)
        if due is not None and (best is None or due < best):
            best = due
    return best


def _fire_timers(draft: _Draft) -> None:
    now = draft.now
    policy = draft.policy
    for job_id in list(draft.state.jobs):
        job = draft.job(job_id)
        due = job_deadline(job, policy)
        if due is None or due > now:
            continue
        if (
            job.held_progress is not None
            and job.last_progress_at is not None
            and (job.last_progress_at + policy.progress_interval_ms <= now)
        ):
            held = job.held_progress
            draft.emit(job_id, JobProgressed(job.attempt, held.value, held.total, held.status_line))
            job = draft.job(job_id)
        if (
            job.cancel is not None
            and job.cancel.mode is CancelMode.KILL
            and (job.cancel.deadline <= now)
        ):
            draft.emit(
                job_id,
                JobCanceled(
                    reason=f"{job.cancel.reason} (the worker did not confirm the kill)",
                    requested_by=job.cancel.requested_by,
                    attempt=job.attempt,
                ),
            )
            _after_terminal(draft, job_id)
            continue
        if job.status is JobStatus.PENDING and job.dispatch_id is None and job.not_before <= now:
            draft.emit(
                job_id,
                JobDispatched(
                    attempt=job.attempt,
                    queue=job.spec.queue,
                    dispatch_id=dispatch_id(draft.state.submission_id, job_id, job.attempt),
                ),
            )
            job = draft.job(job_id)
        queue_timeout_at = _queue_timeout_at(job)
        if queue_timeout_at is not None and queue_timeout_at <= now:
            _fail_attempt(
                draft,
                job_id,
                FailureReason.QUEUE_TIMEOUT,
                "QueueTimeout",
                f"not started within {job.spec.queue_timeout_ms} ms",
            )
            continue
        run_timeout_at = _run_timeout_at(job)
        if run_timeout_at is not None and run_timeout_at <= now:
            _fail_attempt(
                draft,
                job_id,
                FailureReason.TIMEOUT,
                "Timeout",
                f"ran longer than {job.spec.timeout_ms} ms",
            )
            continue
        if job.status in _ACTIVE and job.lease_until is not None and job.lease_until <= now:
            _fail_attempt(
                draft,
                job_id,
                FailureReason.WORKER_LOST,
                "WorkerLost",
                f"worker {job.worker_id} was silent past its lease",
            )


# --------------------------------------------------------------------------- transient bookkeeping


def observe(
    state: SubmissionState, given: Input, now: int, policy: Policy = DEFAULT_POLICY
) -> SubmissionState:
    """Applies what an input changes besides events: lease renewals and held-back progress.

    Call it after the events of ``decide(state, given, now)`` were folded in.
    """
    if isinstance(given, Heartbeat):
        for ref in given.attempts:
            if ref.submission_id == state.submission_id:
                _renew(state, ref, now)
        return state
    if not isinstance(
        given, Claimed | Started | ProgressReported | OutputReported | ExceptionReported | Finished
    ):
        return state
    if is_stale(state, given):
        return state
    _renew(state, given.ref, now)
    if isinstance(given, ProgressReported):
        # Hold what the log does not say yet: a report coalescing dropped (even one in the same
        # millisecond as the last progress event), merged over what was already held.
        job = state.jobs[given.ref.job_id]
        latest = _latest(given.value, given.total, given.status_line, job.held_progress)
        held = latest if _is_news(job, latest) else None
        if held != job.held_progress:
            state.jobs[given.ref.job_id] = replace(job, held_progress=held)
    return state


def _renew(state: SubmissionState, ref: AttemptRef, now: int) -> None:
    job = state.jobs.get(ref.job_id)
    if job is None or job.status not in _ACTIVE or job.worker_id != ref.worker_id:
        return
    if job.attempt != ref.attempt or job.lease_ms <= 0:
        return
    until = now + job.lease_ms
    if job.lease_until is None or until > job.lease_until:
        state.jobs[ref.job_id] = replace(job, lease_until=until)


def recover(state: SubmissionState, now: int) -> SubmissionState:
    """Re-arms the leases of running attempts after a rebuild, so that a scheduler failover
    does not declare every quiet worker lost."""
    for job_id, job in list(state.jobs.items()):
        if job.status in _ACTIVE and job.lease_ms > 0:
            until = max(job.lease_until or 0, now + job.lease_ms)
            state.jobs[job_id] = replace(job, lease_until=until)
    return state
