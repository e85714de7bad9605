"""A schema registry in a thread: the part of the Confluent API that joblog uses, in memory.

For the tests and for machines without a registry (docs/operations.md, "Schema registry",
says why it is not Apicurio Registry here). It keeps schemas, subjects, versions and
compatibility levels in memory and checks compatibility for real (Avro resolution,
:mod:`engine.registry.compatibility`), as a registry would refuse a schema:

====================================================  =========================================
``GET /schemas/ids/{id}``                             ``{"schema": ...}``; 404 ``40403``
``GET /subjects``                                     the subjects
``GET /subjects/{s}/versions``                        the subject's versions; 404 ``40401``
``GET /subjects/{s}/versions/{v|latest}``             one version; 404 ``40401``/``40402``
``POST /subjects/{s}``                                the version of that schema there; 404
``POST /subjects/{s}/versions``                       registers: ``{"id": n}``; 409, 422 ``42201``
``POST /compatibility/subjects/{s}/versions/latest``  ``{"is_compatible": ..., "messages": ...}``
``GET /config``, ``PUT /config``                      the default level (``BACKWARD``)
``GET /config/{s}``, ``PUT /config/{s}``              a subject's level; 404 ``40408``
====================================================  =========================================

Ids are global and one per distinct schema, as in Confluent's registry: the same schema under
two subjects has one id.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from fastavro import parse_schema

from engine.config import COMPATIBILITY_LEVELS
from engine.registry.compatibility import can_read, check


class RegistryRefusal(Exception):
    """A request the registry answers with an error (its HTTP status and ``error_code``)."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


@dataclass
class RegistryStore:
    """The registry's state: schemas by id, subjects' versions (ids), compatibility levels.

    Every method runs under the store's lock (the server answers requests in threads).
    """

    level: str = "BACKWARD"
    schemas: list[str] = field(default_factory=list)
    subjects: dict[str, list[int]] = field(default_factory=dict)
    levels: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def schema(self, schema_id: int) -> str:
        with self.lock:
            if not 1 <= schema_id <= len(self.schemas):
                raise RegistryRefusal(404, 40403, f"Schema {schema_id} not found")
            return self.schemas[schema_id - 1]

    def versions(self, subject: str) -> list[int]:
        with self.lock:
            return list(range(1, len(self._versions(subject)) + 1))

    def version(self, subject: str, version: str) -> dict[str, Any]:
        with self.lock:
            ids = self._versions(subject)
            number = len(ids) if version in ("latest", "-1") else _int(version)
            if not 1 <= number <= len(ids):
                raise RegistryRefusal(404, 40402, f"Version {version} not found")
            schema_id = ids[number - 1]
            return _version(subject, number, schema_id, self.schemas[schema_id - 1])

    def find(self, subject: str, text: str) -> dict[str, Any]:
        key = _key(_parsed(text))
        with self.lock:
            ids = self._versions(subject)
            for number, schema_id in enumerate(ids, start=1):
                if _key(json.loads(self.schemas[schema_id - 1])) == key:
                    return _version(subject, number, schema_id, self.schemas[schema_id - 1])
            raise RegistryRefusal(404, 40403, "Schema not found")

    def register(self, subject: str, text: str) -> int:
        schema = _parsed(text)
        key = _key(schema)
        with self.lock:
            ids = self.subjects.get(subject, [])
            for schema_id in ids:
                if _key(json.loads(self.schemas[schema_id - 1])) == key:
                    return schema_id
            problems = self._problems(subject, schema)
            if problems:
                raise RegistryRefusal(
                    409,
                    409,
                    f"Schema being registered is incompatible with an earlier schema for "
                    f'subject "{subject}", details: {"; ".join(problems)}',
                )
            known = next(
                (n for n, s in enumerate(self.schemas, 1) if _key(json.loads(s)) == key), None
            )
            if known is None:
                self.schemas.append(json.dumps(schema, separators=(",", ":")))
                known = len(self.schemas)
            self.subjects.setdefault(subject, []).append(known)
            return known

    def compatibility(self, subject: str, text: str) -> list[str]:
        schema = _parsed(text)
        with self.lock:
            self._versions(subject)
            return self._problems(subject, schema)

    def subject_level(self, subject: str, default_to_global: bool) -> str:
        with self.lock:
            level = self.levels.get(subject)
            if level is None and not default_to_global:
                raise RegistryRefusal(
                    404,
                    40408,
                    f"Subject '{subject}' does not have subject-level compatibility configured",
                )
            return level or self.level

    def set_level(self, subject: str | None, level: object) -> str:
        if not isinstance(level, str) or level.upper() not in COMPATIBILITY_LEVELS:
            raise RegistryRefusal(422, 42203, f"Invalid compatibility level {level!r}")
        with self.lock:
            if subject is None:
                self.level = level.upper()
            else:
                self.levels[subject] = level.upper()
            return level.upper()

    def _versions(self, subject: str) -> list[int]:
        ids = self.subjects.get(subject)
        if not ids:
            raise RegistryRefusal(404, 40401, f"Subject '{subject}' not found.")
        return ids

    def _problems(self, subject: str, schema: Any) -> list[str]:
        level = self.levels.get(subject, self.level)
        earlier = [json.loads(self.schemas[i - 1]) for i in self.subjects.get(subject, [])]
        return check(level, schema, earlier)


