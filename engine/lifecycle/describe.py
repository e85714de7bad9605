"""One readable line per event, in the manner of Tapis's job history.

``describe(event)`` says what happened in words an operator reads in ``job_history`` (the
projections), a notification's ``${EVENT_DESCRIPTION}`` and ``joblog history``, e.g.
``"Job assigned to worker w-1 on host h"``. It is pure and needs only the event.
"""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from typing import assert_never

from engine.lifecycle import records as ev
from engine.lifecycle.records import CancelMode, Event, HoldReason, KeyDecision, SlotDecision

_MAX_LIST = 5
_MAX_TEXT = 200


def describe(event: Event) -> str:
    """The history line of one event.

    Args:
        event: any event of the ``events`` topic.

    Returns:
        A sentence without a trailing period, e.g. ``"Job started running on worker w-1"``.
    """
    body = event.body
    match body:
        case ev.SubmissionAccepted():
            by = f" from {body.submitted_by}" if body.submitted_by else ""
            return f"Submission accepted{by} with {_count(len(body.job_ids), 'job')}"
        case ev.JobSubmitted():
            spec = body.spec
            what = (
                f"task {spec.task}"
                if spec.task
                else f"command {_clip(shlex.join(spec.command or ()))}"
            )
            extra = ""
            if spec.depends_on:
                extra += f", after {_names(spec.depends_on)}"
            if spec.parent:
                extra += f", sub-job of {spec.parent}"
            if spec.retry.max_attempts > 1:
                extra += f", up to {spec.retry.max_attempts} attempts"
            return f"Job submitted: {what} on queue {spec.queue}{extra}"
        case ev.JobBlocked():
            return f"Job blocked: waiting on {_names(body.waiting_on)}"
        case ev.JobPending():
            because = f" ({body.reason})" if body.reason else ""
            if body.dispatch_id is None:
                return (
                    f"Attempt {body.attempt} waits until {_clock(body.not_before)} "
                    f"before dispatch to queue {body.queue}{because}"
                )
            return f"Attempt {body.attempt} queued for a worker on queue {body.queue}{because}"
        case ev.JobDispatched():
            return f"Attempt {body.attempt} dispatched to queue {body.queue}"
        case ev.JobAssigned():
            host = f" on host {body.host}" if body.host else ""
            took = (
                f", taking over from {body.previous_worker_id}" if body.previous_worker_id else ""
            )
            return f"Job assigned to worker {body.worker_id}{host}{took} (attempt {body.attempt})"
        case ev.JobStarted():
            pid = f" (pid {body.pid})" if body.pid else ""
            return f"Job started running on worker {body.worker_id}{pid}"
        case ev.JobProgressed():
            return _progress(body)
        case ev.JobOutput():
            cut = ", earlier output dropped" if body.truncated else ""
            return f"{_count(len(body.chunk), 'character')} of {body.stream} at {body.offset}{cut}"
        case ev.JobExceptionRaised():
            if body.severity == 0:
                return f"Job raised fatal exception {body.type}: {_clip(body.note)}"
            return (
                f"Job raised exception {body.type} (severity {body.severity}): {_clip(body.note)}"
            )
        case ev.JobRetryScheduled():
            error = _error(str(body.reason), body.error_type, body.error_note)
            wait = max(0, body.not_before - event.timestamp) / 1000
            when = "at once" if body.dispatch_id is not None else f"in {wait:g} s"
            return (
                f"Attempt {body.failed_attempt} failed ({error}); "
                f"attempt {body.next_attempt} scheduled {when}"
            )
        case ev.JobCancelRequested():
            then = (
                f"kill sent to worker {body.worker_id}"
                if body.mode is CancelMode.KILL
                else "left to finish, what waits on it will not run"
            )
            return f"Cancel requested ({body.reason or 'no reason given'}); {then}"
        case ev.JobCompleted():
            code = f" with exit code {body.exit_code}" if body.exit_code is not None else ""
            return f"Job completed{code}"
        case ev.JobFailed():
            error = _error(str(body.reason), body.error_type, body.error_note)
            code = f", exit code {body.exit_code}" if body.exit_code is not None else ""
            return f"Job failed on attempt {body.attempt}: {error}{code}"
        case ev.JobCanceled():
            by = f" by {body.requested_by}" if body.requested_by else ""
            why = f": {_clip(body.reason)}" if body.reason else ""
            return f"Job canceled{by}{why}"
        case ev.JobAbandoned():
            return f"Job abandoned: {body.cause_job_id} ended {body.cause_status}"
        case ev.JobSkipped():
            return f"Job skipped: {_clip(body.reason)}"
        case ev.JobDeleted():
            forced = " with force" if body.forced else ""
            by = f" by {body.requested_by}" if body.requested_by else ""
            return f"Job deleted{forced}{by}"
        case ev.CommandRejected():
            return f"{body.command_type} rejected ({body.code}): {_clip(body.reason)}"
        case ev.SubmissionCompleted():
            counts = ", ".join(f"{n} {status}" for status, n in body.counts)
            return f"Submission finished {body.status}: {counts}"
        case ev.JobDuplicateClaim():
            host = f" on host {body.host}" if body.host else ""
            return (
                f"Duplicate execution: worker {body.worker_id}{host} claimed attempt "
                f"{body.attempt} held by live worker {body.holder_worker_id}; claim refused, "
                f"{body.worker_id} told to stop"
            )
        case ev.IdempotencyKeyDecided():
            return _key_decision(body)
        case ev.NotificationAdded():
            return f"Notification added: {_notification(body.notification)}"
        case ev.NotificationRemoved():
            return f"Notification {body.notification_id} removed: {_clip(body.reason)}"
        case ev.JobHeld():
            if body.reason is HoldReason.QUEUE_PAUSED:
                return f"Attempt {body.attempt} held: {_clip(body.detail)}"
            return f"Attempt {body.attempt} {_clip(body.detail)}"
        case ev.SlotDecided():
            return _slot_decision(body)
        case ev.QueueConfigured():
            return f"Queue {body.queue}: {queue_settings(body)}"
        case ev.JobRerun():
            by = f" by {body.requested_by}" if body.requested_by else ""
            return (
                f"Job rerun{by} after it ended {body.previous_status}: attempt {body.attempt} next"
            )
        case ev.ScheduleCreated():
            paused = ", paused" if body.paused else ""
            return (
                f"Schedule {body.schedule_id} created ({schedule_text(body.spec)}{paused}): "
                f"{len(body.jobs)} job(s) a run{_next(body.next_at)}"
            )
        case ev.ScheduleChanged():
            return f"Schedule {body.action}d{_next(body.next_at)}"
        case ev.ScheduleFired():
            how = "triggered" if body.manual else "fired late" if body.catch_up else "fired"
            return f"Schedule {how}: run {body.run_submission_id}{_next(body.next_at)}"
        case ev.ScheduleSkipped():
            why = _SKIPPED.get(body.reason, body.reason)
            slots = "slot" if body.count == 1 else f"{body.count} slots"
            return f"Schedule skipped {slots} up to {_clock(body.slot)}: {why}{_next(body.next_at)}"
        case ev.ScheduleRunSeen():
            return f"Schedule run {body.run_submission_id} ended {body.status}"
        case ev.SubmissionThrottled():
            return f"Submission throttled ({body.cause}): {_clip(body.detail)}"
        case _:
            assert_never(body)


