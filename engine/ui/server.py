"""``joblog ui``: one process serving the REST API and the dashboard.

:class:`UiServer` binds the address, builds the routes (:class:`~engine.ui.api.Api`, the
OpenAPI document, the static pages) and serves on a thread; :meth:`UiServer.stop` ends the
open event streams and returns within seconds. :func:`ui_main` is the command line::

    joblog ui [--host 127.0.0.1] [--port 8765] [--db joblog.duckdb]

It prints the dashboard's URL with the token in its fragment (``#token=...``: a fragment
never leaves the browser, so the token is not in any server's log) and serves until Ctrl-C
or SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib.resources
import logging
import re
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from engine.api import Joblog
from engine.config import Settings
from engine.errors import JoblogError
from engine.metrics import Telemetry, gauge
from engine.ui.api import Api
from engine.ui.config import UiConfig
from engine.ui.http import ApiError, Request, Response, Route, Router, UiHttpServer
from engine.ui.openapi import openapi

log = logging.getLogger("joblog.ui")

_STATIC_NAME = re.compile(r"^[A-Za-z0-9_-]+\.(html|js|css|svg)$")
_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("joblog")
    except PackageNotFoundError:
        return "0"


class UiServer:
    """The REST API and the dashboard on one address.

    Args:
        config: address, token, projection file and limits.
        settings: the cluster (``Settings.from_env()`` when omitted).
        client: the client that sends commands (one is made on ``settings`` when omitted;
            the server closes only a client it made).
    """

    def __init__(
        self,
        config: UiConfig,
        settings: Settings | None = None,
        *,
        client: Joblog | None = None,
    ) -> None:
        self.config = config
        self._own_client = client is None
        self.client = client or Joblog(
            settings or Settings.from_env(), db_path=config.db_path, submitted_by="joblog-ui"
        )
        self.telemetry = Telemetry("ui")
        requests = self.telemetry.counter(
            "joblog_ui_requests", "API and page requests answered", ("method", "route", "status")
        )
        seconds = self.telemetry.histogram(
            "joblog_ui_request_seconds", "time to answer a request (a stream: to open)", ("route",)
        )

        def answered(method: str, route: str, status: int, took: float) -> None:
            requests.labels(method, route, str(status)).inc()
            seconds.labels(route).observe(took)

        self.router = Router(config.token, config.limits.max_body_bytes, answered)
        self.httpd = UiHttpServer((config.host, config.port), self.router)
        self.api = Api(config, self.client, self.httpd.stopping)
        self.telemetry.collect(
            lambda: [gauge("joblog_ui_open_streams", "event streams open", self.api.open_streams)]
        )
        self.router.extend(self.api.routes())
        spec: dict[str, object] = {}
        static = [
            Route(
                "GET",
                "/api/v1/openapi.json",
                lambda _: Response(spec),
                "this document",
                "meta",
                public=True,
            ),
            Route(
                "GET",
                "/metrics",
                self._metrics,
                "Prometheus metrics of the ui",
                "meta",
                public=True,
            ),
            Route("GET", "/", _static_index, "the dashboard", "meta", public=True),
            Route(
                "GET", "/static/{name}", _static_file, "the dashboard's files", "meta", public=True
            ),
        ]
        self.router.extend(static)
        spec.update(openapi(self.router.routes, version=_version()))  # every route, itself too
        self._thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.25},
            name="joblog-ui",
            daemon=True,
        )

    def _metrics(self, request: Request) -> Response:
        body, content_type = self.telemetry.render(request.headers.get("Accept"))
        return Response(body, content_type=content_type)

    @property
    def url(self) -> str:
        """``http://host:port`` of the server."""
        return self.httpd.url

    @property
    def dashboard_url(self) -> str:
        """The dashboard's URL with the token in its fragment."""
        return f"{self.url}/#token={self.config.token}"

    def start(self) -> UiServer:
        """Starts serving on a thread."""
        self._thread.start()
        log.info("joblog ui at %s", self.url)
        return self

    def stop(self) -> None:
        """Ends the open streams, stops serving, lets go of the client it made."""
        self.httpd.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)
        if self._own_client:
            self.client.close()

    def __enter__(self) -> UiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _static_dir() -> Path:
    return Path(str(importlib.resources.files("engine.ui").joinpath("static")))


def _static_index(request: Request) -> Response:
    return _file("index.html")


def _static_file(request: Request) -> Response:
    return _file(request.params["name"])


def _file(name: str) -> Response:
    if not _STATIC_NAME.match(name):
        raise ApiError(404, "not_found", f"no file {name}")
    path = _static_dir() / name
    if not path.is_file():
        raise ApiError(404, "not_found", f"no file {name}")
    return Response(path.read_bytes(), content_type=_TYPES[name.rsplit(".", 1)[1]])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``joblog ui``."""
    parser = argparse.ArgumentParser(
        prog="joblog ui",
        description="Serve joblog's REST API (/api/v1, OpenAPI at /api/v1/openapi.json) and "
        "the live dashboard. Reads come from the DuckDB projection, commands go to Kafka, "
        "live events come from the events topic.",
    )
    parser.add_argument("--host", help="address to bind ($JOBLOG_UI_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port ($JOBLOG_UI_PORT or 8765; 0: any free)")
    parser.add_argument("--db", help="the projection file ($JOBLOG_PROJECTION_DB)")
    parser.add_argument("--bootstrap-servers", help="Kafka ($JOBLOG_BOOTSTRAP_SERVERS)")
    parser.add_argument("--topic-prefix", help="topic prefix ($JOBLOG_TOPIC_PREFIX)")
    return parser


def ui_main(argv: Sequence[str] | None = None) -> int:
    """``joblog ui``: serves until Ctrl-C or SIGTERM; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    try:
        config = UiConfig.from_env(
            host=args.host, port=args.port, db_path=Path(args.db) if args.db else None
        )
        settings = Settings.from_env(
            bootstrap_servers=args.bootstrap_servers, topic_prefix=args.topic_prefix
        )
        server = UiServer(config, settings)
    except (JoblogError, OSError) as exc:
        print(f"joblog ui: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with server:
        print(f"joblog ui serving at {server.url}", flush=True)
        print(f"dashboard: {server.dashboard_url}", flush=True)
        print(f"API: {server.url}/api/v1 (OpenAPI: {server.url}/api/v1/openapi.json)", flush=True)
        if config.token_generated:
            print(f"token (generated; set JOBLOG_UI_TOKEN to fix one): {config.token}", flush=True)
        print(
            f"reading the projection {config.db_path} and the Kafka cluster at "
            f"{server.client.settings.bootstrap_servers}",
            flush=True,
        )
        stop.wait()
    return 0
