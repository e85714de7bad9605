"""The facts, intents and observations of joblog, as frozen dataclasses.

Three kinds of record flow through the engine (DESIGN.md §1):

* a :data:`Command` is an intent from a client; the scheduler may reject it;
* a :data:`Report` is an observation from a worker; it may be stale and is then ignored;
* an :class:`Event` is a fact decided by the scheduler, the source of truth.

An event is an envelope (ids, per-submission sequence number, timestamp) around one
:data:`EventBody`, one class per fact. The classes carry data only; the lifecycle rules live in
:mod:`engine.lifecycle.decide` and :mod:`engine.lifecycle.evolve`, and Avro appears only in
:mod:`engine.codec`. Timestamps are integer milliseconds since the Unix epoch.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field


class JobStatus(enum.StrEnum):
    """Where a job is in its lifecycle (DESIGN.md §3)."""

    SUBMITTED = "SUBMITTED"
    BLOCKED = "BLOCKED"
    PENDING = "PENDING"
    ASSIGNED = "ASSIGNED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    SKIPPED = "SKIPPED"
    ABANDONED = "ABANDONED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @property
    def is_success(self) -> bool:
        """COMPLETED or SKIPPED: dependents may run."""
        return self in (JobStatus.COMPLETED, JobStatus.SKIPPED)


TERMINAL = frozenset(
    {
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.CANCELED,
        JobStatus.SKIPPED,
        JobStatus.ABANDONED,
    }
)
#: Statuses a cancel turns into CANCELED without asking a worker.
CANCELABLE_AT_ONCE = frozenset(
    {JobStatus.SUBMITTED, JobStatus.BLOCKED, JobStatus.PENDING, JobStatus.ASSIGNED}
)


class SubmissionStatus(enum.StrEnum):
    """The overall outcome of a submission once every job is terminal."""

    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class CancelMode(enum.StrEnum):
    """What a cancel does to a RUNNING job.

    KILL (the default) stops the running attempt and the job becomes CANCELED. FINISH is Taipy's
    rule: the running job finishes with its own outcome and only its dependents are abandoned.
    """

    KILL = "KILL"
    FINISH = "FINISH"


class FailureReason(enum.StrEnum):
    """Why an attempt failed."""

    ERROR = "error"  # the task raised, or reported an error
    EXCEPTION = "exception"  # a fatal (severity 0) exception was raised
    EXIT_CODE = "exit_code"  # a shell command exited non-zero
    TIMEOUT = "timeout"  # the run timeout expired
    QUEUE_TIMEOUT = "queue_timeout"  # no worker started it within the queue timeout
    WORKER_LOST = "worker_lost"  # the worker's lease expired or it left without finishing
    KILL_UNCONFIRMED = "kill_unconfirmed"  # a kill was sent but never confirmed


#: ``Finished.error_type`` of an attempt its worker ended because it ran past its run timeout
#: (the worker's backstop when the scheduler's kill did not come): a ``timeout`` failure.
TIMEOUT_ERROR_TYPE = "Timeout"


class Outcome(enum.StrEnum):
    """How a worker says an attempt ended."""

    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


# --------------------------------------------------------------------------- job specs


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed attempt is retried.

    Attributes:
        max_attempts: attempts in all, the first included (1 means no retry).
        backoff_ms: delay before the second attempt.
        backoff_multiplier: factor applied to the delay for each further attempt.
        max_backoff_ms: upper bound of the delay.
        jitter: fraction of the delay drawn at random (0.1 means ±10%).
        retry_on: exception types (or failure reasons such as ``timeout``) that are retried;
            empty means every failure is retried.
    """

    max_attempts: int = 1
    backoff_ms: int = 1000
    backoff_multiplier: float = 2.0
    max_backoff_ms: int = 300_000
    jitter: float = 0.1
    retry_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobSpec:
    """One job of a submission, as the client describes it.

    Exactly one of ``task`` (a registered Python callable) and ``command`` (an argv run as a
    process) is set.

    Attributes:
        job_id: unique within the submission.
        name: a human name (defaults to the task name or the command's first word).
        task: the registered task name.
        command: argv of a shell-command job.
        args: JSON-encoded positional/keyword arguments of the task (``{"args": [...],
            "kwargs": {...}}``).
        env: extra environment of a command job.
        cwd: working directory of a command job.
        queue: the worker queue it is dispatched to.
        depends_on: job ids that must end COMPLETED (or SKIPPED) before this job runs.
        parent: the job this one is a sub-job of; a parent runs only after all its sub-jobs
            completed (cgkit's job hierarchy).
        retry: the retry policy.
        timeout_ms: run timeout of one attempt (0: none).
        queue_timeout_ms: longest wait from PENDING to RUNNING (0: none).
        idempotency_key: a job whose key already COMPLETED is SKIPPED instead of run.
        priority: higher runs first among runnable jobs of a submission.
        labels: free-form tags.
        force: run the job even where it would be SKIPPED (its idempotency key already
            completed; Taipy's ``force``): it neither waits for nor is skipped by its key,
            and its completion still marks the key completed.
        not_before: do not dispatch it before this time (ms since the epoch; 0: at once).
        concurrency_key: jobs sharing a key (``customer-42``) share its limits, whatever
            submission or partition they live in: at most ``max_running`` of them hold a
            slot at once, and at most ``rate_limit`` start per ``rate_period_ms``. The limits
            are the job's; the key's ledger applies those of the latest claim.
        max_running / rate_limit / rate_period_ms: the key's limits (0: none).
    """

    job_id: str
    name: str = ""
    task: str | None = None
    command: tuple[str, ...] | None = None
    args: str = "{}"
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    queue: str = "default"
    depends_on: tuple[str, ...] = ()
    parent: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_ms: int = 0
    queue_timeout_ms: int = 0
    idempotency_key: str | None = None
    priority: int = 0
    labels: tuple[tuple[str, str], ...] = ()
    force: bool = False
    not_before: int = 0
    concurrency_key: str | None = None
    max_running: int = 0
    rate_limit: int = 0
    rate_period_ms: int = 0

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        if self.task:
            return self.task
        if self.command:
            return self.command[0]
        return self.job_id


