"""Admission control in the pure core and the scheduler's book, no broker."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.api import MAX_THROTTLE_DELAY_S, Submission, throttle_delay
from engine.client import decision_of, throttled_error
from engine.errors import EngineBusy
from engine.lifecycle.admission import (
    IDLE_RETRY_AFTER_MS,
    MAX_RETRY_AFTER_MS,
    MIN_RETRY_AFTER_MS,
    NO_LOAD,
    UNLIMITED,
    AdmissionLimits,
    Load,
    PendingJobs,
    admit,
    retry_after_ms,
    share,
)
from engine.lifecycle.decide import Policy
from engine.lifecycle.describe import describe
from engine.lifecycle.records import (
    AttemptRef,
    Event,
    JobSpec,
    JobStatus,
    Started,
    SubmissionAccepted,
    SubmissionThrottled,
    SubmitJobs,
    ThrottleCause,
)
from engine.lifecycle.views import SubmissionView
from engine.scheduler.book import Book, PartitionBook
from engine.scheduler.snapshots import restore_snapshots, snapshot_records

POLICY = Policy(lease_ms=60_000, kill_grace_ms=500)


def submit(submission_id: str, *queues: str, command_id: str = "") -> SubmitJobs:
    specs = tuple(JobSpec(f"j{i}", task="t", queue=q) for i, q in enumerate(queues or ("q",)))
    return SubmitJobs(command_id or f"c-{submission_id}", submission_id, specs)


def body_of(event: Event | None) -> SubmissionThrottled:
    assert event is not None
    assert isinstance(event.body, SubmissionThrottled)
    return event.body


# ----------------------------------------------------------------------------- admit


def test_under_every_limit_a_submission_is_admitted() -> None:
    limits = AdmissionLimits(max_pending_jobs=10, max_dispatch_backlog=5, max_projection_lag=9)
    load = Load(dispatch_backlog={"q": 4}, projection_lag=8)
    assert admit(submit("s", "q", "q"), 1, limits, {"q": 8}, load) is None


def test_pending_jobs_over_the_partitions_share_throttle_with_the_figures() -> None:
    limits = AdmissionLimits(max_pending_jobs=12)
    # three partitions: a share of 4 each
    event = admit(submit("s", "q"), 7, limits, {"q": 4}, NO_LOAD, lambda queue: 10.0, 3)
    body = body_of(event)
    assert event is not None
    assert (event.seq, event.job_id, event.timestamp) == (0, "", 7)
    assert event.event_id == "s:throttled:c-s"
    assert body.command_id == "c-s"
    assert body.cause == ThrottleCause.PENDING_JOBS
    assert (body.queue, body.load, body.limit) == ("q", 4, 4)
    assert "max_pending_jobs=12" in body.detail and "retry in about" in body.detail
    # one job over the share, drained at 10 a second in this partition: 100 ms, raised to
    # the shortest wait a client is told
    assert body.retry_after_ms == MIN_RETRY_AFTER_MS


def test_a_submission_fits_when_its_jobs_stay_within_the_share() -> None:
    limits = AdmissionLimits(max_pending_jobs=10)
    assert admit(submit("s", "q", "q"), 1, limits, {"q": 8}) is None
    assert admit(submit("s", "q", "q", "q"), 1, limits, {"q": 8}) is not None


def test_an_empty_queue_takes_a_submission_of_any_size() -> None:
    limits = AdmissionLimits(max_pending_jobs=2)
    assert admit(submit("s", *["q"] * 50), 1, limits, {}) is None
    assert admit(submit("s", *["q"] * 50), 1, limits, {"other": 5}) is None


def test_only_the_queues_of_the_submission_count() -> None:
    limits = AdmissionLimits(max_pending_jobs=2)
    assert admit(submit("s", "a"), 1, limits, {"b": 100}) is None
    body = body_of(admit(submit("s", "a", "b"), 1, limits, {"b": 100}))
    assert body.queue == "b"


def test_a_schedules_run_is_never_throttled() -> None:
    limits = AdmissionLimits(max_pending_jobs=1, max_dispatch_backlog=1, max_projection_lag=1)
    load = Load(dispatch_backlog={"q": 10}, projection_lag=10)
    run = submit("nightly-20261203T020000Z", "q", command_id="#schedule-nightly:4:submit")
    assert admit(run, 1, limits, {"q": 10}, load) is None
    assert admit(submit("s", "q"), 1, limits, {"q": 10}, load) is not None


def test_a_dispatch_backlog_at_its_limit_throttles_its_queue() -> None:
    limits = AdmissionLimits(max_pending_jobs=0, max_dispatch_backlog=100)
    load = Load(dispatch_backlog={"q": 150, "other": 5}, dispatch_drain={"q": 10.0})
    body = body_of(admit(submit("s", "q"), 1, limits, {}, load))
    assert body.cause == ThrottleCause.DISPATCH_BACKLOG
    assert (body.queue, body.load, body.limit) == ("q", 150, 100)
    assert body.retry_after_ms == 5_100  # 51 records over, 10 a second
    assert admit(submit("s", "other"), 1, limits, {}, load) is None


def test_a_projection_lag_throttles_every_queue() -> None:
    limits = AdmissionLimits(max_pending_jobs=0, max_projection_lag=1_000)
    load = Load(projection_lag=5_000, projection_drain=0.0)
    body = body_of(admit(submit("s", "any"), 1, limits, {}, load))
    assert body.cause == ThrottleCause.PROJECTION_LAG
    assert (body.queue, body.load, body.limit) == ("", 5_000, 1_000)
    assert body.retry_after_ms == IDLE_RETRY_AFTER_MS  # nothing drains: ask again later
    assert admit(submit("s", "any"), 1, limits, {}, Load(projection_lag=999)) is None


def test_off_limits_admit_everything() -> None:
    load = Load(dispatch_backlog={"q": 10**9}, projection_lag=10**9)
    assert admit(submit("s", "q"), 1, UNLIMITED, {"q": 10**9}, load) is None
    assert not UNLIMITED.sampled
    assert AdmissionLimits(max_projection_lag=1).sampled


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="max_dispatch_backlog"):
        AdmissionLimits(max_dispatch_backlog=-1)


def test_retry_after_follows_the_drain_within_its_bounds() -> None:
    assert retry_after_ms(100, 50.0) == 2_000
    assert retry_after_ms(1, 1e9) == MIN_RETRY_AFTER_MS
    assert retry_after_ms(10**9, 1.0) == MAX_RETRY_AFTER_MS
    assert retry_after_ms(5, 0.0) == IDLE_RETRY_AFTER_MS


def test_a_share_covers_the_limit() -> None:
    assert share(10, 3) == 4
    assert share(1, 6) == 1
    assert share(6, 0) == 6


# ----------------------------------------------------------------------------- counting


def test_pending_jobs_count_moves_and_forgets() -> None:
    pending = PendingJobs()
    pending.note("s", "a", "q")
    pending.note("s", "a", "q")  # told twice: counted once
    pending.note("s", "b", "q")
    pending.note("t", "a", "r")
    assert pending.by_queue == Counter({"q": 2, "r": 1})
    pending.note("s", "a", None)
    assert pending.by_queue == Counter({"q": 1, "r": 1})
    pending.forget("s")
    assert pending.by_queue == Counter({"r": 1})
    pending.note("t", "a", None)
    assert pending.by_queue == Counter()


def test_the_rate_jobs_leave_pending_is_measured_per_queue() -> None:
    pending = PendingJobs()
    assert pending.rate("q", 1_000) == 0.0
    for n in range(10):
        pending.note("s", f"j{n}", "q", now=0)
    for n in range(10):
        pending.note("s", f"j{n}", None, now=100 * n)  # one every 100 ms
    assert pending.rate("q", 1_000) == 10.0
    assert pending.rate("q", 10_000) == 1.0  # nothing left since: the rate falls
    assert pending.rate("other", 1_000) == 0.0
    body = body_of(
        admit(
            submit("s", "q"),
            1,
            AdmissionLimits(max_pending_jobs=1),
            {"q": 60},
            NO_LOAD,
            lambda queue: 2.0,
        )
    )
    assert body.retry_after_ms == 30_000  # 60 over at 2 a second, at the ceiling


def owned(limits: AdmissionLimits, partitions: int = 1) -> Book:
    book = Book(POLICY, admission=limits)
    book.partitions_total = partitions
    book.adopt(PartitionBook(0), now=0)
    return book


def start(book: Book, submission_id: str, job_id: str = "j0") -> None:
    ref = AttemptRef(submission_id, job_id, 1, f"{submission_id}/{job_id}/1", "w1")
    book.apply(0, submission_id, Started(ref, claimed=True), now=5)


def test_the_book_throttles_over_the_limit_and_keeps_nothing_of_it() -> None:
    book = owned(AdmissionLimits(max_pending_jobs=2))
    for name in ("s1", "s2"):
        assert book.apply(0, name, submit(name), now=1).events[0].name == "SubmissionAccepted"
    decision = book.apply(0, "s3", submit("s3"), now=2)
    assert [e.name for e in decision.events] == ["SubmissionThrottled"]
    assert decision.effects == []
    assert "s3" not in book.partitions[0].submissions
    assert "s3" not in book.partitions[0].retired  # the id stays free
    start(book, "s1")  # one job leaves PENDING: room for one more
    assert book.partitions[0].pending.by_queue == Counter({"q": 1})
    again = book.apply(0, "s3", submit("s3", command_id="c-s3-2"), now=3)
    assert again.events[0].name == "SubmissionAccepted"


def test_the_book_never_throttles_what_is_not_a_new_submission() -> None:
    book = owned(AdmissionLimits(max_pending_jobs=1))
    book.apply(0, "s1", submit("s1"), now=1)
    duplicate = book.apply(0, "s1", submit("s1", command_id="other"), now=2)
    assert [e.name for e in duplicate.events] == ["CommandRejected"]  # not SubmissionThrottled
    redelivered = book.apply(0, "s1", submit("s1"), now=2)
    assert redelivered.events == []


def test_a_rebuilt_partition_counts_its_pending_jobs() -> None:
    book = owned(AdmissionLimits(max_pending_jobs=3))
    for name in ("s1", "s2", "s3"):
        book.apply(0, name, submit(name), now=1)
    start(book, "s2")
    states = book.partitions[0].submissions
    latest: dict[bytes, bytes | None] = {}
    for state in states.values():
        records, _ = snapshot_records(state, None)
        latest.update(records)
    restored = restore_snapshots(latest)
    rebuilt = Book(POLICY, admission=AdmissionLimits(max_pending_jobs=3))
    rebuilt.adopt(PartitionBook(0, submissions=dict(restored.states)), now=10)
    assert rebuilt.partitions[0].pending.by_queue == Counter({"q": 2})


def test_the_share_follows_the_partition_count() -> None:
    book = owned(AdmissionLimits(max_pending_jobs=6), partitions=3)  # 2 in this partition
    assert book.apply(0, "s1", submit("s1", "q"), now=1).events[0].name == "SubmissionAccepted"
    assert book.apply(0, "s2", submit("s2", "q"), now=1).events[0].name == "SubmissionAccepted"
    assert book.apply(0, "s3", submit("s3", "q"), now=1).events[0].name == "SubmissionThrottled"


@settings(max_examples=150, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=6),
    steps=st.lists(
        st.tuples(st.sampled_from(["submit", "start"]), st.integers(0, 3), st.integers(1, 3)),
        max_size=40,
    ),
)
def test_the_count_is_exact_and_admission_keeps_the_limit(
    limit: int, steps: list[tuple[str, int, int]]
) -> None:
    """In any interleaving of submits and starts, the book's count is the number of PENDING
    jobs, and a submission is admitted only into an empty queue or within the limit."""
    book = owned(AdmissionLimits(max_pending_jobs=limit))
    made = 0
    for action, pick, size in steps:
        states = book.partitions[0].submissions
        before = sum(
            job.status is JobStatus.PENDING for s in states.values() for job in s.jobs.values()
        )
        if action == "submit":
            made += 1
            name = f"s{made}"
            decision = book.apply(0, name, submit(name, *["q"] * size), now=made)
            admitted = decision.events[0].name == "SubmissionAccepted"
            assert admitted == (before == 0 or before + size <= limit)
        else:
            waiting = sorted(
                (s.submission_id, j)
                for s in states.values()
                for j, job in s.jobs.items()
                if job.status is JobStatus.PENDING
            )
            if waiting:
                start(book, *waiting[pick % len(waiting)])
        states = book.partitions[0].submissions
        pending = sum(
            job.status is JobStatus.PENDING for s in states.values() for job in s.jobs.values()
        )
        assert book.partitions[0].pending.by_queue.get("q", 0) == pending


# ----------------------------------------------------------------------------- clients


def test_a_client_reads_a_throttle_of_its_own_submit_only() -> None:
    command = submit("s")
    event = admit(command, 1, AdmissionLimits(max_pending_jobs=1), {"q": 1})
    assert event is not None
    assert decision_of(command, event) is False
    assert decision_of(submit("s", command_id="another"), event) is None
    busy = throttled_error(command, body_of(event))
    assert (busy.submission_id, busy.command_id, busy.cause) == ("s", "c-s", "pending_jobs")
    assert busy.retry_after == body_of(event).retry_after_ms / 1000
    assert "busy (pending_jobs)" in str(busy)
    assert describe(event).startswith("Submission throttled (pending_jobs)")


def test_a_throttled_client_backs_off_with_jitter_and_a_ceiling() -> None:
    rng = random.Random(7)
    first = [throttle_delay(2.0, 1, rng) for _ in range(200)]
    assert all(2.0 <= d <= 3.0 for d in first)
    assert len({round(d, 3) for d in first}) > 100  # spread, not in step
    assert 4.5 <= throttle_delay(2.0, 3, rng) <= 6.75
    assert throttle_delay(20.0, 10, rng) <= MAX_THROTTLE_DELAY_S * 1.5


class _Handle:
    """A submit's decision as a client reads it: throttled ``throttles`` times, then taken."""

    def __init__(self, command: SubmitJobs, outcome: Event | EngineBusy) -> None:
        self.command = command
        self.command_id = command.command_id
        self.start_offset = 0
        self.outcome = outcome
        self.decided = False

    def result(self, timeout: float) -> Event:
        self.decided = True
        if isinstance(self.outcome, EngineBusy):
            raise self.outcome
        return self.outcome


