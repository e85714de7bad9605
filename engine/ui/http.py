"""The HTTP layer of ``joblog ui``: routes, bearer tokens, JSON errors, event streams.

The standard library's :class:`~http.server.ThreadingHTTPServer` serves it: one thread per
connection, which suits both the short JSON requests and the long event streams (each
stream's thread blocks on its Kafka reader, no event loop to bridge). Every request goes
through :meth:`Router.dispatch`: the route is matched, the token checked, the handler run,
and whatever it raises becomes a JSON error with a status that says whose fault it is
(4xx: the request; 503: Kafka or the projection cannot answer now).

A handler returns a :class:`Response` (JSON or bytes) or an :class:`EventStream`: an
iterator of :class:`Sse` messages written as ``text/event-stream``; a ``None`` from it
writes a keep-alive comment, and the stream ends when the iterator does, the client goes
away, or the server stops.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from engine.errors import (
    CommandRejectedError,
    JoblogError,
    JobNotFound,
    KafkaUnreachable,
    LimitExceeded,
)

log = logging.getLogger("joblog.ui")

TOKEN_QUERY = "access_token"


class ApiError(JoblogError):
    """An answer other than success, with its HTTP status and a machine-readable code.

    Attributes:
        status: the HTTP status.
        code: a short code (``bad_request``, ``not_found``, ``unauthorized``, ...).
        message: what to do about it.
        extra: more fields for the JSON body.
    """

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def bad_request(message: str, code: str = "bad_request") -> ApiError:
    """A 400: the request itself is wrong."""
    return ApiError(400, code, message)


def json_default(value: Any) -> Any:
    """JSON for what the read side and the core hand back: times, paths, enums, dataclasses."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "__dataclass_fields__"):
        return vars(value)
    return str(value)


def dumps(value: Any) -> bytes:
    """Compact JSON bytes of ``value`` (see :func:`json_default`)."""
    return json.dumps(value, default=json_default, separators=(",", ":")).encode()


