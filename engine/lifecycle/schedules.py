"""Schedules: submissions fired by a cron expression or an interval, exactly once per slot.

A schedule is a pseudo-submission (:func:`~engine.lifecycle.records.schedule_submission_id`)
in the partition its id hashes to. Its timer is its next slot; a :class:`Tick` at or after it
decides the slots due since the last one considered:

* each slot that fires is a ``ScheduleFired`` event, and a ``SubmitJobs`` command for the run
  is an effect of it, written in the same transaction. The run's submission id is derived
  from the slot (``<schedule id>-20261203T140000Z``), and a submission id is never accepted
  twice, so a slot submits its run once even if the decision were made again;
* overlap: while a run it fired has not ended, a slot is skipped (``skip``), waits for it
  (``buffer_one``: at most one slot waits, later ones are skipped) or fires all the same
  (``allow_all``). A run's end reaches the schedule as a ``ScheduleRunEnded`` command from the
  run's scheduler (an effect of its ``SubmissionCompleted``);
* catch-up after downtime: slots missed by more than ``catchup_window_ms`` are skipped in one
  ``ScheduleSkipped`` event (their count is counted up to :data:`MAX_COUNTED`); those within it
  fire in order (at most :data:`MAX_CATCH_UP_FIRINGS` per tick), subject to ``overlap``;
* a pause stops the timer; a resume starts again at the next slot (slots missed while paused
  are not caught up); a trigger fires once at once, whatever the spec and the overlap; a
  deleted schedule never fires again and its id is never reused.

Time zones are IANA names read with :mod:`zoneinfo`, cron expressions are read by
``cronsim`` (DST included: a 02:30 slot on a spring-forward day fires at 03:00).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from engine.lifecycle.records import (
    SCHEDULE_LABEL,
    SLOT_LABEL,
    ChangeSchedule,
    CreateSchedule,
    RejectionCode,
    ScheduleAction,
    ScheduleChanged,
    ScheduleCreated,
    ScheduleFired,
    ScheduleOverlap,
    ScheduleRunEnded,
    ScheduleRunSeen,
    ScheduleSkipped,
    ScheduleSpec,
    SubmitJobs,
    is_schedule,
)
from engine.lifecycle.state import ScheduleState
from engine.lifecycle.validation import ID_PATTERN, validate_submission

if TYPE_CHECKING:
    from engine.lifecycle.draft import Draft

#: The shortest interval of an interval schedule.
MIN_INTERVAL_MS = 1_000
#: The most slots one tick fires while catching up; older ones are skipped.
MAX_CATCH_UP_FIRINGS = 100
#: Skipped slots are counted up to this many (``ScheduleSkipped.count``).
MAX_COUNTED = 1_000
#: The longest schedule id (its runs' ids add 17 characters to it).
MAX_SCHEDULE_ID = 180


def next_slot(spec: ScheduleSpec, after: int) -> int:
    """The first slot strictly after ``after`` (ms), within ``start_at``/``end_at``; 0: none."""
    after = max(after, spec.start_at - 1)
    if spec.interval_ms > 0:
        k = (after - spec.offset_ms) // spec.interval_ms + 1
        slot = k * spec.interval_ms + spec.offset_ms
    else:
        start = datetime.fromtimestamp(after / 1000, ZoneInfo(spec.timezone))
        slot = round(next(iter(CronSim(spec.cron, start))).timestamp() * 1000)
    if spec.end_at and slot > spec.end_at:
        return 0
    return slot


def slot_text(slot: int) -> str:
    """A slot as it appears in a run's id and label: UTC, ``20261203T140000Z``."""
    return datetime.fromtimestamp(slot / 1000, UTC).strftime("%Y%m%dT%H%M%SZ")


def run_submission_id(schedule_id: str, slot: int) -> str:
    """The submission id of the run a slot fires."""
    return f"{schedule_id}-{slot_text(slot)}"


