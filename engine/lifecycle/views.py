"""The read model of the core: what a reader knows of a job and a submission from its events.

:class:`SubmissionView` folds the events of one submission into :class:`JobView` values, one
per job; :func:`status_after` says which status an event puts its job in. Watches
(:mod:`engine.watch`), the notifier, the CLI and the projections' job rows
(:mod:`projections.jobs`) all read jobs through these views, and their durations are the ones
:mod:`engine.lifecycle.durations` defines. Pure: no Kafka, no clock except the ``now`` that
closes a phase still open.

Every fold here ends in ``case _: assert_never(body)``: a new event type that a fold does
not handle is a ``mypy --strict`` error (docs/adding-an-event.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Final, assert_never, get_args

from engine.lifecycle import records as ev
from engine.lifecycle.durations import JobTimes, durations_of
from engine.lifecycle.names import names_of
from engine.lifecycle.reasons import reason_after
from engine.lifecycle.records import (
    Event,
    EventBody,
    JobStatus,
    SubmissionStatus,
)

#: The bodies of the events that change their job's status (:func:`status_after` is not
#: ``None``); a unit test holds the two to each other.
StatusChange = (
    ev.JobSubmitted
    | ev.JobBlocked
    | ev.JobPending
    | ev.JobAssigned
    | ev.JobStarted
    | ev.JobRetryScheduled
    | ev.JobCompleted
    | ev.JobFailed
    | ev.JobCanceled
    | ev.JobAbandoned
    | ev.JobSkipped
    | ev.JobRerun
)
#: The bodies of the events about a submission as a whole (their ``job_id`` may be empty).
SubmissionChange = ev.SubmissionAccepted | ev.SubmissionCompleted | ev.CommandRejected

#: Names of the events that change a job's status.
STATUS_EVENTS: Final[frozenset[str]] = names_of(*get_args(StatusChange))
#: Names of the events about a submission as a whole.
SUBMISSION_EVENTS: Final[frozenset[str]] = names_of(*get_args(SubmissionChange))


def to_datetime(ms: int) -> datetime:
    """An event timestamp (epoch milliseconds) as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def status_after(body: EventBody) -> JobStatus | None:
    """The job status an event puts its job in, or ``None`` when it does not change it."""
    match body:
        case ev.JobSubmitted():
            return JobStatus.SUBMITTED
        case ev.JobBlocked():
            return JobStatus.BLOCKED
        case ev.JobPending() | ev.JobRetryScheduled():
            return JobStatus.PENDING
        case ev.JobAssigned():
            return JobStatus.ASSIGNED
        case ev.JobStarted():
            return JobStatus.RUNNING
        case ev.JobCompleted():
            return JobStatus.COMPLETED
        case ev.JobFailed():
            return JobStatus.FAILED
        case ev.JobCanceled():
            return JobStatus.CANCELED
        case ev.JobAbandoned():
            return JobStatus.ABANDONED
        case ev.JobSkipped():
            return JobStatus.SKIPPED
        case ev.JobRerun():
            return JobStatus.SUBMITTED
        case (
            ev.SubmissionAccepted()
            | ev.JobDispatched()
            | ev.JobProgressed()
            | ev.JobOutput()
            | ev.JobExceptionRaised()
            | ev.JobCancelRequested()
            | ev.JobDeleted()
            | ev.CommandRejected()
            | ev.SubmissionCompleted()
            | ev.JobDuplicateClaim()
            | ev.IdempotencyKeyDecided()
            | ev.NotificationAdded()
            | ev.NotificationRemoved()
            | ev.JobHeld()
            | ev.SlotDecided()
            | ev.QueueConfigured()
            | ev.ScheduleCreated()
            | ev.ScheduleChanged()
            | ev.ScheduleFired()
            | ev.ScheduleSkipped()
            | ev.ScheduleRunSeen()
            | ev.SubmissionThrottled()
        ):
            return None
        case _:
            assert_never(body)