@dataclass(frozen=True)
class Notification:
    """A webhook or an email a submission asks for (Tapis's job notifications).

    The rules (event names, limits, when a notification fires) are in
    :mod:`engine.lifecycle.notifications`.

    Attributes:
        notification_id: unique within the submission; empty in a command means the
            scheduler names it ``n<seq>`` after the seq of its ``NotificationAdded`` event.
        url: an ``http(s)://`` URL template (``${JOB_ID}``, ...), or an email address
            (``ops@example.com`` or ``mailto:ops@example.com``): an email is sent.
        event: what it fires on: ``*`` (every event), an event name (``JobCompleted``,
            ``completed``), a job status (``COMPLETED``) or one of Tapis's statuses
            (``FINISHED``, ``KILLED``, ...).
        persistent: stays after it fired; ``False`` (Tapis's default) removes it once it
            fired for its first event.
        job_id: the job it watches; empty for every job and the submission's own events.
    """

    notification_id: str
    url: str
    event: str = "*"
    persistent: bool = False
    job_id: str = ""


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class SubmitJobs:
    """Submit one job, a dependency graph and/or a tree of sub-jobs as one submission.

    ``notifications`` are in place from the submission's first job event on.
    """

    command_id: str
    submission_id: str
    jobs: tuple[JobSpec, ...]
    submitted_by: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    issued_at: int = 0
    notifications: tuple[Notification, ...] = ()


@dataclass(frozen=True)
class CancelJobs:
    """Cancel one job (``job_id``) or every unfinished job of the submission (``None``)."""

    command_id: str
    submission_id: str
    job_id: str | None = None
    mode: CancelMode = CancelMode.KILL
    reason: str = ""
    requested_by: str = ""
    issued_at: int = 0


@dataclass(frozen=True)
class RetryJob:
    """Run a job waiting for its retry backoff now, instead of at its ``not_before``."""

    command_id: str
    submission_id: str
    job_id: str
    requested_by: str = ""
    issued_at: int = 0


@dataclass(frozen=True)
class DeleteJobs:
    """Delete one job or the whole submission; only terminal jobs unless ``force``."""

    command_id: str
    submission_id: str
    job_id: str | None = None
    force: bool = False
    requested_by: str = ""
    issued_at: int = 0


@dataclass(frozen=True)
class AddNotification:
    """Add a notification to a live submission (or, with ``notification.job_id``, a job)."""

    command_id: str
    submission_id: str
    notification: Notification
    requested_by: str = ""
    issued_at: int = 0


@dataclass(frozen=True)
class RemoveNotification:
    """Remove a notification of a submission by its id."""

    command_id: str
    submission_id: str
    notification_id: str
    requested_by: str = ""
    issued_at: int = 0


@dataclass(frozen=True)
class RerunJobs:
    """Run again a FAILED, CANCELED or ABANDONED job (``job_id``) and the jobs it abandoned, or
    every such job of the submission (``None``): same submission, same history, new attempt
    numbers."""

    command_id: str
    submission_id: str
    job_id: str | None = None
    requested_by: str = ""
    issued_at: int = 0


@dataclass(frozen=True)
class ConfigureQueue:
    """Pause or resume a queue, or set its limits (``None``: unchanged; 0: no limit).

    A queue's settings hold in every partition, so a client writes this command once to each
    partition of ``commands``, keyed :func:`queue_config_id` (``Joblog.pause_queue`` and
    ``joblog queues`` do): each partition's scheduler decides it for its own jobs.
    """

    command_id: str
    submission_id: str  # queue_config_id(queue, partition)
    queue: str
    paused: bool | None = None
    max_running: int | None = None
    rate_limit: int | None = None
    rate_period_ms: int | None = None
    requested_by: str = ""
    issued_at: int = 0