@dataclass
class Request:
    """One HTTP request, parsed.

    Attributes:
        method / path: as sent (path without the query string).
        query: the query string's values by name.
        headers: the request headers.
        body: the request body (at most the configured limit).
        params: the path parameters of the matched route.
        route: the matched route's pattern (``""`` before matching or for none).
    """

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)
    route: str = ""

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The last value of query parameter ``name``."""
        values = self.query.get(name)
        return values[-1] if values else default

    def args(self, name: str) -> list[str]:
        """Every value of a repeatable query parameter (``a=1&a=2`` or ``a=1,2``)."""
        out: list[str] = []
        for value in self.query.get(name, []):
            out.extend(part for part in value.split(",") if part)
        return out

    def int_arg(self, name: str, default: int, *, low: int, high: int) -> int:
        """An integer query parameter within ``low..high``.

        Raises:
            ApiError: 400 when it is not an integer or out of range (the message names it).
        """
        raw = self.arg(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise bad_request(f"{name}={raw!r} is not an integer") from None
        if not low <= value <= high:
            raise bad_request(f"{name}={value} is out of range: {low}..{high}")
        return value

    def bool_arg(self, name: str, default: bool = False) -> bool:
        """A boolean query parameter (``true``/``false``/``1``/``0``).

        Raises:
            ApiError: 400 for another value.
        """
        raw = self.arg(name)
        if raw is None or raw == "":
            return default
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
        raise bad_request(f"{name}={raw!r} is not a boolean (true or false)")

    def json(self) -> dict[str, Any]:
        """The body as a JSON object (an empty body is ``{}``).

        Raises:
            ApiError: 400 when it is not a JSON object.
        """
        if not self.body.strip():
            return {}
        try:
            value = json.loads(self.body)
        except ValueError as exc:
            raise bad_request(f"the body is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise bad_request("the body must be a JSON object")
        return value


@dataclass
class Response:
    """A complete answer: JSON (``body`` any JSON value) or raw bytes with a content type."""

    body: Any = None
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return dumps(self.body)


@dataclass(frozen=True)
class Sse:
    """One server-sent event: its ``event:`` name, JSON ``data`` and optional ``id``."""

    event: str
    data: Any
    id: str | None = None

    def encode(self) -> bytes:
        lines = [f"event: {self.event}"]
        if self.id is not None:
            lines.append(f"id: {self.id}")
        lines.append(f"data: {dumps(self.data).decode()}")
        return ("\n".join(lines) + "\n\n").encode()


@dataclass
class EventStream:
    """A ``text/event-stream`` answer.

    Attributes:
        messages: the events to write; ``None`` writes a keep-alive comment.
        close: called once when the stream ends, whatever ends it.
    """

    messages: Iterator[Sse | None]
    close: Callable[[], None] = lambda: None


Handler = Callable[[Request], "Response | EventStream"]


@dataclass(frozen=True)
class Param:
    """A query parameter of a route, for its OpenAPI description."""

    name: str
    description: str
    type: str = "string"
    repeat: bool = False
    enum: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    """One operation: method, path pattern (``{name}`` segments) and its handler.

    Attributes:
        method / pattern / handler: what it answers.
        summary: one line for the OpenAPI document.
        tag: its group in the document.
        query: its query parameters.
        body: a description of the JSON body it takes, if any.
        stream: it answers with server-sent events.
        public: it needs no token (the static pages, the OpenAPI document, health).
    """

    method: str
    pattern: str
    handler: Handler
    summary: str
    tag: str = "jobs"
    query: tuple[Param, ...] = ()
    body: str = ""
    stream: bool = False
    public: bool = False

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"\{(\w+)\}", self.pattern)

    def regex(self) -> re.Pattern[str]:
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.pattern)
        return re.compile(f"^{pattern}$")


class Router:
    """Matches requests to routes, checks the token and turns errors into JSON answers.

    Args:
        token: the bearer token every non-public route wants.
        max_body_bytes: the largest request body.
        on_answer: called with the method, the route's pattern (``-`` for none), the
            status and the seconds taken, once per answer (an event stream once it opens).
    """

    def __init__(
        self,
        token: str,
        max_body_bytes: int,
        on_answer: Callable[[str, str, int, float], None] | None = None,
    ) -> None:
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.on_answer = on_answer
        self.routes: list[Route] = []
        self._compiled: list[tuple[Route, re.Pattern[str]]] = []

    def add(self, route: Route) -> None:
        self.routes.append(route)
        self._compiled.append((route, route.regex()))

    def extend(self, routes: Sequence[Route]) -> None:
        for route in routes:
            self.add(route)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for ``method path`` and its path parameters.

        Raises:
            ApiError: 404 for no route, 405 for a path with other methods only.
        """
        methods: list[str] = []
        for route, regex in self._compiled:
            found = regex.match(path)
            if found is None:
                continue
            if route.method != method:
                methods.append(route.method)
                continue
            return route, {key: unquote(value) for key, value in found.groupdict().items()}
        if methods:
            raise ApiError(
                405, "method_not_allowed", f"{method} {path}: use {', '.join(sorted(methods))}"
            )
        raise ApiError(
            404, "not_found", f"no route {path}; the API is described at /api/v1/openapi.json"
        )

    def authorized(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        given = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not given:
            given = request.arg(TOKEN_QUERY) or ""
        return bool(given) and secrets.compare_digest(given.encode(), self.token.encode())

    def dispatch(self, request: Request) -> Response | EventStream:
        """Runs the request's route; every failure is a JSON :class:`Response`."""
        started = time.monotonic()
        answer = self._dispatch(request)
        if self.on_answer is not None:
            pattern = request.route or "-"
            status = answer.status if isinstance(answer, Response) else 200
            self.on_answer(request.method, pattern, status, time.monotonic() - started)
        return answer

    def _dispatch(self, request: Request) -> Response | EventStream:
        try:
            route, request.params = self.match(request.method, request.path)
            request.route = route.pattern
            if not route.public and not self.authorized(request):
                raise ApiError(
                    401,
                    "unauthorized",
                    "missing or wrong token: send 'Authorization: Bearer <token>' "
                    f"(or ?{TOKEN_QUERY}= for an event stream); joblog ui prints the token at "
                    "start, or set JOBLOG_UI_TOKEN",
                )
            return route.handler(request)
        except Exception as exc:  # every failure becomes an answer; the server never dies
            return error_response(exc)


def error_response(exc: Exception) -> Response:
    """The JSON answer for an exception: its status says whose fault it is."""
    from projections.errors import ProjectionUnavailableError, QueryError

    status, code = 500, "internal_error"
    extra: dict[str, Any] = {}
    message = str(exc)
    if isinstance(exc, ApiError):
        status, code, extra = exc.status, exc.code, exc.extra
    elif isinstance(exc, JobNotFound):
        status, code = 404, "not_found"
    elif isinstance(exc, LimitExceeded):
        status, code = 413, "limit_exceeded"
    elif isinstance(exc, QueryError):
        status, code = 400, "query_error"
    elif isinstance(exc, ProjectionUnavailableError):
        status, code = 503, "projection_unavailable"
    elif isinstance(exc, KafkaUnreachable):
        status, code = 503, "kafka_unreachable"
    elif isinstance(exc, CommandRejectedError):
        status, code = 409, exc.code
    elif isinstance(exc, JoblogError):
        status, code = 503, "unavailable"
    else:
        log.exception("unexpected error answering a request")
        message = f"{type(exc).__name__}: {exc}"
    return Response({"error": message, "code": code, **extra}, status=status)


class UiHttpServer(ThreadingHTTPServer):
    """The threading HTTP server of ``joblog ui``; :attr:`stopping` ends open streams."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], router: Router) -> None:
        self.router = router
        self.stopping = threading.Event()
        super().__init__(address, _handler(router, self.stopping))

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = host if isinstance(host, str) else host.decode()
        if shown in ("0.0.0.0", ""):
            shown = "127.0.0.1"
        return f"http://{shown}:{port}"


def _handler(router: Router, stopping: threading.Event) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "joblog-ui"

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > router.max_body_bytes:
                # read what was sent (up to a bound) so the client reads the answer
                # instead of a broken pipe
                left = min(max(length, 0), 16 * router.max_body_bytes)
                while left > 0:
                    chunk = self.rfile.read(min(left, 1 << 16))
                    if not chunk:
                        break
                    left -= len(chunk)
                self._write(
                    Response(
                        {
                            "error": f"a request body of {length} bytes; the limit is "
                            f"{router.max_body_bytes} bytes",
                            "code": "body_too_large",
                        },
                        status=413,
                    ),
                    close=True,
                )
                return
            body = self.rfile.read(length) if length else b""
            request = Request(
                method=method,
                path=parts.path.rstrip("/") or "/",
                query=parse_qs(parts.query, keep_blank_values=True),
                headers={key: value for key, value in self.headers.items()},
                body=body,
            )
            answer = router.dispatch(request)
            if isinstance(answer, EventStream):
                self._stream(answer)
            else:
                self._write(answer)

        def _write(self, response: Response, *, close: bool = False) -> None:
            payload = response.payload()
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", "no-store")
            for key, value in response.headers.items():
                self.send_header(key, value)
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _stream(self, stream: EventStream) -> None:
            self.close_connection = True
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Connection", "close")
                self.send_header("X-Accel-Buffering", "no")
                self.end_headers()
                self.wfile.write(b": joblog event stream\n\n")
                self.wfile.flush()
                for message in stream.messages:
                    if stopping.is_set():
                        break
                    self.wfile.write(b": keep-alive\n\n" if message is None else message.encode())
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass  # the client went away
            except Exception as exc:  # the stream's source failed: say so on the stream
                log.warning("event stream ended: %s", exc)
                answer = error_response(exc)
                try:
                    self.wfile.write(Sse("error", answer.body).encode())
                    self.wfile.flush()
                except OSError:
                    pass
            finally:
                stream.close()

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("ui: " + format, *args)

    return Handler
