"""Schedules from the client's side, without a broker: the user's words as a spec, the
errors said before anything is sent, the CLI's usage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine import cli
from engine.lifecycle.records import ScheduleAction, ScheduleOverlap, schedule_submission_id
from engine.schedules import (
    InvalidSchedule,
    change_schedule_command,
    create_schedule_command,
    parse_duration,
    schedule_spec,
)
from tests.unit.lifecycle_dsl import job


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (90, 90_000),
        (1.5, 1_500),
        ("500ms", 500),
        ("90s", 90_000),
        ("15m", 900_000),
        ("1h30m", 5_400_000),
        ("2d", 172_800_000),
        ("1w", 604_800_000),
        (timedelta(minutes=5), 300_000),
    ],
)
def test_durations_read_as_people_write_them(value: float | str | timedelta, ms: int) -> None:
    assert parse_duration(value) == ms


@pytest.mark.parametrize("value", ["5 minutes", "m", "", "-5m", -1])
def test_a_duration_that_is_not_one_is_refused(value: float | str) -> None:
    with pytest.raises(InvalidSchedule):
        parse_duration(value)


def test_a_spec_from_cron_or_every() -> None:
    nightly = schedule_spec(cron="30 2 * * 1-5", timezone="Europe/Berlin", overlap="buffer_one")
    assert nightly.cron == "30 2 * * 1-5" and nightly.timezone == "Europe/Berlin"
    assert nightly.overlap is ScheduleOverlap.BUFFER_ONE and nightly.interval_ms == 0
    every = schedule_spec(
        every="15m", offset="5m", catchup_window="1h", end_at="2027-01-01T00:00:00Z"
    )
    assert (every.interval_ms, every.offset_ms, every.catchup_window_ms) == (
        900_000,
        300_000,
        3_600_000,
    )
    assert every.end_at == int(datetime(2027, 1, 1, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({}, "exactly one of cron and every"),
        ({"cron": "* * * * *", "every": "1m"}, "exactly one"),
        ({"cron": "99 * * * *"}, "cron expression"),
        ({"every": "1m", "timezone": "Nowhere/Land"}, "unknown time zone"),
        ({"every": "100ms"}, "at least 1000 ms"),
        ({"every": "1m", "overlap": "sometimes"}, "overlap must be one of"),
        ({"every": "1m", "start_at": datetime(2027, 1, 1)}, "time zone"),
        ({"every": "1m", "end_at": "tomorrow"}, "ISO 8601"),
    ],
)
def test_a_bad_spec_is_refused_before_anything_is_sent(
    options: dict[str, object], says: str
) -> None:
    with pytest.raises(InvalidSchedule, match=says):
        schedule_spec(**options)  # type: ignore[arg-type]


def test_the_commands_name_the_schedules_key() -> None:
    spec = schedule_spec(every="1h")
    created = create_schedule_command("nightly", spec, [job("a")], labels=[("team", "data")])
    assert created.submission_id == schedule_submission_id("nightly") == "#schedule-nightly"
    assert created.labels == (("team", "data"),) and created.command_id.startswith("c-")
    changed = change_schedule_command("nightly", ScheduleAction.TRIGGER, requested_by="bob")
    assert changed.submission_id == "#schedule-nightly" and changed.requested_by == "bob"
    with pytest.raises(InvalidSchedule, match="schedule id"):
        change_schedule_command("not ok", ScheduleAction.PAUSE)
    with pytest.raises(InvalidSchedule, match="at least one job"):
        create_schedule_command("nightly", spec, [])


@pytest.mark.parametrize(
    "argv",
    [
        ["schedules"],
        ["schedules", "create", "nightly", "--every", "1h"],  # nothing to run
        ["schedules", "create", "nightly", "--task", "t"],  # no cron, no every
        ["schedules", "create", "nightly", "--task", "t", "--cron", "* * * * *", "--every", "1m"],
        ["schedules", "create", "nightly", "--every", "1h", "--task", "t", "--overlap", "x"],
        ["schedules", "pause"],
    ],
)
def test_schedule_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == cli.EXIT_USAGE
    assert capsys.readouterr().err


def test_a_bad_cron_expression_is_said_before_connecting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["schedules", "create", "nightly", "--cron", "61 * * * *", "--task", "t"]
    assert cli.main(argv) == cli.EXIT_FAILED
    assert "cron expression" in capsys.readouterr().err


def test_a_runs_command_goes_after_dashes(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake(args: object) -> int:
        seen.update(vars(args))
        return cli.EXIT_OK

    monkeypatch.setattr(cli, "cmd_schedules_create", fake)
    argv = ["schedules", "create", "n", "--every", "1h", "--", "sh", "-c", "echo --flag"]
    assert cli.main(argv) == cli.EXIT_OK
    assert seen["cmd"] == ["sh", "-c", "echo --flag"] and seen["every"] == "1h"
