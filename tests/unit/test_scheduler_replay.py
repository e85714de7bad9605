"""Rebuilding a partition from its snapshots and the tail of its events, without Kafka."""

from __future__ import annotations

from engine.lifecycle.records import (
    ClaimIdempotencyKey,
    ClaimSlot,
    ConfigureQueue,
    Event,
    IdempotencyKeyAnswer,
    JobStatus,
    ReleaseIdempotencyKey,
    ReleaseSlot,
    key_ledger_id,
    queue_config_id,
    slot_ledger_id,
)
from engine.lifecycle.state import SubmissionState
from engine.scheduler.book import Replay
from engine.scheduler.snapshots import snapshot_records
from tests.unit.lifecycle_dsl import (
    SUB,
    Scenario,
    cancel,
    delete,
    folded,
    given,
    job,
    submit,
    succeeded,
)


def _history() -> list[Event]:
    scenario: Scenario = given(
        submit(job("a"), job("b", after=["a"]), job("c", after=["b"]), job("d")),
        *succeeded("a"),
        *succeeded("b"),
    )
    scenario.step(cancel("d"))
    return scenario.history


def _snapshot(state: SubmissionState) -> dict[bytes, bytes | None]:
    records, _ = snapshot_records(state, None)
    return dict(records)


def _replay(latest: dict[bytes, bytes | None], events: list[Event], checkpoint: int) -> Replay:
    replay = Replay(0, latest)
    start = replay.events_from(checkpoint)
    for offset, event in enumerate(events):
        if offset >= start:
            replay.event(offset, event)
    replay.end(len(events))
    return replay


def test_snapshot_then_tail_gives_the_state_of_the_whole_log() -> None:
    events = _history()
    final = folded(events)
    for cut in range(1, len(events)):
        at_cut = folded(events[:cut])
        # the checkpoint may lag the snapshot: what it covers is skipped by sequence number
        for checkpoint in (cut, max(cut - 3, 0)):
            replay = _replay(_snapshot(at_cut), events, checkpoint)
            assert replay.book.submissions[SUB] == final, (cut, checkpoint)
            assert replay.replayed == len(events) - cut
            assert replay.skipped == cut - checkpoint
            assert replay.book.unsnapshotted_from[SUB] == cut, "the tail is not snapshotted"
    assert replay.book.events_end == len(events)


def test_an_unreadable_snapshot_replays_the_log_from_the_beginning() -> None:
    events = _history()
    replay = _replay({SUB.encode(): b"\xc3\x01 not a snapshot"}, events, checkpoint=len(events))
    assert replay.incomplete and replay.replayed == len(events)
    assert replay.book.submissions[SUB] == folded(events)


def test_a_deleted_submission_keeps_only_its_id() -> None:
    scenario = given(submit(job("a")), *succeeded("a"))
    scenario.step(delete())
    events = scenario.history
    deleted = folded(events)
    assert deleted.deleted
    replay = _replay(_snapshot(deleted), events, checkpoint=0)
    assert SUB not in replay.book.submissions and replay.book.retired == {SUB: True}
    assert replay.replayed == 0


def test_a_submission_whose_beginning_is_gone_is_skipped() -> None:
    events = _history()
    replay = _replay({}, events[3:], checkpoint=0)
    assert SUB not in replay.book.submissions and replay.skipped == len(events) - 3


def test_completed_keys_are_indexed_from_snapshots_and_from_the_tail() -> None:
    scenario = given(submit(job("a", idempotency_key="k1"), job("b", idempotency_key="k2")))
    scenario.step(
        IdempotencyKeyAnswer("g1", SUB, "a", "k1", True),
        IdempotencyKeyAnswer("g2", SUB, "b", "k2", True),
        *succeeded("a"),
    )
    cut = len(scenario.history)
    scenario.step(*succeeded("b"))
    events = scenario.history
    replay = _replay(_snapshot(folded(events[:cut])), events, checkpoint=cut)
    assert replay.book.completed_keys == {"k1": f"{SUB}/a", "k2": f"{SUB}/b"}


def test_a_key_ledger_is_rebuilt_from_its_events() -> None:
    ledger_id = key_ledger_id("k")
    ledger = Scenario(submission_id=ledger_id)
    ledger.step(
        ClaimIdempotencyKey("c1", ledger_id, "k", "s1/a"),
        ClaimIdempotencyKey("c2", ledger_id, "k", "s2/a"),
        ReleaseIdempotencyKey("r1", ledger_id, "k", "s1/a", completed=False),
    )
    replay = _replay({}, ledger.history, checkpoint=0)
    state = replay.book.submissions[ledger_id]
    assert state.key_ledger is not None and state.key_ledger.holder == "s2/a"
    assert state == folded(ledger.history)
    assert all(job.status is not JobStatus.COMPLETED for job in state.jobs.values())


def test_a_slot_ledger_and_a_queue_setting_are_rebuilt_from_their_events() -> None:
    ledger_id = slot_ledger_id("key:k")
    ledger = Scenario(submission_id=ledger_id)
    ledger.step(
        ClaimSlot("c1", ledger_id, "key:k", "s1/a@1", max_running=1),
        ClaimSlot("c2", ledger_id, "key:k", "s2/a@1", priority=3, max_running=1),
        ReleaseSlot("r1", ledger_id, "key:k", "s1/a@1"),
    )
    config_id = queue_config_id("gpu", 0)
    queue = Scenario(submission_id=config_id)
    queue.step(ConfigureQueue("q1", config_id, "gpu", paused=True))
    replay = _replay({}, [*ledger.history, *queue.history], checkpoint=0)
    state = replay.book.submissions[ledger_id]
    assert state.slot_ledger is not None and state.slot_ledger.holders == ("s2/a@1",)
    assert state == folded(ledger.history)
    settings = replay.book.submissions[config_id].queue_config
    assert settings is not None and settings.paused
