"""The Avro schemas: where they are, how a topic schema is assembled, and what each version is.

``schemas/`` holds one file per topic schema (``Event.avsc``, ...) and one file per named type
that several topic schemas share, named after the type's full name
(``joblog.v1.JobSpec.avsc``). A topic schema refers to a shared type by its full name;
:func:`bundle` inlines the definition at its first use, which gives the self-contained schema
that is fingerprinted and written with. ``schemas/history/`` keeps earlier versions of topic
schemas, self-contained, as ``<Name>-<fingerprint>.avsc``, so that records written with them
still decode (by Avro's resolution rules) after the schema evolved.

Everything here runs once, when :mod:`engine.codec` is imported: :data:`REGISTRY` holds every
schema version parsed and fingerprinted.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint as rabin_fingerprint
from fastavro.schema import to_parsing_canonical_form

from engine.codec.compiled import Reader, Writer, compile_reader, compile_writer
from engine.errors import CodecError, UnknownSchemaError

NAMESPACE = "joblog.v1"
#: Single-object encoding marker, followed by the 8-byte fingerprint and the Avro body.
MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
#: The top-level schemas, one per kind of topic (DESIGN.md §2).
TOPIC_SCHEMAS = ("Command", "Report", "Event", "Dispatch", "Control", "Snapshot", "DeadLetter")

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})


def find_schema_dir(package_dir: Path) -> Path:
    """Find the ``.avsc`` files for the ``engine`` package at ``package_dir``.

    An installed wheel carries them in ``engine/_schemas``; a source checkout (or an editable
    install) has them in ``schemas/`` beside the ``engine`` package.

    Args:
        package_dir: the directory of the ``engine`` package.

    Returns:
        The first of the two directories that holds ``Event.avsc``.

    Raises:
        CodecError: neither directory holds the schemas.
    """
    candidates = (package_dir / "_schemas", package_dir.parent / "schemas")
    for candidate in candidates:
        if (candidate / "Event.avsc").is_file():
            return candidate
    looked = " and ".join(str(c) for c in candidates)
    raise CodecError(f"joblog's Avro schemas are missing (looked in {looked}); reinstall joblog")


#: The directory of the schemas this package reads and writes.
SCHEMA_DIR = find_schema_dir(Path(__file__).resolve().parent.parent)


def bundle(name: str, directory: Path = SCHEMA_DIR) -> dict[str, Any]:
    """Assemble the self-contained form of a topic schema.

    Each shared named type is inlined at its first use and referred to by name afterwards,
    which is the form every Avro library parses on its own and the one that is fingerprinted.

    Args:
        name: the topic schema, e.g. ``"Event"``.
        directory: where ``<name>.avsc`` and the shared ``<full name>.avsc`` files are.

    Returns:
        The schema as JSON-like data.

    Raises:
        CodecError: a file is missing or is not JSON, or a type is referred to but defined
            nowhere.
    """
    schema = _inline(_read(directory / f"{name}.avsc"), NAMESPACE, set(), directory)
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise CodecError(f"{directory / name}.avsc must hold an Avro record schema")
    return schema


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CodecError(f"cannot read the Avro schema {path}: {exc}") from exc


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name else f"{namespace}.{name}"


def _inline(node: Any, namespace: str, defined: set[str], directory: Path) -> Any:
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return node
        full = _full_name(node, namespace)
        if full in defined:
            return node
        path = directory / f"{full}.avsc"
        if not path.is_file():
            raise CodecError(f"the Avro type {full} is used but not defined; expected it in {path}")
        return _inline(_read(path), namespace, defined, directory)
    if isinstance(node, list):
        return [_inline(branch, namespace, defined, directory) for branch in node]
    kind = node["type"]
    if kind in _NAMED:
        full = _full_name(node["name"], node.get("namespace", namespace))
        defined.add(full)
        if kind in ("record", "error"):
            inner = full.rpartition(".")[0]
            fields = [
                {**f, "type": _inline(f["type"], inner, defined, directory)} for f in node["fields"]
            ]
            return {**node, "fields": fields}
        return node
    if kind == "array":
        return {**node, "items": _inline(node["items"], namespace, defined, directory)}
    if kind == "map":
        return {**node, "values": _inline(node["values"], namespace, defined, directory)}
    return {**node, "type": _inline(kind, namespace, defined, directory)}


def _without_logical_types(node: Any) -> Any:
    # fastavro would turn timestamp-millis into datetime objects and back on every record; the
    # records keep integer milliseconds, and the canonical form (hence the fingerprint and the
    # bytes) ignores logical types, so the codec parses the schemas without them.
    if isinstance(node, list):
        return [_without_logical_types(branch) for branch in node]
    if not isinstance(node, dict):
        return node
    if "logicalType" in node and node["type"] in _PRIMITIVES:
        return node["type"]
    node = dict(node)
    for key in ("type", "items", "values"):
        if key in node:
            node[key] = _without_logical_types(node[key])
    if "fields" in node:
        node["fields"] = [_without_logical_types(f) for f in node["fields"]]
    return node


def canonical_form(schema: Any) -> str:
    """The Parsing Canonical Form of a self-contained schema (Avro specification)."""
    return str(to_parsing_canonical_form(copy.deepcopy(schema)))


def schema_fingerprint(schema: Any) -> bytes:
    """The CRC-64-AVRO (Rabin) fingerprint of a schema's canonical form, in wire byte order.

    Args:
        schema: a self-contained schema as JSON-like data.

    Returns:
        8 bytes, little-endian, as they follow ``C3 01`` in single-object encoding.
    """
    return bytes.fromhex(rabin_fingerprint(canonical_form(schema), "CRC-64-AVRO"))


@dataclass(frozen=True, eq=False)
class WriterSchema:
    """One version of a topic schema that records may have been written with.

    Attributes:
        name: the topic schema it is a version of, e.g. ``"Event"``.
        fingerprint: CRC-64-AVRO of its canonical form, in wire byte order.
        schema: the self-contained schema as JSON-like data.
        parsed: the schema parsed by fastavro (logical types left out).
        reader: ``None`` for the current version; for an older one, the current version's
            parsed schema, which its records are resolved to.
        header: the single-object header of records written with it.
    """

    name: str
    fingerprint: bytes
    schema: dict[str, Any]
    parsed: Any
    reader: Any
    header: bytes

    @property
    def current(self) -> bool:
        """This is the version the package writes."""
        return self.reader is None

    @cached_property
    def fast_writer(self) -> Writer | None:
        """Generated code that writes this version's records (:mod:`engine.codec.compiled`),
        generated at first use; ``None`` where fastavro writes them."""
        return compile_writer(self.parsed)

    @cached_property
    def fast_reader(self) -> Reader | None:
        """Generated code that reads this version's records, for the current version only:
        an older one's are resolved to the current schema by fastavro."""
        return compile_reader(self.parsed) if self.current else None


