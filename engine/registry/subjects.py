"""joblog's schemas in a schema registry: one subject per topic, ids cached, records framed.

Subjects follow the TopicNameStrategy of the Confluent serializers: the value schema of topic
``t`` is registered under ``t-value`` (``joblog.events-value``, ``joblog.dispatch.gpu-value``),
so a consumer in any language with a Confluent deserializer finds it. A subject gets the
self-contained form of the topic schema (shared types inlined, as ``python -m engine.codec``
prints it), which needs no schema references.

Registering a writer schema under a subject, once per process:

1. Already registered there (``POST /subjects/{s}``)? Then its id is known: done.
2. The subject's compatibility level: its own, else joblog sets
   :attr:`~engine.config.RegistrySettings.compatibility` (``BACKWARD`` by default) on it, so
   a registry whose default is to check nothing (Apicurio's) still checks joblog's subjects.
3. Ask the registry whether the schema is compatible with the subject's latest version; a
   refusal is an :class:`~engine.errors.IncompatibleSchemaError` naming the subject.
4. Register it (``POST /subjects/{s}/versions``) and keep the id.

Producing then costs a dictionary lookup and a header swap per record (:meth:`Registry.frame`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from engine.codec import framing
from engine.codec.schemas import HEADER_SIZE, MAGIC, REGISTRY, WriterSchema
from engine.config import RegistrySettings
from engine.errors import (
    CodecError,
    IncompatibleSchemaError,
    SchemaRegistryError,
    SchemaRegistryUnreachable,
)
from engine.registry.client import RegistryClient

log = logging.getLogger(__name__)


def subject_for(topic: str) -> str:
    """The subject of a topic's value schema (TopicNameStrategy): ``<topic>-value``."""
    return f"{topic}-value"