@dataclass(frozen=True)
class JobView:
    """What is known of one job: its spec, status, times, progress and outcome.

    Built by folding events (:class:`SubmissionView`) or read from the projections
    (:meth:`engine.api.Joblog.get_job`). Times are aware UTC datetimes.

    Attributes:
        submission_id / job_id: the job's identity.
        name / task / command / queue / parent / depends_on: from its spec.
        status: its current status.
        attempt: the current (or last) attempt, 0 before the first.
        max_attempts: attempts its retry policy allows.
        worker_id: the worker of the current attempt.
        progress / total / status_line: the last progress report.
        submitted_at / blocked_at / pending_at / run_at / finished_at: when it entered those
            statuses (``pending_at`` and ``run_at`` of the current attempt).
        first_pending_at: when the job first became PENDING (the end of its blocked time).
        error_type / error_note: the error of the last failed attempt or fatal exception.
        result: the task's JSON-encoded return value.
        exit_code: a command's exit code.
        exceptions: exception events raised so far.
        deleted: the job was deleted.
        stacktrace: the tracebacks of the exceptions handled during its execution (Taipy's
            ``stacktrace``), oldest first: fatal or not, and those of failed attempts (one
            entry when a failure repeats the traceback of its fatal exception). A row of the
            projections keeps only the last one.
        force: its spec's ``force`` (Taipy's: run even where it would be skipped), ``None``
            when unknown (a row of the projections, a view that missed ``JobSubmitted``).
        labels: the tags of its spec (``archive_path`` and ``archive_url`` say where its
            outputs go: a notification's ``${JOB_ARCHIVE_PATH}`` and ``${JOB_ARCHIVE_URL}``).
        host: the host of the worker of the current attempt.
        pending_reason / pending_detail / pending_until: why the job is not running yet
            (:mod:`engine.lifecycle.reasons`; empty once it runs or ended).
        priority: its spec's priority.
    """

    submission_id: str
    job_id: str
    name: str = ""
    task: str | None = None
    command: tuple[str, ...] | None = None
    queue: str = "default"
    parent: str | None = None
    depends_on: tuple[str, ...] = ()
    status: JobStatus = JobStatus.SUBMITTED
    attempt: int = 0
    max_attempts: int = 1
    worker_id: str = ""
    progress: float | None = None
    total: float | None = None
    status_line: str | None = None
    submitted_at: datetime | None = None
    blocked_at: datetime | None = None
    pending_at: datetime | None = None
    first_pending_at: datetime | None = None
    run_at: datetime | None = None
    finished_at: datetime | None = None
    error_type: str = ""
    error_note: str = ""
    result: str | None = None
    exit_code: int | None = None
    exceptions: int = 0
    deleted: bool = False
    stacktrace: tuple[str, ...] = ()
    force: bool | None = None
    labels: tuple[tuple[str, str], ...] = ()
    host: str = ""
    pending_reason: str = ""
    pending_detail: str = ""
    pending_until: datetime | None = None
    priority: int = 0

    @property
    def ref(self) -> str:
        """``submission_id/job_id``: how the CLI and :class:`~engine.api.Joblog` name a job."""
        return f"{self.submission_id}/{self.job_id}"

    @property
    def id(self) -> str:
        """Taipy's ``job.id``: the job's id across submissions (:attr:`ref`)."""
        return self.ref

    @property
    def submit_id(self) -> str:
        """Taipy's ``job.submit_id``: the id of the submission that created the job."""
        return self.submission_id

    @property
    def creation_date(self) -> datetime | None:
        """Taipy's ``creation_date``: when the job was created, SUBMITTED."""
        return self.submitted_at

    # Taipy's status predicates (``job.is_completed()``, ...), one per status.

    def is_submitted(self) -> bool:
        return self.status is JobStatus.SUBMITTED

    def is_blocked(self) -> bool:
        return self.status is JobStatus.BLOCKED

    def is_pending(self) -> bool:
        return self.status is JobStatus.PENDING

    def is_assigned(self) -> bool:
        """ASSIGNED (joblog's: a worker claimed the attempt; Taipy has no such status)."""
        return self.status is JobStatus.ASSIGNED

    def is_running(self) -> bool:
        return self.status is JobStatus.RUNNING

    def is_completed(self) -> bool:
        return self.status is JobStatus.COMPLETED

    def is_failed(self) -> bool:
        return self.status is JobStatus.FAILED

    def is_canceled(self) -> bool:
        return self.status is JobStatus.CANCELED

    def is_skipped(self) -> bool:
        return self.status is JobStatus.SKIPPED

    def is_abandoned(self) -> bool:
        return self.status is JobStatus.ABANDONED

    def is_finished(self) -> bool:
        """Taipy's ``is_finished()``: COMPLETED, FAILED, CANCELED, SKIPPED or ABANDONED."""
        return self.status.is_terminal

    def is_deletable(self) -> bool:
        """Whether a delete without ``force`` is accepted: the job ended and is not deleted."""
        return self.status.is_terminal and not self.deleted

    @property
    def display_name(self) -> str:
        return self.name or self.task or (self.command[0] if self.command else self.job_id)

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def error(self) -> str:
        """``type: note`` of the job's error, or ``""``."""
        if self.error_type and self.error_note:
            return f"{self.error_type}: {self.error_note}"
        return self.error_type or self.error_note

    @property
    def fraction(self) -> float | None:
        """Progress as a fraction of its total, when both are known."""
        if self.progress is None or not self.total:
            return None
        return max(0.0, min(1.0, self.progress / self.total))

    @property
    def times(self) -> JobTimes:
        """The job's times in the form :mod:`engine.lifecycle.durations` measures.

        A view carries no worker clock, so its execution is measured between ``run_at``
        and ``finished_at`` (the scheduler's clock).
        """
        return JobTimes(
            submitted_at=_ms(self.submitted_at),
            blocked_at=_ms(self.blocked_at),
            first_pending_at=_ms(self.first_pending_at),
            pending_at=_ms(self.pending_at),
            run_at=_ms(self.run_at),
            finished_at=_ms(self.finished_at),
            attempt=self.attempt,
        )

    @property
    def execution_duration(self) -> float | None:
        """Seconds from ``run_at`` to ``finished_at`` (to now while running)."""
        return _seconds(durations_of(self.times, _now_ms()).execution_ms)

    @property
    def pending_duration(self) -> float | None:
        """Seconds from ``pending_at`` to ``run_at`` (to now while pending)."""
        return _seconds(durations_of(self.times, _now_ms()).pending_ms)

    @property
    def blocked_duration(self) -> float | None:
        """Seconds from ``blocked_at`` to the first ``PENDING`` (to now while blocked)."""
        return _seconds(durations_of(self.times, _now_ms()).blocked_ms)