class ScheduleOverlap(enum.StrEnum):
    """What a schedule does with a slot that comes while its previous run is still going."""

    SKIP = "skip"  # the slot is skipped
    BUFFER_ONE = "buffer_one"  # one slot waits and fires when the run ends; more are skipped
    ALLOW_ALL = "allow_all"  # every slot fires


@dataclass(frozen=True)
class ScheduleSpec:
    """When a schedule fires.

    Exactly one of ``cron`` (5 fields, in ``timezone``) and ``interval_ms`` is set.

    Attributes:
        cron: a cron expression (``30 2 * * 1-5``), read in ``timezone`` (DST included).
        timezone: an IANA time zone (``Europe/Berlin``); ``UTC`` by default.
        interval_ms: fire every this many ms, at ``offset_ms`` past each multiple of it
            since the epoch (an interval of a day at offset 0 fires at 00:00 UTC).
        offset_ms: see ``interval_ms``.
        overlap: see :class:`ScheduleOverlap`.
        catchup_window_ms: after downtime, missed slots at most this old still fire (subject
            to ``overlap``); older ones are skipped. 0: none fires, only the next one.
        start_at / end_at: no slot before / after these times (ms; 0: unbounded).
    """

    cron: str = ""
    timezone: str = "UTC"
    interval_ms: int = 0
    offset_ms: int = 0
    overlap: ScheduleOverlap = ScheduleOverlap.SKIP
    catchup_window_ms: int = 60_000
    start_at: int = 0
    end_at: int = 0


@dataclass(frozen=True)
class CreateSchedule:
    """Create a schedule: each slot submits ``jobs`` as a new submission, named
    ``<schedule id>-<slot, UTC, as 20261203T140000Z>`` and labelled ``joblog.schedule`` and
    ``joblog.slot``."""

    command_id: str
    submission_id: str  # schedule_submission_id(schedule_id)
    schedule_id: str
    spec: ScheduleSpec
    jobs: tuple[JobSpec, ...]
    labels: tuple[tuple[str, str], ...] = ()
    paused: bool = False
    requested_by: str = ""
    issued_at: int = 0


class ScheduleAction(enum.StrEnum):
    """What a :class:`ChangeSchedule` does."""

    PAUSE = "pause"
    RESUME = "resume"
    TRIGGER = "trigger"  # fire once now, whatever the spec says
    DELETE = "delete"


@dataclass(frozen=True)
class ChangeSchedule:
    """Pause, resume, trigger or delete a schedule."""

    command_id: str
    submission_id: str
    action: ScheduleAction
    requested_by: str = ""
    issued_at: int = 0


Command = (
    SubmitJobs
    | CancelJobs
    | RetryJob
    | DeleteJobs
    | AddNotification
    | RemoveNotification
    | RerunJobs
    | ConfigureQueue
    | CreateSchedule
    | ChangeSchedule
)

_SCHEDULE_PREFIX = "#schedule-"
#: The labels of a submission a schedule fired.
SCHEDULE_LABEL = "joblog.schedule"
SLOT_LABEL = "joblog.slot"


def schedule_submission_id(schedule_id: str) -> str:
    """The id (and Kafka key) of a schedule's pseudo-submission."""
    return _SCHEDULE_PREFIX + schedule_id


def is_schedule(submission_id: str) -> bool:
    """Whether an id names a schedule rather than a submission."""
    return submission_id.startswith(_SCHEDULE_PREFIX)


_QUEUE_CONFIG_PREFIX = "#queue-"


def queue_config_id(queue: str, partition: int) -> str:
    """The id (and Kafka key) of a queue's settings in one partition."""
    return f"{_QUEUE_CONFIG_PREFIX}{queue}@{partition}"


def is_queue_config(submission_id: str) -> bool:
    """Whether an id names a queue's settings rather than a submission."""
    return submission_id.startswith(_QUEUE_CONFIG_PREFIX)


# --------------------------------------------------------------------------- idempotency keys
#
# An idempotency key is decided by one partition, whatever partitions its jobs live in: the
# partition of its *ledger*, a reserved pseudo-submission whose id is derived from the key
# (:func:`key_ledger_id`). Schedulers exchange the three commands below over the ``commands``
# topic, in their transactions: a job's scheduler claims the key for the job and releases it
# when the job ends; the ledger's scheduler answers each claim (granted, or already completed
# by another job) and queues the claims that arrive while another job holds the key.

#: What a job waits on (in ``JobState.waiting_on``) until its idempotency key is granted. Job
#: ids start with a letter or digit, so no job id can be this.
KEY_WAIT = "#idempotency-key"

_KEY_LEDGER_PREFIX = "#key-"


def key_ledger_id(key: str) -> str:
    """The id (and Kafka key) of the ledger that decides ``key``.

    Submission ids start with a letter or digit, so a ledger id never names a submission.
    """
    return _KEY_LEDGER_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:40]


