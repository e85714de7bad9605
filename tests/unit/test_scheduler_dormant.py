"""Dormant submissions: finished ones a rebuild keeps encoded and decodes on first use."""

from __future__ import annotations

import pytest

from engine.lifecycle.decide import Policy
from engine.lifecycle.records import (
    Claimed,
    ClaimIdempotencyKey,
    Event,
    Finished,
    IdempotencyKeyAnswer,
    Input,
    JobDeleted,
    Outcome,
    Started,
    key_ledger_id,
)
from engine.lifecycle.state import SubmissionState
from engine.scheduler.book import Book, PartitionBook, Replay
from engine.scheduler.snapshots import (
    DORMANT_HEADER,
    Written,
    dormant_seq,
    is_dormant,
    snapshot_headers,
    snapshot_records,
)
from tests.unit.lifecycle_dsl import (
    SUB,
    Scenario,
    cancel,
    delete,
    folded,
    given,
    job,
    ref,
    submit,
    succeeded,
)


def _finished_story(submission_id: str) -> list[Event]:
    """A one-job submission, run and completed."""
    scenario = Scenario(submission_id=submission_id)
    attempt = ref("a", submission_id=submission_id)
    scenario.step(
        submit(job("a"), submission_id=submission_id),
        Claimed(attempt, host="w1.local"),
        Started(attempt, pid=4242),
        Finished(attempt, Outcome.COMPLETED),
    )
    return scenario.history


def _records(state: SubmissionState) -> tuple[dict[bytes, bytes | None], dict[bytes, int]]:
    """The latest records a scheduler leaves for ``state``, and the dormant marks among them."""
    records, written = snapshot_records(state, None)
    seq = dormant_seq(snapshot_headers(state, written))
    dormant = {} if seq is None else {state.submission_id.encode(): seq}
    return dict(records), dormant


def _replay(states: list[SubmissionState], events: list[Event], checkpoint: int) -> Replay:
    latest: dict[bytes, bytes | None] = {}
    dormant: dict[bytes, int] = {}
    for state in states:
        records, marks = _records(state)
        latest.update(records)
        dormant.update(marks)
    replay = Replay(0, latest, dormant)
    for offset, event in enumerate(events):
        if offset >= replay.events_from(checkpoint):
            replay.event(offset, event)
    replay.end(len(events))
    return replay


def test_only_a_finished_plain_submission_is_marked_dormant() -> None:
    events = given(submit(job("a"), job("b")), *succeeded("a"), *succeeded("b")).history
    finished = folded(events)
    assert finished.done and is_dormant(finished)
    assert snapshot_headers(finished, Written(finished.seq)) == [
        (DORMANT_HEADER, str(finished.seq).encode())
    ]
    assert dormant_seq(snapshot_headers(finished, Written(finished.seq))) == finished.seq
    running = folded(events[:-2])
    assert not running.done and snapshot_headers(running, Written(running.seq)) is None
    # a per-job snapshot is a header and job records: decoded at every rebuild
    assert snapshot_headers(finished, Written(finished.seq, per_job=True)) is None
    deleted = given(submit(job("a")), *succeeded("a"))
    deleted.step(delete())
    assert not is_dormant(folded(deleted.history))
    # a completed idempotency key is indexed by the partition at a rebuild
    keyed = given(submit(job("a", idempotency_key="k")))
    keyed.step(IdempotencyKeyAnswer("g", SUB, "a", "k", True), *succeeded("a"))
    state = folded(keyed.history)
    assert state.done and not is_dormant(state)
    ledger_id = key_ledger_id("k")
    ledger = Scenario(submission_id=ledger_id)
    ledger.step(ClaimIdempotencyKey("c1", ledger_id, "k", "s1/a"))
    assert not is_dormant(folded(ledger.history))
    assert dormant_seq(None) is None and dormant_seq([(DORMANT_HEADER, b"x")]) is None


