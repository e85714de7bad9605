"""Avro schema compatibility: can a reader schema read what a writer schema wrote?

The rules are the Avro specification's schema resolution ("Schema Resolution"): the same
primitive or a promotion (int to long, float or double; long to float or double; float to
double; string and bytes either way), records matched by name whose reader fields are in the
writer or have a default, enums whose writer symbols the reader knows (or has a default for),
fixed of the same name and size, arrays and maps by their items and values, a writer union
whose every branch the reader can read, a reader union with a branch for the writer.

:func:`check` applies a registry compatibility level (``BACKWARD``: the new schema reads the
latest; ``FORWARD``: the latest reads the new; ``FULL``: both; ``*_TRANSITIVE``: against every
earlier version, not just the latest; ``NONE``: no check). fastavro resolves records but does
not say whether two schemas are compatible, hence this module; the local registry
(:mod:`engine.registry.local`) uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.config import COMPATIBILITY_LEVELS

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
# writer type -> the reader types it is promoted to
_PROMOTIONS = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


class SchemaParseError(ValueError):
    """A schema is not valid Avro (an unknown type name, a record without fields, ...)."""


def check(level: str, new: Any, earlier: Sequence[Any]) -> list[str]:
    """Why ``new`` may not follow ``earlier`` (oldest first) under ``level``; ``[]`` if it may.

    Args:
        level: one of :data:`~engine.config.COMPATIBILITY_LEVELS`.
        new: the schema to register, as JSON-like data.
        earlier: the subject's versions, oldest first.

    Raises:
        SchemaParseError: a schema is not valid Avro.
        ValueError: ``level`` is not a compatibility level.
    """
    if level not in COMPATIBILITY_LEVELS:
        raise ValueError(f"not a compatibility level: {level}")
    if level == "NONE" or not earlier:
        return []
    against = earlier if level.endswith("_TRANSITIVE") else earlier[-1:]
    kind = level.removesuffix("_TRANSITIVE")
    problems: list[str] = []
    for old in reversed(against):
        if kind in ("BACKWARD", "FULL"):
            problems += [f"reading old data: {p}" for p in can_read(new, old)]
        if kind in ("FORWARD", "FULL"):
            problems += [f"old readers: {p}" for p in can_read(old, new)]
    return problems


def can_read(reader: Any, writer: Any) -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader``; ``[]`` if it can.

    Raises:
        SchemaParseError: a schema is not valid Avro.
    """
    readers, writers = _Names(), _Names()
    r = readers.normalize(reader, "")
    w = writers.normalize(writer, "")
    return list(dict.fromkeys(_Resolution(readers, writers).check(r, w, "")))


class _Names:
    """The named types of one schema, by full name; nodes refer to them by that name."""

    def __init__(self) -> None:
        self.types: dict[str, dict[str, Any]] = {}

    def normalize(self, node: Any, namespace: str) -> Any:
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return node
            full = _full(node, namespace)
            if full not in self.types:
                raise SchemaParseError(f"unknown type {full}")
            return full
        if isinstance(node, list):
            return [self.normalize(branch, namespace) for branch in node]
        if not isinstance(node, dict) or "type" not in node:
            raise SchemaParseError(f"not an Avro schema: {node!r}")
        kind = node["type"]
        if kind in _NAMED:
            if not isinstance(node.get("name"), str):
                raise SchemaParseError(f"a {kind} without a name")
            full = _full(node["name"], node.get("namespace", namespace))
            if full in self.types:
                raise SchemaParseError(f"{full} is defined twice")
            defined: dict[str, Any] = {**node, "type": kind, "name": full}
            self.types[full] = defined
            if kind in ("record", "error"):
                inner = full.rpartition(".")[0]
                fields = node.get("fields")
                if not isinstance(fields, list):
                    raise SchemaParseError(f"record {full} has no fields list")
                defined["fields"] = [
                    {**f, "type": self.normalize(f["type"], inner)} for f in _fields(full, fields)
                ]
            elif kind == "enum" and not isinstance(node.get("symbols"), list):
                raise SchemaParseError(f"enum {full} has no symbols")
            elif kind == "fixed" and not isinstance(node.get("size"), int):
                raise SchemaParseError(f"fixed {full} has no size")
            return full
        if kind == "array":
            return {"type": "array", "items": self.normalize(node.get("items"), namespace)}
        if kind == "map":
            return {"type": "map", "values": self.normalize(node.get("values"), namespace)}
        # {"type": "long", "logicalType": ...}, or {"type": <any schema>}
        return self.normalize(kind, namespace)

    def resolve(self, node: Any) -> Any:
        if isinstance(node, str) and node not in _PRIMITIVES:
            return self.types[node]
        return node