def is_key_ledger(submission_id: str) -> bool:
    """Whether an id is an idempotency key's ledger rather than a submission."""
    return submission_id.startswith(_KEY_LEDGER_PREFIX)


def job_ref(submission_id: str, job_id: str) -> str:
    """``submission_id/job_id``: how a ledger names a job."""
    return f"{submission_id}/{job_id}"


@dataclass(frozen=True)
class ClaimIdempotencyKey:
    """A job's scheduler asks the key's ledger (``submission_id``) to let ``holder`` run."""

    command_id: str
    submission_id: str  # the ledger: key_ledger_id(key)
    key: str
    holder: str  # submission_id/job_id of the job
    issued_at: int = 0


@dataclass(frozen=True)
class ReleaseIdempotencyKey:
    """A job that claimed the key ended: ``completed`` keeps the key done forever, otherwise
    the key goes to the next job waiting for it (or, for a job still waiting, its claim is
    withdrawn)."""

    command_id: str
    submission_id: str  # the ledger: key_ledger_id(key)
    key: str
    holder: str
    completed: bool
    issued_at: int = 0


@dataclass(frozen=True)
class IdempotencyKeyAnswer:
    """The ledger's answer to a claim, for the job's submission: ``granted`` (run it) or not,
    with the job that completed the key (``completed_by``, the job is SKIPPED)."""

    command_id: str
    submission_id: str
    job_id: str
    key: str
    granted: bool
    completed_by: str = ""
    issued_at: int = 0


# --------------------------------------------------------------------------- concurrency slots
#
# A concurrency limit (a key's, or a queue's) is decided by one partition too: its *slot
# ledger* (:func:`slot_ledger_id`), a pseudo-submission like a key's ledger. A job's scheduler
# claims a slot when the job could otherwise be dispatched, and releases it when the attempt
# ends; the ledger grants claims in order of priority (then arrival) while fewer than
# ``max_running`` hold a slot and fewer than ``rate_limit`` were granted in the last
# ``rate_period_ms``.

_SLOT_LEDGER_PREFIX = "#slot-"


def slot_ledger_id(name: str) -> str:
    """The id (and Kafka key) of the ledger of a limit named ``key:<key>`` or ``queue:<q>``."""
    return _SLOT_LEDGER_PREFIX + hashlib.sha256(name.encode()).hexdigest()[:40]


def is_slot_ledger(submission_id: str) -> bool:
    """Whether an id is a concurrency limit's ledger rather than a submission."""
    return submission_id.startswith(_SLOT_LEDGER_PREFIX)


def is_pseudo_submission(submission_id: str) -> bool:
    """Whether an id names the engine's own bookkeeping (an idempotency key's or a limit's
    ledger, a queue's settings) rather than a submission of jobs."""
    return (
        is_key_ledger(submission_id)
        or is_slot_ledger(submission_id)
        or is_queue_config(submission_id)
        or is_schedule(submission_id)
    )


def attempt_ref(submission_id: str, job_id: str, attempt: int) -> str:
    """``submission_id/job_id@attempt``: how a slot ledger names a claim."""
    return f"{submission_id}/{job_id}@{attempt}"


@dataclass(frozen=True)
class ClaimSlot:
    """A job's scheduler asks a slot ledger for a slot for one attempt (``holder``).

    The claim carries the limits the job declares (a key's, or its queue's settings); the
    ledger applies the latest. An empty ``holder`` only updates the limits (a queue's settings
    changed).
    """

    command_id: str
    submission_id: str  # the ledger: slot_ledger_id(ledger)
    ledger: str  # key:<key> or queue:<queue>
    holder: str  # attempt_ref(...)
    priority: int = 0
    max_running: int = 0
    rate_limit: int = 0
    rate_period_ms: int = 0
    issued_at: int = 0


@dataclass(frozen=True)
class ReleaseSlot:
    """The attempt ended: its slot is free (or, still waiting, its claim is withdrawn)."""

    command_id: str
    submission_id: str  # the ledger: slot_ledger_id(ledger)
    ledger: str  # the limit's name
    holder: str
    issued_at: int = 0


@dataclass(frozen=True)
class ScheduleRunEnded:
    """A submission a schedule fired ended (for the schedule: its overlap policy)."""

    command_id: str
    submission_id: str  # the schedule's
    run_submission_id: str
    status: str
    issued_at: int = 0


@dataclass(frozen=True)
class SlotAnswer:
    """The ledger granted the slot: the attempt may be dispatched (for the job's submission)."""

    command_id: str
    submission_id: str
    job_id: str
    attempt: int
    slot: str  # the limit's name
    issued_at: int = 0


