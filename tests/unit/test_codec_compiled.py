"""The generated Avro code writes the bytes fastavro writes and reads what fastavro reads.

Two sources of records: records drawn from the schemas themselves (every branch of every
union, edge values of every primitive, missing fields with defaults), and the records the
engine really writes (the codec's hypothesis strategies), which must all take the generated
path rather than fall back to fastavro.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.codec import commands, dispatch, events, reports, snapshots
from engine.codec.compiled import compile_reader, compile_writer
from engine.codec.framing import encode
from engine.codec.schemas import REGISTRY, TOPIC_SCHEMAS, WriterSchema
from engine.errors import CodecError
from engine.lifecycle.records import Control, Event, JobAssigned
from engine.lifecycle.state import SubmissionState
from tests.unit.fixtures import strategies as s

quick = settings(max_examples=60, deadline=None)

_EDGE_VALUES: dict[str, Callable[[random.Random], Any]] = {
    "null": lambda r: None,
    "boolean": lambda r: r.random() < 0.5,
    "int": lambda r: r.choice([0, 1, -1, 63, 64, -64, -65, 2**31 - 1, -(2**31), r.randint(-9, 99)]),
    "long": lambda r: r.choice([0, -1, 2**63 - 1, -(2**63), 1_767_000_000_123, r.randint(-9, 99)]),
    "float": lambda r: r.choice([0.0, 0.5, -2.0]),
    "double": lambda r: r.choice([0.0, -1.5, 1e300, 5e-324, r.random()]),
    "bytes": lambda r: bytes(r.randrange(256) for _ in range(r.choice([0, 3, 63, 64, 200]))),
    "string": lambda r: r.choice(["", "a", "ü€😀", "x" * 63, "y" * 64, "z" * 300]),
}


def _named_types(schema: Any, names: dict[str, Any]) -> dict[str, Any]:
    if isinstance(schema, list):
        for branch in schema:
            _named_types(branch, names)
    elif isinstance(schema, dict):
        kind = schema["type"]
        if kind in ("record", "enum", "fixed") and schema["name"] not in names:
            names[schema["name"]] = schema
            for field in schema.get("fields", ()):
                _named_types(field["type"], names)
        elif kind == "array":
            _named_types(schema["items"], names)
        elif kind == "map":
            _named_types(schema["values"], names)
    return names


def _value(schema: Any, names: dict[str, Any], r: random.Random, depth: int = 0) -> Any:
    """A random value of ``schema`` in the notation the engine hands fastavro."""
    if isinstance(schema, str):
        if schema in names:
            return _value(names[schema], names, r, depth)
        return _EDGE_VALUES[schema](r)
    if isinstance(schema, list):
        branch = r.choice(schema) if depth < 4 else ("null" if "null" in schema else schema[0])
        resolved = names.get(branch, branch) if isinstance(branch, str) else branch
        value = _value(branch, names, r, depth + 1)
        records = [b for b in schema if b != "null"]
        if isinstance(resolved, dict) and resolved["type"] == "record" and len(records) > 1:
            return (resolved["name"], value)  # fastavro's notation for a union of records
        return list(value) if isinstance(value, tuple) else value  # a tuple names a branch
    kind = schema["type"]
    if kind == "record":
        return {
            field["name"]: _value(field["type"], names, r, depth + 1)
            for field in schema["fields"]
            if "default" not in field or r.random() > 0.1  # sometimes left to its default
        }
    if kind == "enum":
        return r.choice(schema["symbols"])
    if kind == "array":
        count = r.choice([0, 1, 2, 70]) if depth < 3 else 0
        items = [_value(schema["items"], names, r, depth + 1) for _ in range(count)]
        return tuple(items) if r.random() < 0.3 else items
    if kind == "map":
        return {f"k{i}": _value(schema["values"], names, r, depth + 1) for i in range(2)}
    return _value(kind, names, r, depth)


def _fastavro_bytes(schema: WriterSchema, record: Any) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, schema.parsed, record)
    return buffer.getvalue()


def _fastavro_record(schema: WriterSchema, raw: bytes) -> Any:
    return schemaless_reader(io.BytesIO(raw), schema.parsed, None, return_record_name=True)


@pytest.mark.parametrize("name", TOPIC_SCHEMAS)
def test_every_topic_schema_gets_generated_code(name: str) -> None:
    schema = REGISTRY.current(name)
    assert schema.fast_writer is not None
    assert schema.fast_reader is not None


@pytest.mark.parametrize("name", TOPIC_SCHEMAS)
@pytest.mark.parametrize("seed", range(3))
def test_records_drawn_from_the_schema_match_fastavro(name: str, seed: int) -> None:
    schema = REGISTRY.current(name)
    writer, reader = schema.fast_writer, schema.fast_reader
    assert writer is not None and reader is not None
    names = _named_types(schema.parsed, {})
    r = random.Random(f"{name}/{seed}")
    for _ in range(300):
        record = _value(schema.parsed, names, r)
        expected = _fastavro_bytes(schema, record)
        assert writer(b"", record) == expected
        assert reader(expected, 0) == (_fastavro_record(schema, expected), len(expected))


def _assert_generated_path(schema: WriterSchema, record: Any) -> None:
    writer, reader = schema.fast_writer, schema.fast_reader
    assert writer is not None and reader is not None
    written = writer(schema.header, record)  # raises if it would fall back to fastavro
    assert written == schema.header + _fastavro_bytes(schema, record)
    body = written[len(schema.header) :]
    assert reader(written, len(schema.header)) == (_fastavro_record(schema, body), len(written))


_SCHEMA = REGISTRY.current


@given(s.commands)
@quick
def test_commands_take_the_generated_path(command: Any) -> None:
    _assert_generated_path(_SCHEMA("Command"), commands._to_avro(command))


@given(s.reports)
@quick
def test_reports_take_the_generated_path(report: Any) -> None:
    _assert_generated_path(_SCHEMA("Report"), reports._to_avro(report))


@given(s.events)
@quick
def test_events_take_the_generated_path(event: Any) -> None:
    _assert_generated_path(_SCHEMA("Event"), events._to_avro(event))


@given(st.data())
@quick
def test_every_event_body_takes_the_generated_path(data: st.DataObject) -> None:
    for bodies in s.event_bodies_by_class.values():
        event = data.draw(s.events_with(bodies))
        _assert_generated_path(_SCHEMA("Event"), events._to_avro(event))


@given(s.dispatches)
@quick
def test_dispatches_take_the_generated_path(record: Any) -> None:
    _assert_generated_path(_SCHEMA("Dispatch"), dispatch._to_avro(record))


@given(s.controls)
@quick
def test_controls_take_the_generated_path(record: Any) -> None:
    _assert_generated_path(_SCHEMA("Control"), vars(record))


@given(s.dead_letters)
@quick
def test_dead_letters_take_the_generated_path(record: Any) -> None:
    _assert_generated_path(_SCHEMA("DeadLetter"), vars(record))


@given(s.submission_states())
@settings(max_examples=20, deadline=None)
def test_snapshots_take_the_generated_path(state: SubmissionState) -> None:
    schema = _SCHEMA("Snapshot")
    _assert_generated_path(schema, snapshots._to_avro(state))
    _assert_generated_path(schema, snapshots._header_to_avro((state, tuple(state.jobs))))
    for job_id in state.jobs:
        _assert_generated_path(schema, snapshots._job_part_to_avro((state, job_id)))


def _control(**changes: Any) -> dict[str, Any]:
    kill = Control("w1", "kill", "s1", "j", 1, "s1/j/1", "canceled", 5000, 1_767_000_000_000)
    return vars(kill) | changes


def test_what_the_generated_code_refuses_fastavro_decides() -> None:
    schema = _SCHEMA("Control")
    writer = schema.fast_writer
    assert writer is not None
    for odd in ({"grace_ms": 1.5}, {"attempt": "1"}, {"reason": b"bytes"}, {"job_id": None}):
        record = _control(**odd)
        with pytest.raises((TypeError, AttributeError)):
            writer(schema.header, record)
        try:
            expected = schema.header + _fastavro_bytes(schema, record)
        except Exception:  # fastavro refuses it too: so does the codec, with its reason
            with pytest.raises(CodecError, match="cannot encode"):
                encode(schema, lambda r: r, record)
        else:
            assert encode(schema, lambda r: r, record) == expected


def test_a_truncated_record_is_refused_by_the_generated_reader() -> None:
    schema = _SCHEMA("Event")
    reader = schema.fast_reader
    assert reader is not None
    body = JobAssigned(1, "s1/j/1", "worker-1", 30_000, "node-1", "")
    raw = events.encode_event(Event("s1:2", "s1", "j", 2, 1_767_000_000_000, body))
    start = len(schema.header)
    assert reader(raw, start)[1] == len(raw)
    for cut in range(start, len(raw)):
        with pytest.raises((IndexError, EOFError)):
            reader(raw[:cut], start)


def test_a_schema_with_a_union_fastavro_must_guess_gets_no_generated_code() -> None:
    schema = {
        "type": "record",
        "name": "T",
        "fields": [{"name": "x", "type": ["string", "long", {"type": "array", "items": "int"}]}],
    }
    assert compile_writer(schema) is None
    assert compile_reader(schema) is not None  # reading needs no guess: the index says
