"""The ui's HTTP layer and read side without a broker or a server: routing, the token,
errors as answers, key-paging cursors, the OpenAPI document and the settings."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engine.api import Joblog
from engine.config import Settings
from engine.errors import ConfigurationError, JobNotFound, KafkaUnreachable, TooManyJobs
from engine.ui.api import Api
from engine.ui.config import UiConfig
from engine.ui.http import ApiError, Request, Response, Route, Router, error_response
from engine.ui.openapi import openapi
from engine.ui.reads import JobFilter, _after, _encode_cursor, parse_statuses, parse_time
from projections.errors import ProjectionUnavailableError, QueryError

TOKEN = "t" * 24


def request(method: str, path: str, *, token: str | None = TOKEN, **query: str) -> Request:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Request(method, path, {k: [v] for k, v in query.items()}, headers)


def router() -> Router:
    answers: list[tuple[str, str, int]] = []
    table = Router(TOKEN, 1024, lambda m, r, s, _: answers.append((m, r, s)))
    table.add(Route("GET", "/a/{x}/{y}", lambda r: Response(dict(r.params)), "a"))
    table.add(Route("GET", "/open", lambda r: Response({"ok": True}), "o", public=True))
    table.add(Route("GET", "/boom", lambda r: Response(1 / 0), "b"))
    table.answers = answers  # type: ignore[attr-defined]
    return table


def test_routes_match_with_their_path_parameters_unquoted() -> None:
    answer = router().dispatch(request("GET", "/a/s-1/frame%2F7"))
    assert isinstance(answer, Response) and answer.status == 200
    assert answer.body == {"x": "s-1", "y": "frame/7"}


def test_unknown_paths_and_methods_are_404_and_405() -> None:
    table = router()
    missing = table.dispatch(request("GET", "/nothing"))
    wrong = table.dispatch(request("DELETE", "/a/1/2"))
    assert isinstance(missing, Response) and missing.status == 404
    assert isinstance(wrong, Response) and wrong.status == 405 and "GET" in wrong.body["error"]


def test_the_token_is_required_except_on_public_routes() -> None:
    table = router()
    for token in (None, "wrong-token-wrong-token"):
        answer = table.dispatch(request("GET", "/a/1/2", token=token))
        assert isinstance(answer, Response) and answer.status == 401
    by_query = Request("GET", "/a/1/2", {"access_token": [TOKEN]}, {})
    assert isinstance(table.dispatch(by_query), Response)
    assert table.dispatch(by_query).status == 200  # type: ignore[union-attr]
    opened = table.dispatch(request("GET", "/open", token=None))
    assert isinstance(opened, Response) and opened.status == 200
    assert ("GET", "/a/{x}/{y}", 401) in table.answers  # type: ignore[attr-defined]


def test_an_unexpected_error_is_a_500_answer_not_a_dead_server() -> None:
    answer = router().dispatch(request("GET", "/boom"))
    assert isinstance(answer, Response) and answer.status == 500
    assert "ZeroDivisionError" in answer.body["error"]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ApiError(418, "teapot", "short and stout"), 418),
        (JobNotFound("no job"), 404),
        (TooManyJobs("too many", size=2, limit=1, setting="JOBLOG_MAX_JOBS"), 413),
        (QueryError("bad sql"), 400),
        (ProjectionUnavailableError("no file"), 503),
        (KafkaUnreachable("127.0.0.1:1", 5.0), 503),
    ],
)
def test_errors_map_to_statuses_that_say_whose_fault_it_is(error: Exception, status: int) -> None:
    answer = error_response(error)
    assert answer.status == status and answer.body["error"] and answer.body["code"]


def test_query_arguments_are_checked() -> None:
    given = Request("GET", "/", {"limit": ["9"], "flag": ["yes"], "status": ["done,RUNNING"]}, {})
    assert given.int_arg("limit", 1, low=1, high=10) == 9
    assert given.bool_arg("flag") is True
    assert given.args("status") == ["done", "RUNNING"]
    with pytest.raises(ApiError, match="out of range"):
        given.int_arg("limit", 1, low=1, high=5)
    with pytest.raises(ApiError, match="unknown status 'done'"):
        parse_statuses(given.args("status"))
    with pytest.raises(ApiError, match="not a time"):
        parse_time("at", "tomorrow")
    assert parse_time("at", "1700000000000") == parse_time("at", "2023-11-14T22:13:20Z")


def test_a_cursor_names_its_list_and_gives_the_rows_after_it() -> None:
    cursor = _encode_cursor("jobs", "finished_at", "2026-01-01T00:00:00", ["s-1", "a"])
    clause, params = _after(
        cursor, "jobs", "finished_at", "TIMESTAMP", ("submission_id", "job_id"), True
    )
    assert "finished_at < CAST(? AS TIMESTAMP)" in clause and "finished_at IS NULL" in clause
    assert params == ["2026-01-01T00:00:00", "2026-01-01T00:00:00", "s-1", "s-1", "a"]
    with pytest.raises(ApiError, match="another list"):
        _after(cursor, "submissions", "finished_at", "TIMESTAMP", ("submission_id",), True)
    with pytest.raises(ApiError, match="not one this API made"):
        _after("garbage!", "jobs", "finished_at", "TIMESTAMP", ("submission_id",), True)
    null_cursor = _encode_cursor("jobs", "finished_at", None, ["s-1", "a"])
    clause, _ = _after(
        null_cursor, "jobs", "finished_at", "TIMESTAMP", ("submission_id", "job_id"), False
    )
    assert clause.startswith(" AND finished_at IS NULL")


def test_filters_are_parameters_never_sql_text() -> None:
    where, params = JobFilter(task="x'; DROP TABLE jobs; --", labels=(("k", "v"),)).where()
    assert "DROP" not in where and "x'; DROP TABLE jobs; --" in params


def test_the_openapi_document_has_every_route(tmp_path: Path) -> None:
    config = UiConfig.from_env({}, token=TOKEN, db_path=tmp_path / "x.duckdb")
    api = Api(config, Joblog(Settings(), db_path=config.db_path), threading.Event())
    routes = api.routes()
    spec = openapi(routes, version="1")
    for route in routes:
        operation = spec["paths"][route.pattern][route.method.lower()]
        names = {param["name"] for param in operation["parameters"]}
        assert set(route.path_params) | {p.name for p in route.query} == names
    assert "/api/v1/jobs/{submission_id}/{job_id}" in spec["paths"]
    assert len(
        {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    ) == len(routes)


def test_settings_come_from_the_environment() -> None:
    config = UiConfig.from_env(
        {"JOBLOG_UI_PORT": "9001", "JOBLOG_UI_HOST": "0.0.0.0", "JOBLOG_UI_TOKEN": TOKEN}
    )
    assert (config.host, config.port, config.token, config.token_generated) == (
        "0.0.0.0",
        9001,
        TOKEN,
        False,
    )
    generated = UiConfig.from_env({})
    assert generated.token_generated and len(generated.token) >= 16
    with pytest.raises(ConfigurationError, match="JOBLOG_UI_PORT"):
        UiConfig.from_env({"JOBLOG_UI_PORT": "http"})
    with pytest.raises(ConfigurationError, match="at least 16"):
        UiConfig.from_env({"JOBLOG_UI_TOKEN": "short"})
