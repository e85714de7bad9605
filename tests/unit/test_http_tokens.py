"""The HTTP endpoints want their tokens: every route of joblog ui but the dashboard's files,
its OpenAPI document, health and metrics (the bearer token), and both routes of the
projector's query endpoint (the sidecar's token); no broker (the ui's client never connects).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from engine.api import Joblog
from engine.config import Settings
from engine.ui.config import UiConfig
from engine.ui.http import Request, Response
from engine.ui.server import UiServer
from projections.server import TOKEN_HEADER, QueryServer

TOKEN = "k" * 32
PUBLIC = {
    ("GET", "/"),
    ("GET", "/static/{name}"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/health"),
    ("GET", "/metrics"),
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[UiServer]:
    config = UiConfig(port=0, token=TOKEN, token_generated=False, db_path=tmp_path / "p.duckdb")
    client = Joblog(Settings(bootstrap_servers="127.0.0.1:9"), db_path=tmp_path / "p.duckdb")
    ui = UiServer(config, client=client)
    try:
        yield ui
    finally:
        ui.httpd.server_close()
        client.close()


def test_only_the_pages_meta_and_health_are_public(server: UiServer) -> None:
    public = {(route.method, route.pattern) for route in server.router.routes if route.public}
    assert public == PUBLIC


@pytest.mark.parametrize("token", [None, "wrong", "k" * 31 + "x"])
def test_every_other_route_refuses_a_request_without_the_token(
    server: UiServer, token: str | None
) -> None:
    guarded = [route for route in server.router.routes if not route.public]
    assert len(guarded) > 10
    for route in guarded:
        path = re.sub(r"\{[^}]+\}", "x", route.pattern)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answer = server.router.dispatch(Request(route.method, path, {}, headers))
        assert isinstance(answer, Response), route.pattern
        assert answer.status == 401, (route.method, route.pattern, answer.status)


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/status"), ("POST", "/query"), ("GET", "/nothing")]
)
def test_the_projectors_query_endpoint_wants_its_token(
    tmp_path: Path, method: str, path: str
) -> None:
    import urllib.error
    import urllib.request

    server = QueryServer(duckdb.connect(), tmp_path / "p.duckdb")
    endpoint = server.start()
    try:
        for headers in ({}, {TOKEN_HEADER: "wrong"}):
            data = b'{"sql": "SELECT 1"}' if method == "POST" else None
            request = urllib.request.Request(
                endpoint.url + path, data=data, headers=headers, method=method
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            assert refused.value.code == 401
        ok = urllib.request.Request(endpoint.url + "/status", headers={TOKEN_HEADER: server.token})
        with urllib.request.urlopen(ok, timeout=5) as answer:
            assert answer.status == 200
    finally:
        server.stop()
