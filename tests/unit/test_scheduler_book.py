"""The scheduler's in-memory book: routing, timers, snapshots and checkpoints, no broker."""

from __future__ import annotations

from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.lifecycle.decide import Policy
from engine.lifecycle.records import (
    AttemptRef,
    CancelJobs,
    Claimed,
    Dispatch,
    Finished,
    JobSpec,
    Outcome,
    RetryPolicy,
    Started,
    SubmitJobs,
    Tick,
)
from engine.scheduler.book import Book, PartitionBook
from engine.scheduler.snapshots import snapshot_records

POLICY = Policy(lease_ms=1000, kill_grace_ms=500)


def owned_book() -> Book:
    book = Book(POLICY)
    book.adopt(PartitionBook(0), now=0)
    return book


def submit(book: Book, submission_id: str, *specs: JobSpec, now: int = 0) -> None:
    book.apply(0, submission_id, SubmitJobs("c-" + submission_id, submission_id, specs), now)


def ref(submission_id: str, job_id: str, attempt: int = 1, worker: str = "w1") -> AttemptRef:
    return AttemptRef(submission_id, job_id, attempt, f"{submission_id}/{job_id}/{attempt}", worker)


def test_a_submission_yields_events_and_one_dispatch_per_runnable_job() -> None:
    book = owned_book()
    decision = book.apply(
        0,
        "s1",
        SubmitJobs("c1", "s1", (JobSpec("a", task="t"), JobSpec("b", task="t", depends_on=("a",)))),
        now=10,
    )
    names = [event.name for event in decision.events]
    assert names == [
        "SubmissionAccepted",
        "JobSubmitted",
        "JobSubmitted",
        "JobPending",
        "JobBlocked",
    ]
    assert [e.seq for e in decision.events] == [1, 2, 3, 4, 5]
    dispatches = [e for e in decision.effects if isinstance(e, Dispatch)]
    assert [(d.job_id, d.attempt) for d in dispatches] == [("a", 1)]


def test_rejections_of_unknown_submissions_keep_no_state() -> None:
    book = owned_book()
    decision = book.apply(0, "nope", CancelJobs("c1", "nope"), now=1)
    assert [e.name for e in decision.events] == ["CommandRejected"]
    assert decision.events[0].seq == 0
    assert "nope" not in book.partitions[0].submissions


def test_reports_of_unknown_submissions_decide_nothing() -> None:
    book = owned_book()
    decision = book.apply(0, "ghost", Started(ref("ghost", "a")), now=1)
    assert decision.events == []


def test_lease_expiry_fires_as_a_timer() -> None:
    book = owned_book()
    spec = JobSpec("a", task="t", retry=RetryPolicy(max_attempts=2, backoff_ms=0, jitter=0))
    submit(book, "s1", spec, now=0)
    book.apply(0, "s1", Claimed(ref("s1", "a")), now=10)
    book.apply(0, "s1", Started(ref("s1", "a")), now=20)
    assert book.next_due() == 20 + POLICY.lease_ms
    assert book.due(500) == []
    due = book.due(2000)
    assert due == [(0, "s1")]
    decision = book.apply(0, "s1", Tick(), now=2000)
    assert [e.name for e in decision.events] == ["JobRetryScheduled"]
    kinds = sorted(type(effect).__name__ for effect in decision.effects)
    assert kinds == ["Control", "Dispatch"]


def test_finished_submissions_are_snapshotted_and_leave_the_checkpoint() -> None:
    book = owned_book()
    submit(book, "s1", JobSpec("a", task="t"), now=0)
    part = book.partitions[0]
    for offset, seq in [(0, 1), (1, 2), (2, 3)]:
        book.delivered(0, "s1", offset, seq)
    assert part.checkpoint() == 0
    book.apply(0, "s1", Claimed(ref("s1", "a")), now=5)
    book.apply(0, "s1", Finished(ref("s1", "a"), Outcome.COMPLETED), now=6)
    state = part.submissions["s1"]
    assert state.done
    chosen = book.to_snapshot(0, now=7, max_age_ms=60_000, every_events=1000, touched={"s1"})
    assert chosen == [state]
    _, written = snapshot_records(state, None)
    book.snapshotted(0, "s1", written, deleted=False)
    assert part.checkpoint() == part.events_end == 3


def _finish(book: Book, submission_id: str, now: int) -> None:
    submit(book, submission_id, JobSpec("a", task="t"), now=now)
    book.apply(0, submission_id, Claimed(ref(submission_id, "a")), now=now)
    book.apply(0, submission_id, Finished(ref(submission_id, "a"), Outcome.COMPLETED), now=now)
    assert book.partitions[0].submissions[submission_id].done