def _with_traceback(stacktrace: tuple[str, ...], traceback: str) -> tuple[str, ...]:
    """The stack traces with one more, unless it is empty or repeats the last one."""
    if not traceback or (stacktrace and stacktrace[-1] == traceback):
        return stacktrace
    return (*stacktrace, traceback)


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else round(moment.timestamp() * 1000)


def _now_ms() -> int:
    return round(datetime.now(UTC).timestamp() * 1000)


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


@dataclass
class SubmissionView:
    """The jobs of one submission folded from its events; :meth:`apply` folds one more.

    Tolerates a stream that starts in the middle (a watch with ``from_start=False``): events
    of a job it has not seen submitted create a bare :class:`JobView`.

    Attributes:
        submission_id: the submission.
        jobs: job views by job id, in submission order.
        accepted: the scheduler accepted the submission.
        outcome: set once every job is terminal.
        rejection: the rejection of the submission itself, if it was rejected.
        throttled: the last throttle of a submit of it while it was not accepted
            (admission control: the engine was busy; its client submits it again).
        notifications: the notifications in place, by id, in the order they were added.
        last_event: the last event folded in.
    """

    submission_id: str
    jobs: dict[str, JobView] = field(default_factory=dict)
    accepted: bool = False
    outcome: SubmissionStatus | None = None
    rejection: ev.CommandRejected | None = None
    throttled: ev.SubmissionThrottled | None = None
    notifications: dict[str, ev.Notification] = field(default_factory=dict)
    last_event: Event | None = None

    @property
    def done(self) -> bool:
        """Every job is terminal, or the submission was rejected."""
        return self.outcome is not None or self.rejection is not None

    @property
    def known(self) -> bool:
        """The events seen so far show the submission exists or its submit was rejected
        (a rejected cancel of an unknown id does not make it known)."""
        return self.accepted or bool(self.jobs) or self.rejection is not None

    def counts(self) -> dict[JobStatus, int]:
        """How many jobs are in each status (deleted ones included)."""
        out: dict[JobStatus, int] = {}
        for job in self.jobs.values():
            out[job.status] = out.get(job.status, 0) + 1
        return out

    def apply(self, event: Event) -> tuple[JobView | None, JobView | None]:
        """Folds one event in.

        Returns:
            The event's job before and after it (``(None, None)`` for a submission event).
        """
        self.last_event = event
        body = event.body
        match body:
            case ev.SubmissionAccepted():
                self.accepted = True
                self.rejection = None  # an earlier invalid submit of this id is superseded
                self.throttled = None
                return None, None
            case ev.SubmissionCompleted():
                self.outcome = body.status
                return None, None
            case ev.CommandRejected():
                if body.command_type == "SubmitJobs" and not self.accepted:
                    self.rejection = body
                return None, None
            case (
                ev.IdempotencyKeyDecided()
                | ev.SlotDecided()
                | ev.QueueConfigured()
                | ev.ScheduleCreated()
                | ev.ScheduleChanged()
                | ev.ScheduleFired()
                | ev.ScheduleSkipped()
                | ev.ScheduleRunSeen()
            ):
                return None, None  # a ledger's, a queue's or a schedule's: about no job
            case ev.SubmissionThrottled():
                if not self.accepted:
                    self.throttled = body
                return None, None
            case ev.NotificationAdded():
                self.notifications[body.notification.notification_id] = body.notification
                return None, None
            case ev.NotificationRemoved():
                self.notifications.pop(body.notification_id, None)
                return None, None
        if isinstance(body, ev.JobRerun):
            self.outcome = None  # the submission is open again
        before = self.jobs.get(event.job_id)
        current = before or JobView(event.submission_id, event.job_id)
        after = evolve_view(current, body, to_datetime(event.timestamp))
        self.jobs[event.job_id] = after
        return before, after


