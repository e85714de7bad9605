"""Offsets are committed up to the lowest unfinished dispatch of each partition."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.worker.offsets import OffsetTracker

P0 = ("dispatch.default", 0)
P1 = ("dispatch.default", 1)


def test_nothing_taken_nothing_to_commit() -> None:
    tracker = OffsetTracker()
    assert tracker.safe_offset(P0) is None
    assert tracker.to_commit() == {}


def test_lowest_unfinished_holds_the_commit_back() -> None:
    tracker = OffsetTracker()
    for offset in (5, 6, 7):
        tracker.taken(P0, offset)
    assert tracker.safe_offset(P0) == 5
    tracker.finished(P0, 6)
    tracker.finished(P0, 7)
    assert tracker.safe_offset(P0) == 5  # 5 still runs: a crash must redeliver it
    tracker.finished(P0, 5)
    assert tracker.safe_offset(P0) == 8


def test_partitions_are_independent_and_commits_not_repeated() -> None:
    tracker = OffsetTracker()
    tracker.taken(P0, 0)
    tracker.done(P1, 10)
    assert tracker.to_commit() == {P0: 0, P1: 11}
    tracker.committed({P0: 0, P1: 11})
    assert tracker.to_commit() == {}
    tracker.finished(P0, 0)
    assert tracker.to_commit([P0, P1]) == {P0: 1}
    assert tracker.to_commit([P1]) == {}


def test_forget_drops_a_revoked_partition() -> None:
    tracker = OffsetTracker()
    tracker.taken(P0, 3)
    tracker.forget([P0])
    assert tracker.safe_offset(P0) is None
    assert tracker.unfinished(P0) == frozenset()
    tracker.finished(P0, 3)  # an attempt of a revoked partition ending later is harmless
    assert tracker.partitions == []


@given(
    st.lists(st.integers(0, 50), min_size=1, unique=True),
    st.data(),
)
def test_never_commits_past_an_unfinished_offset(offsets: list[int], data: st.DataObject) -> None:
    tracker = OffsetTracker()
    for offset in sorted(offsets):
        tracker.taken(P0, offset)
    finished = data.draw(st.sets(st.sampled_from(offsets)))
    for offset in finished:
        tracker.finished(P0, offset)
    safe = tracker.safe_offset(P0)
    assert safe is not None
    unfinished = set(offsets) - finished
    if unfinished:
        assert safe == min(unfinished)
    else:
        assert safe == max(offsets) + 1