def spec_problem(spec: ScheduleSpec) -> str | None:
    """What is wrong with a schedule's spec, if anything."""
    if bool(spec.cron) == (spec.interval_ms > 0):
        return "a schedule needs exactly one of a cron expression and an interval"
    try:
        zone = ZoneInfo(spec.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {spec.timezone!r}"
    if spec.cron:
        try:
            next(iter(CronSim(spec.cron, datetime.now(zone))))
        except (CronSimError, StopIteration) as exc:
            return f"cron expression {spec.cron!r}: {exc}"
    elif spec.interval_ms < MIN_INTERVAL_MS:
        return f"the interval must be at least {MIN_INTERVAL_MS} ms, not {spec.interval_ms}"
    elif not 0 <= spec.offset_ms < spec.interval_ms:
        return "the offset must be between 0 and the interval"
    if spec.overlap not in tuple(ScheduleOverlap):
        return f"overlap must be one of {', '.join(ScheduleOverlap)}, not {spec.overlap!r}"
    if spec.catchup_window_ms < 0 or spec.start_at < 0 or spec.end_at < 0:
        return "the catch-up window, start and end must not be negative"
    if spec.end_at and spec.end_at < spec.start_at:
        return "the end comes before the start"
    return None


# --------------------------------------------------------------------------- commands


def decide_create(draft: Draft, command: CreateSchedule) -> None:
    state = draft.state
    if state.schedule is not None:
        if state.command_id == command.command_id:
            return  # the same command again
        what = "was deleted; ids are never reused" if state.schedule.deleted else "exists"
        draft.reject(
            command.command_id,
            "CreateSchedule",
            RejectionCode.DUPLICATE_SCHEDULE,
            f"schedule {command.schedule_id!r} {what}",
        )
        return
    problem = _create_problem(command, draft)
    if problem is not None:
        code, reason = problem
        draft.reject(command.command_id, "CreateSchedule", code, reason)
        return
    first = next_slot(command.spec, draft.now - 1)
    draft.emit(
        "",
        ScheduleCreated(
            schedule_id=command.schedule_id,
            spec=command.spec,
            jobs=command.jobs,
            labels=command.labels,
            paused=command.paused,
            next_at=first,
            command_id=command.command_id,
            requested_by=command.requested_by,
        ),
    )


def _create_problem(command: CreateSchedule, draft: Draft) -> tuple[RejectionCode, str] | None:
    schedule_id = command.schedule_id
    if not ID_PATTERN.match(schedule_id) or len(schedule_id) > MAX_SCHEDULE_ID:
        return RejectionCode.BAD_SCHEDULE, (
            f"schedule id {schedule_id!r} must be 1-{MAX_SCHEDULE_ID} letters, digits and "
            "._:@+=- starting with a letter or digit"
        )
    problem = spec_problem(command.spec)
    if problem is not None:
        return RejectionCode.BAD_SCHEDULE, problem
    # a run's submission as the first slot will send it: what it would be rejected for, the
    # schedule is rejected for now
    sample = SubmitJobs(
        command.command_id,
        run_submission_id(schedule_id, 0),
        command.jobs,
        labels=(*command.labels, (SCHEDULE_LABEL, schedule_id), (SLOT_LABEL, slot_text(0))),
    )
    return validate_submission(sample, draft.policy)


def decide_change(draft: Draft, command: ChangeSchedule) -> None:
    schedule = draft.state.schedule
    if schedule is None or schedule.deleted:
        gone = "was deleted" if schedule is not None else "does not exist"
        draft.reject(
            command.command_id,
            "ChangeSchedule",
            RejectionCode.UNKNOWN_SCHEDULE,
            f"schedule {command.submission_id.removeprefix('#schedule-')!r} {gone}",
        )
        return
    # a slot already due (its timer not fired yet) is decided first: a change takes effect
    # from now on, and no slot before it goes unaccounted for
    fire_due(draft)
    schedule = draft.state.schedule
    assert schedule is not None
    action = command.action
    if action is ScheduleAction.TRIGGER:
        _fire(draft, schedule, draft.now, manual=True, command_id=command.command_id)
        return
    if action is ScheduleAction.PAUSE or action is ScheduleAction.DELETE:
        next_at = 0
    elif schedule.paused:  # resume: from the next slot on (what was missed is not caught up)
        next_at = next_slot(schedule.spec, draft.now - 1)
    else:  # resume of a running schedule: nothing changes
        next_at = schedule.next_at
    draft.emit("", ScheduleChanged(action, next_at, command.command_id, command.requested_by))


def decide_run_ended(draft: Draft, command: ScheduleRunEnded) -> None:
    schedule = draft.state.schedule
    if schedule is None or command.run_submission_id not in schedule.running:
        return  # not a run it waits for (a rerun's second end, an allow_all run)
    draft.emit("", ScheduleRunSeen(command.run_submission_id, command.status))
    schedule = draft.state.schedule
    assert schedule is not None
    if schedule.buffered and not schedule.running and not schedule.deleted:
        _fire(draft, schedule, schedule.buffered, catch_up=True)


# --------------------------------------------------------------------------- the timer


def schedule_deadline(schedule: ScheduleState) -> int | None:
    """When the schedule's timer is due."""
    if schedule.paused or schedule.deleted or not schedule.next_at:
        return None
    return schedule.next_at


def fire_due(draft: Draft) -> None:
    """Decides the slots due at ``draft.now``: skipped beyond the catch-up window, then fired,
    skipped or buffered in order as the overlap policy says."""
    schedule = draft.state.schedule
    if schedule is None or schedule_deadline(schedule) is None or schedule.next_at > draft.now:
        return
    spec = schedule.spec
    now = draft.now
    cutoff = now - spec.catchup_window_ms
    slot = schedule.next_at
    if slot < cutoff:
        # missed during downtime, too long ago: skipped in one event
        count, last = 0, slot
        while slot and slot < cutoff and count < MAX_COUNTED:
            count, last = count + 1, slot
            slot = next_slot(spec, slot)
        if slot and slot < cutoff:  # more than counted: jump to the window
            last = cutoff - 1
            slot = next_slot(spec, last)
        draft.emit("", ScheduleSkipped(last, "catch_up_window", count, slot))
    fired = 0
    skipped: list[tuple[str, int, int]] = []  # (reason, count, last slot), not yet emitted

    def flush(next_at: int) -> None:
        for reason, count, last in skipped:
            draft.emit("", ScheduleSkipped(last, reason, count, next_at))
        skipped.clear()

    def skip(reason: str, at: int) -> None:
        if skipped and skipped[-1][0] == reason:
            _, count, _ = skipped[-1]
            skipped[-1] = (reason, count + 1, at)
        else:
            skipped.append((reason, 1, at))

    while slot and slot <= now:
        following = next_slot(spec, slot)
        current = draft.state.schedule
        assert current is not None
        busy = bool(current.running) and spec.overlap is not ScheduleOverlap.ALLOW_ALL
        if busy and spec.overlap is ScheduleOverlap.BUFFER_ONE and not current.buffered:
            flush(slot)
            draft.emit("", ScheduleSkipped(slot, "buffered", 1, following))
        elif busy:
            skip("overlap", slot)
        elif fired >= MAX_CATCH_UP_FIRINGS:
            skip("catch_up_limit", slot)
        else:
            flush(slot)
            _fire(draft, current, slot, catch_up=slot < now - 1_000)
            fired += 1
        slot = following
    flush(slot)


def _fire(
    draft: Draft,
    schedule: ScheduleState,
    slot: int,
    *,
    manual: bool = False,
    catch_up: bool = False,
    command_id: str = "",
) -> None:
    if manual:
        run = f"{schedule.schedule_id}-manual-{draft.state.seq + 1}"
        next_at = schedule.next_at
    else:
        run = run_submission_id(schedule.schedule_id, slot)
        next_at = next_slot(schedule.spec, max(slot, schedule.last_slot))
    draft.emit("", ScheduleFired(slot, run, manual, catch_up, next_at, command_id))


def run_command(schedule: ScheduleState, body: ScheduleFired, event_id: str, at: int) -> SubmitJobs:
    """The submission a firing sends (an effect of its ``ScheduleFired``): its command id is
    the firing's event id and ``:submit`` (see :func:`run_rejected`)."""
    labels = (
        *schedule.labels,
        (SCHEDULE_LABEL, schedule.schedule_id),
        (SLOT_LABEL, slot_text(body.slot)),
    )
    return SubmitJobs(
        command_id=f"{event_id}:submit",
        submission_id=body.run_submission_id,
        jobs=schedule.jobs,
        submitted_by=f"schedule:{schedule.schedule_id}",
        labels=labels,
        issued_at=at,
    )


def run_rejected(command_id: str, submission_id: str, at: int) -> list[ScheduleRunEnded]:
    """A run's submission was rejected (its id was taken, or its jobs no longer pass the
    policy): the schedule hears that it ended, so that its overlap policy does not wait for
    it. Any other rejected command: nothing."""
    fired_event, _, suffix = command_id.rpartition(":")
    schedule, _, seq = fired_event.rpartition(":")
    if suffix != "submit" or not seq.isdigit() or not is_schedule(schedule):
        return []
    return [
        ScheduleRunEnded(
            command_id=f"{command_id}:rejected",
            submission_id=schedule,
            run_submission_id=submission_id,
            status="REJECTED",
            issued_at=at,
        )
    ]


# --------------------------------------------------------------------------- the fold


def evolve_schedule(schedule: ScheduleState | None, body: object, timestamp: int) -> ScheduleState:
    """Folds one of a schedule's events into its state."""
    match body:
        case ScheduleCreated():
            return ScheduleState(
                schedule_id=body.schedule_id,
                spec=body.spec,
                jobs=body.jobs,
                labels=body.labels,
                paused=body.paused,
                last_slot=timestamp - 1,
                next_at=body.next_at,
            )
    assert schedule is not None
    match body:
        case ScheduleChanged():
            action = body.action
            if action is ScheduleAction.PAUSE:
                return _replace(schedule, paused=True, next_at=body.next_at)
            if action is ScheduleAction.RESUME:
                return _replace(
                    schedule, paused=False, next_at=body.next_at, last_slot=timestamp - 1
                )
            if action is ScheduleAction.DELETE:
                return _replace(schedule, deleted=True, next_at=0)
            return schedule
        case ScheduleFired():
            running = schedule.running
            if schedule.spec.overlap is not ScheduleOverlap.ALLOW_ALL:
                running = (*running, body.run_submission_id)
            if body.manual:
                return _replace(schedule, running=running, fired=schedule.fired + 1)
            return _replace(
                schedule,
                running=running,
                fired=schedule.fired + 1,
                last_slot=max(schedule.last_slot, body.slot),
                next_at=body.next_at,
                buffered=0 if body.slot == schedule.buffered else schedule.buffered,
            )
        case ScheduleSkipped():
            return _replace(
                schedule,
                last_slot=max(schedule.last_slot, body.slot),
                next_at=body.next_at,
                buffered=body.slot if body.reason == "buffered" else schedule.buffered,
            )
        case ScheduleRunSeen():
            return _replace(
                schedule,
                running=tuple(r for r in schedule.running if r != body.run_submission_id),
            )
    raise TypeError(f"not a schedule event: {type(body).__name__}")


def _replace(schedule: ScheduleState, **changes: Any) -> ScheduleState:
    return replace(schedule, **changes)
