"""``joblog worker`` argument handling and log format, without a broker."""

from __future__ import annotations

import json
import logging

import pytest

from engine.logs import JsonLogFormatter
from engine.worker.cli import build_parser, worker_main


@pytest.mark.parametrize(
    "argv",
    [["--concurrency=0"], ["--tasks=no_such_module_here"], ["--tasks=json"], ["--bogus"]],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert worker_main(argv) == 2
    assert "joblog worker" in capsys.readouterr().err


def test_defaults_and_repeated_tasks() -> None:
    args = build_parser().parse_args(["--tasks", "a.b,c", "--tasks", "d"])
    assert args.queue == "default"
    assert args.concurrency == 4
    assert args.tasks == ["a.b,c", "d"]
    assert args.drain_timeout == 30.0


def test_json_log_lines_carry_the_event_fields() -> None:
    record = logging.LogRecord("joblog.worker", logging.INFO, __file__, 1, "x", (), None)
    record.event = "attempt claimed"
    record.fields = {"job": "j1", "attempt": 2, "error": ValueError("boom")}
    line = json.loads(JsonLogFormatter().format(record))
    assert line["event"] == "attempt claimed"
    assert (line["job"], line["attempt"], line["error"]) == ("j1", 2, "boom")
    assert line["level"] == "INFO"


def test_isolation_and_memory_limit_options() -> None:
    defaults = build_parser().parse_args([])
    assert (defaults.isolation, defaults.task_memory_limit) == ("pool", 0)
    assert defaults.max_attempts_per_child == 1000
    args = build_parser().parse_args(["--isolation", "thread", "--task-memory-limit", "512M"])
    assert (args.isolation, args.task_memory_limit) == ("thread", 512 * 1024 * 1024)
    fresh = build_parser().parse_args(
        ["--isolation", "process-per-attempt", "--max-attempts-per-child", "50"]
    )
    assert (fresh.isolation, fresh.max_attempts_per_child) == ("process-per-attempt", 50)


def test_a_negative_max_attempts_per_child_is_bad_usage() -> None:
    assert worker_main(["--max-attempts-per-child", "-1"]) == 2
