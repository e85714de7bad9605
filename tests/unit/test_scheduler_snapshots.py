"""The layout of snapshots on the ``state`` topic, and ids that are never reused; no broker."""

from __future__ import annotations

from engine import codec
from engine.lifecycle.decide import Policy
from engine.lifecycle.records import (
    AttemptRef,
    Claimed,
    DeleteJobs,
    Finished,
    JobSpec,
    Outcome,
    RejectionCode,
    SubmitJobs,
)
from engine.lifecycle.state import SubmissionState
from engine.limits import Limits
from engine.scheduler.book import Book, PartitionBook
from engine.scheduler.snapshots import (
    INLINE_MAX_JOBS,
    Written,
    restore_snapshots,
    snapshot_records,
)

POLICY = Policy(lease_ms=1000, kill_grace_ms=500)


def owned_book() -> Book:
    book = Book(POLICY)
    book.adopt(PartitionBook(0), now=0)
    return book


def layered(submission_id: str, width: int, depth: int) -> SubmitJobs:
    specs = []
    for layer in range(depth):
        for i in range(width):
            after = tuple(f"j{layer - 1}-{k}" for k in range(width)) if layer else ()
            specs.append(JobSpec(f"j{layer}-{i}", task="t", depends_on=after))
    return SubmitJobs("c-" + submission_id, submission_id, tuple(specs))


def ref(submission_id: str, job_id: str) -> AttemptRef:
    return AttemptRef(submission_id, job_id, 1, f"{submission_id}/{job_id}/1", "w1")


def compacted(*snapshots: list[tuple[bytes, bytes | None]]) -> dict[bytes, bytes | None]:
    latest: dict[bytes, bytes | None] = {}
    for records in snapshots:
        latest.update(records)
    return latest


def test_a_small_submission_is_one_record_with_its_jobs() -> None:
    book = owned_book()
    book.apply(0, "s1", layered("s1", 2, 2), now=0)
    state = book.partitions[0].submissions["s1"]
    records, written = snapshot_records(state, None)
    assert [key for key, _ in records] == [b"s1"]
    assert not written.per_job
    assert restore_snapshots(dict(records)).states["s1"] == state


def test_a_large_submission_is_a_header_and_one_record_per_job() -> None:
    book = owned_book()
    book.apply(0, "big", layered("big", 50, 4), now=0)
    state = book.partitions[0].submissions["big"]
    assert len(state.jobs) > INLINE_MAX_JOBS
    records, written = snapshot_records(state, None)
    assert len(records) == 1 + 200
    assert written.per_job
    biggest = max(len(value or b"") for _, value in records)
    assert biggest < 32 * 1024  # no record grows with the submission: one job, its links
    restored = restore_snapshots(dict(records))
    assert restored.states["big"] == state
    assert list(restored.states["big"].jobs) == list(state.jobs)  # submission order kept


def test_a_later_snapshot_writes_only_the_jobs_that_changed() -> None:
    book = owned_book()
    book.apply(0, "big", layered("big", 50, 1), now=0)
    part = book.partitions[0]
    first, written = snapshot_records(part.submissions["big"], None)
    book.snapshotted(0, "big", written, deleted=False)
    book.apply(0, "big", Claimed(ref("big", "j0-3")), now=5)
    book.apply(0, "big", Finished(ref("big", "j0-3"), Outcome.COMPLETED), now=6)
    state = part.submissions["big"]
    second, _ = snapshot_records(state, part.written["big"])
    assert [key for key, _ in second] == [b"big", b"big/j0-3"]
    assert restore_snapshots(compacted(first, second)).states["big"] == state


def test_a_missing_job_record_makes_the_submission_unreadable() -> None:
    book = owned_book()
    book.apply(0, "big", layered("big", 40, 1), now=0)
    records, _ = snapshot_records(book.partitions[0].submissions["big"], None)
    latest = dict(records)
    del latest[b"big/j0-7"]
    restored = restore_snapshots(latest)
    assert "big" not in restored.states and "big" in restored.unreadable


def test_a_100000_job_submission_snapshots_in_records_of_one_job() -> None:
    specs = tuple(JobSpec(f"job-{i:06d}", task="noop") for i in range(100_000))
    command = SubmitJobs("c-huge", "huge", specs)
    assert len(codec.encode_command(command)) < Limits().max_submit_bytes
    book = owned_book()
    decision = book.apply(0, "huge", command, now=0)
    assert len(decision.effects) == 100_000  # one dispatch each
    records, _ = snapshot_records(book.partitions[0].submissions["huge"], None)
    assert len(records) == 100_001
    assert max(len(value or b"") for _, value in records) < Limits().max_record_bytes


def test_a_deleted_submission_keeps_its_id_and_drops_its_job_records() -> None:
    book = owned_book()
    book.apply(0, "big", layered("big", 40, 1), now=0)
    part = book.partitions[0]
    first, written = snapshot_records(part.submissions["big"], None)
    book.snapshotted(0, "big", written, deleted=False)
    book.apply(0, "big", DeleteJobs("del-1", "big", force=True), now=10)
    state = part.submissions["big"]
    assert state.deleted
    second, written = snapshot_records(state, part.written["big"])
    assert second[0][0] == b"big"
    assert all(value is None for _, value in second[1:]) and len(second) == 41
    book.snapshotted(0, "big", written, deleted=True)
    assert "big" not in part.submissions and part.retired == {"big": True}
    restored = restore_snapshots(compacted(first, second))
    assert restored.deleted == {"big"} and not restored.states


def test_a_deleted_id_is_never_accepted_again_and_a_second_delete_says_deleted() -> None:
    book = owned_book()
    book.apply(0, "s1", layered("s1", 1, 1), now=0)
    book.apply(0, "s1", DeleteJobs("del-1", "s1", force=True), now=1)
    state = book.partitions[0].submissions["s1"]
    _, written = snapshot_records(state, Written())
    book.snapshotted(0, "s1", written, deleted=True)
    again = book.apply(0, "s1", layered("s1", 1, 1), now=2)
    (event,) = again.events
    assert event.seq == 0 and event.event_id == "s1:rejected:c-s1"
    assert event.body.code == RejectionCode.DUPLICATE_SUBMISSION  # type: ignore[union-attr]
    second = book.apply(0, "s1", DeleteJobs("del-2", "s1"), now=3)
    assert second.events[0].body.code == RejectionCode.DELETED  # type: ignore[union-attr]
    assert "s1" not in book.partitions[0].submissions


def test_finished_submissions_beyond_retention_keep_their_ids() -> None:
    book = Book(POLICY, retain_done=1)
    book.adopt(PartitionBook(0), now=0)
    for sid in ("s1", "s2"):
        book.apply(0, sid, layered(sid, 1, 1), now=0)
        book.apply(0, sid, Claimed(ref(sid, "j0-0")), now=1)
        book.apply(0, sid, Finished(ref(sid, "j0-0"), Outcome.COMPLETED), now=2)
        state: SubmissionState = book.partitions[0].submissions[sid]
        _, written = snapshot_records(state, None)
        book.snapshotted(0, sid, written, deleted=False)
    assert "s1" not in book.partitions[0].submissions
    (event,) = book.apply(0, "s1", layered("s1", 1, 1), now=3).events
    assert event.body.code == RejectionCode.DUPLICATE_SUBMISSION  # type: ignore[union-attr]
