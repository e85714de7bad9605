"""Records of the compacted ``state`` topic: snapshots of live submissions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.codec.framing import decode, encode
from engine.codec.mapping import (
    CANCEL_MODES,
    JOB_STATUSES,
    members,
    notifications_from_avro,
    notifications_to_avro,
    pairs_from_avro,
    pairs_to_avro,
    restore,
    schedule_spec_from_avro,
    spec_from_avro,
    spec_to_avro,
)
from engine.codec.schemas import NAMESPACE, REGISTRY
from engine.lifecycle.records import HoldReason, SubmissionStatus
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

_SCHEMA = REGISTRY.current("Snapshot")
_SUBMISSION_STATUSES = members(SubmissionStatus)
_CANCEL_REQUEST = f"{NAMESPACE}.CancelRequest"
_PENDING_PROGRESS = f"{NAMESPACE}.PendingProgress"
_KEY_LEDGER = f"{NAMESPACE}.KeyLedger"
_SLOT_LEDGER = f"{NAMESPACE}.SlotLedger"
_QUEUE_CONFIG = f"{NAMESPACE}.QueueConfig"
_SCHEDULE = f"{NAMESPACE}.ScheduleState"
_HOLD_REASONS = members(HoldReason)


def _ledger_to_avro(ledger: KeyLedger | None) -> tuple[str, dict[str, Any]] | None:
    return None if ledger is None else (_KEY_LEDGER, {**vars(ledger), "waiters": ledger.waiters})


def _ledger_from_avro(value: Any) -> KeyLedger | None:
    if value is None:
        return None
    fields = value[1] if isinstance(value, tuple) else value
    fields["waiters"] = tuple(fields["waiters"])
    return restore(KeyLedger, fields)


def _slot_ledger_to_avro(ledger: SlotLedger | None) -> tuple[str, dict[str, Any]] | None:
    if ledger is None:
        return None
    return (_SLOT_LEDGER, {**vars(ledger), "waiters": [vars(w) for w in ledger.waiters]})


def _slot_ledger_from_avro(value: Any) -> SlotLedger | None:
    if value is None:
        return None
    fields = value[1] if isinstance(value, tuple) else value
    fields["holders"] = tuple(fields["holders"])
    fields["waiters"] = tuple([restore(SlotWaiter, w) for w in fields["waiters"]])
    fields["starts"] = tuple(fields["starts"])
    return restore(SlotLedger, fields)


def _queue_config_to_avro(config: QueueConfig | None) -> tuple[str, dict[str, Any]] | None:
    return None if config is None else (_QUEUE_CONFIG, vars(config))


def _queue_config_from_avro(value: Any) -> QueueConfig | None:
    if value is None:
        return None
    return restore(QueueConfig, value[1] if isinstance(value, tuple) else value)


def _schedule_to_avro(schedule: ScheduleState | None) -> tuple[str, dict[str, Any]] | None:
    if schedule is None:
        return None
    fields = {
        **vars(schedule),
        "spec": vars(schedule.spec),
        "jobs": [spec_to_avro(spec) for spec in schedule.jobs],
        "labels": pairs_to_avro(schedule.labels),
        "running": list(schedule.running),
    }
    return (_SCHEDULE, fields)


def _schedule_from_avro(value: Any) -> ScheduleState | None:
    if value is None:
        return None
    fields = value[1] if isinstance(value, tuple) else value
    fields["spec"] = schedule_spec_from_avro(fields["spec"])
    fields["jobs"] = tuple([spec_from_avro(spec) for spec in fields["jobs"]])
    fields["labels"] = pairs_from_avro(fields["labels"])
    fields["running"] = tuple(fields["running"])
    return restore(ScheduleState, fields)


def _job_to_avro(job: JobState) -> dict[str, Any]:
    cancel = job.cancel
    held = job.held_progress
    return {
        **vars(job),
        "spec": spec_to_avro(job.spec),
        # sorted, so that equal states encode to equal bytes
        "waiting_on": sorted(job.waiting_on),
        "fenced_workers": sorted(job.fenced_workers),
        "slots": sorted(job.slots),
        "cancel": None if cancel is None else (_CANCEL_REQUEST, vars(cancel)),
        "held_progress": None if held is None else (_PENDING_PROGRESS, vars(held)),
    }


def _job_from_avro(r: dict[str, Any]) -> JobState:
    # optional records come back as (record name, fields)
    cancel = r["cancel"]
    held = r["held_progress"]
    if cancel is not None:
        fields = cancel[1]
        fields["mode"] = CANCEL_MODES[fields["mode"]]
        r["cancel"] = restore(CancelRequest, fields)
    if held is not None:
        r["held_progress"] = restore(PendingProgress, held[1])
    r["spec"] = spec_from_avro(r["spec"])
    r["status"] = JOB_STATUSES[r["status"]]
    r["waiting_on"] = frozenset(r["waiting_on"])
    r["fenced_workers"] = frozenset(r["fenced_workers"])
    r["slots"] = frozenset(r["slots"])
    if r["held"] is not None:
        r["held"] = _HOLD_REASONS[r["held"]]
    return restore(JobState, r)


def _to_avro(s: SubmissionState) -> dict[str, Any]:
    fields = vars(s).copy()
    del fields["open_jobs"]  # derived: recounted on decode
    return {
        **fields,
        "jobs": [_job_to_avro(job) for job in s.jobs.values()],
        "dependents": [{"job_id": k, "job_ids": v} for k, v in s.dependents.items()],
        "children": [{"job_id": k, "job_ids": v} for k, v in s.children.items()],
        "labels": pairs_to_avro(s.labels),
        "job_ids": [],
        "per_job": False,
        "key_ledger": _ledger_to_avro(s.key_ledger),
        "notifications": notifications_to_avro(s.notifications),
        "slot_ledger": _slot_ledger_to_avro(s.slot_ledger),
        "queue_config": _queue_config_to_avro(s.queue_config),
        "schedule": _schedule_to_avro(s.schedule),
    }


@dataclass(frozen=True)
class SnapshotRecord:
    """A decoded record of the ``state`` topic, with its layout.

    Attributes:
        state: the submission state it holds: every job (an inline snapshot), none (the
            header of a per-job snapshot), or one (a job record of a per-job snapshot).
        job_ids: in a per-job header, every job id in submission order.
        per_job: a per-job header: the jobs are in records of their own.
    """

    state: SubmissionState
    job_ids: tuple[str, ...] = ()
    per_job: bool = False


def job_record_key(submission_id: str, job_id: str) -> bytes:
    """The ``state`` key of one job's record in a per-job snapshot."""
    return f"{submission_id}/{job_id}".encode()


