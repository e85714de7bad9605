"""Decoding fails only with CodecError subclasses that keep the raw bytes.

A consumer catches :class:`~engine.errors.CodecError`, dead-letters ``error.raw`` and moves on;
any other exception would stop it. Random bytes, random bodies behind a valid header and
mutations of valid records must therefore never raise anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import codec
from engine.codec import WrongKindError
from engine.errors import CodecError, CorruptRecordError, UnknownSchemaError
from engine.lifecycle.records import Event, JobCompleted
from tests.unit.fixtures import strategies as s

DECODERS: dict[str, Callable[[bytes], Any]] = {
    "Command": codec.decode_command,
    "Report": codec.decode_report,
    "Event": codec.decode_event,
    "Dispatch": codec.decode_dispatch,
    "Control": codec.decode_control,
    "Snapshot": codec.decode_snapshot,
    "DeadLetter": codec.decode_deadletter,
}
VALID: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], bytes]]] = {
    "Command": (s.commands, codec.encode_command),
    "Report": (s.reports, codec.encode_report),
    "Event": (s.events, codec.encode_event),
    "Dispatch": (s.dispatches, codec.encode_dispatch),
    "Control": (s.controls, codec.encode_control),
    "Snapshot": (s.submission_states(), codec.encode_snapshot),
    "DeadLetter": (s.dead_letters, codec.encode_deadletter),
}
EVENT = Event("sub-1:3", "sub-1", "a", 3, 1_767_225_600_000, JobCompleted(1, "42"))

fuzz = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_or_codec_error(name: str, raw: bytes) -> None:
    """Decode; any failure must be a CodecError holding exactly the given bytes."""
    try:
        DECODERS[name](raw)
    except CodecError as exc:
        assert exc.raw == raw
        assert str(exc)


@st.composite
def mutations(draw: st.DrawFn, raw: bytes) -> bytes:
    """``raw`` with bytes flipped, inserted, deleted, or cut off."""
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete" and data:
            del data[at : at + draw(st.integers(1, 4))]
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


# --------------------------------------------------------------------------- fuzzing


@pytest.mark.parametrize("name", sorted(DECODERS))
@given(raw=st.binary(max_size=64))
@fuzz
def test_random_bytes_only_raise_codec_errors(name: str, raw: bytes) -> None:
    decode_or_codec_error(name, raw)


@pytest.mark.parametrize("name", sorted(DECODERS))
@given(body=st.binary(max_size=200))
@fuzz
def test_random_bodies_behind_a_valid_header_only_raise_codec_errors(
    name: str, body: bytes
) -> None:
    decode_or_codec_error(name, b"\xc3\x01" + codec.fingerprint(name) + body)


@pytest.mark.parametrize("name", sorted(DECODERS))
@given(data=st.data())
@settings(fuzz, max_examples=50)
def test_mutated_records_only_raise_codec_errors(name: str, data: st.DataObject) -> None:
    records, encode = VALID[name]
    raw = encode(data.draw(records, label="record"))
    # keep the header most of the time, so that the mutations reach the body
    header, body = raw[:10], raw[10:]
    if data.draw(st.booleans(), label="mutate header"):
        decode_or_codec_error(name, data.draw(mutations(raw), label="mutated"))
    else:
        decode_or_codec_error(name, header + data.draw(mutations(body), label="mutated body"))


# --------------------------------------------------------------------------- each failure


def test_bytes_without_the_header_are_an_unknown_schema() -> None:
    raw = b'{"json": "perhaps"}'
    with pytest.raises(UnknownSchemaError, match="single-object header") as caught:
        codec.decode_event(raw)
    assert caught.value.raw == raw


@pytest.mark.parametrize("raw", [b"", b"\xc3", b"\xc3\x01\x00\x01"])
def test_bytes_shorter_than_the_header_are_an_unknown_schema(raw: bytes) -> None:
    with pytest.raises(UnknownSchemaError):
        codec.decode_event(raw)


def test_an_unknown_fingerprint_is_an_unknown_schema() -> None:
    raw = b"\xc3\x01" + bytes(8) + b"\x00"
    with pytest.raises(UnknownSchemaError, match="0000000000000000") as caught:
        codec.decode_event(raw)
    assert caught.value.raw == raw


def test_an_event_given_to_the_command_decoder_is_of_the_wrong_kind() -> None:
    raw = codec.encode_event(EVENT)
    with pytest.raises(WrongKindError, match="is a joblog Event, not a Command") as caught:
        codec.decode_command(raw)
    assert isinstance(caught.value, UnknownSchemaError)
    assert (caught.value.expected, caught.value.actual) == ("Command", "Event")
    assert caught.value.raw == raw


@pytest.mark.parametrize("name", sorted(set(DECODERS) - {"Event"}))
def test_every_decoder_refuses_an_event(name: str) -> None:
    with pytest.raises(WrongKindError):
        DECODERS[name](codec.encode_event(EVENT))


def test_a_truncated_record_is_corrupt() -> None:
    raw = codec.encode_event(EVENT)
    with pytest.raises(CorruptRecordError, match="truncated or damaged") as caught:
        codec.decode_event(raw[:-3])
    assert caught.value.raw == raw[:-3]


def test_trailing_bytes_are_corrupt() -> None:
    raw = codec.encode_event(EVENT) + b"\x00"
    with pytest.raises(CorruptRecordError, match="1 bytes left over"):
        codec.decode_event(raw)


def test_an_out_of_range_union_branch_is_corrupt() -> None:
    raw = bytearray(codec.encode_event(EVENT))
    # JobCompleted(1, "42") is the last 7 bytes (ended_at 0 last); before them, its branch
    # index 12 (zig-zag 24)
    assert raw[-8] == 24
    raw[-8] = 126  # branch 63 of a 21-branch union
    with pytest.raises(CorruptRecordError):
        codec.decode_event(bytes(raw))


@pytest.mark.parametrize("value", [None, "c3 01", 42])
def test_a_value_that_is_not_bytes_is_a_codec_error(value: Any) -> None:
    with pytest.raises(CodecError, match="must be bytes"):
        codec.decode_event(value)


def test_bytearray_and_memoryview_decode_like_bytes() -> None:
    raw = codec.encode_event(EVENT)
    assert codec.decode_event(bytearray(raw)) == EVENT  # type: ignore[arg-type]
    assert codec.decode_event(memoryview(raw)) == EVENT  # type: ignore[arg-type]
    with pytest.raises(CorruptRecordError) as caught:
        codec.decode_event(bytearray(raw[:-1]))  # type: ignore[arg-type]
    assert caught.value.raw == raw[:-1]


# --------------------------------------------------------------------------- encoding


def test_encoding_something_else_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="cannot encode Event as Command"):
        codec.encode_command(EVENT)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="cannot encode str as Event"):
        codec.encode_event("hello")  # type: ignore[arg-type]


def test_a_value_the_schema_cannot_carry_is_a_codec_error() -> None:
    too_big = Event("e", "s", "j", 2**64, 0, JobCompleted(1))
    with pytest.raises(CodecError):
        codec.encode_event(too_big)
    not_a_string = Event("e", "s", None, 1, 0, JobCompleted(1))  # type: ignore[arg-type]
    with pytest.raises(CodecError):
        codec.encode_event(not_a_string)
