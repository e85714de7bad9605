"""The worker's pieces that need no broker: leases, the outbox's size guard, the finished
dispatches, the kept attempt threads, intake (held records, duplicates, dead letters,
offsets) and kill handling."""

from __future__ import annotations

import functools
import threading
from collections import Counter

import pytest
from confluent_kafka import KafkaError, Message

from engine import codec
from engine.lifecycle.records import (
    AttemptRef,
    AttemptReport,
    Claimed,
    Control,
    Dispatch,
    Finished,
    Heartbeat,
    JobSpec,
    Outcome,
    Started,
)
from engine.limits import DEFAULT_LIMITS
from engine.worker.attempt import AttemptOptions
from engine.worker.control import ControlHandler
from engine.worker.intake import DispatchIntake
from engine.worker.isolation import PROCESS_PER_ATTEMPT, THREAD, TaskProcesses, pool_options
from engine.worker.leases import HeartbeatClock, WorkerIdentity, by_submission, left
from engine.worker.offsets import Partition
from engine.worker.outbox import FinishedDispatches, encode_within, shrunk
from engine.worker.pool import PER_ATTEMPT
from engine.worker.supervision import Attempts, Slot
from engine.worker.tasks import TaskRegistry
from engine.worker.threads import AttemptThreads

ME = WorkerIdentity(worker_id="w1", queue="q", host="h", pid=7, slots_total=4)


def ref(submission: str, job: str, attempt: int = 1) -> AttemptRef:
    return AttemptRef(submission, job, attempt, f"{submission}/{job}/{attempt}", "w1")


# ------------------------------------------------------------------ leases


def test_heartbeats_go_per_submission_and_one_for_the_worker_every_lease_third() -> None:
    clock = HeartbeatClock(ME, default_lease_ms=30_000)
    alive = [ref("s1", "a"), ref("s2", "b"), ref("s1", "c")]
    beats = clock.due(100.0, [3_000, 6_000, 3_000], alive, sent_at=5)
    assert [key for key, _ in beats] == ["s1", "s2", "w1"]
    first = beats[0][1]
    assert isinstance(first, Heartbeat)
    assert first.attempts == (alive[0], alive[2])
    assert (first.lease_ms, first.slots_used, first.slots_total) == (3_000, 3, 4)
    assert beats[-1][1].attempts == ()
    assert clock.due(100.9, [3_000], alive, sent_at=6) == [], "within lease/3 of the last"
    assert clock.due(101.0, [3_000], alive, sent_at=7) != []


def test_an_idle_worker_heartbeats_on_the_default_lease() -> None:
    clock = HeartbeatClock(ME, default_lease_ms=9_000)
    assert [key for key, _ in clock.due(50.0, [], [], sent_at=1)] == ["w1"]
    assert clock.due(52.9, [], [], sent_at=2) == []
    assert len(clock.due(53.0, [], [], sent_at=3)) == 1


def test_worker_left_names_the_unfinished_attempts_of_each_submission() -> None:
    unfinished = [ref("s1", "a"), ref("s2", "b"), ref("s1", "c", 2)]
    reports = left("w1", unfinished, sent_at=9)
    assert [(key, r.unfinished) for key, r in reports] == [
        ("s1", (unfinished[0], unfinished[2])),
        ("s2", (unfinished[1],)),
        ("w1", ()),
    ]
    assert by_submission([]) == {}


# ------------------------------------------------------------------ outbox


def finished(result: str | None = None) -> Finished:
    return Finished(ref=ref("s", "j"), outcome=Outcome.COMPLETED, result=result, sent_at=1)


def test_a_report_that_fits_is_encoded_as_is() -> None:
    report = finished('"ok"')
    value = encode_within(report, DEFAULT_LIMITS.max_record_bytes)
    assert value is not None and codec.decode_report(value) == report


def test_a_finished_report_above_the_record_limit_fails_the_attempt_naming_the_limit() -> None:
    report = finished('"' + "x" * 5_000 + '"')
    value = encode_within(report, 2_000)
    assert value is not None and len(value) <= 2_000
    sent = codec.decode_report(value)
    assert isinstance(sent, Finished)
    assert sent.outcome is Outcome.FAILED and sent.result is None
    assert sent.error_type == "ReportTooLarge"
    assert "2000 bytes" in sent.error_note and "JOBLOG_MAX_RECORD_BYTES" in sent.error_note
    assert shrunk(report, 9_999, 2_000).ref == report.ref


