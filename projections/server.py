"""Read-only SQL over HTTP on 127.0.0.1, served by the projector that holds the DuckDB file.

DuckDB lets one process write a file, and while it writes no other process may open it, not
even read-only. So the projector answers the queries itself: a small HTTP server on an
ephemeral port of 127.0.0.1 runs each query on its own cursor of the projector's connection
(DuckDB's MVCC gives it a consistent snapshot; batches being written are not seen until they
commit) inside a read-only transaction, and returns the result as an Arrow IPC stream, so a
reader gets exactly the values it would get from the file.

The address and a random token go to a sidecar file next to the database, ``<db>.endpoint``
(mode 0600: only the user who runs the projector can read the token). Requests without the
token are refused. The sidecar is removed when the server stops; one left behind by a killed
projector is recognised by readers because nothing answers at its address.

Protocol: ``POST /query`` with JSON ``{"sql": "...", "params": [...]}`` and header
``X-Joblog-Token`` answers ``200`` with ``application/vnd.apache.arrow.stream``, or ``400``
with JSON ``{"error": "...", "type": "..."}``; ``GET /status`` answers the projector's
counters as JSON.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from projections.errors import QueryError
from projections.store import arrow_query

log = logging.getLogger(__name__)

ARROW_STREAM = "application/vnd.apache.arrow.stream"
TOKEN_HEADER = "X-Joblog-Token"
_MAX_BODY = 1 << 20
_READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def endpoint_path(db_path: str | Path) -> Path:
    """The sidecar file that names the query endpoint of ``db_path``'s projector."""
    return Path(f"{db_path}.endpoint")


@dataclass(frozen=True)
class Endpoint:
    """Where a projector answers queries.

    Attributes:
        url: ``http://127.0.0.1:<port>``.
        token: the secret to send in the ``X-Joblog-Token`` header.
        pid: the projector's process id.
        db: the absolute path of the database it serves.
    """

    url: str
    token: str
    pid: int
    db: str

    @classmethod
    def read(cls, db_path: str | Path) -> Endpoint | None:
        """The endpoint named by ``db_path``'s sidecar file, or ``None`` if there is none."""
        try:
            data = json.loads(endpoint_path(db_path).read_text())
            return cls(str(data["url"]), str(data["token"]), int(data["pid"]), str(data["db"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def run_read_only(
    connection: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None
) -> pa.Table:
    """Runs one read-only statement on a fresh cursor of ``connection``.

    Raises:
        QueryError: more than one statement, a statement that is not a query, or DuckDB
            failed it.
    """
    cursor = connection.cursor()
    try:
        try:
            statements = cursor.extract_statements(sql)
        except duckdb.Error as exc:
            raise QueryError(str(exc)) from exc
        if len(statements) != 1:
            raise QueryError(f"send one statement per query, not {len(statements)}")
        if statements[0].type not in _READ_ONLY:
            raise QueryError(
                f"the projection is read-only: {statements[0].type.name} statements are "
                "refused; only SELECT (also SHOW, DESCRIBE, SUMMARIZE) and EXPLAIN run"
            )
        try:
            cursor.execute("BEGIN TRANSACTION READ ONLY")
            try:
                return arrow_query(cursor, sql, params)
            finally:
                cursor.execute("ROLLBACK")
        except duckdb.Error as exc:
            raise QueryError(str(exc)) from exc
    finally:
        cursor.close()


class QueryServer:
    """Serves read-only queries on a projector's connection (see the module doc).

    Args:
        connection: the projector's DuckDB connection; each request uses its own cursor.
        db_path: the database file; the sidecar goes next to it.
        status: returns the projector's counters for ``GET /status``.
        host: the address to bind (keep the loopback: there is no TLS).
    """

    def __init__(
        self,
        connection: duckdb.DuckDBPyConnection,
        db_path: str | Path,
        status: Callable[[], Mapping[str, Any]] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.connection = connection
        self.db_path = Path(db_path).resolve()
        self.status = status or dict
        self.token = secrets.token_urlsafe(24)
        self._httpd = ThreadingHTTPServer((host, 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="projection-queries", daemon=True
        )
        port = self._httpd.server_address[1]
        self.endpoint = Endpoint(
            f"http://{host}:{port}", self.token, os.getpid(), str(self.db_path)
        )

    def start(self) -> Endpoint:
        """Starts answering and writes the sidecar file."""
        self._thread.start()
        _write_private(endpoint_path(self.db_path), json.dumps(asdict(self.endpoint)))
        log.info("projection queries served at %s", self.endpoint.url)
        return self.endpoint

    def stop(self) -> None:
        """Stops answering and removes the sidecar file if it is still this server's."""
        path = endpoint_path(self.db_path)
        current = Endpoint.read(self.db_path)
        if current is not None and current.token == self.token:
            path.unlink(missing_ok=True)
        self._httpd.shutdown()
        self._httpd.server_close()


def _handler(server: QueryServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if not self._authorized():
                return
            if self.path != "/status":
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no {self.path}; try /status"})
                return
            self._json(HTTPStatus.OK, dict(server.status()))

        def do_POST(self) -> None:
            if not self._authorized():
                return
            if self.path != "/query":
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no {self.path}; POST /query"})
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
                if length > _MAX_BODY:
                    raise QueryError(f"query of {length} bytes; the limit is {_MAX_BODY}")
                request = json.loads(self.rfile.read(length) or b"{}")
                sql = request["sql"]
                params = request.get("params")
                if not isinstance(sql, str) or not (params is None or isinstance(params, list)):
                    raise QueryError('send {"sql": "<text>", "params": [...] or null}')
                table = run_read_only(server.connection, sql, params)
            except QueryError as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc), "type": "QueryError"})
                return
            except (ValueError, KeyError) as exc:
                self._json(
                    HTTPStatus.BAD_REQUEST, {"error": f"bad request: {exc}", "type": "QueryError"}
                )
                return
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            body = sink.getvalue().to_pybytes()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", ARROW_STREAM)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorized(self) -> bool:
            given = self.headers.get(TOKEN_HEADER, "")
            if secrets.compare_digest(given, server.token):
                return True
            self._json(HTTPStatus.UNAUTHORIZED, {"error": "missing or wrong token"})
            return False

        def _json(self, status: HTTPStatus, payload: Mapping[str, Any]) -> None:
            body = json.dumps(payload, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("query endpoint: " + format, *args)

    return Handler


def _write_private(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically, readable by its owner only."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(temporary, path)