class Registry:
    """joblog's view of one schema registry: the ids of its writer schemas per subject, and
    the writer schemas of the ids it reads (a :class:`~engine.codec.framing.SchemaSource`).

    Args:
        settings: the registry's settings.
        client: the HTTP client (one on ``settings`` when omitted).
    """

    def __init__(self, settings: RegistrySettings, client: RegistryClient | None = None) -> None:
        self.settings = settings
        self.client = client if client is not None else RegistryClient(settings)
        self._headers: dict[tuple[str, bytes], bytes] = {}
        self._schemas: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------- reading

    def schema(self, schema_id: int) -> dict[str, Any] | None:
        """The schema registered under ``schema_id`` (fetched once), ``None`` if there is none.

        Raises:
            SchemaRegistryError: the registry could not be asked, or refused.
        """
        schema = self._schemas.get(schema_id)
        if schema is None:
            schema = self.client.schema_by_id(schema_id)
            if schema is not None:
                self._schemas[schema_id] = schema
        return schema

    # ------------------------------------------------------------------- writing

    def frame(self, topic: str, value: bytes | None) -> bytes | None:
        """A record value for ``topic`` in the Confluent wire format.

        ``value`` is single-object encoded, as every joblog encoder writes it; its schema is
        registered under the topic's subject on first use. Anything else (a tombstone, a
        record already in the Confluent format, bytes that are not joblog's) is left as it is.

        Raises:
            IncompatibleSchemaError: the registry refuses the schema for the topic's subject.
            SchemaRegistryUnreachable / SchemaRegistryError: the schema could not be
                registered (first record of its schema on the topic only).
        """
        if value is None or value[:2] != MAGIC:
            return value
        header = self._headers.get((topic, value[2:HEADER_SIZE]))
        if header is None:
            writer = REGISTRY.get(bytes(value[2:HEADER_SIZE]))
            if writer is None:
                return value
            header = self._header(topic, writer)
        return header + value[HEADER_SIZE:]

    def register_topics(self, topics: Iterable[tuple[str, str]]) -> None:
        """Registers the current version of each topic schema under its topic's subject.

        Args:
            topics: ``(topic, topic schema name)`` pairs, e.g. ``("joblog.events", "Event")``.

        Raises:
            IncompatibleSchemaError: the registry refuses a schema; the error names the subject.
            SchemaRegistryUnreachable / SchemaRegistryError: the registry could not be asked.
        """
        for topic, name in topics:
            self._header(topic, REGISTRY.current(name))

    def register(self, topic: str, writer: WriterSchema) -> int:
        """Registers ``writer`` under the subject of ``topic`` and returns its id.

        Raises:
            IncompatibleSchemaError / SchemaRegistryUnreachable / SchemaRegistryError: as
                :meth:`register_topics`.
        """
        return int.from_bytes(self._header(topic, writer)[1:], "big")

    def _header(self, topic: str, writer: WriterSchema) -> bytes:
        key = (topic, writer.fingerprint)
        with self._lock:
            header = self._headers.get(key)
            if header is None:
                schema_id = self._register(subject_for(topic), writer)
                try:
                    header = framing.confluent_header(schema_id)
                except CodecError as exc:
                    raise SchemaRegistryError(str(exc), url=self.client.url) from exc
                self._schemas.setdefault(schema_id, writer.schema)
                if framing.schema_source() is self:
                    framing.learn_schema_id(schema_id, writer)
                self._headers[key] = header
            return header

    def _register(self, subject: str, writer: WriterSchema) -> int:
        client = self.client
        known = client.registered_id(subject, writer.schema)
        if known is not None:
            return known
        level = self._level(subject)
        compatible, messages = client.compatibility(subject, writer.schema)
        if not compatible:
            raise self._incompatible(subject, writer, level, messages)
        try:
            schema_id = client.register(subject, writer.schema)
        except SchemaRegistryUnreachable:
            raise
        except SchemaRegistryError as exc:
            if exc.status == 409:
                raise self._incompatible(subject, writer, level, (str(exc),)) from exc
            raise
        if level is None:
            self._level(subject)  # a registry that sets levels on existing subjects only
        log.info("registered %s (%s) as schema id %d", subject, writer.name, schema_id)
        return schema_id

    def _level(self, subject: str) -> str | None:
        """The subject's compatibility level, set to the configured one if it has none.

        Returns:
            The level, or ``None`` when it could not be set yet (a registry that only takes
            levels for subjects that exist).
        """
        client = self.client
        level = client.subject_level(subject)
        if level is None:
            wanted = self.settings.compatibility
            try:
                client.set_subject_level(subject, wanted)
                level = wanted
            except SchemaRegistryUnreachable:
                raise
            except SchemaRegistryError as exc:
                if exc.status == 404:
                    return None
                if exc.status not in (401, 403):
                    raise
                level = client.default_level()
                log.warning(
                    "cannot set compatibility %s on %s (%s); the registry's default %s applies",
                    wanted,
                    subject,
                    exc,
                    level,
                )
        if level == "NONE":
            log.warning("compatibility of %s is NONE: its schema changes are not checked", subject)
        return level

    def _incompatible(
        self, subject: str, writer: WriterSchema, level: str | None, messages: Iterable[str]
    ) -> IncompatibleSchemaError:
        said = tuple(messages)
        detail = f": {'; '.join(said)}" if said else ""
        return IncompatibleSchemaError(
            f"the schema registry at {self.client.url} refuses joblog's {writer.name} schema "
            f"({writer.fingerprint.hex()}) for subject {subject} under compatibility "
            f"{level or 'its default'}{detail}; the records already there were written with a "
            "schema this one cannot stand beside (see docs/operations.md, Schema registry)",
            url=self.client.url,
            subject=subject,
            level=level,
            messages=said,
        )


_connected: dict[RegistrySettings, Registry] = {}
_connected_lock = threading.Lock()


def connect(settings: RegistrySettings) -> Registry:
    """The process's :class:`Registry` for ``settings`` (one per registry, so ids and schemas
    are fetched and registered once per process), made the codec's schema source.

    Nothing is called over HTTP until a schema is registered or looked up.
    """
    with _connected_lock:
        registry = _connected.get(settings)
        if registry is None:
            registry = _connected[settings] = Registry(settings)
    framing.use_schema_source(registry)
    return registry