KeyCommand = (
    ClaimIdempotencyKey
    | ReleaseIdempotencyKey
    | IdempotencyKeyAnswer
    | ClaimSlot
    | ReleaseSlot
    | SlotAnswer
    | ScheduleRunEnded
)
#: Everything the ``commands`` topic carries: clients' commands and schedulers' key traffic,
#: in the order of the ``body`` union of ``Command.avsc`` (new branches go at its end).
AnyCommand = (
    SubmitJobs
    | CancelJobs
    | RetryJob
    | DeleteJobs
    | ClaimIdempotencyKey
    | ReleaseIdempotencyKey
    | IdempotencyKeyAnswer
    | AddNotification
    | RemoveNotification
    | RerunJobs
    | ConfigureQueue
    | ClaimSlot
    | ReleaseSlot
    | SlotAnswer
    | CreateSchedule
    | ChangeSchedule
    | ScheduleRunEnded
)


# --------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class AttemptRef:
    """Names one attempt: which job, which try, which dispatch record, which worker."""

    submission_id: str
    job_id: str
    attempt: int
    dispatch_id: str
    worker_id: str


@dataclass(frozen=True)
class Claimed:
    """A worker took a dispatch record and will run it."""

    ref: AttemptRef
    host: str = ""
    pid: int = 0
    sent_at: int = 0


@dataclass(frozen=True)
class Started:
    """The attempt's code (or process) started.

    ``claimed``: the report is the worker's claim of the dispatch too (one report instead of
    a :class:`Claimed` and a :class:`Started`, ``host`` as a claim's): the scheduler decides
    the claim first (an assignment, a takeover or a refused duplicate), then the start.
    """

    ref: AttemptRef
    pid: int = 0
    sent_at: int = 0
    claimed: bool = False
    host: str = ""


@dataclass(frozen=True)
class ProgressReported:
    """A progress value and/or status line (already coalesced by the worker)."""

    ref: AttemptRef
    value: float | None = None
    total: float | None = None
    status_line: str | None = None
    sent_at: int = 0


@dataclass(frozen=True)
class OutputReported:
    """A chunk of a command's stdout or stderr."""

    ref: AttemptRef
    stream: str
    chunk: str
    offset: int = 0
    truncated: bool = False
    sent_at: int = 0


@dataclass(frozen=True)
class ExceptionReported:
    """The job raised an exception (Flux): severity 0 is fatal to the attempt."""

    ref: AttemptRef
    type: str
    note: str
    severity: int = 0
    traceback: str = ""
    sent_at: int = 0


@dataclass(frozen=True)
class Finished:
    """The attempt ended. The first terminal report of the current attempt wins.

    Attributes:
        outcome: COMPLETED, FAILED or CANCELED (after a kill).
        result: JSON-encoded return value of a task.
        exit_code: exit code of a command.
        error_type / error_note / traceback: what went wrong, for FAILED.
        progress / total / status_line: the final values, never lost to coalescing.
    """

    ref: AttemptRef
    outcome: Outcome
    result: str | None = None
    exit_code: int | None = None
    error_type: str = ""
    error_note: str = ""
    traceback: str = ""
    progress: float | None = None
    total: float | None = None
    status_line: str | None = None
    sent_at: int = 0


@dataclass(frozen=True)
class Heartbeat:
    """A worker is alive; it renews the lease of the attempts it runs.

    Attributes:
        attempts: the attempts it is running (of this record's submission, or all of them on a
            heartbeat keyed by worker id).
        slots_total / slots_used: its concurrency and how much of it is taken.
    """

    worker_id: str
    queue: str
    host: str = ""
    pid: int = 0
    slots_total: int = 0
    slots_used: int = 0
    attempts: tuple[AttemptRef, ...] = ()
    lease_ms: int = 30_000
    sent_at: int = 0


@dataclass(frozen=True)
class WorkerLeft:
    """A worker shut down; the listed attempts will not be finished by it."""

    worker_id: str
    unfinished: tuple[AttemptRef, ...] = ()
    sent_at: int = 0


AttemptReport = Claimed | Started | ProgressReported | OutputReported | ExceptionReported | Finished
Report = AttemptReport | Heartbeat | WorkerLeft


@dataclass(frozen=True)
class Tick:
    """Time passed: timers due at or before ``now`` fire (given as the ``now`` of decide)."""


@dataclass(frozen=True)
class Unprocessable:
    """A command whose decision cannot be written (the scheduler found it poisons its
    transactions, e.g. a record over the size limit): it is rejected with ``reason``."""

    command: AnyCommand
    reason: str


Input = Command | KeyCommand | Report | Tick | Unprocessable


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class SubmissionAccepted:
    command_id: str
    submitted_by: str
    labels: tuple[tuple[str, str], ...]
    job_ids: tuple[str, ...]


@dataclass(frozen=True)
class JobSubmitted:
    """The job exists: status SUBMITTED."""

    spec: JobSpec


@dataclass(frozen=True)
class JobBlocked:
    """Waiting for dependencies or sub-jobs: status BLOCKED."""

    waiting_on: tuple[str, ...]