class SchemaRegistry:
    """Every schema version a reader knows, by fingerprint.

    The current version of each topic schema comes from the schema directory; older versions
    come from its ``history/`` subdirectory or from :meth:`register`.
    """

    def __init__(self) -> None:
        self._current: dict[str, WriterSchema] = {}
        self._by_fingerprint: dict[bytes, WriterSchema] = {}

    @classmethod
    def load(cls, directory: Path) -> SchemaRegistry:
        """Load the current topic schemas of ``directory`` and its ``history/``.

        Args:
            directory: a schema directory laid out like ``schemas/``.

        Returns:
            A registry holding every version found.

        Raises:
            CodecError: a schema is missing, malformed, or a history file's name does not
                match its content.
        """
        registry = cls()
        for name in TOPIC_SCHEMAS:
            schema = bundle(name, directory)
            parsed = _parse(name, schema)
            fp = schema_fingerprint(schema)
            entry = WriterSchema(name, fp, schema, parsed, None, MAGIC + fp)
            registry._current[name] = entry
            registry._by_fingerprint[fp] = entry
        history = directory / "history"
        for path in sorted(history.glob("*.avsc")) if history.is_dir() else ():
            name, _, expected = path.stem.partition("-")
            fp = registry.register(name, _read(path))
            if fp.hex() != expected:
                raise CodecError(
                    f"{path} holds the schema with fingerprint {fp.hex()}; "
                    f"rename it to {name}-{fp.hex()}.avsc"
                )
        return registry

    def register(self, name: str, schema: dict[str, Any]) -> bytes:
        """Make an older version of a topic schema known, so its records decode.

        Records written with it are resolved to the current version by Avro's rules: fields
        added since then take their defaults, removed ones are skipped.

        Args:
            name: the topic schema it is a version of, e.g. ``"Event"``.
            schema: the self-contained writer schema.

        Returns:
            Its fingerprint.

        Raises:
            UnknownSchemaError: ``name`` is not a topic schema.
            CodecError: the schema does not parse or is not a version of ``name``.
        """
        current = self.current(name)
        fp = schema_fingerprint(schema)
        known = self._by_fingerprint.get(fp)
        if known is not None:
            if known.name != name:
                raise CodecError(f"the schema {fp.hex()} is a version of {known.name}, not {name}")
            return fp
        full = _full_name(str(schema.get("name", "")), str(schema.get("namespace", NAMESPACE)))
        if full != f"{NAMESPACE}.{name}":
            raise CodecError(
                f"a version of {name} must be the record {NAMESPACE}.{name}, not {full}"
            )
        entry = WriterSchema(name, fp, schema, _parse(name, schema), current.parsed, MAGIC + fp)
        self._by_fingerprint[fp] = entry
        return fp

    def current(self, name: str) -> WriterSchema:
        """The version of topic schema ``name`` that the package writes.

        Raises:
            UnknownSchemaError: ``name`` is not a topic schema.
        """
        try:
            return self._current[name]
        except KeyError:
            known = ", ".join(TOPIC_SCHEMAS)
            raise UnknownSchemaError(f"no topic schema {name!r}; known: {known}") from None

    def get(self, fingerprint: bytes) -> WriterSchema | None:
        """The version with this fingerprint, or ``None`` if it is unknown."""
        return self._by_fingerprint.get(fingerprint)

    def __iter__(self) -> Iterator[WriterSchema]:
        """Every known version, current ones first."""
        return iter(sorted(self._by_fingerprint.values(), key=lambda w: not w.current))


def _parse(name: str, schema: dict[str, Any]) -> Any:
    try:
        return parse_schema(_without_logical_types(schema))
    except Exception as exc:
        raise CodecError(f"the Avro schema {name} does not parse: {exc}") from exc


#: Every schema version this process reads; the codec functions use it.
REGISTRY = SchemaRegistry.load(SCHEMA_DIR)


def fingerprint(schema_name: str) -> bytes:
    """The fingerprint of the current version of a topic schema.

    Args:
        schema_name: e.g. ``"Event"``.

    Returns:
        8 bytes, in the order they follow ``C3 01`` on the wire.

    Raises:
        UnknownSchemaError: ``schema_name`` is not a topic schema.
    """
    return REGISTRY.current(schema_name).fingerprint