def _header_to_avro(item: tuple[SubmissionState, tuple[str, ...]]) -> dict[str, Any]:
    s, job_ids = item
    fields = vars(s).copy()
    del fields["open_jobs"]
    return {
        **fields,
        "jobs": [],
        "dependents": [],
        "children": [],
        "labels": pairs_to_avro(s.labels),
        "job_ids": list(job_ids),
        "per_job": True,
        "key_ledger": _ledger_to_avro(s.key_ledger),
        "notifications": notifications_to_avro(s.notifications),
        "slot_ledger": _slot_ledger_to_avro(s.slot_ledger),
        "queue_config": _queue_config_to_avro(s.queue_config),
        "schedule": _schedule_to_avro(s.schedule),
    }


def _job_part_to_avro(item: tuple[SubmissionState, str]) -> dict[str, Any]:
    s, job_id = item
    dependents = s.dependents.get(job_id)
    children = s.children.get(job_id)
    return {
        "submission_id": s.submission_id,
        "seq": s.seq,
        "last_timestamp": s.last_timestamp,
        "accepted": s.accepted,
        "command_id": "",
        "jobs": [_job_to_avro(s.jobs[job_id])],
        "dependents": [] if dependents is None else [{"job_id": job_id, "job_ids": dependents}],
        "children": [] if children is None else [{"job_id": job_id, "job_ids": children}],
        "outcome": None,
        "deleted": False,
        "submitted_by": "",
        "labels": [],
        "job_ids": [],
        "per_job": False,
        "key_ledger": None,
        "notifications": [],
        "slot_ledger": None,
        "queue_config": None,
        "schedule": None,
    }