def queue_settings(body: ev.QueueConfigured) -> str:
    """A queue's settings in words."""
    parts = ["paused" if body.paused else "running"]
    if body.max_running:
        parts.append(f"at most {body.max_running} running")
    if body.rate_limit:
        parts.append(f"at most {body.rate_limit} starts per {body.rate_period_ms} ms")
    if not body.max_running and not body.rate_limit:
        parts.append("no limits")
    return ", ".join(parts)


def _slot_decision(body: ev.SlotDecided) -> str:
    match body.decision:
        case SlotDecision.GRANTED:
            return f"Slot of {body.ledger} granted to {body.job}"
        case SlotDecision.QUEUED:
            behind = (
                f", the rate allows the next start at {_clock(body.until)}" if body.until else ""
            )
            return f"{body.job} waits for a slot of {body.ledger}: {body.position} ahead{behind}"
        case SlotDecision.RELEASED:
            return f"{body.job} released its slot of {body.ledger}"
        case SlotDecision.WITHDRAWN:
            return f"{body.job} withdrew its claim on {body.ledger}"
        case SlotDecision.LIMITS:
            limits = []
            if body.max_running:
                limits.append(f"at most {body.max_running} running")
            if body.rate_limit:
                limits.append(f"at most {body.rate_limit} starts per {body.rate_period_ms} ms")
            return f"Limits of {body.ledger}: {', '.join(limits) or 'none'}"
        case _:
            assert_never(body.decision)


