"""Avro binary writers and readers generated from a schema, for the hot paths.

fastavro's ``schemaless_writer`` and ``schemaless_reader`` interpret the parsed schema for
every record: a call costs about 6 µs for an event of six fields, most of it walking the
schema (the event's body union alone names 34 records). The scheduler encodes six events, a
dispatch and a snapshot per job, and the projector decodes every event, so that walk was a
third of each service's CPU. This module turns a parsed schema into Python source, once, in
which each record is one function that writes or reads its fields in order with the
primitives inlined; the generated code does in about 2 µs what the interpreter does in 6.

The generated code is a fast path, never the authority:

* **Writing.** It takes only the values it knows how to write exactly as fastavro writes them
  (a ``str`` for a string, an ``int`` for a long, a union of records in fastavro's
  ``(name, fields)`` notation...). Whatever else it meets raises, and :func:`encode` then asks
  fastavro, which writes the record or says what is wrong with it. The bytes are the same
  either way (``tests/unit/test_codec_compiled.py`` compares them on generated records of
  every topic schema).
* **Reading.** It reads records of the current schema versions only (an older writer schema
  needs Avro's resolution rules, which stay fastavro's), returns what fastavro returns with
  ``return_record_name=True``, and any record it cannot read is read again by fastavro, so a
  corrupt record's error is fastavro's.

A schema with a construct the generator does not cover (a union that needs fastavro's
type-guessing, a default it cannot take as is) gets no generated code: :func:`compile_writer`
and :func:`compile_reader` return ``None`` and fastavro does all the work.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

#: Writes one record after ``header``: ``writer(header, record) -> bytes``.
Writer = Callable[[bytes, Any], bytes]
#: Reads one record from ``raw`` at ``start``: ``reader(raw, start) -> (record, end)``.
Reader = Callable[[bytes, int], tuple[Any, int]]

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_LONG_MIN = -(2**63)
_LONG_MAX = 2**63 - 1


class Unsupported(Exception):
    """The schema has a construct the generator leaves to fastavro."""


def _varint(out: bytearray, n: int) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _zigzag_bytes(value: int) -> bytes:
    out = bytearray()
    _varint(out, (value << 1) ^ (value >> 63))
    return bytes(out)


def _read_varint(raw: bytes, pos: int, first: int) -> tuple[int, int]:
    """The rest of a varint whose first byte ``first`` (continuation bit set) was at pos-1."""
    n = first & 0x7F
    shift = 7
    while True:
        b = raw[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


class _Source:
    """The Python source being generated and the constants it refers to."""

    def __init__(self) -> None:
        self.functions: list[str] = []
        self.constants: dict[str, Any] = {}
        self.names: dict[str, Any] = {}  # full name -> schema of every named type seen
        self.record_functions: dict[str, str] = {}  # full name -> generated function's name
        self.pending: list[tuple[str, dict[str, Any]]] = []
        self.union_tables: list[str] = []  # constants that name generated functions
        self._counter = 0

    def fresh(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def constant(self, value: Any, prefix: str = "K") -> str:
        name = self.fresh(prefix)
        self.constants[name] = value
        return name

    def learn(self, schema: Any) -> None:
        """Collects every named type of ``schema`` (definitions come at their first use)."""
        if isinstance(schema, list):
            for branch in schema:
                self.learn(branch)
        elif isinstance(schema, dict):
            kind = schema["type"]
            if kind in ("record", "error", "enum", "fixed"):
                if schema["name"] in self.names:
                    return
                self.names[schema["name"]] = schema
                for field in schema.get("fields", ()):
                    self.learn(field["type"])
            elif kind == "array":
                self.learn(schema["items"])
            elif kind == "map":
                self.learn(schema["values"])
            elif isinstance(kind, dict | list):
                self.learn(kind)

    def resolve(self, schema: Any) -> Any:
        """A named reference replaced by its definition; anything else as it is."""
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            try:
                return self.names[schema]
            except KeyError:
                raise Unsupported(f"unknown named type {schema}") from None
        if isinstance(schema, dict) and isinstance(schema["type"], dict | list):
            return self.resolve(schema["type"])
        if isinstance(schema, dict) and schema["type"] in _PRIMITIVES:
            return schema["type"]
        return schema

    def record_function(self, schema: dict[str, Any], prefix: str) -> str:
        name = schema["name"]
        function = self.record_functions.get(name)
        if function is None:
            function = self.record_functions[name] = self.fresh(prefix)
            self.pending.append((function, schema))
        return function


# ------------------------------------------------------------------------------ writing


def _write_code(src: _Source, schema: Any, var: str, indent: str, lines: list[str]) -> None:
    """Lines that append the encoding of the value in ``var`` to ``out``."""
    schema = src.resolve(schema)
    if isinstance(schema, str):
        if schema == "null":
            return
        if schema == "boolean":
            lines.append(f"{indent}out.append(1 if {var} else 0)")
        elif schema in ("int", "long"):
            lines += [
                f"{indent}if type({var}) is not int and type({var}) is not bool: raise TypeError",
                f"{indent}if not {_LONG_MIN} <= {var} <= {_LONG_MAX}: raise OverflowError",
                f"{indent}n = ({var} << 1) ^ ({var} >> 63)",
                f"{indent}if n < 128: out.append(n)",
                f"{indent}else: varint(out, n)",
            ]
        elif schema == "float":
            lines.append(f"{indent}out += pack_float({var})")
        elif schema == "double":
            lines.append(f"{indent}out += pack_double({var})")
        elif schema in ("string", "bytes"):
            encoded = src.fresh("b")
            if schema == "string":
                lines.append(f"{indent}{encoded} = {var}.encode()")
            else:
                lines += [
                    f"{indent}if type({var}) is not bytes: raise TypeError",
                    f"{indent}{encoded} = {var}",
                ]
            lines += [
                f"{indent}n = len({encoded})",
                f"{indent}if n < 64: out.append(n << 1)",
                f"{indent}else: varint(out, n << 1)",
                f"{indent}out += {encoded}",
            ]
        else:
            raise Unsupported(f"type {schema}")
        return
    if isinstance(schema, list):
        _write_union(src, schema, var, indent, lines)
        return
    kind = schema["type"]
    if kind in ("record", "error"):
        function = src.record_function(schema, "w")
        lines.append(f"{indent}{function}(out, {var})")
    elif kind == "enum":
        table = src.constant({s: _zigzag_bytes(i) for i, s in enumerate(schema["symbols"])})
        lines.append(f"{indent}out += {table}[{var}]")
    elif kind == "fixed":
        lines += [
            f"{indent}if type({var}) is not bytes or len({var}) != {int(schema['size'])}: "
            "raise TypeError",
            f"{indent}out += {var}",
        ]
    elif kind in ("array", "map"):
        items = src.fresh("items")
        item = src.fresh("item")
        lines += [
            f"{indent}{items} = {var}",
            f"{indent}if {_sequence_check(items) if kind == 'array' else _map_check(items)}: "
            "raise TypeError",
            f"{indent}if {items}:",
            f"{indent}    n = len({items}) << 1",
            f"{indent}    if n < 128: out.append(n)",
            f"{indent}    else: varint(out, n)",
        ]
        if kind == "array":
            lines.append(f"{indent}    for {item} in {items}:")
            _write_code(src, schema["items"], item, indent + "        ", lines)
        else:
            key = src.fresh("key")
            lines.append(f"{indent}    for {key}, {item} in {items}.items():")
            _write_code(src, "string", key, indent + "        ", lines)
            _write_code(src, schema["values"], item, indent + "        ", lines)
        lines.append(f"{indent}out.append(0)")
    else:
        raise Unsupported(f"type {kind}")


def _sequence_check(var: str) -> str:
    return f"type({var}) is not list and type({var}) is not tuple"


def _map_check(var: str) -> str:
    return f"type({var}) is not dict"


def _write_union(
    src: _Source, branches: list[Any], var: str, indent: str, lines: list[str]
) -> None:
    resolved = [src.resolve(b) for b in branches]
    null_index = resolved.index("null") if "null" in resolved else None
    others = [i for i, b in enumerate(resolved) if b != "null"]
    if len(others) == 1 and null_index is not None:
        # the common nullable field: None is null, anything else the other branch, also in
        # fastavro's (name, value) notation
        other = others[0]
        branch = resolved[other]
        name = branch if isinstance(branch, str) else branch.get("name", branch["type"])
        lines += [
            f"{indent}if {var} is None: out.append({null_index << 1})",
            f"{indent}else:",
            f"{indent}    if type({var}) is tuple:",
            f"{indent}        if len({var}) != 2 or {var}[0] != {name!r}: raise TypeError",
            f"{indent}        {var} = {var}[1]",
            f"{indent}    out.append({other << 1})",
        ]
        _write_code(src, branches[other], var, indent + "    ", lines)
        return
    named = [resolved[i] for i in others]
    if not all(isinstance(b, dict) and b["type"] in ("record", "error") for b in named):
        raise Unsupported("a union that is neither nullable nor of records only")
    # records in fastavro's (name, fields) notation
    functions = {}
    for i in others:
        schema = resolved[i]
        functions[schema["name"]] = (_zigzag_bytes(i), src.record_function(schema, "w"))
    table = src.fresh("U")
    src.constants[table] = functions
    src.union_tables.append(table)
    lines.append(f"{indent}if {var} is None:")
    if null_index is not None:
        lines.append(f"{indent}    out.append({null_index << 1})")
    else:
        lines.append(f"{indent}    raise TypeError")
    lines += [
        f"{indent}else:",
        f"{indent}    if type({var}) is not tuple or len({var}) != 2: raise TypeError",
        f"{indent}    prefix, function = {table}[{var}[0]]",
        f"{indent}    out += prefix",
        f"{indent}    function(out, {var}[1])",
    ]


def _write_record(src: _Source, function: str, schema: dict[str, Any]) -> None:
    lines = [f"def {function}(out, d):"]
    for field in schema["fields"]:
        value = src.fresh("v")
        default = field.get("default")
        # fastavro writes a missing field's default, and null if it has none
        if default is None:
            lines.append(f"    {value} = d.get({field['name']!r})")
        else:
            lines.append(f"    {value} = d.get({field['name']!r}, {src.constant(default)})")
        _write_code(src, field["type"], value, "    ", lines)
    if len(lines) == 1:
        lines.append("    pass")
    src.functions.append("\n".join(lines))


def compile_writer(schema: Any) -> Writer | None:
    """Generated code that writes records of the fastavro-parsed ``schema``.

    Returns:
        ``writer(header, record) -> bytes``: ``header`` then the Avro body of ``record``.
        It raises on anything it does not write exactly as fastavro would (see the module
        docstring). ``None`` if the schema needs fastavro throughout.
    """
    write = _generate(
        schema,
        "w",
        _write_record,
        {
            "varint": _varint,
            "pack_float": struct.Struct("<f").pack,
            "pack_double": struct.Struct("<d").pack,
        },
    )
    if write is None:
        return None

    def writer(header: bytes, record: Any) -> bytes:
        out = bytearray(header)
        write(out, record)
        return bytes(out)

    return writer


def _generate(
    schema: Any,
    prefix: str,
    record_code: Callable[[_Source, str, dict[str, Any]], None],
    builtins: dict[str, Any],
) -> Any:
    """The generated function of the top-level record of ``schema``, with one function per
    record it holds (``record_code`` writes each); ``None`` where fastavro must do it all."""
    src = _Source()
    try:
        src.learn(schema)
        top = src.resolve(schema)
        if not isinstance(top, dict) or top["type"] != "record":
            raise Unsupported("not a record")
        entry = src.record_function(top, prefix)
        while src.pending:
            record_code(src, *src.pending.pop())
    except Unsupported:
        return None
    return _bind(src, builtins)[entry]


def _bind(src: _Source, builtins: dict[str, Any]) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__builtins__": __builtins__, **builtins}
    namespace.update(src.constants)
    exec(compile("\n\n".join(src.functions), "<joblog avro codec>", "exec"), namespace)
    # union tables name generated functions; now that they exist, put them in
    for name in src.union_tables:
        value = src.constants[name]
        if isinstance(value, dict):  # writing: record name -> (branch index, function)
            namespace[name] = {key: (index, namespace[f]) for key, (index, f) in value.items()}
        else:  # reading: branch index -> (function, record name or None)
            namespace[name] = tuple((namespace[f], named) for f, named in value)
    return namespace


# ------------------------------------------------------------------------------ reading


def _read_code(src: _Source, schema: Any, target: str, indent: str, lines: list[str]) -> None:
    """Lines that read a value at ``pos`` of ``raw`` into ``target`` and advance ``pos``."""
    schema = src.resolve(schema)
    if isinstance(schema, str):
        if schema == "null":
            lines.append(f"{indent}{target} = None")
        elif schema == "boolean":
            lines += [
                f"{indent}{target} = raw[pos] == 1",
                f"{indent}pos += 1",
            ]
        elif schema in ("int", "long"):
            lines += _read_long_lines("n", indent)
            lines.append(f"{indent}{target} = (n >> 1) ^ -(n & 1)")
        elif schema in ("float", "double"):
            size, unpack = (4, "unpack_float") if schema == "float" else (8, "unpack_double")
            lines += [
                f"{indent}if pos + {size} > len(raw): raise EOFError",
                f"{indent}{target} = {unpack}(raw, pos)[0]",
                f"{indent}pos += {size}",
            ]
        elif schema in ("string", "bytes"):
            lines += _read_long_lines("n", indent)
            lines += [
                f"{indent}n = (n >> 1) ^ -(n & 1)",
                f"{indent}end = pos + n",
                f"{indent}if n < 0 or end > len(raw): raise EOFError",
            ]
            if schema == "string":
                lines.append(f"{indent}{target} = str(raw[pos:end], 'utf-8')")
            else:
                lines.append(f"{indent}{target} = bytes(raw[pos:end])")
            lines.append(f"{indent}pos = end")
        else:
            raise Unsupported(f"type {schema}")
        return
    if isinstance(schema, list):
        _read_union(src, schema, target, indent, lines)
        return
    kind = schema["type"]
    if kind in ("record", "error"):
        function = src.record_function(schema, "r")
        lines.append(f"{indent}{target}, pos = {function}(raw, pos)")
    elif kind == "enum":
        symbols = src.constant(tuple(schema["symbols"]))
        lines += _read_long_lines("n", indent)
        lines.append(f"{indent}{target} = {symbols}[(n >> 1) ^ -(n & 1)]")
    elif kind == "fixed":
        size = int(schema["size"])
        lines += [
            f"{indent}if pos + {size} > len(raw): raise EOFError",
            f"{indent}{target} = bytes(raw[pos:pos + {size}])",
            f"{indent}pos += {size}",
        ]
    elif kind in ("array", "map"):
        items = src.fresh("items")
        item = src.fresh("item")
        count = src.fresh("count")
        lines.append(f"{indent}{items} = {'[]' if kind == 'array' else '{}'}")
        lines += _read_long_lines("n", indent)
        lines += [
            f"{indent}{count} = (n >> 1) ^ -(n & 1)",
            f"{indent}while {count}:",
            f"{indent}    if {count} < 0:",
            # a negative count is followed by the block's size in bytes
            f"{indent}        {count} = -{count}",
        ]
        lines += _read_long_lines("n", indent + "        ")
        lines.append(f"{indent}    for _ in range({count}):")
        if kind == "array":
            _read_code(src, schema["items"], item, indent + "        ", lines)
            lines.append(f"{indent}        {items}.append({item})")
        else:
            key = src.fresh("key")
            _read_code(src, "string", key, indent + "        ", lines)
            _read_code(src, schema["values"], item, indent + "        ", lines)
            lines.append(f"{indent}        {items}[{key}] = {item}")
        lines += _read_long_lines("n", indent + "    ")
        lines.append(f"{indent}    {count} = (n >> 1) ^ -(n & 1)")
        lines.append(f"{indent}{target} = {items}")
    else:
        raise Unsupported(f"type {kind}")


def _read_long_lines(var: str, indent: str) -> list[str]:
    return [
        f"{indent}{var} = raw[pos]",
        f"{indent}pos += 1",
        f"{indent}if {var} > 127: {var}, pos = read_varint(raw, pos, {var})",
    ]


def _read_union(
    src: _Source, branches: list[Any], target: str, indent: str, lines: list[str]
) -> None:
    # fastavro with return_record_name=True: a record branch, or a branch that names a type
    # defined earlier, reads as (full name, value); any other branch as its value
    table = []
    for branch in branches:
        resolved = src.resolve(branch)
        if isinstance(resolved, dict) and resolved["type"] in ("record", "error"):
            table.append((src.record_function(resolved, "r"), resolved["name"]))
        else:
            function = src.fresh("b")
            body: list[str] = [f"def {function}(raw, pos):"]
            _read_code(src, branch, "value", "    ", body)
            named = isinstance(branch, str) and branch not in _PRIMITIVES
            body.append(f"    return {'(' + repr(branch) + ', value)' if named else 'value'}, pos")
            src.functions.append("\n".join(body))
            table.append((function, None))
    name = src.fresh("R")
    src.constants[name] = tuple(table)
    src.union_tables.append(name)
    lines += _read_long_lines("n", indent)
    lines += [
        f"{indent}function, named = {name}[(n >> 1) ^ -(n & 1)]",
        f"{indent}{target}, pos = function(raw, pos)",
        f"{indent}if named is not None: {target} = (named, {target})",
    ]


def _read_record(src: _Source, function: str, schema: dict[str, Any]) -> None:
    lines = [f"def {function}(raw, pos):"]
    values = []
    for field in schema["fields"]:
        value = src.fresh("v")
        _read_code(src, field["type"], value, "    ", lines)
        values.append(f"{field['name']!r}: {value}")
    lines.append(f"    return {{{', '.join(values)}}}, pos")
    src.functions.append("\n".join(lines))


def compile_reader(schema: Any) -> Reader | None:
    """Generated code that reads records written with the fastavro-parsed ``schema`` (and
    read with the same schema: no resolution).

    Returns:
        ``reader(raw, start) -> (record, end)``, the record as fastavro's
        ``schemaless_reader(..., return_record_name=True)`` returns it. It raises on
        anything it cannot read. ``None`` if the schema needs fastavro throughout.
    """
    read: Reader | None = _generate(
        schema,
        "r",
        _read_record,
        {
            "read_varint": _read_varint,
            "unpack_float": struct.Struct("<f").unpack_from,
            "unpack_double": struct.Struct("<d").unpack_from,
        },
    )
    return read
