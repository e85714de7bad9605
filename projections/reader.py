"""Queries on a projection, whether or not a projector is writing it.

A running projector holds its DuckDB file and answers read-only queries on 127.0.0.1 (see
:mod:`projections.server`); with no projector running, the file is opened read-only here.
:class:`ProjectionReader` tries the projector first (the sidecar ``<db>.endpoint`` names it),
then the file, and says what to do when neither works. Both ways return the same values:
the projector ships its result as Arrow, and the file is read as Arrow too.

The file is opened for one query at a time and closed right after, because an open reader,
even read-only, stops a projector from starting on the file.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from projections.errors import ProjectionUnavailableError, QueryError
from projections.server import ARROW_STREAM, TOKEN_HEADER, Endpoint, run_read_only


class ProjectionReader:
    """Runs read-only SQL on the projection in ``db_path``.

    Args:
        db_path: the projection's DuckDB file.
        timeout: seconds to wait for the projector's answer.

    Attributes:
        source: where the last query was answered: ``"projector"`` or ``"file"``.
    """

    def __init__(self, db_path: str | Path, *, timeout: float = 60.0) -> None:
        self.db_path = Path(db_path)
        self.timeout = timeout
        self.source = ""

    def query(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Runs one query; returns its rows as dicts (column name -> Python value).

        Args:
            sql: one SELECT (or SHOW, DESCRIBE, SUMMARIZE, EXPLAIN) statement.
            params: values of the ``?`` placeholders; through the projector they must be
                JSON values.

        Raises:
            QueryError: DuckDB refused or failed the query.
            ProjectionUnavailableError: no projector answers and the file cannot be opened.
        """
        rows: list[dict[str, Any]] = self.arrow(sql, params).to_pylist()
        return rows

    def arrow(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        """Like :meth:`query`, but returns an Arrow table."""
        endpoint = Endpoint.read(self.db_path)
        stale = ""
        if endpoint is not None:
            try:
                table = self._ask(endpoint, sql, params)
            except _Unreachable as exc:
                stale = f" (the projector named in {self.db_path}.endpoint does not answer: {exc})"
            else:
                self.source = "projector"
                return table
        table = self._open(sql, params, stale)
        self.source = "file"
        return table

    def _ask(self, endpoint: Endpoint, sql: str, params: list[Any] | None) -> pa.Table:
        request = urllib.request.Request(
            f"{endpoint.url}/query",
            data=json.dumps({"sql": sql, "params": params}, default=str).encode(),
            headers={"Content-Type": "application/json", TOKEN_HEADER: endpoint.token},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                kind = response.headers.get("Content-Type", "")
                body = response.read()
        except urllib.error.HTTPError as exc:
            message = _error_message(exc)
            if exc.code == 400:
                raise QueryError(message) from None
            if exc.code == 401:
                raise ProjectionUnavailableError(
                    f"the projector at {endpoint.url} refused the token of "
                    f"{self.db_path}.endpoint ({message}); is the sidecar from another run?"
                ) from None
            raise ProjectionUnavailableError(
                f"the projector at {endpoint.url} answered {exc.code}: {message}"
            ) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise _Unreachable(str(getattr(exc, "reason", exc))) from exc
        if kind != ARROW_STREAM:
            raise ProjectionUnavailableError(f"{endpoint.url} is not a joblog projector")
        return pa.ipc.open_stream(body).read_all()

    def _open(self, sql: str, params: list[Any] | None, stale: str) -> pa.Table:
        path = self.db_path
        if not path.exists():
            raise ProjectionUnavailableError(
                f"no projection at {path}{stale}; start one with `joblog projector --db {path}` "
                f"or build it with `joblog projections rebuild --db {path}`"
            )
        try:
            connection = duckdb.connect(str(path), read_only=True)
        except duckdb.ConnectionException as exc:
            raise ProjectionUnavailableError(
                f"{path} is open for writing in this very process{stale}, and its projector "
                "serves no queries yet; wait for it to start serving (run_projector with "
                "serve=True writes the endpoint once it is ready)"
            ) from exc
        except duckdb.Error as exc:
            raise ProjectionUnavailableError(
                f"cannot open {path} read-only: {exc}{stale}. Another process holds the file "
                "without serving queries: stop it, or query through the projector that "
                "writes it (it serves queries unless started with --no-serve)"
            ) from exc
        try:
            return run_read_only(connection, sql, params)
        finally:
            connection.close()


def query(db_path: str | Path, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    """Runs one read-only query on a projection; see :class:`ProjectionReader`.

    Example:
        >>> query("joblog.duckdb", "SELECT * FROM status_counts")  # doctest: +SKIP
        [{'status': 'COMPLETED', 'jobs': 120}, {'status': 'FAILED', 'jobs': 3}]
    """
    return ProjectionReader(db_path).query(sql, params)


class _Unreachable(Exception):
    """Nothing answers at the endpoint's address (a sidecar left by a killed projector)."""


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["error"])
    except (ValueError, KeyError, TypeError, OSError):
        return exc.reason if isinstance(exc.reason, str) else str(exc)