def encode_snapshot_header(s: SubmissionState) -> bytes:
    """Encode the header of a per-job snapshot: the submission without its jobs.

    Its jobs are written by :func:`encode_job_snapshot`, each under
    :func:`job_record_key`, so that no record grows with the size of the submission.
    """
    return encode(_SCHEMA, _header_to_avro, (s, tuple(s.jobs)))


def encode_job_snapshot(s: SubmissionState, job_id: str) -> bytes:
    """Encode one job of a per-job snapshot, with its links (dependents and sub-jobs)."""
    return encode(_SCHEMA, _job_part_to_avro, (s, job_id))


def decode_snapshot_record(raw: bytes) -> SnapshotRecord:
    """Decode any record value of the ``state`` topic with its layout.

    Raises:
        CodecError: as :func:`decode_snapshot`.
    """
    return decode("Snapshot", raw, _record_from_avro)


def _record_from_avro(r: dict[str, Any]) -> SnapshotRecord:
    job_ids = tuple(r["job_ids"])
    per_job = r["per_job"]
    return SnapshotRecord(_from_avro(r), job_ids, per_job)


def _from_avro(r: dict[str, Any]) -> SubmissionState:
    jobs = [_job_from_avro(job) for job in r["jobs"]]
    outcome = r["outcome"]
    return SubmissionState(
        submission_id=r["submission_id"],
        seq=r["seq"],
        last_timestamp=r["last_timestamp"],
        accepted=r["accepted"],
        command_id=r["command_id"],
        jobs={job.spec.job_id: job for job in jobs},
        dependents={link["job_id"]: tuple(link["job_ids"]) for link in r["dependents"]},
        children={link["job_id"]: tuple(link["job_ids"]) for link in r["children"]},
        outcome=None if outcome is None else _SUBMISSION_STATUSES[outcome],
        deleted=r["deleted"],
        submitted_by=r["submitted_by"],
        labels=pairs_from_avro(r["labels"]),
        key_ledger=_ledger_from_avro(r["key_ledger"]),
        notifications=notifications_from_avro(r["notifications"]),
        slot_ledger=_slot_ledger_from_avro(r["slot_ledger"]),
        queue_config=_queue_config_from_avro(r["queue_config"]),
        schedule=_schedule_from_avro(r["schedule"]),
        open_jobs=sum(not job.is_terminal for job in jobs),
    )


def encode_snapshot(s: SubmissionState) -> bytes:
    """Encode the state of a submission for the ``state`` topic.

    Every field is kept, the transient ones (lease renewals, held-back progress) included, and
    jobs stay in submission order.

    Args:
        s: the submission state.

    Returns:
        The record value: Avro single-object encoding of the ``Snapshot`` schema.

    Raises:
        CodecError: ``s`` is not a SubmissionState or does not fit the schema.
    """
    return encode(_SCHEMA, _to_avro, s)


def decode_snapshot(raw: bytes) -> SubmissionState:
    """Decode a record value of the ``state`` topic.

    A tombstone (``None`` value) is not a snapshot: check for it before calling.

    Args:
        raw: the record value.

    Returns:
        The submission state, its mappings as plain dicts in submission order.

    Raises:
        UnknownSchemaError: not single-object encoded, or written with an unknown schema.
        WrongKindError: the record is not a snapshot.
        CorruptRecordError: the body does not decode.
    """
    return decode("Snapshot", raw, _from_avro)