@dataclass(frozen=True)
class JobPending:
    """Runnable, waiting for a worker: status PENDING.

    ``dispatch_id`` is set when the dispatch record is written with this event; it is ``None``
    while the attempt waits for ``not_before`` (retry backoff), and :class:`JobDispatched`
    follows when it is due.
    """

    attempt: int
    queue: str
    dispatch_id: str | None
    not_before: int
    reason: str = ""


@dataclass(frozen=True)
class JobDispatched:
    """The dispatch record of a PENDING attempt was written (status unchanged)."""

    attempt: int
    queue: str
    dispatch_id: str


@dataclass(frozen=True)
class JobAssigned:
    """A worker claimed the attempt: status ASSIGNED."""

    attempt: int
    dispatch_id: str
    worker_id: str
    lease_ms: int
    host: str = ""
    previous_worker_id: str = ""  # set when another worker took over the same dispatch


@dataclass(frozen=True)
class JobStarted:
    """The attempt runs: status RUNNING.

    ``started_at`` is the worker's clock when the attempt's code started (0 if no worker
    said): the run time of a job is measured between the worker's times, not the
    scheduler's decisions.
    """

    attempt: int
    worker_id: str
    pid: int = 0
    started_at: int = 0


@dataclass(frozen=True)
class JobProgressed:
    """A coalesced progress update (at most one per job per 200 ms)."""

    attempt: int
    value: float | None
    total: float | None
    status_line: str | None


@dataclass(frozen=True)
class JobOutput:
    attempt: int
    stream: str
    chunk: str
    offset: int
    truncated: bool


@dataclass(frozen=True)
class JobExceptionRaised:
    """An exception of the job (Flux): severity 0 is fatal and fails the attempt."""

    attempt: int
    type: str
    note: str
    severity: int
    traceback: str = ""


@dataclass(frozen=True)
class JobRetryScheduled:
    """An attempt failed and another will run at ``not_before``: status PENDING."""

    failed_attempt: int
    reason: FailureReason
    error_type: str
    error_note: str
    next_attempt: int
    not_before: int
    dispatch_id: str | None  # set when dispatched at once (no backoff)
    queue: str


@dataclass(frozen=True)
class JobCancelRequested:
    """A cancel reached a RUNNING (or ASSIGNED-to-a-live-worker) attempt; the kill is sent.

    The job stays RUNNING until the worker confirms or ``deadline`` passes.
    """

    attempt: int
    worker_id: str
    mode: CancelMode
    reason: str
    deadline: int


@dataclass(frozen=True)
class JobCompleted:
    """``ended_at``: the worker's clock when the attempt ended (0 if no worker said)."""

    attempt: int
    result: str | None = None
    exit_code: int | None = None
    ended_at: int = 0


@dataclass(frozen=True)
class JobFailed:
    attempt: int
    reason: FailureReason
    error_type: str = ""
    error_note: str = ""
    traceback: str = ""
    exit_code: int | None = None
    ended_at: int = 0


@dataclass(frozen=True)
class JobCanceled:
    reason: str = ""
    requested_by: str = ""
    attempt: int = 0
    ended_at: int = 0


@dataclass(frozen=True)
class JobAbandoned:
    """A dependency or a sub-job ended FAILED, CANCELED or ABANDONED."""

    cause_job_id: str
    cause_status: JobStatus
    reason: str = ""


@dataclass(frozen=True)
class JobSkipped:
    reason: str
    idempotency_key: str = ""
    completed_by: str = ""  # ``submission_id/job_id`` that completed the key


@dataclass(frozen=True)
class JobDeleted:
    forced: bool = False
    requested_by: str = ""


@dataclass(frozen=True)
class CommandRejected:
    """A command broke a rule; nothing else changed.

    ``code`` is machine-readable (see :class:`RejectionCode`), ``reason`` says what to fix.
    """

    command_id: str
    command_type: str
    code: str
    reason: str


@dataclass(frozen=True)
class SubmissionCompleted:
    status: SubmissionStatus
    counts: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class JobDuplicateClaim:
    """A worker claimed the current attempt while its holder is alive: refused (a duplicate
    execution is recorded; the claimer is told to stop and fenced; status unchanged)."""

    attempt: int
    dispatch_id: str
    worker_id: str
    holder_worker_id: str
    host: str = ""


class KeyDecision(enum.StrEnum):
    """What an idempotency key's ledger decided about one job."""

    GRANTED = "granted"  # the job holds the key: it runs
    QUEUED = "queued"  # another job holds it: this one waits for its outcome
    COMPLETED = "completed"  # another job completed it: this one is SKIPPED
    DONE = "done"  # the holder completed: the key is done forever
    RELEASED = "released"  # the holder ended without completing: the key is free again
    WITHDRAWN = "withdrawn"  # a waiting job ended before it got the key


@dataclass(frozen=True)
class IdempotencyKeyDecided:
    """A decision of an idempotency key's ledger (an event of the ledger, not of a job).

    Attributes:
        key: the idempotency key.
        job: ``submission_id/job_id`` of the job it is about.
        decision: see :class:`KeyDecision`.
        other: the holder a QUEUED job waits for; the job that completed the key (COMPLETED).
    """

    key: str
    job: str
    decision: KeyDecision
    other: str = ""