def test_finished_submissions_are_snapshotted_together_after_the_delay() -> None:
    book = owned_book()
    part = book.partitions[0]
    for offset, (submission_id, at) in enumerate([("s1", 100), ("s2", 600)]):
        _finish(book, submission_id, at)
        book.delivered(0, submission_id, offset, 1)
        touched = {submission_id}
        assert book.to_snapshot(0, at, 5000, 1000, touched, done_delay_ms=1000) == []
    assert list(part.done_waiting) == ["s1", "s2"]
    # nothing is due before the oldest has waited the delay, touched or not
    assert book.to_snapshot(0, 1099, 5000, 1000, set(), done_delay_ms=1000) == []
    chosen = book.to_snapshot(0, 1100, 5000, 1000, set(), done_delay_ms=1000)
    assert [state.submission_id for state in chosen] == ["s1", "s2"]  # the whole batch
    assert part.checkpoint() == 0  # until the batch is committed
    assert part.checkpoint({"s1"}) == 1  # the record committed with s1's snapshot only
    assert part.checkpoint({"s1", "s2"}) == part.events_end
    assert part.checkpoint() == 0  # asking changed nothing
    for state in chosen:
        book.snapshotted(0, state.submission_id, snapshot_records(state, None)[1], False)
    assert part.done_waiting == {}
    assert part.checkpoint() == part.events_end
    assert book.to_snapshot(0, 5000, 5000, 1000, set(), done_delay_ms=1000) == []


def test_a_deleted_submission_is_snapshotted_at_once_whatever_the_delay() -> None:
    book = owned_book()
    _finish(book, "s1", 0)
    book.partitions[0].submissions["s1"].deleted = True
    chosen = book.to_snapshot(0, 1, 5000, 1000, {"s1"}, done_delay_ms=60_000)
    assert [state.submission_id for state in chosen] == ["s1"]


def test_old_unsnapshotted_submissions_are_snapshotted_by_age() -> None:
    book = owned_book()
    submit(book, "s1", JobSpec("a", task="t"), now=0)
    assert book.to_snapshot(0, now=100, max_age_ms=5000, every_events=1000, touched=set()) == []
    chosen = book.to_snapshot(0, now=6000, max_age_ms=5000, every_events=1000, touched=set())
    assert [s.submission_id for s in chosen] == ["s1"]


def test_only_touched_or_aged_submissions_are_considered_for_a_snapshot() -> None:
    book = owned_book()
    for n, at in enumerate([0, 1000, 2000, 9000]):
        submit(book, f"s{n}", JobSpec("a", task="t"), now=at)
    # a submission far behind its snapshot is written when touched, not otherwise
    chosen = book.to_snapshot(0, now=9500, max_age_ms=8000, every_events=2, touched=set())
    assert [s.submission_id for s in chosen] == ["s0", "s1"]  # the aged prefix
    chosen = book.to_snapshot(0, now=9500, max_age_ms=8000, every_events=2, touched={"s3"})
    assert [s.submission_id for s in chosen] == ["s3", "s0", "s1"]


def test_revoked_partitions_stop_their_timers() -> None:
    book = owned_book()
    submit(book, "s1", JobSpec("a", task="t"), now=0)
    book.apply(0, "s1", Claimed(ref("s1", "a")), now=10)
    book.drop(0)
    assert book.due(10_000) == []


STEPS = st.lists(
    st.tuples(st.sampled_from(["event", "snapshot"]), st.integers(0, 5), st.integers(1, 3)),
    max_size=60,
)


def played(steps: list[tuple[str, int, int]]) -> Iterator[PartitionBook]:
    """A partition's book after each step: an event of a submission, or its snapshot."""
    book = PartitionBook(0)
    offset = 0
    for action, which, step in steps:
        submission_id = f"s{which}"
        if action == "event":
            offset += step
            book.events_end = offset + 1
            book.unsnapshotted(submission_id, offset)
        else:
            book.unsnapshotted_from.pop(submission_id, None)
        yield book


@settings(max_examples=200, deadline=None)
@given(STEPS)
def test_the_checkpoint_is_the_lowest_unsnapshotted_offset(
    steps: list[tuple[str, int, int]],
) -> None:
    """Whatever the order of events and snapshots, a partition's checkpoint is the lowest
    offset a snapshot does not cover (or its end)."""
    for book in played(steps):
        expected = min([*book.unsnapshotted_from.values(), book.events_end])
        assert book.checkpoint() == expected


@given(STEPS, st.sets(st.integers(0, 5)))
def test_a_checkpoint_written_with_snapshots_counts_them_as_written(
    steps: list[tuple[str, int, int]], covered_numbers: set[int]
) -> None:
    """The checkpoint committed in the transaction of some snapshots is the lowest offset
    neither an earlier snapshot nor those cover, and asking for it changes nothing."""
    covered = {f"s{n}" for n in covered_numbers}
    for book in played(steps):
        others = [at for s, at in book.unsnapshotted_from.items() if s not in covered]
        assert book.checkpoint(covered) == min([*others, book.events_end])
        assert book.checkpoint() == min([*book.unsnapshotted_from.values(), book.events_end])
