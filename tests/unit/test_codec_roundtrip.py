"""Every record survives encode then decode unchanged, and keeps its order and types."""

from __future__ import annotations

import dataclasses
from typing import get_args

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.codec import (
    DeadLetter,
    decode_command,
    decode_control,
    decode_deadletter,
    decode_dispatch,
    decode_event,
    decode_report,
    decode_snapshot,
    encode_command,
    encode_control,
    encode_deadletter,
    encode_dispatch,
    encode_event,
    encode_report,
    encode_snapshot,
    fingerprint,
)
from engine.lifecycle.records import AnyCommand, Control, Dispatch, Event, EventBody, Report
from engine.lifecycle.state import SubmissionState
from tests.unit.fixtures import strategies as s
from tests.unit.fixtures.compare import same_types

# the machines running the suite may be busy: no per-example deadline
quick = settings(max_examples=75, deadline=None)
heavy = settings(max_examples=20, deadline=None)


def framed(raw: bytes, schema: str) -> None:
    assert raw[:2] == b"\xc3\x01"
    assert raw[2:10] == fingerprint(schema)


@given(s.commands)
@quick
def test_commands_round_trip(command: AnyCommand) -> None:
    raw = encode_command(command)
    framed(raw, "Command")
    same_types(decode_command(raw), command)


@given(s.reports)
@quick
def test_reports_round_trip(report: Report) -> None:
    raw = encode_report(report)
    framed(raw, "Report")
    same_types(decode_report(raw), report)


@given(s.events)
@quick
def test_events_round_trip(event: Event) -> None:
    raw = encode_event(event)
    framed(raw, "Event")
    same_types(decode_event(raw), event)


@given(st.data())
@heavy
def test_every_event_body_round_trips(data: st.DataObject) -> None:
    for cls, bodies in s.event_bodies_by_class.items():
        event = data.draw(s.events_with(bodies), label=cls.__name__)
        same_types(decode_event(encode_event(event)), event)


def test_the_strategies_cover_every_event_body() -> None:
    assert set(s.event_bodies_by_class) == set(get_args(EventBody))


@given(s.dispatches)
@quick
def test_dispatches_round_trip(dispatch: Dispatch) -> None:
    raw = encode_dispatch(dispatch)
    framed(raw, "Dispatch")
    same_types(decode_dispatch(raw), dispatch)


@given(s.controls)
@quick
def test_controls_round_trip(control: Control) -> None:
    raw = encode_control(control)
    framed(raw, "Control")
    same_types(decode_control(raw), control)


@given(s.dead_letters)
@quick
def test_dead_letters_round_trip(letter: DeadLetter) -> None:
    raw = encode_deadletter(letter)
    framed(raw, "DeadLetter")
    same_types(decode_deadletter(raw), letter)


@given(s.submission_states())
@heavy
def test_snapshots_round_trip_with_transient_fields_and_order(state: SubmissionState) -> None:
    raw = encode_snapshot(state)
    framed(raw, "Snapshot")
    decoded = decode_snapshot(raw)
    # dataclass equality skips the transient fields and dict order; same_types does not
    same_types(decoded, state)
    assert decoded == state
    for mapping in (decoded.jobs, decoded.dependents, decoded.children):
        assert type(mapping) is dict


@given(s.submission_states())
@heavy
def test_equal_snapshots_encode_to_equal_bytes(state: SubmissionState) -> None:
    # waiting_on is a set: its iteration order must not leak into the bytes
    shuffled = state.copy()
    shuffled.jobs = {
        job_id: dataclasses.replace(
            job,
            waiting_on=frozenset(sorted(job.waiting_on, reverse=True)),
            fenced_workers=frozenset(sorted(job.fenced_workers, reverse=True)),
        )
        for job_id, job in state.jobs.items()
    }
    assert encode_snapshot(shuffled) == encode_snapshot(state)


@given(s.events)
@quick
def test_decoding_twice_gives_equal_records(event: Event) -> None:
    raw = encode_event(event)
    assert decode_event(raw) == decode_event(raw)
    assert hash(decode_event(raw)) == hash(event)