def test_any_other_report_above_the_limit_is_not_sent() -> None:
    beat = Heartbeat(worker_id="w1", queue="q", attempts=tuple(ref("s", str(i)) for i in range(50)))
    assert encode_within(beat, 200) is None


def test_finished_dispatches_keep_the_latest_ones() -> None:
    seen = FinishedDispatches(capacity=2)
    for dispatch_id in ("a", "b", "c"):
        seen.add(dispatch_id)
    assert "a" not in seen and "b" in seen and "c" in seen


# ------------------------------------------------------------------ threads


def test_attempt_threads_are_kept_for_the_next_attempt() -> None:
    threads = AttemptThreads()
    for _ in range(5):
        done = threading.Event()
        threads.run(done.set)
        assert done.wait(30)
    assert threads.started == 1, "one attempt at a time needs one thread"
    release = threading.Event()
    both = [threading.Event(), threading.Event()]

    def hold(started: threading.Event) -> None:
        started.set()
        release.wait(30)

    for started in both:
        threads.run(functools.partial(hold, started))
    assert all(started.wait(30) for started in both)
    assert threads.started == 2, "two attempts at once need a second thread"
    release.set()
    threads.close()


# ------------------------------------------------------------------ isolation


def test_pool_options_follow_the_isolation() -> None:
    assert pool_options(PROCESS_PER_ATTEMPT, 4, 10, 1_000) == PER_ATTEMPT
    options = pool_options("pool", 4, -1, 1_000)
    assert (options.size, options.max_attempts_per_child, options.recycle_rss_bytes) == (
        4,
        0,
        500,
    )
    assert not TaskProcesses(TaskRegistry(), "pool", options).wanted, "no tasks, no children"
    processes = TaskProcesses(TaskRegistry(), THREAD, options)
    processes.start()
    assert processes.pool is None and processes.server is None


# ------------------------------------------------------------------ intake and control


class Harness:
    """An intake over real attempts whose start is recorded, not run."""

    def __init__(self, concurrency: int = 1, max_held: int = 4) -> None:
        self.metrics: Counter[str] = Counter()
        self.sent: list[AttemptReport] = []
        self.started: list[tuple[Dispatch, Partition, int]] = []
        self.dead: list[tuple[Message, Exception]] = []
        self.finished = FinishedDispatches()
        self.attempts = Attempts(
            "w1",
            TaskRegistry(),
            AttemptOptions(),
            DEFAULT_LIMITS,
            self.sent.append,
            self.metrics,
            "h",
            7,
        )
        self.intake = DispatchIntake(
            concurrency,
            max_held,
            self.attempts,
            self.finished,
            lambda d, p, o: self.started.append((d, p, o)),
            lambda m, e: self.dead.append((m, e)),
            self.metrics,
        )


def dispatch_record(job: str, offset: int, *, dispatch_id: str | None = None) -> Message:
    dispatch = Dispatch(
        dispatch_id=dispatch_id or f"s/{job}/1",
        submission_id="s",
        job_id=job,
        attempt=1,
        spec=JobSpec(job_id=job, command=("true",)),
        dispatched_at=0,
        lease_ms=3_000,
    )
    value = codec.encode_dispatch(dispatch)
    return Message(topic="d", partition=0, offset=offset, key=job.encode(), value=value)


def test_intake_takes_a_record_and_commits_only_past_what_ended() -> None:
    h = Harness()
    h.intake.on_message(dispatch_record("a", 10), taking=True)
    assert [(d.job_id, p, o) for d, p, o in h.started] == [("a", ("d", 0), 10)]
    assert h.intake.offsets.to_commit(None) == {("d", 0): 10}, "running: not committed past"


def test_intake_holds_records_when_not_taking_and_takes_them_in_order_later() -> None:
    h = Harness(concurrency=2)
    h.intake.on_message(dispatch_record("a", 1), taking=False)
    h.intake.on_message(dispatch_record("b", 2), taking=True)
    assert h.started == [] and len(h.intake.held) == 2, "behind a held record, held too"
    h.intake.take_held()
    assert [d.job_id for d, _, _ in h.started] == ["a", "b"]