@dataclass(frozen=True)
class NotificationAdded:
    """A notification is in place from this event on (submitted with the jobs or added by
    ``command_id``); an event of the submission (``job_id`` of the envelope is empty)."""

    notification: Notification
    command_id: str = ""
    requested_by: str = ""


@dataclass(frozen=True)
class NotificationRemoved:
    """A notification is gone: removed by ``command_id``, or, not persistent, it fired
    for the event ``fired_seq`` (the event just before this one)."""

    notification_id: str
    reason: str
    fired_seq: int = 0
    command_id: str = ""
    requested_by: str = ""


class HoldReason(enum.StrEnum):
    """Why a PENDING attempt is not dispatched yet (besides its ``not_before``)."""

    QUEUE_PAUSED = "queue_paused"  # its queue is paused
    CONCURRENCY = "concurrency"  # it waits for a slot of a concurrency or rate limit


@dataclass(frozen=True)
class JobHeld:
    """The PENDING attempt is held back (status unchanged): its queue is paused, or it claimed
    a slot of a limit (``slot``: the limit's name, with the limits the claim declares) and
    waits for it. ``detail`` says it in words."""

    attempt: int
    reason: HoldReason
    detail: str
    slot: str = ""
    max_running: int = 0
    rate_limit: int = 0
    rate_period_ms: int = 0


class SlotDecision(enum.StrEnum):
    """What a slot ledger decided about one claim."""

    GRANTED = "granted"  # the attempt holds a slot: it may be dispatched
    QUEUED = "queued"  # no slot free (or the rate is used up): it waits in line
    RELEASED = "released"  # the holder's attempt ended: its slot is free
    WITHDRAWN = "withdrawn"  # a waiting attempt ended before it got a slot
    LIMITS = "limits"  # the limits changed (``job`` is empty)


@dataclass(frozen=True)
class SlotDecided:
    """A decision of a concurrency limit's ledger (an event of the ledger, not of a job).

    Attributes:
        ledger: the limit's name (``key:<key>``, ``queue:<queue>``).
        job: the attempt it is about (``submission/job@attempt``).
        decision: see :class:`SlotDecision`.
        priority: the claim's priority.
        position: QUEUED: how many claims are ahead of it.
        until: QUEUED behind the rate limit: when the next start is allowed (0: it waits for
            a running one to end).
        max_running / rate_limit / rate_period_ms: the limits in force after the decision.
    """

    ledger: str
    job: str
    decision: SlotDecision
    priority: int = 0
    position: int = 0
    until: int = 0
    max_running: int = 0
    rate_limit: int = 0
    rate_period_ms: int = 0


@dataclass(frozen=True)
class QueueConfigured:
    """A queue's settings in this partition, as they are after ``command_id``."""

    queue: str
    paused: bool
    max_running: int
    rate_limit: int
    rate_period_ms: int
    command_id: str = ""
    requested_by: str = ""


@dataclass(frozen=True)
class JobRerun:
    """A FAILED, CANCELED or ABANDONED job runs again (status SUBMITTED; its next attempt is
    ``attempt``); its submission is open again."""

    attempt: int
    previous_status: JobStatus
    command_id: str = ""
    requested_by: str = ""


@dataclass(frozen=True)
class ScheduleCreated:
    """A schedule exists (an event of the schedule's pseudo-submission); ``next_at``: its
    first slot (0: none)."""

    schedule_id: str
    spec: ScheduleSpec
    jobs: tuple[JobSpec, ...]
    labels: tuple[tuple[str, str], ...]
    paused: bool
    next_at: int
    command_id: str = ""
    requested_by: str = ""


@dataclass(frozen=True)
class ScheduleChanged:
    """A schedule was paused, resumed or deleted (``next_at``: its next slot after)."""

    action: ScheduleAction
    next_at: int
    command_id: str = ""
    requested_by: str = ""


@dataclass(frozen=True)
class ScheduleFired:
    """A slot fired: ``run_submission_id`` was submitted (the SubmitJobs command is an effect
    of this event). ``manual``: a trigger; ``catch_up``: a missed slot fired late."""

    slot: int
    run_submission_id: str
    manual: bool
    catch_up: bool
    next_at: int
    command_id: str = ""  # a trigger's


@dataclass(frozen=True)
class ScheduleSkipped:
    """``count`` slots up to ``slot`` did not fire: ``reason`` ``overlap`` (a run was still
    going), ``catch_up_window`` (missed during downtime, older than the window), ``buffered``
    (the slot waits for the running one to end: it fires then)."""

    slot: int
    reason: str
    count: int
    next_at: int


@dataclass(frozen=True)
class ScheduleRunSeen:
    """A run the schedule fired ended (``status``); a buffered slot may fire now."""

    run_submission_id: str
    status: str


