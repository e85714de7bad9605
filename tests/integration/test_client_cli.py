"""The ``joblog`` client commands against a real broker, scheduler, workers and projector."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import cli
from engine.admin import ensure_topics
from engine.config import Settings
from tests.integration.conftest import KafkaUnderTest
from tests.integration.test_client import Engine, engine_running


@pytest.fixture(scope="module")
def cli_engine(
    kafka_cluster: KafkaUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    settings = Settings.from_env(
        bootstrap_servers=kafka_cluster.bootstrap_servers,
        topic_prefix=f"cli{uuid.uuid4().hex[:8]}.",
        partitions=2,
    )
    ensure_topics(settings)
    db_path = tmp_path_factory.mktemp("cli") / "joblog.duckdb"
    with engine_running(settings, workers=1, db_path=db_path) as running:
        yield running


@pytest.fixture
def joblog(
    cli_engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Any:
    monkeypatch.setenv("JOBLOG_BOOTSTRAP_SERVERS", cli_engine.settings.bootstrap_servers)
    monkeypatch.setenv("JOBLOG_TOPIC_PREFIX", cli_engine.settings.topic_prefix)
    monkeypatch.setenv("JOBLOG_PROJECTION_DB", str(cli_engine.db_path))
    monkeypatch.setenv("COLUMNS", "160")

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_submit_watch_status_history(joblog: Any) -> None:
    code, out, _ = joblog("submit", "--task", "double", "--arg", "21", "--json")
    assert code == 0
    submitted = json.loads(out)
    sid = submitted["submission_id"]
    assert submitted["jobs"] == ["double"]

    code, out, _ = joblog("watch", sid, "--timeout", "60")
    assert code == 0, out
    assert "COMPLETED" in out and "42" in out

    code, out, _ = joblog("watch", sid, "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert lines[0]["event"] == "SubmissionAccepted" and lines[-1]["event"] == (
        "SubmissionCompleted"
    )
    assert not any(line["live"] for line in lines)  # all of it was history

    code, out, _ = joblog("status", f"{sid}/double", "--json")
    assert code == 0
    job = json.loads(out)
    assert job["status"] == "COMPLETED" and job["result"] == "42"

    code, out, _ = joblog("status", sid)
    assert code == 0 and "COMPLETED" in out

    code, out, _ = joblog("history", f"{sid}/double", "--json")
    assert code == 0
    history = json.loads(out)
    assert [entry["status"] for entry in history][:2] == ["SUBMITTED", "PENDING"]
    assert history[-1]["status"] == "COMPLETED"
    assert history[-1]["description"].startswith("Job completed")

    code, out, _ = joblog("history", f"{sid}/double")
    assert code == 0 and "Job started running" in out


def test_a_failing_command_exits_1(joblog: Any) -> None:
    code, out, _ = joblog("submit", "--wait", "--json", "--", "sh", "-c", "echo oops; exit 3")
    assert code == 1
    result = json.loads(out)
    (job,) = result["jobs"]
    assert result["outcome"] == "FAILED" and job["exit_code"] == 3


def test_submit_a_graph_from_a_file(joblog: Any, tmp_path: Path) -> None:
    graph = tmp_path / "graph.yaml"
    graph.write_text(
        """
labels: {team: render}
jobs:
  - id: a
    task: double
    args: [2]
  - id: b
    task: double
    kwargs: {nb: 3}
    depends_on: [a]
  - id: shot
    task: print_it
    children:
      - {id: f1, task: render, args: [1], kwargs: {steps: 2, pause: 0.05}}
      - {id: f2, task: render, args: [2], kwargs: {steps: 2, pause: 0.05}}
""",
        encoding="utf-8",
    )
    code, out, _ = joblog("submit", "--file", str(graph), "--wait", "--json")
    assert code == 0, out
    result = json.loads(out)
    assert {job["job_id"]: job["status"] for job in result["jobs"]} == dict.fromkeys(
        ("a", "b", "f1", "f2", "shot"), "COMPLETED"
    )


def test_cancel_then_cancel_again_is_rejected(joblog: Any) -> None:
    code, out, _ = joblog(
        "submit", "--task", "double", "--arg", "1", "--kwarg", "seconds=30", "--json"
    )
    sid = json.loads(out)["submission_id"]
    code, out, err = joblog("cancel", f"{sid}/double", "--reason", "no longer needed", "--json")
    assert code == 0, err
    assert json.loads(out)["decision"] == "done"
    code, out, _ = joblog("watch", sid, "--timeout", "60")
    assert code == 1 and "CANCELED" in out
    code, out, err = joblog("cancel", sid, "double")
    assert code == 1
    assert "rejected" in err and "already_terminal" in err


def test_retry_of_a_job_not_waiting_is_rejected(joblog: Any) -> None:
    code, out, _ = joblog("submit", "--task", "double", "--arg", "1", "--wait", "--json")
    sid = json.loads(out)["submission_id"]
    code, out, err = joblog("retry", f"{sid}/double")
    assert code == 1 and "rejected" in err and "not waiting for a retry" in err


def test_delete_and_jobs_from_the_projection(joblog: Any) -> None:
    code, out, _ = joblog("submit", "--task", "double", "--arg", "5", "--wait", "--json")
    sid = json.loads(out)["submission_id"]
    deadline = time.monotonic() + 30
    while True:
        code, out, _ = joblog("jobs", "--submission", sid, "--json")
        rows = json.loads(out) if code == 0 else []
        if rows and rows[0]["status"] == "COMPLETED":
            break
        assert time.monotonic() < deadline, "the projection did not catch up"
        time.sleep(0.2)
    assert rows[0]["result"] == "10" and rows[0]["ref"] == f"{sid}/double"

    code, out, _ = joblog("jobs", "--status", "COMPLETED", "--task", "double")
    assert code == 0 and sid[:12] in out

    code, out, err = joblog("delete", sid, "--json")
    assert code == 0, err
    assert json.loads(out)["decision"] == "done"


def test_status_of_an_unknown_submission_exits_1(joblog: Any) -> None:
    code, _, err = joblog("status", f"s-{uuid.uuid4().hex}")
    assert code == 1 and "no submission" in err


def test_topics(joblog: Any, cli_engine: Engine) -> None:
    prefix = cli_engine.settings.topic_prefix
    code, out, _ = joblog("topics", "create", "--queue", "default", "--queue", "gpu")
    assert code == 0 and f"{prefix}dispatch.gpu" in out
    code, out, _ = joblog("topics", "list", "--json")
    listed = {row["topic"]: row["partitions"] for row in json.loads(out)}
    assert listed[f"{prefix}events"] == 2 and listed[f"{prefix}control"] == 1
    code, out, _ = joblog("topics", "describe", f"{prefix}events", f"{prefix}state", "--json")
    described = {row["topic"]: row for row in json.loads(out)}
    assert described[f"{prefix}events"]["config"]["retention.ms"] == "-1"
    assert described[f"{prefix}state"]["config"]["cleanup.policy"] == "compact"