class LocalRegistry:
    """A schema registry serving the Confluent API subset above on ``127.0.0.1``.

    Args:
        port: the port (0: a free one).
        basic_auth: ``user:password`` every request must carry, if given.
        token: a bearer token every request must carry, if given.

    Use as a context manager, or :meth:`start` and :meth:`stop`; :attr:`url` is where it
    answers.
    """

    def __init__(
        self, port: int = 0, *, basic_auth: str | None = None, token: str | None = None
    ) -> None:
        self.store = RegistryStore()
        self._auth = (
            f"Basic {base64.b64encode(basic_auth.encode()).decode()}"
            if basic_auth is not None
            else f"Bearer {token}"
            if token is not None
            else None
        )
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        #: Requests answered, as ``(method, path)``; tests read it.
        self.requests: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        """The registry's base URL."""
        if self._server is None:
            raise RuntimeError("the local registry is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        """Starts serving in a daemon thread; returns :attr:`url`."""
        if self._server is None:
            self._server = ThreadingHTTPServer(("127.0.0.1", self._port), _handler(self))
            self._server.daemon_threads = True
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.2},
                name="local-schema-registry",
                daemon=True,
            )
            self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stops serving and closes the socket (within a second)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> LocalRegistry:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @contextmanager
    def unavailable(self) -> Iterator[None]:
        """Answers every request with 503 while inside the block (a registry outage)."""
        self._down = True
        try:
            yield
        finally:
            self._down = False

    _down = False

    def answer(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, Any]:
        """The status and JSON answer of one request (the HTTP handler's whole job)."""
        parts = urlsplit(target)
        path = [unquote(p) for p in parts.path.strip("/").split("/") if p]
        self.requests.append((method, "/" + "/".join(path)))
        if self._down:
            return 503, {"error_code": 50003, "message": "the registry is unavailable"}
        if self._auth is not None and headers.get("Authorization") != self._auth:
            return 401, {"error_code": 401, "message": "Unauthorized"}
        try:
            payload = json.loads(body) if body else {}
            return 200, self._route(method, path, parse_qs(parts.query), payload)
        except RegistryRefusal as refusal:
            return refusal.status, {"error_code": refusal.error_code, "message": str(refusal)}
        except (ValueError, KeyError, TypeError) as exc:
            return 422, {"error_code": 42201, "message": f"Invalid request: {exc}"}

    def _route(
        self, method: str, path: list[str], query: dict[str, list[str]], payload: Any
    ) -> Any:
        store = self.store
        match method, path:
            case "GET", ["schemas", "ids", schema_id]:
                return {"schema": store.schema(_int(schema_id))}
            case "GET", ["subjects"]:
                return sorted(store.subjects)
            case "GET", ["subjects", subject, "versions"]:
                return store.versions(subject)
            case "GET", ["subjects", subject, "versions", version]:
                return store.version(subject, version)
            case "POST", ["subjects", subject]:
                return store.find(subject, _schema_text(payload))
            case "POST", ["subjects", subject, "versions"]:
                return {"id": store.register(subject, _schema_text(payload))}
            case "POST", ["compatibility", "subjects", subject, "versions", "latest"]:
                problems = store.compatibility(subject, _schema_text(payload))
                answer: dict[str, Any] = {"is_compatible": not problems}
                if query.get("verbose", ["false"])[0] == "true":
                    answer["messages"] = problems
                return answer
            case "GET", ["config"]:
                return {"compatibilityLevel": store.level}
            case "PUT", ["config"]:
                return {"compatibility": store.set_level(None, payload.get("compatibility"))}
            case "GET", ["config", subject]:
                default = query.get("defaultToGlobal", ["false"])[0] == "true"
                return {"compatibilityLevel": store.subject_level(subject, default)}
            case "PUT", ["config", subject]:
                return {"compatibility": store.set_level(subject, payload.get("compatibility"))}
        raise RegistryRefusal(404, 404, f"no such endpoint: {method} /{'/'.join(path)}")


def _handler(registry: LocalRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, answer = registry.answer(self.command, self.path, self.headers, body)
            data = json.dumps(answer).encode("utf-8")
            self.send_response(status, HTTPStatus(status).phrase)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # the base's names
            pass

    return Handler


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise RegistryRefusal(422, 42202, f"not a number: {text!r}") from None


def _schema_text(payload: Any) -> str:
    if not isinstance(payload, dict) or not isinstance(payload.get("schema"), str):
        raise RegistryRefusal(422, 42201, "the request has no schema")
    kind = str(payload.get("schemaType") or "AVRO").upper()
    if kind != "AVRO":
        raise RegistryRefusal(422, 42201, f"only Avro schemas are kept here, not {kind}")
    if payload.get("references"):
        raise RegistryRefusal(422, 42201, "schema references are not supported here")
    return str(payload["schema"])


def _parsed(text: str) -> Any:
    try:
        schema = json.loads(text)
        parse_schema(copy.deepcopy(schema))
        can_read(schema, schema)  # the checker's own reading of it
    except Exception as exc:  # not JSON, not Avro to fastavro or to the checker
        raise RegistryRefusal(422, 42201, f"Invalid schema: {exc}") from exc
    return schema


def _key(schema: Any) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def _version(subject: str, number: int, schema_id: int, text: str) -> dict[str, Any]:
    return {"subject": subject, "version": number, "id": schema_id, "schema": text}