class _Client:
    """What a Submission needs of its Joblog to submit again."""

    def __init__(self, throttles: int, throttle_wait: float = 60.0) -> None:
        self.throttle_wait = throttle_wait
        self.throttles = throttles
        self.told: list[tuple[str, float]] = []
        self.sent: list[SubmitJobs] = []
        self.producer = self

    def throttled(self, busy: EngineBusy, delay: float) -> None:
        self.told.append((busy.command_id, delay))

    def handle(self, command: SubmitJobs) -> _Handle:
        if len(self.sent) <= self.throttles:
            body = SubmissionThrottled(command.command_id, "pending_jobs", 10, "q", 5, 4, "full")
            outcome: Event | EngineBusy = throttled_error(command, body)
        else:
            outcome = Event(f"{command.submission_id}:1", command.submission_id, "", 1, 1, ACCEPTED)
        return _Handle(command, outcome)

    def send_tracked(self, command: SubmitJobs) -> _Handle:
        self.sent.append(command)
        return self.handle(command)


ACCEPTED = SubmissionAccepted("c", "", (), job_ids=("j0",))


def test_a_throttled_submission_is_sent_again_with_new_command_ids() -> None:
    client = _Client(throttles=2)
    command = submit("s")
    client.sent.append(command)
    submission = Submission(client, command, client.handle(command))  # type: ignore[arg-type]
    event = submission.result(5)
    assert event.name == "SubmissionAccepted"
    assert [c.submission_id for c in client.sent] == ["s", "s", "s"]
    ids = [c.command_id for c in client.sent]
    assert len(set(ids)) == 3, "each try is a new command"
    assert [told for told, _ in client.told] == ids[:2]
    assert submission.command_id == ids[-1]
    assert all(0.01 <= delay <= 0.03 for _, delay in client.told)


def test_a_client_gives_up_when_its_throttle_wait_is_spent() -> None:
    client = _Client(throttles=1000, throttle_wait=0.05)
    command = submit("s")
    client.sent.append(command)
    submission = Submission(client, command, client.handle(command))  # type: ignore[arg-type]
    with pytest.raises(EngineBusy) as raised:
        submission.result(5)
    assert raised.value.cause == "pending_jobs"
    assert 1 <= len(client.sent) < 1000


def test_a_view_keeps_the_last_throttle_until_the_submission_is_accepted() -> None:
    view = SubmissionView("s")
    throttle = admit(submit("s"), 1, AdmissionLimits(max_pending_jobs=1), {"q": 1})
    assert throttle is not None
    view.apply(throttle)
    assert view.throttled == throttle.body and not view.accepted and not view.done
    view.apply(Event("s:1", "s", "", 1, 2, ACCEPTED))
    assert view.throttled is None and view.accepted
