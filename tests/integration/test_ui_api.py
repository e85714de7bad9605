"""joblog's REST API end to end: a real broker, a scheduler, two workers, a projector and
``joblog ui``'s server, all in this process, spoken to over HTTP like any other client.

Submissions go in through the API and are seen through it (from the projection), live events
arrive as server-sent events from the events topic, a cancel through the API abandons the
dependents, every request needs the token, and bad input is a 4xx, never a 500.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from engine.admin import ensure_topics
from engine.config import Settings
from engine.ui.config import UiConfig
from engine.ui.server import UiServer
from tests.integration.conftest import KafkaUnderTest
from tests.integration.test_client import engine_running

T = TypeVar("T")
TOKEN = "ui-test-token-" + uuid.uuid4().hex


class Api:
    """A small HTTP client of the API (urllib; every call has a deadline)."""

    def __init__(self, url: str, token: str | None = TOKEN) -> None:
        self.url = url
        self.token = token

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        token: str | None = "",
        timeout: float = 60.0,
    ) -> tuple[int, Any]:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        given = self.token if token == "" else token
        if given:
            headers["Authorization"] = f"Bearer {given}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            status = exc.code
        return status, json.loads(payload) if payload else None

    def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return self.call("GET", path, **kwargs)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.call(method, path, body)
        assert 200 <= status < 300, (status, answer)
        return answer

    def stream(self, path: str, *, timeout: float = 90.0) -> Iterator[tuple[str, Any]]:
        """The server-sent events of ``path`` as ``(event, data)``, keep-alives skipped."""
        sep = "&" if "?" in path else "?"
        request = urllib.request.Request(f"{self.url}{path}{sep}access_token={self.token}")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            event, data = "", ""
            for line in response:
                text = line.decode().rstrip("\n")
                if text.startswith("event: "):
                    event = text[7:]
                elif text.startswith("data: "):
                    data = text[6:]
                elif text == "" and event:
                    yield event, json.loads(data)
                    event, data = "", ""


def eventually(check: Callable[[], T | None], what: str, timeout: float = 90.0) -> T:
    """Polls ``check`` until it returns something truthy (the projection trails the log)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def api(kafka_cluster: KafkaUnderTest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    settings = Settings.from_env(
        bootstrap_servers=kafka_cluster.bootstrap_servers,
        topic_prefix=f"ui{uuid.uuid4().hex[:8]}.",
        partitions=3,
    )
    ensure_topics(settings)
    db_path: Path = tmp_path_factory.mktemp("ui") / "joblog.duckdb"
    with engine_running(settings, db_path=db_path):
        config = UiConfig.from_env({}, port=0, token=TOKEN, db_path=db_path)
        with UiServer(config, settings) as server:
            yield Api(server.url)


def job_status(api: Api, sid: str, jid: str) -> str | None:
    status, answer = api.get(f"/api/v1/jobs/{sid}/{jid}/status")
    return str(answer["status"]) if status == 200 else None


def submit(api: Api, *jobs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    status, answer = api.call("POST", "/api/v1/submissions", {"jobs": list(jobs), **extra})
    assert status == 201, answer
    assert answer["accepted"] is True and answer["event"]["event"] == "SubmissionAccepted"
    return dict(answer)


# --------------------------------------------------------------------------- tests


def test_the_openapi_document_is_served_and_every_call_needs_the_token(api: Api) -> None:
    status, spec = api.get("/api/v1/openapi.json", token=None)
    assert status == 200 and spec["openapi"].startswith("3.")
    assert "/api/v1/jobs/{submission_id}/{job_id}" in spec["paths"]
    assert {"get", "delete"} <= set(spec["paths"]["/api/v1/jobs/{submission_id}/{job_id}"])
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path in ("/api/v1/jobs", "/api/v1/workers", "/api/v1/submissions/s-x/events"):
        assert api.get(path, token=None)[0] == 401
        status, answer = api.get(path, token="not-the-token")
        assert status == 401 and answer["code"] == "unauthorized"
    assert api.call("POST", "/api/v1/submissions", {"jobs": []}, token=None)[0] == 401
    request = urllib.request.Request(api.url + "/metrics")
    with urllib.request.urlopen(request, timeout=30) as response:
        metrics = response.read().decode()
    assert 'joblog_ui_requests_total{method="GET",route="/api/v1/jobs",status="401"}' in metrics
    assert "joblog_ui_open_streams" in metrics


def test_a_submission_through_the_api_is_seen_completed_through_it(api: Api) -> None:
    answer = submit(
        api,
        {"id": "twice", "task": "double", "args": [21]},
        {"id": "show", "task": "print_it", "kwargs": {"value": "x"}, "depends_on": ["twice"]},
        labels={"project": "ui-test"},
    )
    sid = answer["submission_id"]
    assert answer["jobs"] == ["twice", "show"]
    eventually(lambda: job_status(api, sid, "show") == "COMPLETED", "show COMPLETED")
    job = api.ok("GET", f"/api/v1/jobs/{sid}/twice")
    assert job["status"] == "COMPLETED" and job["result"] == "42"
    assert [a["outcome"] for a in job["attempt_rows"]] == ["COMPLETED"]
    history = api.ok("GET", f"/api/v1/jobs/{sid}/twice/history")["history"]
    assert history[0]["description"].startswith("Job submitted: task double")
    assert history[-1]["status"] == "COMPLETED"
    eventually(
        lambda: api.ok("GET", f"/api/v1/submissions/{sid}/status")["outcome"] == "COMPLETED",
        "the submission's outcome",
    )
    shown = api.ok("GET", f"/api/v1/submissions/{sid}")
    assert {row["job_id"] for row in shown["job_rows"]} == {"twice", "show"}
    assert shown["labels"] == {"project": "ui-test"}
    listed = api.ok(
        "GET", f"/api/v1/jobs?submission_id={sid}&status=completed&label=project=ui-test"
    )
    assert listed["total"] == 2 and {j["job_id"] for j in listed["jobs"]} == {"twice", "show"}
    counts = api.ok("GET", f"/api/v1/jobs/counts?submission_id={sid}")["counts"]
    assert counts["COMPLETED"] == 2 and counts["FAILED"] == 0


def test_a_shell_command_s_output_is_served(api: Api) -> None:
    sid = submit(api, {"id": "say", "command": ["sh", "-c", "echo hello from ui"]})["submission_id"]
    eventually(lambda: job_status(api, sid, "say") == "COMPLETED", "say COMPLETED")
    output = eventually(
        lambda: api.ok("GET", f"/api/v1/jobs/{sid}/say/output?stream=stdout")["outputs"],
        "the command's output",
    )
    assert output[0]["text"].strip() == "hello from ui"


def test_a_submission_s_events_arrive_live_as_server_sent_events(api: Api) -> None:
    sid = submit(api, {"id": "frame", "task": "render", "args": [1], "kwargs": {"steps": 8}})[
        "submission_id"
    ]
    seen: list[tuple[str, Any]] = []
    for kind, data in api.stream(f"/api/v1/submissions/{sid}/events"):
        seen.append((kind, data))
        if kind == "end":
            break
    kinds = [kind for kind, _ in seen]
    assert kinds.count("live") == 1 and kinds[-1] == "end"
    events = [data for kind, data in seen if kind == "event"]
    names = [event["event"] for event in events]
    assert names[0] == "SubmissionAccepted" and "JobProgressed" in names
    after_live = kinds[kinds.index("live") + 1 :]
    assert "event" in after_live, "no event arrived after the history was read"
    completed = next(event for event in events if event["event"] == "JobCompleted")
    assert completed["job"]["status"] == "COMPLETED" and completed["description"]
    assert seen[-1][1]["outcome"] == "COMPLETED"


def test_the_dashboard_stream_carries_every_job_s_status_changes(api: Api) -> None:
    stream = api.stream("/api/v1/events")
    assert next(stream)[0] == "live"
    sid = submit(api, {"id": "one", "task": "double", "args": [1]})["submission_id"]
    statuses = []
    for kind, data in stream:
        if kind == "change" and data["submission_id"] == sid and data["status"]:
            statuses.append(data["status"])
            if data["status"] == "COMPLETED":
                assert data["previous"] == "RUNNING"
                break
    stream.close()
    assert statuses[0] == "SUBMITTED" and statuses[-1] == "COMPLETED"


def test_a_cancel_through_the_api_abandons_the_dependents(api: Api) -> None:
    sid = submit(
        api,
        {"id": "slow", "task": "double", "args": [2], "kwargs": {"seconds": 120}},
        {"id": "after", "task": "print_it", "depends_on": ["slow"]},
        {"id": "last", "task": "print_it", "depends_on": ["after"]},
    )["submission_id"]
    eventually(lambda: job_status(api, sid, "slow") == "RUNNING", "slow RUNNING")
    status, refused = api.call("DELETE", f"/api/v1/jobs/{sid}/slow")
    assert status == 409 and refused["decided"] and refused["code"] == "not_terminal", refused
    status, decision = api.call(
        "POST", f"/api/v1/jobs/{sid}/slow/cancel", {"mode": "kill", "reason": "from the api"}
    )
    assert status == 200 and decision["accepted"] is True, decision
    assert decision["command"] == "CancelJobs" and decision["event"]["job_id"] == "slow"
    eventually(lambda: job_status(api, sid, "last") == "ABANDONED", "last ABANDONED")
    assert job_status(api, sid, "slow") == "CANCELED"
    assert job_status(api, sid, "after") == "ABANDONED"
    status, again = api.call("POST", f"/api/v1/jobs/{sid}/slow/cancel", {})
    assert status == 409 and again["accepted"] is False and again["code"] == "already_terminal"
    status, deleted = api.call("DELETE", f"/api/v1/submissions/{sid}")
    assert status == 200 and deleted["accepted"] is True


def test_a_rejected_submission_is_a_409_with_the_scheduler_s_reason(api: Api) -> None:
    status, answer = api.call(
        "POST",
        "/api/v1/submissions",
        {
            "jobs": [
                {"id": "a", "task": "double", "depends_on": ["b"]},
                {"id": "b", "task": "double", "depends_on": ["a"]},
            ]
        },
    )
    assert status == 409 and answer["code"] == "cycle" and "a" in answer["reason"]


def test_lists_are_sorted_and_key_paged(api: Api) -> None:
    keys = [f"j{n}" for n in range(7)]
    sid = submit(api, *({"id": key, "task": "double", "args": [n]} for n, key in enumerate(keys)))[
        "submission_id"
    ]
    eventually(
        lambda: api.ok("GET", f"/api/v1/jobs?submission_id={sid}&status=COMPLETED")["total"] == 7,
        "seven COMPLETED jobs",
    )
    seen: list[str] = []
    cursor = ""
    for _ in range(5):
        page = api.ok(
            "GET",
            f"/api/v1/jobs?submission_id={sid}&sort=job_id&order=asc&limit=3&cursor={cursor}",
        )
        assert page["total"] == 7
        seen += [job["job_id"] for job in page["jobs"]]
        if page["next"] is None:
            break
        cursor = page["next"]
    assert seen == keys
    newest = api.ok("GET", f"/api/v1/jobs?submission_id={sid}&sort=finished_at&limit=2")
    again = api.ok(
        "GET", f"/api/v1/jobs?submission_id={sid}&sort=finished_at&limit=5&cursor={newest['next']}"
    )
    ids = [job["job_id"] for job in newest["jobs"] + again["jobs"]]
    assert sorted(ids) == keys
    times = [job["finished_at"] for job in newest["jobs"] + again["jobs"]]
    assert times == sorted(times, reverse=True)
    subs = api.ok("GET", "/api/v1/submissions?limit=2&done=true")
    assert len(subs["submissions"]) == 2 and subs["next"]


def test_time_travel_shows_a_submission_as_it_was(api: Api) -> None:
    sid = submit(api, {"id": "t", "task": "double", "args": [3]})["submission_id"]
    eventually(lambda: job_status(api, sid, "t") == "COMPLETED", "t COMPLETED")
    history = api.ok("GET", f"/api/v1/submissions/{sid}/history")["history"]
    submitted = next(line["seq"] for line in history if line["event"] == "JobSubmitted")
    then = api.ok("GET", f"/api/v1/submissions/{sid}/as-of?seq={submitted}")
    assert then["as_of_seq"] == submitted and not then["done"]
    assert [job["status"] for job in then["jobs"]] == ["SUBMITTED"]
    now = api.ok("GET", f"/api/v1/submissions/{sid}/as-of?seq={then['last_seq']}")
    assert now["done"] and now["jobs"][0]["status"] == "COMPLETED"
    # events decided in one step share a time: "at" folds in every event up to it
    at_start = api.ok("GET", f"/api/v1/submissions/{sid}/as-of?at={then['first_time']}")
    assert at_start["as_of_time"] == then["first_time"] and not at_start["done"]
    before = api.ok("GET", f"/api/v1/submissions/{sid}/as-of?at={then['first_time'] - 1}")
    assert before["as_of_seq"] is None and before["jobs"] == []


def test_workers_analytics_and_the_sql_box(api: Api) -> None:
    workers = eventually(
        lambda: api.ok("GET", "/api/v1/workers")["workers"], "the workers' heartbeats"
    )
    assert {w["worker_id"] for w in workers} >= {"w1", "w2"}
    views = {v["view"] for v in api.ok("GET", "/api/v1/analytics")["views"]}
    assert {"status_counts", "task_durations", "worker_load"} <= views
    counts = api.ok("GET", "/api/v1/analytics/status_counts")
    assert counts["rows"] and all("status" in row for row in counts["rows"])
    answer = api.ok("POST", "/api/v1/sql", {"sql": "SELECT count(*) AS n FROM jobs"})
    assert answer["columns"] == ["n"] and answer["rows"][0]["n"] > 0
    big = api.ok("POST", "/api/v1/sql", {"sql": "SELECT * FROM range(5000);"})
    assert len(big["rows"]) == 1000 and big["truncated"] is True
    shown = api.ok("POST", "/api/v1/sql", {"sql": "DESCRIBE jobs"})
    assert any(row.get("column_name") == "status" for row in shown["rows"])


BAD_REQUESTS: list[tuple[str, str, Any]] = [
    ("GET", "/api/v1/jobs?status=DONE", None),
    ("GET", "/api/v1/jobs?limit=0", None),
    ("GET", "/api/v1/jobs?limit=100000", None),
    ("GET", "/api/v1/jobs?limit=ten", None),
    ("GET", "/api/v1/jobs?sort=password", None),
    ("GET", "/api/v1/jobs?order=sideways", None),
    ("GET", "/api/v1/jobs?cursor=bm90LWEtY3Vyc29y", None),
    ("GET", "/api/v1/jobs?cursor=%%%", None),
    ("GET", "/api/v1/jobs?submitted_after=yesterday", None),
    ("GET", "/api/v1/jobs?label=nokey", None),
    ("GET", "/api/v1/jobs?include_deleted=maybe", None),
    ("GET", "/api/v1/submissions?sort=nope", None),
    ("GET", "/api/v1/jobs/s-none/j-none", None),
    ("GET", "/api/v1/jobs/s-none/j-none/history", None),
    ("GET", "/api/v1/jobs/s-none/j-none/output?stream=stdin", None),
    ("GET", "/api/v1/submissions/s-none", None),
    ("GET", "/api/v1/submissions/s-none/as-of", None),
    ("GET", "/api/v1/submissions/s-none/as-of?seq=-1", None),
    ("GET", "/api/v1/analytics/passwords", None),
    ("GET", "/api/v1/nothing-here", None),
    ("PUT", "/api/v1/jobs", None),
    ("POST", "/api/v1/submissions", "not json"),
    ("POST", "/api/v1/submissions", []),
    ("POST", "/api/v1/submissions", {"jobs": []}),
    ("POST", "/api/v1/submissions", {"jobs": [{"id": "x"}]}),
    ("POST", "/api/v1/submissions", {"jobs": [{"id": "x", "task": "a", "command": "b"}]}),
    ("POST", "/api/v1/submissions", {"jobs": [{"id": "x", "task": "a", "wat": 1}]}),
    ("POST", "/api/v1/submissions", {"jobs": [{"id": "x", "task": "a", "retries": "many"}]}),
    ("POST", "/api/v1/submissions", {"jobs": [{"id": "x", "task": "a"}], "submission_id": 7}),
    ("POST", "/api/v1/submissions?wait_timeout=0", {"jobs": [{"id": "x", "task": "a"}]}),
    ("POST", "/api/v1/jobs/s-none/j/cancel", {"mode": "gently"}),
    ("POST", "/api/v1/jobs/s-none/j/cancel", {"reason": 5}),
    ("POST", "/api/v1/sql", {"sql": "DELETE FROM jobs"}),
    ("POST", "/api/v1/sql", {"sql": "SELECT 1; SELECT 2"}),
    ("POST", "/api/v1/sql", {"sql": "SELECT * FROM no_such_table"}),
    ("POST", "/api/v1/sql", {"sql": "SELECT " + "1 + " * 5000 + "1"}),
    ("POST", "/api/v1/sql", {"sql": 42}),
    ("POST", "/api/v1/sql", {}),
    ("DELETE", "/api/v1/jobs/s-none/j?force=perhaps", None),
]


@pytest.mark.parametrize(("method", "path", "body"), BAD_REQUESTS)
def test_bad_input_is_a_4xx_never_a_500(api: Api, method: str, path: str, body: Any) -> None:
    raw = body.encode() if isinstance(body, str) else None
    status, answer = api.call(method, path, None if raw else body, raw=raw)
    assert 400 <= status < 500, (status, answer)
    assert answer["error"] and answer["code"]


def test_a_body_beyond_the_limit_and_rejected_commands_are_4xx(api: Api) -> None:
    status, answer = api.call("POST", "/api/v1/sql", raw=b"x" * ((1 << 20) + 1))
    assert status == 413 and answer["code"] == "body_too_large"
    status, answer = api.call("POST", f"/api/v1/jobs/s-{uuid.uuid4().hex}/nope/retry")
    assert status == 409 and answer["accepted"] is False, answer
    status, answer = api.call("POST", f"/api/v1/submissions/s-{uuid.uuid4().hex}/cancel")
    assert status == 409 and answer["code"], answer