def test_a_dormant_submission_is_restored_encoded_and_decoded_on_first_use() -> None:
    events = given(submit(job("a"), job("b")), *succeeded("a"), *succeeded("b")).history
    final = folded(events)
    replay = _replay([final], events, checkpoint=len(events))
    book = replay.book
    assert SUB in book.dormant and SUB not in book.submissions
    assert book.written[SUB].seq == final.seq and book.held == 1
    assert book.state(SUB) == final
    assert SUB in book.submissions and SUB not in book.dormant and book.held == 1
    assert book.state("unknown") is None


def test_tail_events_a_dormant_snapshot_covers_leave_it_dormant_and_newer_ones_wake_it() -> None:
    scenario = given(submit(job("a"), job("b")), *succeeded("a"), *succeeded("b"))
    cut = len(scenario.history)
    finished = folded(scenario.history)
    replay = _replay([finished], scenario.history, checkpoint=cut - 3)
    assert SUB in replay.book.dormant and replay.skipped == 3 and replay.replayed == 0
    scenario.step(delete())
    events = scenario.history
    replay = _replay([finished], events, checkpoint=cut - 3)
    assert SUB not in replay.book.dormant
    assert replay.book.submissions[SUB] == folded(events)
    assert any(isinstance(e.body, JobDeleted) for e in events[cut:])
    assert replay.replayed == len(events) - cut


def _decisions(book: Book, *commands: Input) -> list[list[Event]]:
    return [book.apply(0, SUB, command, 10_000).events for command in commands]


def test_commands_naming_a_dormant_submission_are_decided_as_if_it_was_decoded() -> None:
    events = given(submit(job("a"), job("b")), *succeeded("a"), *succeeded("b")).history
    final = folded(events)
    eager = Replay(0, dict(snapshot_records(final, None)[0]))
    lazy = _replay([final], events, checkpoint=len(events))
    assert SUB not in eager.book.dormant and SUB in lazy.book.dormant
    commands: list[Input] = [
        submit(job("a"), command_id="again"),
        cancel(command_id="c9"),
        delete(command_id="d9"),
    ]
    books = []
    for replay in (eager, lazy):
        book = Book(Policy())
        book.adopt(replay.book, now=10_000)
        books.append(book)
    assert _decisions(books[0], *commands) == _decisions(books[1], *commands)


def test_dormant_submissions_count_toward_retention_and_the_oldest_are_retired() -> None:
    events: list[Event] = []
    states = []
    for n in range(3):
        story = _finished_story(f"s{n}")
        events.extend(story)
        states.append(folded(story))
    replay = _replay(states, events, checkpoint=len(events))
    assert list(replay.book.dormant) == ["s0", "s1", "s2"]
    book = Book(Policy(), retain_done=1)
    book.adopt(replay.book, now=0)
    book.snapshotted(0, "s2", Written(states[2].seq), deleted=False)
    part = book.partitions[0]
    assert part.retired == {"s0": False, "s1": False} and part.held == 1
    assert "s2" in part.dormant
    # a retired id is still answered: never accepted again
    (rejected,) = book.apply(0, "s0", submit(job("a"), submission_id="s0"), 1).events
    assert "duplicate_submission" in repr(rejected.body)


def test_an_unreadable_dormant_snapshot_leaves_the_submission_retired() -> None:
    part = PartitionBook(0)
    part.dormant[SUB] = b"\xc3\x01 not a snapshot"
    part.written[SUB] = Written(5)
    part.done_order[SUB] = None
    assert part.state(SUB) is None
    assert part.retired == {SUB: False} and SUB not in part.written and not part.done_order
    book = Book(Policy())
    book.adopt(part, now=0)
    (rejected,) = book.apply(0, SUB, submit(job("a")), 1).events
    assert "duplicate_submission" in repr(rejected.body)


@pytest.mark.parametrize("checkpoint_lag", [0, 2])
def test_a_rebuild_with_dormant_snapshots_gives_the_state_of_the_whole_log(
    checkpoint_lag: int,
) -> None:
    events = given(submit(job("a"), job("b")), *succeeded("a"), *succeeded("b")).history
    final = folded(events)
    replay = _replay([final], events, checkpoint=len(events) - checkpoint_lag)
    assert replay.book.state(SUB) == final
