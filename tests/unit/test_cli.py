"""The ``joblog`` command line without a broker: parsing, usage errors, rendering."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from engine import cli
from engine.lifecycle.records import (
    Event,
    EventBody,
    FailureReason,
    JobCompleted,
    JobFailed,
    JobProgressed,
    JobSpec,
    JobStarted,
    JobSubmitted,
    SubmissionCompleted,
    SubmissionStatus,
)
from engine.watch import SubmissionView

ROOT = Path(__file__).resolve().parents[2]


def ev(seq: int, job_id: str, body: EventBody, at: int = 0) -> Event:
    return Event(f"s:{seq}", "s-demo", job_id, seq, 1_700_000_000_000 + at, body)


def sample_view() -> SubmissionView:
    view = SubmissionView("s-demo")
    for event in [
        ev(1, "render", JobSubmitted(JobSpec(job_id="render", task="render"))),
        ev(2, "render", JobStarted(1, "w1"), 100),
        ev(3, "render", JobProgressed(1, 30.0, 120.0, "frame 30"), 200),
        ev(4, "encode", JobSubmitted(JobSpec(job_id="encode", command=("ffmpeg", "-i", "x")))),
        ev(5, "encode", JobStarted(1, "w2"), 100),
        ev(6, "encode", JobFailed(1, FailureReason.EXIT_CODE, "exit_code", "", exit_code=1), 900),
        ev(7, "render", JobCompleted(1, result='"out.exr"'), 2000),
        ev(8, "", SubmissionCompleted(SubmissionStatus.FAILED, (("COMPLETED", 1), ("FAILED", 1)))),
    ]:
        view.apply(event)
    return view


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in [*cli.CLIENT_COMMANDS, *cli.DELEGATED]:
        assert f"  {name} " in out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["frobnicate"]) == cli.EXIT_USAGE
    assert "unknown command" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["submit"],
        ["submit", "--task", "t", "--file", "x.yaml"],
        ["submit", "--task", "t", "--kwarg", "novalue"],
        ["submit", "--arg", "1", "--", "echo", "hi"],
        ["retry", "s-1"],
        ["cancel"],
        ["cancel", "s-1", "--mode", "explode"],
        ["topics"],
        ["--topic-prefix"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == cli.EXIT_USAGE
    assert capsys.readouterr().err


def test_submit_of_an_unreadable_file_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["submit", "--file", str(tmp_path / "missing.yaml")]) == cli.EXIT_FAILED
    assert "cannot read submission file" in capsys.readouterr().err


def test_values_parse_as_json_else_text() -> None:
    assert cli.parse_value("21") == 21
    assert cli.parse_value("[1, 2]") == [1, 2]
    assert cli.parse_value("true") is True
    assert cli.parse_value("hello") == "hello"
    assert cli._pairs(["a=1", "b=x=y"], "--kwarg", values=True) == {"a": 1, "b": "x=y"}


def test_submit_parser_keeps_the_command_after_dashes() -> None:
    parser = cli._parser("submit")
    args = parser.parse_args(["--queue", "io", "--", "sh", "-c", "echo --flag"])
    assert args.queue == "io"
    assert [part for part in args.cmd if part != "--"] == ["sh", "-c", "echo --flag"]


def test_global_options_set_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBLOG_TOPIC_PREFIX", raising=False)
    monkeypatch.delenv("JOBLOG_BOOTSTRAP_SERVERS", raising=False)
    rest = cli._global_options(["--topic-prefix", "t.", "--bootstrap-servers=h:1", "jobs"])
    assert rest == ["jobs"]
    assert os.environ["JOBLOG_TOPIC_PREFIX"] == "t."
    assert os.environ["JOBLOG_BOOTSTRAP_SERVERS"] == "h:1"


def test_notifier_tools(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["notifier", "secret"]) == 0
    assert capsys.readouterr().out.startswith("whsec_")
    assert cli.main(["notifier", "variables"]) == 0
    assert "${JOB_ID}" in capsys.readouterr().out
    # without --subscriptions it delivers declared notifications only; bad numbers are usage
    assert cli.main(["notifier", "--max-attempts", "0"]) == cli.EXIT_USAGE


def test_rendering_a_submission() -> None:
    console = Console(record=True, width=140, color_system=None)
    view = sample_view()
    console.print(cli.render_submission(view))
    console.print(cli.summary_table(view))
    console.print(cli.outcome_line(view))
    text = console.export_text()
    assert "s-demo" in text and "1/2 done" not in text  # both ended: 2/2
    assert "2/2 done" in text
    assert "exit_code" in text and '"out.exr"' in text
    assert "FAILED" in text


def test_help_is_fast_and_works_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "engine.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert "client commands" in result.stdout
    heavy = [
        m for m in ("confluent_kafka", "duckdb", "pyarrow", "rich") if f" {m}\n" in result.stderr
    ]
    assert heavy == []
