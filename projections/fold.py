"""The projection's fold: events (and worker heartbeats) in, table rows out. No I/O.

A :class:`Fold` holds the rows it has seen, keyed like the tables (``jobs`` by submission and
job id, ``attempts`` by job and attempt number, ``submissions``, ``workers``), as plain dicts
with timestamps in epoch milliseconds. It is a write-back cache of the DuckDB file: before a
batch, :meth:`Fold.prefetch` loads the rows the batch touches that it does not hold yet;
:meth:`Fold.event` and :meth:`Fold.report` update rows in memory; :meth:`Fold.take` hands over
the rows to write (each changed row once, however many events touched it) and the rows to
append (one per event). Nothing here knows DuckDB or Kafka, so the rules are unit-tested by
feeding :class:`~engine.lifecycle.records.Event` objects straight in.

Replays are rejected: an event whose sequence number is not above the submission's last one
is a duplicate and changes nothing (rejections outside a sequence, ``seq == 0``, are
deduplicated by event id when written).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, assert_never

from engine.lifecycle import records as ev
from engine.lifecycle.describe import describe
from engine.lifecycle.durations import JobTimes, durations_of, moves_times
from engine.lifecycle.reasons import reason_after
from engine.lifecycle.records import (
    Event,
    EventBody,
    Heartbeat,
    JobSpec,
    JobStatus,
    WorkerLeft,
    is_pseudo_submission,
)
from projections.schema import ATTEMPTS, JOBS, STATUS_COUNT_COLUMNS, SUBMISSIONS, WORKERS

Row = dict[str, Any]
#: The bodies of events about one job that change its row (all but its submission).
_JobChange = (
    ev.JobBlocked
    | ev.JobPending
    | ev.JobDispatched
    | ev.JobAssigned
    | ev.JobStarted
    | ev.JobProgressed
    | ev.JobOutput
    | ev.JobExceptionRaised
    | ev.JobRetryScheduled
    | ev.JobCancelRequested
    | ev.JobCompleted
    | ev.JobFailed
    | ev.JobCanceled
    | ev.JobAbandoned
    | ev.JobSkipped
    | ev.JobDeleted
    | ev.JobDuplicateClaim
    | ev.JobHeld
    | ev.JobRerun
)
_JobBody = ev.JobSubmitted | _JobChange
JobKey = tuple[str, str]
#: A schedule's status after a change (``job_events.status`` of its pseudo-submission).
_SCHEDULE_STATUS = {
    ev.ScheduleAction.PAUSE: "PAUSED",
    ev.ScheduleAction.RESUME: "ACTIVE",
    ev.ScheduleAction.TRIGGER: "TRIGGERED",
    ev.ScheduleAction.DELETE: "DELETED",
}
AttemptKey = tuple[str, str, int]
PartitionKey = tuple[str, int]


@dataclass(frozen=True)
class Position:
    """Where a record was read: topic, partition and offset."""

    topic: str
    partition: int
    offset: int


class RowLoader(Protocol):
    """Reads stored rows by key (the DuckDB store; an empty loader in unit tests)."""

    def submissions(self, ids: Collection[str]) -> Iterable[Row]: ...

    def jobs(self, keys: Collection[JobKey]) -> Iterable[Row]: ...

    def attempts(self, keys: Collection[AttemptKey]) -> Iterable[Row]: ...

    def workers(self, ids: Collection[str]) -> Iterable[Row]: ...


class NoRows:
    """A :class:`RowLoader` of an empty store."""

    def submissions(self, ids: Collection[str]) -> Iterable[Row]:
        return ()

    def jobs(self, keys: Collection[JobKey]) -> Iterable[Row]:
        return ()

    def attempts(self, keys: Collection[AttemptKey]) -> Iterable[Row]:
        return ()

    def workers(self, ids: Collection[str]) -> Iterable[Row]:
        return ()


@dataclass
class Changes:
    """What one batch writes: changed keyed rows, appended rows and the next offsets."""

    jobs: list[Row] = field(default_factory=list)
    attempts: list[Row] = field(default_factory=list)
    submissions: list[Row] = field(default_factory=list)
    workers: list[Row] = field(default_factory=list)
    job_events: list[Row] = field(default_factory=list)
    job_exceptions: list[Row] = field(default_factory=list)
    job_outputs: list[Row] = field(default_factory=list)
    progress: list[Row] = field(default_factory=list)
    offsets: dict[PartitionKey, int] = field(default_factory=dict)

    def tables(self) -> Iterator[tuple[str, list[Row]]]:
        """``(table name, rows)`` of every table with rows to write."""
        for name in (
            "jobs",
            "attempts",
            "submissions",
            "workers",
            "job_events",
            "job_exceptions",
            "job_outputs",
            "progress",
        ):
            rows: list[Row] = getattr(self, name)
            if rows:
                yield name, rows

    def __bool__(self) -> bool:
        return bool(self.offsets) or any(True for _ in self.tables())


@dataclass
class FoldStats:
    """Counters since the fold was created."""

    events: int = 0
    duplicates: int = 0
    heartbeats: int = 0


class Fold:
    """Folds events into projection rows, holding the rows it has seen (see module doc).

    Args:
        max_rows: rows of each keyed table kept in memory after :meth:`take`; the least
            recently touched go first (they are in the DuckDB file and are loaded again when
            an event touches them).
    """

    def __init__(self, max_rows: int = 200_000) -> None:
        self.max_rows = max_rows
        self.jobs: dict[JobKey, Row] = {}
        self.attempts: dict[AttemptKey, Row] = {}
        self.submissions: dict[str, Row] = {}
        self.workers: dict[str, Row] = {}
        self.stats = FoldStats()
        self._dirty_jobs: set[JobKey] = set()
        self._dirty_attempts: set[AttemptKey] = set()
        self._dirty_submissions: set[str] = set()
        self._dirty_workers: set[str] = set()
        self._changes = Changes()
        self._seen_event_ids: set[str] = set()

    # ------------------------------------------------------------------ cache management

    def prefetch(
        self,
        events: Iterable[Event],
        reports: Iterable[Heartbeat | WorkerLeft],
        loader: RowLoader,
    ) -> None:
        """Loads the rows a batch touches that are not in memory, in as few reads as it can.

        Submissions come first: their last sequence numbers tell which events are replays,
        and rows created by a (non-replayed) event of the batch itself need no read.
        """
        events = list(events)
        sids = {e.submission_id for e in events if e.seq > 0} - self.submissions.keys()
        if sids:
            self.load(submissions=loader.submissions(sids))
        last_seq = {
            sid: row["last_seq"]
            for sid in {e.submission_id for e in events}
            if (row := self.submissions.get(sid)) is not None
        }
        created_jobs: set[JobKey] = set()
        created_attempts: set[AttemptKey] = set()
        jobs: set[JobKey] = set()
        attempts: set[AttemptKey] = set()
        for event in events:
            sid, job_id = event.submission_id, event.job_id
            if not job_id or 0 < event.seq <= last_seq.get(sid, 0):
                continue
            key = (sid, job_id)
            body = event.body
            if isinstance(body, ev.JobSubmitted):
                created_jobs.add(key)
            elif key not in created_jobs and key not in self.jobs:
                jobs.add(key)
            for number in _attempts_of(body):
                akey = (sid, job_id, number)
                if key in created_jobs or akey in created_attempts or akey in self.attempts:
                    continue
                if isinstance(body, ev.JobPending) or (
                    isinstance(body, ev.JobRetryScheduled) and number == body.next_attempt
                ):
                    created_attempts.add(akey)
                else:
                    attempts.add(akey)
        if jobs:
            self.load(jobs=loader.jobs(jobs))
        if attempts:
            self.load(attempts=loader.attempts(attempts))
        workers = {r.worker_id for r in reports} - self.workers.keys()
        if workers:
            self.load(workers=loader.workers(workers))

    def load(
        self,
        *,
        jobs: Iterable[Row] = (),
        attempts: Iterable[Row] = (),
        submissions: Iterable[Row] = (),
        workers: Iterable[Row] = (),
    ) -> None:
        """Adds rows read from the store (as :meth:`Table.select_for_fold` returns them)."""
        for row in jobs:
            self.jobs[(row["submission_id"], row["job_id"])] = row
        for row in attempts:
            self.attempts[(row["submission_id"], row["job_id"], row["attempt"])] = row
        for row in submissions:
            self.submissions[row["submission_id"]] = row
        for row in workers:
            self.workers[row["worker_id"]] = row

    def forget(self) -> None:
        """Drops every row in memory and every pending change (after a failed write)."""
        self.jobs.clear()
        self.attempts.clear()
        self.submissions.clear()
        self.workers.clear()
        self._dirty_jobs.clear()
        self._dirty_attempts.clear()
        self._dirty_submissions.clear()
        self._dirty_workers.clear()
        self._seen_event_ids.clear()
        self._changes = Changes()

    def take(self) -> Changes:
        """Hands over the changes since the last call and trims the rows kept in memory."""
        changes = self._changes
        changes.jobs = _recent(self.jobs, self._dirty_jobs)
        changes.attempts = _recent(self.attempts, self._dirty_attempts)
        changes.submissions = _recent(self.submissions, self._dirty_submissions)
        changes.workers = _recent(self.workers, self._dirty_workers)
        self._dirty_jobs = set()
        self._dirty_attempts = set()
        self._dirty_submissions = set()
        self._dirty_workers = set()
        self._seen_event_ids = set()
        self._changes = Changes()
        for rows in (self.jobs, self.attempts, self.submissions, self.workers):
            _trim(rows, self.max_rows)
        return changes

    def advance(self, position: Position) -> None:
        """Records that ``position`` was consumed (its next offset is written with the rows)."""
        key = (position.topic, position.partition)
        offsets = self._changes.offsets
        offsets[key] = max(offsets.get(key, 0), position.offset + 1)

    # ------------------------------------------------------------------ events

    def event(self, event: Event, position: Position | None = None) -> bool:
        """Folds one event; returns False if it was a duplicate and changed nothing.

        Rows the event touches must be in memory (:meth:`prefetch`); a job never seen
        submitted gets a bare row, so a log that starts mid-submission still folds.
        """
        if position is not None:
            self.advance(position)
        sid = event.submission_id
        submission: Row | None = None
        # an idempotency key's or a limit's ledger, a queue's settings: history rows only
        ledger = is_pseudo_submission(sid)
        if event.seq > 0 and not ledger:
            submission = self.submissions.get(sid)
            if submission is None:
                submission = self._new_submission(sid, event.timestamp)
            elif event.seq <= submission["last_seq"]:
                self.stats.duplicates += 1
                return False
            submission["last_seq"] = event.seq
            submission["updated_at"] = event.timestamp
            self._touch_submission(sid)
        elif event.event_id in self._seen_event_ids:
            self.stats.duplicates += 1
            return False
        else:
            self._seen_event_ids.add(event.event_id)
        self.stats.events += 1

        body = event.body
        status: str | None
        match body:
            case ev.SubmissionAccepted():
                assert submission is not None
                submission.update(
                    submitted_by=body.submitted_by,
                    command_id=body.command_id,
                    labels=list(body.labels),
                    submitted_at=event.timestamp,
                )
                status = "ACCEPTED"
            case ev.SubmissionCompleted():
                assert submission is not None
                submission.update(
                    done=True,
                    outcome=str(body.status),
                    finished_at=event.timestamp,
                    wall_time=_seconds(submission["submitted_at"], event.timestamp),
                )
                status = str(body.status)
            case ev.IdempotencyKeyDecided() | ev.SlotDecided():
                status = str(body.decision)
            case ev.QueueConfigured():
                status = "PAUSED" if body.paused else "RUNNING"
            case ev.ScheduleCreated():
                status = "PAUSED" if body.paused else "ACTIVE"
            case ev.ScheduleChanged():
                status = _SCHEDULE_STATUS[body.action]
            case ev.ScheduleFired():
                status = "FIRED"
            case ev.ScheduleSkipped():
                status = "SKIPPED"
            case ev.ScheduleRunSeen():
                status = None  # the run's own events say how it ended
            case ev.SubmissionThrottled():
                status = None  # not taken now; its client submits it again
            case ev.NotificationAdded() | ev.NotificationRemoved():
                status = None  # about the submission's notifications (the notifications view)
            case ev.CommandRejected():
                if submission is not None:
                    submission["rejections"] += 1
                rejected = self.jobs.get((sid, event.job_id)) if event.job_id else None
                status = rejected["status"] if rejected is not None else None
            case _:
                status = self._job_event(event, body, submission)["status"]

        self._changes.job_events.append(
            {
                "event_id": event.event_id,
                "submission_id": sid,
                "job_id": event.job_id,
                "seq": event.seq,
                "timestamp": event.timestamp,
                "event": type(body).__name__,
                "status": status,
                "attempt": _attempt_of(body),
                "description": describe(event),
                "body": _BODY_JSON.encode(body),
                "kafka_partition": position.partition if position is not None else None,
                "kafka_offset": position.offset if position is not None else None,
            }
        )
        return True

    def _job_event(self, event: Event, body: _JobBody, submission: Row | None) -> Row:
        sid, job_id, ts = event.submission_id, event.job_id, event.timestamp
        key = (sid, job_id)
        if isinstance(body, ev.JobSubmitted):
            job = _new_job(sid, body, ts)
            self.jobs[key] = job
            if submission is not None:
                submission["jobs"] += 1
                submission["submitted"] += 1
        else:
            found = self.jobs.get(key)
            if found is None:
                # A log that starts mid-submission (e.g. truncated): keep what can be kept.
                found = _new_job(sid, ev.JobSubmitted(_bare_spec(job_id)), ts)
                self.jobs[key] = found
                if submission is not None:
                    submission["jobs"] += 1
                    submission["submitted"] += 1
            job = found
            self._apply(job, event, body, submission)
        reason = reason_after(body, ts)
        if reason is not None:
            job.update(
                pending_reason=reason.code or None,
                pending_detail=reason.detail or None,
                pending_until=reason.until or None,
            )
        job["last_seq"] = event.seq
        job["updated_at"] = ts
        if moves_times(event.body):
            job.update(_durations(job))
        self._dirty_jobs.add(key)
        return job

    def _apply(self, job: Row, event: Event, body: _JobChange, submission: Row | None) -> None:
        sid, job_id, ts = job["submission_id"], job["job_id"], event.timestamp
        match body:
            case ev.JobBlocked():
                if job["status"] != JobStatus.BLOCKED or job["blocked_at"] is None:
                    job["blocked_at"] = ts  # (blocked again while blocked: since the first)
                self._status(job, JobStatus.BLOCKED, submission)
            case ev.JobPending():
                self._status(job, JobStatus.PENDING, submission)
                if job["first_pending_at"] is None:
                    job["first_pending_at"] = ts
                job.update(
                    attempts=body.attempt,
                    not_before=body.not_before,
                    queue=body.queue,
                    pending_at=ts,
                    run_at=None,
                    worker_started_at=None,
                    worker_ended_at=None,
                )
                self._open_attempt(
                    sid,
                    job_id,
                    body.attempt,
                    body.queue,
                    ts,
                    body.not_before,
                    body.dispatch_id is not None,
                )
            case ev.JobDispatched():
                attempt = self._attempt(sid, job_id, body.attempt, body.queue, ts)
                attempt["dispatched_at"] = ts
            case ev.JobAssigned():
                self._status(job, JobStatus.ASSIGNED, submission)
                job.update(worker_id=body.worker_id, host=body.host or None, assigned_at=ts)
                if body.previous_worker_id:
                    job["takeovers"] += 1
                attempt = self._attempt(sid, job_id, body.attempt, job["queue"], ts)
                _executed(job, attempt, body.worker_id)
                if attempt["assigned_at"] is None:
                    attempt["assigned_at"] = ts
                    waited_from = attempt["dispatched_at"] or attempt["pending_at"]
                    attempt["queue_wait"] = _seconds(waited_from, ts)
                else:
                    attempt["takeovers"] += 1
                attempt.update(worker_id=body.worker_id, host=body.host or None)
            case ev.JobStarted():
                self._status(job, JobStatus.RUNNING, submission)
                started = body.started_at or None
                job.update(
                    run_at=ts,
                    worker_started_at=started,
                    worker_ended_at=None,
                    worker_id=body.worker_id,
                    pid=body.pid or job["pid"],
                )
                attempt = self._attempt(sid, job_id, body.attempt, job["queue"], ts)
                attempt.update(
                    run_at=ts,
                    worker_started_at=started,
                    worker_ended_at=None,
                    worker_id=body.worker_id,
                    pid=body.pid or attempt["pid"],
                )
            case ev.JobProgressed():
                if body.value is not None:
                    job["progress"] = body.value
                if body.total is not None:
                    job["total"] = body.total
                if body.status_line is not None:
                    job["status_line"] = body.status_line
                self._changes.progress.append(
                    {
                        "event_id": event.event_id,
                        "submission_id": sid,
                        "job_id": job_id,
                        "attempt": body.attempt,
                        "timestamp": ts,
                        "value": body.value,
                        "total": body.total,
                        "status_line": body.status_line,
                    }
                )
            case ev.JobOutput():
                self._changes.job_outputs.append(
                    {
                        "event_id": event.event_id,
                        "submission_id": sid,
                        "job_id": job_id,
                        "attempt": body.attempt,
                        "timestamp": ts,
                        "stream": body.stream,
                        "offset": body.offset,
                        "chunk": body.chunk,
                        "truncated": body.truncated,
                    }
                )
            case ev.JobExceptionRaised():
                job["exceptions"] += 1
                if body.severity == 0:
                    job.update(error_type=body.type, error_note=body.note)
                    if body.traceback:
                        job["traceback"] = body.traceback
                attempt = self._attempt(sid, job_id, body.attempt, job["queue"], ts)
                attempt["exceptions"] += 1
                self._changes.job_exceptions.append(
                    {
                        "event_id": event.event_id,
                        "submission_id": sid,
                        "job_id": job_id,
                        "attempt": body.attempt,
                        "timestamp": ts,
                        "type": body.type,
                        "note": body.note,
                        "severity": body.severity,
                        "fatal": body.severity == 0,
                        "traceback": body.traceback or None,
                    }
                )
            case ev.JobRetryScheduled():
                self._status(job, JobStatus.PENDING, submission)
                self._close_attempt(
                    sid,
                    job_id,
                    body.failed_attempt,
                    ts,
                    "FAILED",
                    failure_reason=str(body.reason),
                    error_type=body.error_type,
                    error_note=body.error_note,
                )
                job.update(
                    attempts=body.next_attempt,
                    pending_at=ts,
                    not_before=body.not_before,
                    worker_id=None,
                    host=None,
                    pid=None,
                    assigned_at=None,
                    run_at=None,
                    worker_started_at=None,
                    worker_ended_at=None,
                    failure_reason=str(body.reason),
                    error_type=body.error_type,
                    error_note=body.error_note,
                    queue=body.queue,
                )
                self._open_attempt(
                    sid,
                    job_id,
                    body.next_attempt,
                    body.queue,
                    ts,
                    body.not_before,
                    body.dispatch_id is not None,
                )
            case ev.JobCancelRequested():
                # (a cancel of a COMPLETED or SKIPPED job leaves its status and its reason)
                if not JobStatus(job["status"]).is_terminal:
                    job["end_reason"] = body.reason or None
            case ev.JobCompleted():
                self._finish(job, JobStatus.COMPLETED, ts, submission, body.ended_at)
                job.update(result=body.result, exit_code=body.exit_code)
                self._close_attempt(
                    sid, job_id, body.attempt, ts, "COMPLETED", ended_at=body.ended_at
                )
            case ev.JobFailed():
                self._finish(job, JobStatus.FAILED, ts, submission, body.ended_at)
                job.update(
                    failure_reason=str(body.reason),
                    error_type=body.error_type or str(body.reason),
                    error_note=body.error_note,
                    exit_code=body.exit_code,
                )
                if body.traceback:
                    job["traceback"] = body.traceback
                self._close_attempt(
                    sid,
                    job_id,
                    body.attempt,
                    ts,
                    "FAILED",
                    ended_at=body.ended_at,
                    failure_reason=str(body.reason),
                    error_type=body.error_type or str(body.reason),
                    error_note=body.error_note,
                )
            case ev.JobCanceled():
                self._finish(job, JobStatus.CANCELED, ts, submission, body.ended_at)
                job.update(end_reason=body.reason or None, canceled_by=body.requested_by or None)
                if body.attempt > 0:
                    self._close_attempt(
                        sid, job_id, body.attempt, ts, "CANCELED", ended_at=body.ended_at
                    )
            case ev.JobAbandoned():
                self._finish(job, JobStatus.ABANDONED, ts, submission)
                job["end_reason"] = body.reason or f"{body.cause_job_id} ended {body.cause_status}"
            case ev.JobSkipped():
                self._finish(job, JobStatus.SKIPPED, ts, submission)
                job["end_reason"] = body.reason or None
            case ev.JobDeleted():
                if not job["deleted"] and submission is not None:
                    submission["deleted_jobs"] += 1
                job["deleted"] = True
            case ev.JobDuplicateClaim():
                # The claimer may have started the code before it was told to stop: one
                # more execution, on another worker, while the holder keeps the attempt.
                job["duplicate_claims"] += 1
                attempt = self._attempt(sid, job_id, body.attempt, job["queue"], ts)
                attempt["duplicate_claims"] += 1
                _executed(job, attempt, body.worker_id)
            case ev.JobHeld():
                pass  # a pending reason (set for every job event below)
            case ev.JobRerun():
                self._status(job, JobStatus.SUBMITTED, submission)
                job.update(
                    reruns=(job["reruns"] or 0) + 1,
                    blocked_at=None,
                    first_pending_at=None,
                    pending_at=None,
                    assigned_at=None,
                    run_at=None,
                    finished_at=None,
                    worker_started_at=None,
                    worker_ended_at=None,
                    worker_id=None,
                    host=None,
                    pid=None,
                    result=None,
                    exit_code=None,
                    failure_reason=None,
                    error_type=None,
                    error_note=None,
                    end_reason=None,
                    canceled_by=None,
                )
                if submission is not None and submission["done"]:
                    submission.update(done=False, outcome=None, finished_at=None, wall_time=None)
            case _:
                assert_never(body)

    def _status(self, job: Row, status: JobStatus, submission: Row | None) -> None:
        old = job["status"]
        if old == status:
            return
        job["status"] = str(status)
        if submission is not None:
            if old is not None:
                submission[old.lower()] -= 1
            submission[status.lower()] += 1

    def _finish(
        self, job: Row, status: JobStatus, ts: int, submission: Row | None, ended_at: int = 0
    ) -> None:
        self._status(job, status, submission)
        job["finished_at"] = ts
        job["worker_ended_at"] = ended_at or None

    def _open_attempt(
        self,
        sid: str,
        job_id: str,
        number: int,
        queue: str,
        ts: int,
        not_before: int,
        dispatched: bool,
    ) -> None:
        attempt = self._attempt(sid, job_id, number, queue, ts)
        attempt["not_before"] = not_before
        if dispatched and attempt["dispatched_at"] is None:
            attempt["dispatched_at"] = ts

    def _attempt(self, sid: str, job_id: str, number: int, queue: str, ts: int) -> Row:
        key = (sid, job_id, number)
        attempt = self.attempts.get(key)
        if attempt is None:
            attempt = ATTEMPTS.empty_row()
            attempt.update(
                submission_id=sid,
                job_id=job_id,
                attempt=number,
                queue=queue,
                pending_at=ts,
                takeovers=0,
                duplicate_claims=0,
                executions=0,
                workers_seen=[],
                exceptions=0,
            )
            self.attempts[key] = attempt
        self._dirty_attempts.add(key)
        return attempt

    def _close_attempt(
        self,
        sid: str,
        job_id: str,
        number: int,
        ts: int,
        outcome: str,
        ended_at: int = 0,
        **fields_: str | None,
    ) -> None:
        attempt = self.attempts.get((sid, job_id, number))
        if attempt is None or attempt["outcome"] is not None:
            return
        attempt.update(outcome=outcome, finished_at=ts, worker_ended_at=ended_at or None, **fields_)
        times = JobTimes(
            run_at=attempt["run_at"],
            finished_at=ts,
            worker_started_at=attempt["worker_started_at"],
            worker_ended_at=attempt["worker_ended_at"],
        )
        attempt["execution_duration"] = _ms_to_seconds(durations_of(times).execution_ms)
        attempt["execution_clock"] = times.execution_clock
        self._dirty_attempts.add((sid, job_id, number))

    def _new_submission(self, sid: str, ts: int) -> Row:
        submission = SUBMISSIONS.empty_row()
        submission.update(
            submission_id=sid,
            labels=[],
            jobs=0,
            deleted_jobs=0,
            rejections=0,
            done=False,
            submitted_at=ts,
            last_seq=0,
        )
        for column in STATUS_COUNT_COLUMNS:
            submission[column] = 0
        self.submissions[sid] = submission
        return submission

    def _touch_submission(self, sid: str) -> None:
        self._dirty_submissions.add(sid)

    # ------------------------------------------------------------------ worker reports

    def report(self, report: Heartbeat | WorkerLeft, timestamp: int) -> None:
        """Folds a worker's heartbeat or departure into ``workers``.

        Args:
            report: the report.
            timestamp: the record's time, used when the worker sent no ``sent_at``.
        """
        at = report.sent_at or timestamp
        worker = self.workers.get(report.worker_id)
        if worker is None:
            worker = WORKERS.empty_row()
            worker.update(
                worker_id=report.worker_id,
                first_seen=at,
                heartbeats=0,
                left=False,
                lease_ms=0,
                slots_total=0,
                slots_used=0,
            )
            self.workers[report.worker_id] = worker
        self._dirty_workers.add(report.worker_id)
        if isinstance(report, Heartbeat):
            self.stats.heartbeats += 1
            worker["heartbeats"] += 1
            last = worker["last_heartbeat"]
            if last is not None and at < last:
                return  # an older heartbeat read late (another partition): keep the newer
            worker.update(
                queue=report.queue,
                host=report.host or worker["host"],
                pid=report.pid or worker["pid"],
                last_heartbeat=at,
                lease_ms=report.lease_ms,
                slots_total=report.slots_total,
                slots_used=report.slots_used,
            )
            if worker["left"] and worker["left_at"] is not None and at > worker["left_at"]:
                worker.update(left=False, left_at=None, unfinished_at_leave=None)
        else:
            worker.update(left=True, left_at=at, unfinished_at_leave=len(report.unfinished))


# --------------------------------------------------------------------------- rows


def _new_job(sid: str, body: ev.JobSubmitted, ts: int) -> Row:
    spec = body.spec
    job = JOBS.empty_row()
    job.update(
        submission_id=sid,
        job_id=spec.job_id,
        name=spec.display_name,
        task=spec.task,
        command=shlex.join(spec.command) if spec.command is not None else None,
        queue=spec.queue,
        status=str(JobStatus.SUBMITTED),
        attempts=0,
        max_attempts=spec.retry.max_attempts,
        priority=spec.priority,
        submitted_at=ts,
        executions=0,
        takeovers=0,
        duplicate_claims=0,
        workers_seen=[],
        exceptions=0,
        deleted=False,
        parent=spec.parent,
        depends_on=list(spec.depends_on),
        labels=list(spec.labels),
        args=spec.args,
        idempotency_key=spec.idempotency_key,
        timeout_ms=spec.timeout_ms,
        queue_timeout_ms=spec.queue_timeout_ms,
        concurrency_key=spec.concurrency_key,
        force=spec.force,
        reruns=0,
    )
    return job


def _executed(job: Row, attempt: Row, worker_id: str) -> None:
    """A worker took one of the job's dispatches to run (a claim, a takeover, a duplicate)."""
    for row in (job, attempt):
        row["executions"] += 1
        if worker_id not in row["workers_seen"]:
            row["workers_seen"].append(worker_id)