class _Resolution:
    def __init__(self, readers: _Names, writers: _Names) -> None:
        self.readers = readers
        self.writers = writers
        # what each pair of named types came to; None while it is being checked, so that a
        # recursive type is compatible unless some other part of it is not
        self.named: dict[tuple[str, str], list[str] | None] = {}

    def check(self, reader: Any, writer: Any, path: str) -> list[str]:
        r = self.readers.resolve(reader)
        w = self.writers.resolve(writer)
        if isinstance(w, list):
            problems: list[str] = []
            for branch in w:
                problems += self.check(reader, branch, path)
            return problems
        if isinstance(r, list):
            if any(not self.check(branch, writer, path) for branch in r):
                return []
            return [f"{path or 'the schema'}: the reader's union has no branch for {_kind(w)}"]
        rk, wk = _kind(r), _kind(w)
        if rk in _PRIMITIVES or wk in _PRIMITIVES:
            if rk == wk or rk in _PROMOTIONS.get(wk, ()):
                return []
            return [f"{path or 'the schema'}: {wk} written, {rk} read"]
        if rk != wk and {rk, wk} != {"record", "error"}:
            return [f"{path or 'the schema'}: {wk} written, {rk} read"]
        if rk == "array":
            return self.check(r["items"], w["items"], f"{path}[]")
        if rk == "map":
            return self.check(r["values"], w["values"], f"{path}{{}}")
        if _short(r["name"]) != _short(w["name"]) and _short(w["name"]) not in _aliases(r):
            return [f"{path or 'the schema'}: {w['name']} written, {r['name']} read"]
        pair = (r["name"], w["name"])
        if pair in self.named:
            return list(self.named[pair] or ())
        self.named[pair] = None
        problems = self._named(rk, r, w)
        self.named[pair] = problems
        return problems

    def _named(self, kind: str, r: dict[str, Any], w: dict[str, Any]) -> list[str]:
        if kind == "fixed":
            if r["size"] != w["size"]:
                return [f"{r['name']}: fixed of size {w['size']} written, {r['size']} read"]
            return []
        if kind == "enum":
            missing = [s for s in w["symbols"] if s not in r["symbols"]]
            if missing and "default" not in r:
                return [f"{r['name']}: symbols {', '.join(missing)} unknown to the reader"]
            return []
        return self._record(r, w)

    def _record(self, reader: dict[str, Any], writer: dict[str, Any]) -> list[str]:
        written = {f["name"]: f for f in writer["fields"]}
        problems: list[str] = []
        for field in reader["fields"]:
            names = [field["name"], *field.get("aliases", ())]
            source = next((written[n] for n in names if n in written), None)
            where = f"{reader['name']}.{field['name']}"
            if source is None:
                if "default" not in field:
                    problems.append(f"{where}: a new field without a default")
                continue
            problems += self.check(field["type"], source["type"], where)
        return problems


def _fields(record: str, fields: list[Any]) -> list[dict[str, Any]]:
    for f in fields:
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or "type" not in f:
            raise SchemaParseError(f"record {record} has a field without a name or type")
    return fields


def _full(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _short(name: str) -> str:
    return name.rpartition(".")[2]


def _aliases(node: dict[str, Any]) -> set[str]:
    return {_short(a) for a in node.get("aliases", ())}


def _kind(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "union"
    return str(node["type"])