@dataclass(frozen=True)
class SubmissionThrottled:
    """The engine is behind and did not take this submit now (admission control).

    Nothing else changed: the submission id stays free, and the client submits again with a
    new command id after about ``retry_after_ms``. ``cause`` is a :class:`ThrottleCause`
    (a string so that new causes do not break old readers); ``load`` is the measured figure
    over ``limit``, of ``queue`` (empty for a projection lag).
    """

    command_id: str
    cause: str
    retry_after_ms: int
    queue: str = ""
    load: int = 0
    limit: int = 0
    detail: str = ""


EventBody = (
    SubmissionAccepted
    | JobSubmitted
    | JobBlocked
    | JobPending
    | JobDispatched
    | JobAssigned
    | JobStarted
    | JobProgressed
    | JobOutput
    | JobExceptionRaised
    | JobRetryScheduled
    | JobCancelRequested
    | JobCompleted
    | JobFailed
    | JobCanceled
    | JobAbandoned
    | JobSkipped
    | JobDeleted
    | CommandRejected
    | SubmissionCompleted
    | JobDuplicateClaim
    | IdempotencyKeyDecided
    | NotificationAdded
    | NotificationRemoved
    | JobHeld
    | SlotDecided
    | QueueConfigured
    | JobRerun
    | ScheduleCreated
    | ScheduleChanged
    | ScheduleFired
    | ScheduleSkipped
    | ScheduleRunSeen
    | SubmissionThrottled
)


@dataclass(frozen=True)
class Event:
    """One fact on the ``events`` topic.

    Attributes:
        event_id: unique id, derived from submission and sequence so a re-decision after a
            crash produces the same id.
        submission_id: the partitioning key.
        job_id: the job the fact is about (``""`` for submission-level facts).
        seq: 1, 2, 3, ... per submission, without gaps.
        timestamp: when the scheduler decided it (ms).
        body: the fact.
    """

    event_id: str
    submission_id: str
    job_id: str
    seq: int
    timestamp: int
    body: EventBody

    @property
    def name(self) -> str:
        """The event's type name, e.g. ``JobCompleted``."""
        return type(self.body).__name__


class ThrottleCause(enum.StrEnum):
    """What admission control found over its limit (:mod:`engine.lifecycle.admission`)."""

    PENDING_JOBS = "pending_jobs"
    DISPATCH_BACKLOG = "dispatch_backlog"
    PROJECTION_LAG = "projection_lag"


class RejectionCode(enum.StrEnum):
    """Why a command was rejected."""

    EMPTY_SUBMISSION = "empty_submission"
    DUPLICATE_SUBMISSION = "duplicate_submission"
    DUPLICATE_JOB_ID = "duplicate_job_id"
    INVALID_JOB_ID = "invalid_job_id"
    UNKNOWN_DEPENDENCY = "unknown_dependency"
    UNKNOWN_PARENT = "unknown_parent"
    CYCLE = "cycle"
    NO_TASK = "no_task"
    TASK_AND_COMMAND = "task_and_command"
    BAD_RETRY = "bad_retry"
    BAD_TIMEOUT = "bad_timeout"
    BAD_ARGS = "bad_args"
    ARGS_TOO_LARGE = "args_too_large"
    TOO_MANY_JOBS = "too_many_jobs"
    UNKNOWN_SUBMISSION = "unknown_submission"
    UNKNOWN_JOB = "unknown_job"
    ALREADY_TERMINAL = "already_terminal"
    NOT_WAITING = "not_waiting"
    NOT_TERMINAL = "not_terminal"
    DELETED = "deleted"
    UNPROCESSABLE = "unprocessable"
    BAD_IDEMPOTENCY_KEY = "bad_idempotency_key"
    BAD_NOTIFICATION = "bad_notification"
    UNKNOWN_NOTIFICATION = "unknown_notification"
    DUPLICATE_NOTIFICATION = "duplicate_notification"
    TOO_MANY_NOTIFICATIONS = "too_many_notifications"
    BAD_LIMIT = "bad_limit"
    NOT_RERUNNABLE = "not_rerunnable"
    BAD_SCHEDULE = "bad_schedule"
    DUPLICATE_SCHEDULE = "duplicate_schedule"
    UNKNOWN_SCHEDULE = "unknown_schedule"


# --------------------------------------------------------------------------- side records


@dataclass(frozen=True)
class Dispatch:
    """A unit of work on ``dispatch.<queue>``, keyed by job id."""

    dispatch_id: str
    submission_id: str
    job_id: str
    attempt: int
    spec: JobSpec
    dispatched_at: int
    lease_ms: int


@dataclass(frozen=True)
class Control:
    """A signal on ``control`` to one worker: kill an attempt."""

    worker_id: str
    action: str  # "kill"
    submission_id: str
    job_id: str
    attempt: int
    dispatch_id: str
    reason: str
    grace_ms: int
    sent_at: int
