"""An HTTP client of the part of the Confluent schema registry API that joblog uses.

Every call has the deadline of :attr:`RegistrySettings.timeout_s`. The calls, by path (the
same under Apicurio Registry's ``/apis/ccompat/v7``):

==========================================================  ==================================
``GET /schemas/ids/{id}``                                   a writer schema by id (decoding)
``POST /subjects/{subject}``                                is this schema registered there?
``POST /compatibility/subjects/{subject}/versions/latest``  may it be registered?
``POST /subjects/{subject}/versions``                       register it, get its id
``GET /config/{subject}``, ``PUT /config/{subject}``        the subject's compatibility level
``GET /config``                                             the registry's default level
==========================================================  ==================================

Answers the client understands are returned; a registry that does not answer in time, or
answers with a server error, raises :class:`~engine.errors.SchemaRegistryUnreachable`; any
other refusal raises :class:`~engine.errors.SchemaRegistryError` with the registry's status
and ``error_code``.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from engine.config import RegistrySettings
from engine.errors import SchemaRegistryError, SchemaRegistryUnreachable

#: The media type of the Confluent API (plain JSON is accepted too).
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
#: error_code of "subject not found", "version not found", "schema not found" and "subject
#: has no compatibility level of its own" (Confluent API).
SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402
SCHEMA_NOT_FOUND = 40403
SUBJECT_LEVEL_NOT_CONFIGURED = 40408

_Answer = tuple[int, Any]


class RegistryClient:
    """Calls a schema registry's Confluent API (the subset in the module docstring).

    Args:
        settings: the registry's URL, credentials and deadline.
    """

    def __init__(self, settings: RegistrySettings) -> None:
        self.settings = settings
        self.url = settings.url.rstrip("/")
        self._headers = {
            "Accept": f"{CONTENT_TYPE}, application/json",
            "Content-Type": CONTENT_TYPE,
        }
        if settings.basic_auth is not None:
            encoded = base64.b64encode(settings.basic_auth.encode("utf-8")).decode("ascii")
            self._headers["Authorization"] = f"Basic {encoded}"
        elif settings.token is not None:
            self._headers["Authorization"] = f"Bearer {settings.token}"

    # ----------------------------------------------------------------------- schemas

    def schema_by_id(self, schema_id: int) -> dict[str, Any] | None:
        """The Avro schema registered under ``schema_id``, ``None`` if there is none.

        Raises:
            SchemaRegistryUnreachable: no answer within the deadline, or a server error.
            SchemaRegistryError: the registry refused, or the schema is not Avro.
        """
        status, body = self._call("GET", f"/schemas/ids/{schema_id}", ok=(200, 404))
        if status == 404:
            return None
        kind = str(body.get("schemaType") or "AVRO").upper()
        if kind != "AVRO":
            raise SchemaRegistryError(
                f"schema id {schema_id} is a {kind} schema, not Avro", url=self.url, status=status
            )
        return _schema_json(body, f"schema id {schema_id}", self.url)

    def registered_id(self, subject: str, schema: dict[str, Any]) -> int | None:
        """The id of ``schema`` if it is registered under ``subject``, else ``None``.

        Raises:
            SchemaRegistryUnreachable / SchemaRegistryError: as :meth:`schema_by_id`.
        """
        status, body = self._call(
            "POST", f"/subjects/{_quote(subject)}", _schema_body(schema), ok=(200, 404)
        )
        return None if status == 404 else _schema_id(body, subject, self.url)

    def compatibility(self, subject: str, schema: dict[str, Any]) -> tuple[bool, tuple[str, ...]]:
        """Whether ``schema`` may be registered under ``subject`` by its compatibility level.

        A subject without versions takes any schema.

        Returns:
            ``(is_compatible, what the registry said is incompatible)``.

        Raises:
            SchemaRegistryUnreachable / SchemaRegistryError: as :meth:`schema_by_id`.
        """
        path = f"/compatibility/subjects/{_quote(subject)}/versions/latest?verbose=true"
        status, body = self._call("POST", path, _schema_body(schema), ok=(200, 404))
        if status == 404:
            return True, ()
        messages = body.get("messages") or ()
        return bool(body.get("is_compatible")), tuple(str(m) for m in messages)

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """Registers ``schema`` under ``subject`` (a no-op if it already is) and returns its id.

        Raises:
            SchemaRegistryError: the registry refused (409: incompatible, 422: invalid); its
                ``status`` tells which.
            SchemaRegistryUnreachable: as :meth:`schema_by_id`.
        """
        _, body = self._call("POST", f"/subjects/{_quote(subject)}/versions", _schema_body(schema))
        return _schema_id(body, subject, self.url)

    # ----------------------------------------------------------------------- compatibility

    def subject_level(self, subject: str) -> str | None:
        """The compatibility level set on ``subject`` itself, ``None`` if it has none.

        Raises:
            SchemaRegistryUnreachable / SchemaRegistryError: as :meth:`schema_by_id`.
        """
        status, body = self._call("GET", f"/config/{_quote(subject)}", ok=(200, 404))
        return None if status == 404 else _level(body)

    def default_level(self) -> str | None:
        """The registry's own compatibility level, for subjects without one.

        Raises:
            SchemaRegistryUnreachable / SchemaRegistryError: as :meth:`schema_by_id`.
        """
        _, body = self._call("GET", "/config")
        return _level(body)

    def set_subject_level(self, subject: str, level: str) -> None:
        """Sets the compatibility level of ``subject``.

        Raises:
            SchemaRegistryUnreachable / SchemaRegistryError: as :meth:`schema_by_id` (a
                registry that does not let this client configure subjects answers 401/403).
        """
        self._call("PUT", f"/config/{_quote(subject)}", {"compatibility": level})

    # ----------------------------------------------------------------------- HTTP

    def _call(
        self, method: str, path: str, payload: Any = None, ok: tuple[int, ...] = (200,)
    ) -> _Answer:
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers=self._headers
        )
        what = f"{method} {self.url}{path.partition('?')[0]}"
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:
                status, text = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read()
        except (OSError, ValueError) as exc:  # URLError, timeouts and resets are OSErrors
            raise SchemaRegistryUnreachable(
                f"the schema registry at {self.url} (JOBLOG_SCHEMA_REGISTRY_URL) did not answer "
                f"{what} within {self.settings.timeout_s:g} s: {exc}",
                url=self.url,
            ) from exc
        body = _json(text)
        if status in ok:
            return status, body
        code = body.get("error_code") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else None
        detail = f"{status} {message or text[:200].decode('utf-8', 'replace')}"
        error = SchemaRegistryUnreachable if status >= 500 else SchemaRegistryError
        raise error(
            f"the schema registry at {self.url} answered {what} with {detail}",
            url=self.url,
            status=status,
            error_code=code if isinstance(code, int) else None,
        )


def _quote(subject: str) -> str:
    return urllib.parse.quote(subject, safe="")


def _schema_body(schema: dict[str, Any]) -> dict[str, str]:
    return {"schema": json.dumps(schema, separators=(",", ":")), "schemaType": "AVRO"}


def _json(text: bytes) -> Any:
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return {}


def _schema_json(body: Any, what: str, url: str) -> dict[str, Any]:
    raw = body.get("schema") if isinstance(body, dict) else None
    try:
        schema = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        schema = None
    if not isinstance(schema, dict):
        raise SchemaRegistryError(f"{what}: the registry's answer holds no Avro record", url=url)
    return schema


def _schema_id(body: Any, subject: str, url: str) -> int:
    schema_id = body.get("id") if isinstance(body, dict) else None
    if not isinstance(schema_id, int):
        raise SchemaRegistryError(f"{subject}: the registry's answer holds no schema id", url=url)
    return schema_id


def _level(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    level = body.get("compatibilityLevel") or body.get("compatibility")
    return str(level).upper() if level else None