def test_an_undecodable_dispatch_is_dead_lettered_and_committed() -> None:
    h = Harness()
    h.intake.on_message(Message(topic="d", partition=0, offset=3, value=b"\x00bad"), taking=True)
    assert h.started == [] and len(h.dead) == 1
    assert h.intake.offsets.to_commit(None) == {("d", 0): 4}


def test_a_dispatch_finished_here_lately_is_not_run_again() -> None:
    h = Harness()
    h.finished.add("s/a/1")
    h.intake.on_message(dispatch_record("a", 5), taking=True)
    assert h.started == [] and h.metrics["duplicates"] == 1
    assert h.intake.offsets.to_commit(None) == {("d", 0): 6}


def test_a_partition_end_is_not_a_record() -> None:
    h = Harness()
    eof = Message(topic="d", partition=0, error=KafkaError(KafkaError._PARTITION_EOF))
    h.intake.on_message(eof, taking=True)
    assert h.started == [] and h.intake.held == [] and h.dead == []


def test_a_kill_for_another_worker_or_no_attempt_here_changes_nothing() -> None:
    h = Harness()
    handler = ControlHandler("w1", h.attempts, h.metrics)
    kill = Control("w2", "kill", "s", "a", 1, "s/a/1", "user", 1_000, 0)
    handler.apply(kill)
    handler.apply(Control("w1", "kill", "s", "a", 1, "s/a/1", "user", 1_000, 0))
    handler.apply(Control("w1", "pause", "s", "a", 1, "s/a/1", "user", 1_000, 0))
    assert h.metrics["kills"] == 0


def test_an_attempt_given_back_sends_nothing_more_and_its_dispatch_stays_uncommitted() -> None:
    h = Harness()
    report = finished()
    h.intake.offsets.taken(("d", 0), 10)
    slot = Slot(run=None, lease_ms=1, offsets=[(("d", 0), 10)], claim_sent=True)  # type: ignore[arg-type]
    h.attempts.report(slot, report)
    slot.abandoned = True
    h.attempts.report(slot, report)
    assert h.sent == [report]
    h.intake.ended(slot)
    assert h.intake.offsets.to_commit(None) == {("d", 0): 10}, "redelivered, not committed"
    slot.abandoned = False
    h.intake.ended(slot)
    assert h.intake.offsets.to_commit(None) == {("d", 0): 11}


class _Run:
    def __init__(self) -> None:
        self.ref = ref("s", "j")


def test_the_claim_goes_with_the_first_start_of_the_attempt() -> None:
    h = Harness()
    slot = Slot(run=_Run(), lease_ms=1, offsets=[])  # type: ignore[arg-type]
    h.attempts.report(slot, Started(ref("s", "j"), pid=9, sent_at=5))
    h.attempts.report(slot, finished())
    assert h.sent == [
        Started(ref("s", "j"), pid=9, sent_at=5, claimed=True, host="h"),
        finished(),
    ]


def test_a_first_report_that_is_not_a_start_is_preceded_by_the_claim() -> None:
    h = Harness()
    slot = Slot(run=_Run(), lease_ms=1, offsets=[])  # type: ignore[arg-type]
    h.attempts.report(slot, finished())
    claim, end = h.sent
    assert isinstance(claim, Claimed) and claim.ref == ref("s", "j") and claim.host == "h"
    assert end == finished()


def test_a_worker_refuses_a_negative_job_count_or_idle_time() -> None:
    from engine.config import Settings
    from engine.worker import Worker, WorkerOptions

    settings = Settings.from_env(bootstrap_servers="127.0.0.1:1")
    for options in (WorkerOptions(max_jobs=-1), WorkerOptions(idle_exit_s=-0.5)):
        with pytest.raises(ValueError, match="must be 0"):
            Worker(settings, "q", 1, TaskRegistry(), options=options)
    worker = Worker(settings, "q", 1, TaskRegistry(), options=WorkerOptions(max_jobs=1))
    assert worker.options.max_jobs == 1 and not worker.ready.is_set()