def _bare_spec(job_id: str) -> JobSpec:
    return JobSpec(job_id=job_id)


def _attempt_of(body: EventBody) -> int | None:
    """The attempt an event's history row names (``None``: none)."""
    match body:
        case ev.JobRetryScheduled():
            return body.failed_attempt
        case (
            ev.JobPending()
            | ev.JobDispatched()
            | ev.JobAssigned()
            | ev.JobStarted()
            | ev.JobProgressed()
            | ev.JobOutput()
            | ev.JobExceptionRaised()
            | ev.JobCancelRequested()
            | ev.JobCompleted()
            | ev.JobFailed()
            | ev.JobCanceled()
            | ev.JobDuplicateClaim()
            | ev.JobHeld()
        ):
            return body.attempt if body.attempt > 0 else None
        case (
            ev.SubmissionAccepted()
            | ev.JobSubmitted()
            | ev.JobBlocked()
            | ev.JobAbandoned()
            | ev.JobSkipped()
            | ev.JobDeleted()
            | ev.CommandRejected()
            | ev.SubmissionCompleted()
            | ev.IdempotencyKeyDecided()
            | ev.NotificationAdded()
            | ev.NotificationRemoved()
            | ev.SlotDecided()
            | ev.QueueConfigured()
            | ev.JobRerun()
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


def _attempts_of(body: EventBody) -> tuple[int, ...]:
    """Attempt numbers whose ``attempts`` rows an event reads or writes."""
    match body:
        case ev.JobRetryScheduled():
            return (body.failed_attempt, body.next_attempt)
        case (
            ev.JobPending()
            | ev.JobDispatched()
            | ev.JobAssigned()
            | ev.JobStarted()
            | ev.JobExceptionRaised()
            | ev.JobCompleted()
            | ev.JobFailed()
            | ev.JobDuplicateClaim()
        ):
            return (body.attempt,)
        case ev.JobCanceled():
            return (body.attempt,) if body.attempt > 0 else ()
        case (
            ev.SubmissionAccepted()
            | ev.JobSubmitted()
            | ev.JobBlocked()
            | ev.JobProgressed()
            | ev.JobOutput()
            | ev.JobCancelRequested()
            | ev.JobAbandoned()
            | ev.JobSkipped()
            | ev.JobDeleted()
            | ev.CommandRejected()
            | ev.SubmissionCompleted()
            | ev.IdempotencyKeyDecided()
            | ev.NotificationAdded()
            | ev.NotificationRemoved()
            | ev.JobHeld()
            | ev.SlotDecided()
            | ev.QueueConfigured()
            | ev.JobRerun()
            | ev.ScheduleCreated()
            | ev.ScheduleChanged()
            | ev.ScheduleFired()
            | ev.ScheduleSkipped()
            | ev.ScheduleRunSeen()
            | ev.SubmissionThrottled()
        ):
            return ()
        case _:
            assert_never(body)


def _seconds(start: int | None, end: int | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start) / 1000.0


# Event bodies are frozen dataclasses of scalars, tuples, enums (str) and nested dataclasses:
# ``vars`` turns each dataclass into its field dict, the C encoder does the rest.
_BODY_JSON = json.JSONEncoder(separators=(",", ":"), default=vars, check_circular=False)


def _recent(rows: dict[Any, Row], keys: set[Any]) -> list[Row]:
    """The rows of ``keys``, moved to the end of ``rows`` (most recently used)."""
    out = []
    for key in keys:
        row = rows.pop(key)
        rows[key] = row
        out.append(row)
    return out


def _durations(job: Row) -> Row:
    """Taipy's durations of a job row in seconds, by :mod:`engine.lifecycle.durations`.

    A finished execution is measured on the worker's clock when both of its times are known
    (``execution_clock`` says whose clock); ``pending_at`` and ``run_at`` are those of the
    job's last attempt; blocked time ends at
    the first PENDING; a phase the job ended in closes at ``finished_at``; a phase still
    open has no duration here (the ``job_durations`` view counts it up to now).
    """
    times = JobTimes(
        submitted_at=job["submitted_at"],
        blocked_at=job["blocked_at"],
        first_pending_at=job["first_pending_at"],
        pending_at=job["pending_at"],
        run_at=job["run_at"],
        finished_at=job["finished_at"],
        attempt=job["attempts"],
        worker_started_at=job["worker_started_at"],
        worker_ended_at=job["worker_ended_at"],
    )
    spans = durations_of(times)
    return {
        "execution_duration": _ms_to_seconds(spans.execution_ms),
        "execution_clock": times.execution_clock,
        "pending_duration": _ms_to_seconds(spans.pending_ms),
        "blocked_duration": _ms_to_seconds(spans.blocked_ms),
    }


def _ms_to_seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000.0


def _trim(rows: dict[Any, Row], limit: int) -> None:
    excess = len(rows) - limit
    if excess <= 0:
        return
    for key in list(rows)[:excess]:
        del rows[key]
