"""How a submission's state is laid out on the compacted ``state`` topic. No Kafka here.

A small submission is one record, keyed by its id, with every job inline. A large one (more
than :data:`INLINE_MAX_JOBS` jobs, or an inline record over :data:`INLINE_MAX_BYTES`) is a
*per-job* snapshot: a header keyed by the submission id (the submission without its jobs,
plus every job id in order) and one record per job keyed ``<submission id>/<job id>``. Each
snapshot of a per-job submission writes the header and only the jobs that changed since the
previous snapshot, so a 100,000-job submission never needs a record larger than one job, and
a snapshot costs what changed, not the size of the submission.

Every record of one snapshot is written in the same transaction, so the latest record of each
key (what compaction keeps) always adds up to the state at the header's ``seq``.

A deleted submission keeps a header with ``deleted`` set and no jobs (its id is never accepted
again) and tombstones for its job records.

The inline record of a finished plain submission carries the Kafka header
:data:`DORMANT_HEADER` (its ``seq`` in ASCII). Such a submission needs nothing from its
snapshot until a command names it: no timer, lease, pending job, ledger or completed
idempotency key. A rebuild keeps its bytes and decodes them on first use, so a partition's
rebuild costs its unfinished submissions, not every finished one it still holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from engine import codec
from engine.errors import CodecError
from engine.lifecycle.records import JobStatus
from engine.lifecycle.state import JobState, SubmissionState

INLINE_MAX_JOBS = 32
INLINE_MAX_BYTES = 256 * 1024

StateRecord = tuple[bytes, bytes | None]
#: Kafka headers of a record.
Headers = list[tuple[str, str | bytes | None]]

#: The header that marks the snapshot record of a dormant submission (value: its ``seq``).
DORMANT_HEADER = "joblog.dormant"


@dataclass
class Written:
    """What the last committed snapshot of a submission holds."""

    seq: int = 0
    per_job: bool = False
    # per-job submissions: the job states as written (compared by identity: job states are
    # frozen and replaced on every change)
    jobs: dict[str, JobState] = field(default_factory=dict)


def snapshot_records(
    state: SubmissionState, written: Written | None
) -> tuple[list[StateRecord], Written]:
    """The ``state`` records of one snapshot of ``state``, and what they hold once committed.

    Args:
        state: the submission now.
        written: what its last committed snapshot holds (``None``: none yet).
    """
    key = state.submission_id.encode()
    per_job = written is not None and written.per_job
    if state.deleted:
        header = SubmissionState(
            submission_id=state.submission_id,
            seq=state.seq,
            last_timestamp=state.last_timestamp,
            accepted=state.accepted,
            command_id=state.command_id,
            outcome=state.outcome,
            deleted=True,
            submitted_by=state.submitted_by,
            labels=state.labels,
        )
        records: list[StateRecord] = [(key, codec.encode_snapshot(header))]
        if per_job:
            records.extend((codec.job_record_key(key.decode(), j), None) for j in state.jobs)
        return records, Written(state.seq, per_job=False)
    if not per_job and len(state.jobs) <= INLINE_MAX_JOBS:
        value = codec.encode_snapshot(state)
        if len(value) <= INLINE_MAX_BYTES:
            return [(key, value)], Written(state.seq)
    previous: Mapping[str, JobState] = written.jobs if written is not None and per_job else {}
    records = [(key, codec.encode_snapshot_header(state))]
    for job_id, job in state.jobs.items():
        if previous.get(job_id) is not job:
            records.append(
                (
                    codec.job_record_key(state.submission_id, job_id),
                    codec.encode_job_snapshot(state, job_id),
                )
            )
    return records, Written(state.seq, per_job=True, jobs=dict(state.jobs))


def is_dormant(state: SubmissionState) -> bool:
    """Whether a finished submission needs nothing from its snapshot until a command names
    it: no pseudo-submission (ledger, queue settings, schedule), not deleted, and no job
    that completed with an idempotency key (the partition indexes those at a rebuild)."""
    return (
        state.outcome is not None
        and not state.deleted
        and state.key_ledger is None
        and state.slot_ledger is None
        and state.queue_config is None
        and state.schedule is None
        and not any(
            job.spec.idempotency_key and job.status is JobStatus.COMPLETED
            for job in state.jobs.values()
        )
    )


def snapshot_headers(state: SubmissionState, written: Written) -> Headers | None:
    """The Kafka headers of the records of a snapshot that holds ``written``: the
    :data:`DORMANT_HEADER` for the inline record of a dormant submission, else none."""
    if written.per_job or not is_dormant(state):
        return None
    return [(DORMANT_HEADER, str(state.seq).encode())]


def dormant_seq(headers: Headers | None) -> int | None:
    """The ``seq`` a record's :data:`DORMANT_HEADER` gives (``None``: not dormant)."""
    for name, value in headers or ():
        if name == DORMANT_HEADER:
            try:
                return int(value or "")
            except ValueError:
                return None
    return None


@dataclass
class Restored:
    """The snapshots of one partition, read back from ``state``."""

    states: dict[str, SubmissionState] = field(default_factory=dict)
    written: dict[str, Written] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    unreadable: set[str] = field(default_factory=set)
    # dormant submissions, not decoded: id -> the encoded snapshot
    dormant: dict[str, bytes] = field(default_factory=dict)


def restore_snapshots(
    latest: Mapping[bytes, bytes | None], dormant: Mapping[bytes, int] | None = None
) -> Restored:
    """Assembles submissions from the latest record of each ``state`` key (not the checkpoint).

    A submission whose header or one of whose job records cannot be decoded (or is missing)
    is *unreadable*: the caller replays its events instead.

    Args:
        latest: the latest value of each key.
        dormant: keys whose latest record carries the :data:`DORMANT_HEADER` -> its seq;
            these are kept encoded in :attr:`Restored.dormant` (default: decode them all).
    """
    out = Restored()
    parts: dict[str, dict[str, codec.SnapshotRecord]] = {}
    headers: dict[str, codec.SnapshotRecord] = {}
    dormant = dormant or {}
    for raw_key, value in latest.items():
        if value is None:
            continue
        key = raw_key.decode("utf-8", "replace")
        seq = dormant.get(raw_key) if dormant else None
        if seq is not None:
            out.dormant[key] = value
            out.written[key] = Written(seq)
            continue
        submission_id, slash, job_id = key.partition("/")
        try:
            record = codec.decode_snapshot_record(value)
        except CodecError:
            out.unreadable.add(submission_id)
            continue
        if slash:
            parts.setdefault(submission_id, {})[job_id] = record
        else:
            headers[submission_id] = record
    for submission_id, header in headers.items():
        state = header.state
        if state.deleted:
            out.deleted.add(submission_id)
            continue
        if submission_id in out.unreadable:
            continue
        if not header.per_job:
            out.states[submission_id] = state
            out.written[submission_id] = Written(state.seq)
            continue
        mine = parts.get(submission_id, {})
        if any(job_id not in mine for job_id in header.job_ids):
            out.unreadable.add(submission_id)
            continue
        for job_id in header.job_ids:
            part = mine[job_id].state
            state.jobs[job_id] = part.jobs[job_id]
            if job_id in part.dependents:
                state.dependents[job_id] = part.dependents[job_id]
            if job_id in part.children:
                state.children[job_id] = part.children[job_id]
        state.open_jobs = sum(not job.is_terminal for job in state.jobs.values())
        out.states[submission_id] = state
        out.written[submission_id] = Written(state.seq, per_job=True, jobs=dict(state.jobs))
    return out
