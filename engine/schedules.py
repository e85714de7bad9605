"""Schedules from the client's side: a schedule's spec from what a user writes, its commands.

A schedule submits the same jobs at every slot of a cron expression (read in a time zone) or
of an interval; the scheduler decides each slot once (:mod:`engine.lifecycle.schedules`). Here
the user's words become a :class:`~engine.lifecycle.records.ScheduleSpec`, checked with the
scheduler's own rules before anything is sent::

    spec = schedule_spec(cron="30 2 * * 1-5", timezone="Europe/Berlin", overlap="buffer_one")
    spec = schedule_spec(every="15m", catchup_window="1h")
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from engine.client import new_id
from engine.clock import now_ms
from engine.errors import JoblogError
from engine.lifecycle.records import (
    ChangeSchedule,
    CreateSchedule,
    JobSpec,
    ScheduleAction,
    ScheduleOverlap,
    ScheduleSpec,
    schedule_submission_id,
)
from engine.lifecycle.schedules import MAX_SCHEDULE_ID, spec_problem
from engine.lifecycle.validation import ID_PATTERN


class InvalidSchedule(JoblogError, ValueError):
    """A schedule's description is malformed (checked before anything is sent)."""


_UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d|w)\s*)+$")

Duration = float | int | str | timedelta


def parse_duration(value: Duration, *, what: str = "duration") -> int:
    """A duration in ms: seconds (a number), a :class:`~datetime.timedelta`, or a text such
    as ``90s``, ``15m``, ``1h30m``, ``2d``, ``500ms``.

    Raises:
        InvalidSchedule: not one of those, or negative.
    """
    if isinstance(value, timedelta):
        ms = round(value.total_seconds() * 1000)
    elif isinstance(value, str):
        if not _WHOLE.match(value):
            raise InvalidSchedule(f"{what} {value!r} is not a duration such as 90s, 15m, 1h30m")
        ms = round(sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value)))
    else:
        ms = round(float(value) * 1000)
    if ms < 0:
        raise InvalidSchedule(f"{what} {value!r} is negative")
    return ms


def _moment(value: datetime | float | str | None, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidSchedule(f"{what} {value!r} is not an ISO 8601 time") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidSchedule(f"{what} must name its time zone (e.g. 2026-12-24T00:00Z)")
        return round(value.timestamp() * 1000)
    return round(float(value) * 1000)


def schedule_spec(
    *,
    cron: str | None = None,
    every: Duration | None = None,
    timezone: str = "UTC",
    offset: Duration | None = None,
    overlap: ScheduleOverlap | str = ScheduleOverlap.SKIP,
    catchup_window: Duration = 60,
    start_at: datetime | float | str | None = None,
    end_at: datetime | float | str | None = None,
) -> ScheduleSpec:
    """A schedule's spec, checked as the scheduler checks it.

    Args:
        cron: five cron fields (``"0 2 * * *"``, ``"*/15 9-17 * * 1-5"``), read in
            ``timezone``; or
        every: an interval (see :func:`parse_duration`; at least 1 s). Slots are the
            multiples of it since the epoch, plus ``offset``: ``every="1d", offset="2h"``
            fires at 02:00 UTC.
        timezone: an IANA time zone for ``cron`` (``"Europe/Berlin"``; DST is followed).
        overlap: what a slot does while the previous run goes on: ``skip`` it, ``buffer_one``
            (one waits and fires when the run ends), ``allow_all``.
        catchup_window: after the scheduler was down, missed slots at most this old fire
            late; older ones are skipped (as ``ScheduleSkipped`` events). 0: none fires.
        start_at / end_at: no slot before / after these times (aware datetimes, ISO 8601 or
            seconds since the epoch).

    Raises:
        InvalidSchedule: what is wrong, in words.
    """
    if (cron is None) == (every is None):
        raise InvalidSchedule("a schedule needs exactly one of cron and every")
    try:
        overlap = ScheduleOverlap(overlap)
    except ValueError:
        choices = ", ".join(ScheduleOverlap)
        raise InvalidSchedule(f"overlap must be one of {choices}, not {overlap!r}") from None
    spec = ScheduleSpec(
        cron=(cron or "").strip(),
        timezone=timezone,
        interval_ms=0 if every is None else parse_duration(every, what="every"),
        offset_ms=0 if offset is None else parse_duration(offset, what="offset"),
        overlap=overlap,
        catchup_window_ms=parse_duration(catchup_window, what="catchup_window"),
        start_at=_moment(start_at, "start_at"),
        end_at=_moment(end_at, "end_at"),
    )
    problem = spec_problem(spec)
    if problem is not None:
        raise InvalidSchedule(problem)
    return spec


def check_schedule_id(schedule_id: str) -> str:
    """``schedule_id`` if it may name a schedule.

    Raises:
        InvalidSchedule: it may not.
    """
    if not ID_PATTERN.match(schedule_id) or len(schedule_id) > MAX_SCHEDULE_ID:
        raise InvalidSchedule(
            f"schedule id {schedule_id!r} must be 1-{MAX_SCHEDULE_ID} letters, digits and "
            "._:@+=- starting with a letter or digit"
        )
    return schedule_id


def create_schedule_command(
    schedule_id: str,
    spec: ScheduleSpec,
    jobs: Sequence[JobSpec],
    *,
    labels: Iterable[tuple[str, str]] = (),
    paused: bool = False,
    requested_by: str = "",
) -> CreateSchedule:
    """The command that creates a schedule, with a fresh command id."""
    if not jobs:
        raise InvalidSchedule("a schedule needs at least one job to submit")
    return CreateSchedule(
        command_id=new_id("c-"),
        submission_id=schedule_submission_id(check_schedule_id(schedule_id)),
        schedule_id=schedule_id,
        spec=spec,
        jobs=tuple(jobs),
        labels=tuple(labels),
        paused=paused,
        requested_by=requested_by,
        issued_at=now_ms(),
    )


def change_schedule_command(
    schedule_id: str, action: ScheduleAction, *, requested_by: str = ""
) -> ChangeSchedule:
    """The command that pauses, resumes, triggers or deletes a schedule."""
    return ChangeSchedule(
        command_id=new_id("c-"),
        submission_id=schedule_submission_id(check_schedule_id(schedule_id)),
        action=action,
        requested_by=requested_by,
        issued_at=now_ms(),
    )