def evolve_view(job: JobView, body: EventBody, at: datetime) -> JobView:
    """Folds one event about ``job`` (decided at ``at``) into its view."""
    view = _evolve_view(job, body, at)
    reason = reason_after(body, round(at.timestamp() * 1000))
    if reason is None:
        return view
    return replace(
        view,
        pending_reason=reason.code,
        pending_detail=reason.detail,
        pending_until=to_datetime(reason.until) if reason.until else None,
    )


def _evolve_view(job: JobView, body: EventBody, at: datetime) -> JobView:
    status = status_after(body) or job.status
    match body:
        case ev.JobSubmitted():
            spec = body.spec
            return JobView(
                submission_id=job.submission_id,
                job_id=job.job_id,
                name=spec.name,
                task=spec.task,
                command=spec.command,
                queue=spec.queue,
                parent=spec.parent,
                depends_on=spec.depends_on,
                max_attempts=spec.retry.max_attempts,
                submitted_at=at,
                force=spec.force,
                labels=spec.labels,
                priority=spec.priority,
            )
        case ev.JobBlocked():
            return replace(job, status=status, blocked_at=at)
        case ev.JobPending():
            return replace(
                job,
                status=status,
                attempt=body.attempt,
                pending_at=at,
                first_pending_at=job.first_pending_at or at,
                queue=body.queue,
            )
        case ev.JobAssigned():
            return replace(
                job, status=status, attempt=body.attempt, worker_id=body.worker_id, host=body.host
            )
        case ev.JobStarted():
            return replace(job, status=status, attempt=body.attempt, run_at=at)
        case ev.JobProgressed():
            return replace(
                job,
                progress=job.progress if body.value is None else body.value,
                total=job.total if body.total is None else body.total,
                status_line=job.status_line if body.status_line is None else body.status_line,
            )
        case ev.JobExceptionRaised():
            fatal = body.severity == 0
            return replace(
                job,
                exceptions=job.exceptions + 1,
                error_type=body.type if fatal else job.error_type,
                error_note=body.note if fatal else job.error_note,
                stacktrace=_with_traceback(job.stacktrace, body.traceback),
            )
        case ev.JobRetryScheduled():
            return replace(
                job,
                status=status,
                attempt=body.next_attempt,
                pending_at=at,
                run_at=None,
                worker_id="",
                host="",
                error_type=body.error_type or str(body.reason),
                error_note=body.error_note,
            )
        case ev.JobCompleted():
            return replace(
                job, status=status, finished_at=at, result=body.result, exit_code=body.exit_code
            )
        case ev.JobFailed():
            return replace(
                job,
                status=status,
                finished_at=at,
                error_type=body.error_type or str(body.reason),
                error_note=body.error_note,
                exit_code=body.exit_code,
                stacktrace=_with_traceback(job.stacktrace, body.traceback),
            )
        case ev.JobCanceled():
            return replace(job, status=status, finished_at=at, error_note=body.reason)
        case ev.JobAbandoned():
            note = body.reason or f"{body.cause_job_id} ended {body.cause_status}"
            return replace(job, status=status, finished_at=at, error_note=note)
        case ev.JobSkipped():
            return replace(job, status=status, finished_at=at, error_note=body.reason)
        case ev.JobDeleted():
            return replace(job, deleted=True)
        case ev.JobRerun():
            return replace(
                job,
                status=status,
                attempt=body.attempt,
                blocked_at=None,
                pending_at=None,
                first_pending_at=None,
                run_at=None,
                finished_at=None,
                worker_id="",
                host="",
                result=None,
                exit_code=None,
                error_type="",
                error_note="",
            )
        case (
            ev.JobDispatched()
            | ev.JobHeld()
            | ev.JobOutput()
            | ev.JobCancelRequested()
            | ev.JobDuplicateClaim()
            # a ledger's decision is about no job (SubmissionView.apply takes it first)
            | ev.IdempotencyKeyDecided()
            # about the submission, not one job (SubmissionView.apply takes them first)
            | ev.SubmissionAccepted()
            | ev.SubmissionCompleted()
            | ev.CommandRejected()
            | ev.NotificationAdded()
            | ev.NotificationRemoved()
            | ev.SlotDecided()
            | ev.QueueConfigured()
            | ev.ScheduleCreated()
            | ev.ScheduleChanged()
            | ev.ScheduleFired()
            | ev.ScheduleSkipped()
            | ev.ScheduleRunSeen()
            | ev.SubmissionThrottled()
        ):
            return job
        case _:
            assert_never(body)


__all__ = [
    "STATUS_EVENTS",
    "SUBMISSION_EVENTS",
    "JobView",
    "StatusChange",
    "SubmissionChange",
    "SubmissionView",
    "evolve_view",
    "status_after",
    "to_datetime",
]
