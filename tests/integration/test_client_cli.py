"""The ``joblog`` client commands against a real broker, scheduler, workers and projector."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
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

ROOT = Path(__file__).resolve().parents[2]


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


def test_submit_waits_for_the_decision(joblog: Any) -> None:
    code, out, err = joblog("submit", "--task", "double", "--arg", "2", "--json")
    assert code == 0, err
    assert json.loads(out)["decision"] == "accepted"
    code, out, err = joblog("submit", "--no-wait", "--task", "double", "--arg", "2", "--json")
    assert code == 0 and json.loads(out)["decision"] == "sent"


def test_a_rejected_submit_exits_1_with_the_reason(joblog: Any, tmp_path: Path) -> None:
    cycle = tmp_path / "cycle.yaml"
    cycle.write_text(
        "jobs:\n"
        "  - {id: a, task: double, args: [1], depends_on: [b]}\n"
        "  - {id: b, task: double, args: [1], depends_on: [a]}\n",
        encoding="utf-8",
    )
    code, out, err = joblog("submit", "--file", str(cycle))
    assert code == 1 and out == ""
    assert "rejected (cycle)" in err and len(err.strip().splitlines()) == 1

    missing = tmp_path / "missing.yaml"
    missing.write_text(
        "jobs:\n  - {id: a, task: double, args: [1], depends_on: [nowhere]}\n", encoding="utf-8"
    )
    code, out, err = joblog("submit", "--file", str(missing), "--json")
    assert code == 1
    result = json.loads(out)
    assert result["decision"] == "rejected" and result["code"] == "unknown_dependency"
    assert "nowhere" in result["reason"]


def test_an_oversized_submit_is_one_line(joblog: Any, tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"jobs": [{"id": "x", "task": "double", "args": ["a" * 5_200_000]}]}))
    code, out, err = joblog("submit", "--file", str(big))
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [
        "joblog submit: job 'x' arguments are 5.2 MB, the limit is 1 MiB "
        "(JOBLOG_MAX_ARGS_BYTES); pass a reference (a path or URL) to large data instead"
    ]


def test_delete_of_a_running_job_is_rejected(joblog: Any) -> None:
    code, out, _ = joblog(
        "submit", "--task", "double", "--arg", "1", "--kwarg", "seconds=30", "--json"
    )
    sid = json.loads(out)["submission_id"]
    code, _, err = joblog("delete", sid)
    assert code == 1 and "rejected" in err and "not_terminal" in err
    code, _, err = joblog("cancel", sid, "--wait-timeout", "30")
    assert code == 0, err


def test_watch_of_an_unknown_id_fails_fast(joblog: Any) -> None:
    unknown = f"s-{uuid.uuid4().hex}"
    for argv in (["watch", unknown], ["watch", unknown, "--json"], ["history", unknown]):
        code, _, err = joblog(*argv)
        assert code == 1 and f"no submission {unknown}" in err, (argv, err)


def test_watch_from_the_live_end_of_a_finished_submission(joblog: Any) -> None:
    code, out, _ = joblog("submit", "--task", "double", "--arg", "3", "--wait", "--json")
    sid = json.loads(out)["submission_id"]
    code, out, _ = joblog("watch", sid, "--no-history", "--json", "--timeout", "30")
    assert code == 0 and out == ""


def test_an_unreachable_cluster_is_one_line_within_seconds() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "JOBLOG_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}
    env.pop("JOBLOG_LOG_LEVEL", None)
    for argv in (["status", "s-1"], ["submit", "--task", "double"], ["topics", "list"]):
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "engine.cli", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            cwd=ROOT,
        )
        elapsed = time.monotonic() - started
        assert result.returncode == 1, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert f"cannot reach Kafka at 127.0.0.1:{port} (JOBLOG_BOOTSTRAP_SERVERS)" in lines[0]
        assert elapsed < 10, (argv, elapsed)