def _key_decision(body: ev.IdempotencyKeyDecided) -> str:
    key = _clip(repr(body.key))
    match body.decision:
        case KeyDecision.GRANTED:
            return f"Idempotency key {key} granted to {body.job}"
        case KeyDecision.QUEUED:
            return f"Idempotency key {key}: {body.job} waits for {body.other}"
        case KeyDecision.COMPLETED:
            return f"Idempotency key {key}: {body.job} skipped, completed by {body.other}"
        case KeyDecision.DONE:
            return f"Idempotency key {key} completed by {body.job}"
        case KeyDecision.RELEASED:
            return f"Idempotency key {key} released by {body.job} (it did not complete)"
        case KeyDecision.WITHDRAWN:
            return f"Idempotency key {key}: {body.job} ended before it got the key"
        case _:
            assert_never(body.decision)


def _notification(n: ev.Notification) -> str:
    target = n.url.removeprefix("mailto:")
    kind = "email to" if n.url.startswith("mailto:") or "://" not in n.url else "webhook"
    scope = f" of job {n.job_id}" if n.job_id else ""
    keep = "every time" if n.persistent else "once"
    return f"{n.notification_id}, {kind} {_clip(target)} on {n.event}{scope}, {keep}"


def _progress(body: ev.JobProgressed) -> str:
    if body.value is not None and body.total:
        text = f"Progress {body.value:g}/{body.total:g} ({100 * body.value / body.total:.0f}%)"
    elif body.value is not None:
        text = f"Progress {body.value:g}"
    else:
        text = "Status"
    if body.status_line:
        text += f": {_clip(body.status_line)}"
    return text


def _error(reason: str, error_type: str, note: str) -> str:
    text = reason if not error_type or error_type == reason else f"{reason}: {error_type}"
    return f"{text}: {_clip(note)}" if note else text


def _names(ids: tuple[str, ...]) -> str:
    shown = ", ".join(ids[:_MAX_LIST])
    more = len(ids) - _MAX_LIST
    return f"{shown} and {more} more" if more > 0 else shown


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _clock(ms: int) -> str:
    try:
        moment = datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms after the epoch"  # no calendar time: say the number as it came
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def schedule_text(spec: ev.ScheduleSpec) -> str:
    """A schedule's spec in words: ``cron '0 2 * * *' in Europe/Berlin, overlap skip``."""
    if spec.cron:
        when = f"cron {spec.cron!r} in {spec.timezone}"
    else:
        when = f"every {duration_text(spec.interval_ms)}"
        if spec.offset_ms:
            when += f" at +{duration_text(spec.offset_ms)}"
    return f"{when}, overlap {spec.overlap}"


def duration_text(ms: int) -> str:
    """``90000`` as ``1m30s``; ``1500`` as ``1.5s``."""
    if ms % 1000:
        return f"{ms / 1000:g}s"
    seconds = ms // 1000
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


_SKIPPED = {
    "overlap": "the previous run was still going",
    "buffered": "waits for the previous run to end",
    "catch_up_window": "missed longer ago than the catch-up window",
    "catch_up_limit": "too many missed slots to fire at once",
}


def _next(next_at: int) -> str:
    return f"; next {_clock(next_at)}" if next_at else ""
