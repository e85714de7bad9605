"""Golden bytes: records as joblog writes them on the wire, checked in.

A failure here means the wire format changed. If the change is intended (a new field with a
default, say), keep the old schema in ``schemas/history/`` so the old bytes still decode, then
rewrite the fixtures with ``python -m tests.unit.test_codec_golden``.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_reader
from fastavro.schema import load_schema

from engine import codec
from engine.codec import SCHEMA_DIR, TOPIC_SCHEMAS
from engine.codec.schemas import schema_fingerprint
from engine.lifecycle.records import (
    AddNotification,
    AttemptRef,
    CancelJobs,
    CancelMode,
    ChangeSchedule,
    ClaimIdempotencyKey,
    ClaimSlot,
    ConfigureQueue,
    Control,
    CreateSchedule,
    Dispatch,
    Event,
    FailureReason,
    Finished,
    Heartbeat,
    HoldReason,
    IdempotencyKeyAnswer,
    IdempotencyKeyDecided,
    JobAssigned,
    JobFailed,
    JobHeld,
    JobRerun,
    JobSpec,
    JobStatus,
    JobSubmitted,
    KeyDecision,
    Notification,
    NotificationAdded,
    NotificationRemoved,
    Outcome,
    QueueConfigured,
    ReleaseIdempotencyKey,
    ReleaseSlot,
    RemoveNotification,
    RerunJobs,
    RetryPolicy,
    ScheduleAction,
    ScheduleChanged,
    ScheduleCreated,
    ScheduleFired,
    ScheduleOverlap,
    ScheduleRunEnded,
    ScheduleRunSeen,
    ScheduleSkipped,
    ScheduleSpec,
    SlotAnswer,
    SlotDecided,
    SlotDecision,
    Started,
    SubmissionCompleted,
    SubmissionStatus,
    SubmissionThrottled,
    SubmitJobs,
    key_ledger_id,
    queue_config_id,
    schedule_submission_id,
    slot_ledger_id,
)
from engine.lifecycle.state import (
    CancelRequest,
    JobState,
    KeyLedger,
    PendingProgress,
    QueueConfig,
    ScheduleState,
    SlotLedger,
    SlotWaiter,
    SubmissionState,
)
from tests.unit.fixtures.compare import same_types

GOLDEN = Path(__file__).parent / "fixtures" / "codec" / "golden"

T = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SPEC = JobSpec(
    job_id="load",
    name="load orders",
    task="etl.load",
    args='{"args": ["2026-01-01"], "kwargs": {"table": "orders"}}',
    env=(("TZ", "UTC"), ("LANG", "C.UTF-8")),
    queue="etl",
    depends_on=("extract",),
    parent="nightly",
    retry=RetryPolicy(max_attempts=3, backoff_ms=500, retry_on=("TimeoutError", "timeout")),
    timeout_ms=60_000,
    queue_timeout_ms=5_000,
    idempotency_key="orders-2026-01-01",
    priority=-2,
    labels=(("team", "data"), ("team", "ops")),
    not_before=T + 60_000,
    concurrency_key="customer-42",
    max_running=2,
    rate_limit=10,
    rate_period_ms=60_000,
)
SCHEDULE_SPEC = ScheduleSpec(
    cron="30 2 * * 1-5",
    timezone="Europe/Berlin",
    overlap=ScheduleOverlap.BUFFER_ONE,
    catchup_window_ms=3_600_000,
    start_at=T,
    end_at=T + 86_400_000 * 365,
)
COMMAND_SPEC = JobSpec(job_id="extract", command=("curl", "-sf", "https://example.com/orders"))
REF = AttemptRef("sub-1", "load", 2, "sub-1/load/2", "worker-7")
HOOK = Notification(
    "done-hook",
    "https://example.com/hooks?job_id=${JOB_ID}&status=${EVENT}",
    "FINISHED",
    True,
    "load",
)
MAIL = Notification("n2", "ops@example.com", "*", False, "")


def _snapshot() -> SubmissionState:
    running = JobState(
        spec=SPEC,
        status=JobStatus.RUNNING,
        attempt=2,
        dispatch_id="sub-1/load/2",
        not_before=T + 1_500,
        worker_id="worker-7",
        host="node-3",
        submitted_at=T,
        pending_at=T + 1_000,
        assigned_at=T + 1_600,
        run_at=T + 1_700,
        cancel=CancelRequest(CancelMode.KILL, "operator request", "alice", T + 31_000),
        lease_ms=30_000,
        progress=0.25,
        total=1.0,
        status_line="reading",
        last_progress_at=T + 2_000,
        exceptions=1,
        error_type="TimeoutError",
        error_note="attempt 1 timed out",
        fenced_workers=frozenset({"worker-2", "worker-1"}),
        lease_until=T + 32_000,
        held_progress=PendingProgress(0.5, 1.0, None),
    )
    waiting = JobState(
        spec=JobSpec(job_id="report", task="etl.report", depends_on=("load",)),
        status=JobStatus.BLOCKED,
        waiting_on=frozenset({"load"}),
        submitted_at=T,
        blocked_at=T,
    )
    held = JobState(
        spec=JobSpec(job_id="mail", task="etl.mail", concurrency_key="smtp", max_running=1),
        status=JobStatus.PENDING,
        attempt=4,
        submitted_at=T,
        pending_at=T + 10,
        held=HoldReason.CONCURRENCY,
        held_slot="queue:etl",
        slots=frozenset({"key:smtp"}),
        first_attempt=3,
    )
    return SubmissionState(
        submission_id="sub-1",
        seq=12,
        last_timestamp=T + 2_000,
        accepted=True,
        command_id="cmd-1",
        jobs={"load": running, "report": waiting, "mail": held},
        dependents={"load": ("report",)},
        children={},
        submitted_by="alice",
        labels=(("env", "prod"),),
        notifications=(HOOK,),
    )


#: file name -> (record, encode, decode)
CASES: dict[str, tuple[Any, Callable[[Any], bytes], Callable[[bytes], Any]]] = {
    "command-submit-jobs": (
        SubmitJobs("cmd-1", "sub-1", (COMMAND_SPEC, SPEC), "alice", (("env", "prod"),), T),
        codec.encode_command,
        codec.decode_command,
    ),
    "command-submit-jobs-notifications": (
        SubmitJobs("cmd-4", "sub-1", (SPEC,), "alice", (), T, (HOOK, MAIL)),
        codec.encode_command,
        codec.decode_command,
    ),
    "command-add-notification": (
        AddNotification("cmd-5", "sub-1", HOOK, "alice", T + 20),
        codec.encode_command,
        codec.decode_command,
    ),
    "command-remove-notification": (
        RemoveNotification("cmd-6", "sub-1", "done-hook", "alice", T + 21),
        codec.encode_command,
        codec.decode_command,
    ),
    "event-notification-added": (
        Event("sub-1:2", "sub-1", "", 2, T, NotificationAdded(MAIL, "cmd-4", "alice")),
        codec.encode_event,
        codec.decode_event,
    ),
    "event-notification-removed": (
        Event(
            "sub-1:4",
            "sub-1",
            "",
            4,
            T + 1,
            NotificationRemoved("n2", "fired for JobSubmitted and is not persistent", 3),
        ),
        codec.encode_event,
        codec.decode_event,
    ),
    "command-cancel-jobs": (
        CancelJobs("cmd-2", "sub-1", None, CancelMode.FINISH, "wrong input", "bob", T + 5),
        codec.encode_command,
        codec.decode_command,
    ),
    "command-claim-idempotency-key": (
        ClaimIdempotencyKey(
            "sub-1:3:claim",
            key_ledger_id("orders-2026-01-01"),
            "orders-2026-01-01",
            "sub-1/load",
            T,
        ),
        codec.encode_command,
        codec.decode_command,
    ),
    "command-release-idempotency-key": (
        ReleaseIdempotencyKey(
            "sub-1:9:release",
            key_ledger_id("orders-2026-01-01"),
            "orders-2026-01-01",
            "sub-1/load",
            True,
            T + 9,
        ),
        codec.encode_command,
        codec.decode_command,
    ),
    "command-idempotency-key-answer": (
        IdempotencyKeyAnswer(
            "#key-1:4:answer", "sub-2", "load", "orders-2026-01-01", False, "sub-1/load", T + 10
        ),
        codec.encode_command,
        codec.decode_command,
    ),
    "event-idempotency-key-decided": (
        Event(
            f"{key_ledger_id('orders-2026-01-01')}:2",
            key_ledger_id("orders-2026-01-01"),
            "",
            2,
            T + 3,
            IdempotencyKeyDecided(
                "orders-2026-01-01", "sub-2/load", KeyDecision.QUEUED, "sub-1/load"
            ),
        ),
        codec.encode_event,
        codec.decode_event,
    ),
    "snapshot-key-ledger": (
        SubmissionState(
            submission_id=key_ledger_id("orders-2026-01-01"),
            seq=2,
            last_timestamp=T + 3,
            accepted=True,
            key_ledger=KeyLedger("orders-2026-01-01", "sub-1/load", "", ("sub-2/load",)),
        ),
        codec.encode_snapshot,
        codec.decode_snapshot,
    ),
    "report-started-claimed": (
        Started(REF, pid=4242, sent_at=T + 1_700, claimed=True, host="node-3"),
        codec.encode_report,
        codec.decode_report,
    ),
    "report-finished": (
        Finished(REF, Outcome.FAILED, None, 3, "CalledProcessError", "exit 3", "", 0.5, 1.0),
        codec.encode_report,
        codec.decode_report,
    ),
    "report-heartbeat": (
        Heartbeat("worker-7", "etl", "node-3", 4242, 4, 1, (REF,), 30_000, T + 9),
        codec.encode_report,
        codec.decode_report,
    ),
    "event-job-submitted": (
        Event("sub-1:2", "sub-1", "load", 2, T, JobSubmitted(SPEC)),
        codec.encode_event,
        codec.decode_event,
    ),
    "event-job-assigned": (
        Event(
            "sub-1:7",
            "sub-1",
            "load",
            7,
            T + 1_600,
            JobAssigned(2, "sub-1/load/2", "worker-7", 30_000, "node-3", "worker-1"),
        ),
        codec.encode_event,
        codec.decode_event,
    ),
    "event-job-failed": (
        Event(
            "sub-1:9",
            "sub-1",
            "load",
            9,
            T + 9_000,
            JobFailed(
                3, FailureReason.EXIT_CODE, "CalledProcessError", "exit 3", "Traceback ...", 3
            ),
        ),
        codec.encode_event,
        codec.decode_event,
    ),
    "event-submission-completed": (
        Event(
            "sub-1:10",
            "sub-1",
            "",
            10,
            T + 9_001,
            SubmissionCompleted(
                SubmissionStatus.FAILED, ((JobStatus.ABANDONED, 1), (JobStatus.FAILED, 1))
            ),
        ),
        codec.encode_event,
        codec.decode_event,
    ),
    "dispatch": (
        Dispatch("sub-1/load/2", "sub-1", "load", 2, SPEC, T + 1_500, 30_000),
        codec.encode_dispatch,
        codec.decode_dispatch,
    ),
    "control": (
        Control(
            "worker-7",
            "kill",
            "sub-1",
            "load",
            2,
            "sub-1/load/2",
            "canceled by alice",
            5_000,
            T + 20,
        ),
        codec.encode_control,
        codec.decode_control,
    ),
    "snapshot": (_snapshot(), codec.encode_snapshot, codec.decode_snapshot),
    "snapshot-slot-ledger": (
        SubmissionState(
            submission_id=slot_ledger_id("key:customer-42"),
            seq=7,
            last_timestamp=T + 700,
            accepted=True,
            slot_ledger=SlotLedger(
                "key:customer-42",
                max_running=2,
                rate_limit=10,
                rate_period_ms=60_000,
                holders=("sub-1/load@2", "sub-2/load@1"),
                waiters=(SlotWaiter("sub-3/load@1", 5, 6), SlotWaiter("sub-4/load@1", 0, 7)),
                starts=(T + 100, T + 600),
            ),
        ),
        codec.encode_snapshot,
        codec.decode_snapshot,
    ),
    "snapshot-queue-config": (
        SubmissionState(
            submission_id=queue_config_id("gpu", 3),
            seq=2,
            last_timestamp=T + 900,
            accepted=True,
            queue_config=QueueConfig("gpu", paused=True, max_running=4),
        ),
        codec.encode_snapshot,
        codec.decode_snapshot,
    ),
    "command-rerun": (
        RerunJobs("c-8", "sub-1", "load", "alice", T + 40),
        codec.encode_command,
        codec.decode_command,
    ),
    "command-configure-queue": (
        ConfigureQueue(
            "c-9@3", queue_config_id("gpu", 3), "gpu", True, 4, None, None, "alice", T + 41
        ),
        codec.encode_command,
        codec.decode_command,
    ),
    "command-claim-slot": (
        ClaimSlot(
            "sub-1:5:claim",
            slot_ledger_id("key:customer-42"),
            "key:customer-42",
            "sub-1/load@2",
            -2,
            2,
            10,
            60_000,
            T + 42,
        ),
        codec.encode_command,
        codec.decode_command,
    ),
    "command-release-slot": (
        ReleaseSlot(
            "sub-1:9:release:key:customer-42",
            slot_ledger_id("key:customer-42"),
            "key:customer-42",
            "sub-1/load@2",
            T + 43,
        ),
        codec.encode_command,
        codec.decode_command,
    ),
    "command-slot-answer": (
        SlotAnswer("#slot-x:3:answer", "sub-1", "load", 2, "key:customer-42", T + 44),
        codec.encode_command,
        codec.decode_command,
    ),
    "event-job-held": (
        Event(
            "sub-1:5",
            "sub-1",
            "load",
            5,
            T + 1_000,
            JobHeld(
                2,
                HoldReason.CONCURRENCY,
                "waits for a slot of key:customer-42 (at most 2 running)",
                "key:customer-42",
                2,
                10,
                60_000,
            ),
        ),
        codec.encode_event,
        codec.decode_event,
    ),
    "event-slot-decided": (
        Event(
            "#slot-x:3",
            slot_ledger_id("key:customer-42"),
            "",
            3,
            T + 1_001,
            SlotDecided(
                "key:customer-42",
                "sub-1/load@2",
                SlotDecision.QUEUED,
                -2,
                1,
                T + 5_000,
                2,
                10,
                60_000,
            ),
        ),
        codec.encode_event,
        codec.decode_event,
    ),
    "event-queue-configured": (
        Event(
            "#queue-gpu@3:2",
            queue_config_id("gpu", 3),
            "",
            2,
            T + 1_002,
            QueueConfigured("gpu", True, 4, 0, 0, "c-9@3", "alice"),
        ),
        codec.encode_event,
        codec.decode_event,
    ),
    "event-job-rerun": (
        Event(
            "sub-1:12",
            "sub-1",
            "load",
            12,
            T + 1_003,
            JobRerun(3, JobStatus.FAILED, "c-8", "alice"),
        ),
        codec.encode_event,
        codec.decode_event,
    ),
    "command-create-schedule": (
        CreateSchedule(
            "c-10",
            schedule_submission_id("nightly"),
            "nightly",
            SCHEDULE_SPEC,
            (SPEC, COMMAND_SPEC),
            (("team", "data"),),
            False,
            "alice",
            T + 45,
        ),
        codec.encode_command,
        codec.decode_command,
    ),
    "command-change-schedule": (
        ChangeSchedule(
            "c-11", schedule_submission_id("nightly"), ScheduleAction.TRIGGER, "alice", T + 46
        ),
        codec.encode_command,
        codec.decode_command,
    ),
    "command-schedule-run-ended": (
        ScheduleRunEnded(
            "nightly-20261203T020000Z:9:run-ended",
            schedule_submission_id("nightly"),
            "nightly-20261203T020000Z",
            "COMPLETED",
            T + 47,
        ),
        codec.encode_command,
        codec.decode_command,
    ),
    "event-schedule-created": (
        Event(
            "#schedule-nightly:1",
            schedule_submission_id("nightly"),
            "",
            1,
            T + 1_004,
            ScheduleCreated(
                "nightly", SCHEDULE_SPEC, (SPEC,), (("team", "data"),), False, T + 90_000, "c-10"
            ),
        ),
        codec.encode_event,
        codec.decode_event,
    ),
    "event-schedule-changed": (
        Event(
            "#schedule-nightly:2",
            schedule_submission_id("nightly"),
            "",
            2,
            T + 1_005,
            ScheduleChanged(ScheduleAction.PAUSE, 0, "c-12", "alice"),
        ),
        codec.encode_event,
        codec.decode_event,
    ),
    "event-schedule-fired": (
        Event(
            "#schedule-nightly:3",
            schedule_submission_id("nightly"),
            "",
            3,
            T + 1_006,
            ScheduleFired(T + 1_000, "nightly-20261203T020000Z", False, True, T + 90_000),
        ),
        codec.encode_event,
        codec.decode_event,
    ),
    "event-schedule-skipped": (
        Event(
            "#schedule-nightly:4",
            schedule_submission_id("nightly"),
            "",
            4,
            T + 1_007,
            ScheduleSkipped(T + 1_000, "catch_up_window", 12, T + 90_000),
        ),
        codec.encode_event,
        codec.decode_event,
    ),
    "event-schedule-run-seen": (
        Event(
            "#schedule-nightly:5",
            schedule_submission_id("nightly"),
            "",
            5,
            T + 1_008,
            ScheduleRunSeen("nightly-20261203T020000Z", "FAILED"),
        ),
        codec.encode_event,
        codec.decode_event,
    ),
    "event-submission-throttled": (
        Event(
            "sub-9:throttled:c-9",
            "sub-9",
            "",
            0,
            T + 1_009,
            SubmissionThrottled(
                "c-9",
                "pending_jobs",
                2_500,
                "gpu",
                1_000,
                1_000,
                "queue 'gpu' has 1000 pending jobs; retry in about 2.5 s",
            ),
        ),
        codec.encode_event,
        codec.decode_event,
    ),
    "snapshot-schedule": (
        SubmissionState(
            submission_id=schedule_submission_id("nightly"),
            seq=5,
            last_timestamp=T + 1_008,
            accepted=True,
            command_id="c-10",
            schedule=ScheduleState(
                schedule_id="nightly",
                spec=SCHEDULE_SPEC,
                jobs=(SPEC,),
                labels=(("team", "data"),),
                last_slot=T + 1_000,
                next_at=T + 90_000,
                running=("nightly-20261203T020000Z",),
                buffered=T + 2_000,
                fired=3,
            ),
        ),
        codec.encode_snapshot,
        codec.decode_snapshot,
    ),
    "deadletter": (
        codec.DeadLetter(
            "joblog.commands",
            3,
            1_234,
            b"sub-1",
            b"\x00\xff garbage",
            "UnknownSchemaError",
            "not a joblog Command",
            "joblog.scheduler",
            T + 30,
        ),
        codec.encode_deadletter,
        codec.decode_deadletter,
    ),
}


def _golden(name: str) -> bytes:
    return bytes.fromhex((GOLDEN / f"{name}.hex").read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_encoding_gives_the_golden_bytes(name: str) -> None:
    record, encode, _ = CASES[name]
    assert encode(record).hex() == _golden(name).hex()


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_golden_bytes_decode_to_the_record(name: str) -> None:
    record, _, decode = CASES[name]
    decoded = decode(_golden(name))
    same_types(decoded, record)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_plain_avro_reader_decodes_the_golden_bytes_from_the_schema_files(name: str) -> None:
    # what a client in another language does: read the header, pick the schema whose
    # canonical form has that fingerprint, decode the rest with a generic Avro reader
    raw = _golden(name)
    by_fingerprint = {}
    for topic in TOPIC_SCHEMAS:
        schema = load_schema(str(SCHEMA_DIR / f"{topic}.avsc"))
        by_fingerprint[schema_fingerprint(schema)] = schema
    assert raw[:2] == b"\xc3\x01"
    body = BytesIO(raw[10:])
    record = schemaless_reader(body, by_fingerprint[raw[2:10]])
    assert body.tell() == len(raw) - 10
    assert isinstance(record, dict)


def test_every_golden_file_has_a_case() -> None:
    assert sorted(path.stem for path in GOLDEN.glob("*.hex")) == sorted(CASES)


def write() -> None:
    """Rewrite the fixtures from the current encoders."""
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, (record, encode, _) in CASES.items():
        (GOLDEN / f"{name}.hex").write_text(encode(record).hex() + "\n")
        print(f"wrote {GOLDEN / name}.hex")


if __name__ == "__main__":
    write()
