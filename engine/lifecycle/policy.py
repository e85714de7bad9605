"""The scheduler-wide limits and timings, and the deterministic ids of events and dispatches."""

from __future__ import annotations

from dataclasses import dataclass

from engine.lifecycle.records import (
    JobStatus,
)
from engine.limits import (
    DEFAULT_LIMITS,
    Limits,
)

ACTIVE = frozenset({JobStatus.ASSIGNED, JobStatus.RUNNING})


#: The longest idempotency key, in bytes (UTF-8).
MAX_IDEMPOTENCY_KEY_BYTES = 1024


@dataclass(frozen=True)
class Policy:
    """Scheduler-wide limits and timings (not per job).

    Attributes:
        lease_ms: how long a worker may stay silent before its attempts are lost.
        kill_grace_ms: how long a kill may take before the job is CANCELED without the
            worker's confirmation (beyond the worker's own grace period).
        progress_interval_ms: at most one progress event per job per this interval.
        max_jobs: jobs in one submission.
        max_args_bytes: size of one job's JSON arguments.
        max_result_bytes: size of one task's JSON result; a larger one fails the attempt.
        max_note_bytes / max_status_line_bytes / max_traceback_bytes /
        max_output_chunk_bytes: longer texts from workers are truncated.
        (The defaults are :mod:`engine.limits`; :meth:`from_limits` takes configured ones.)
    """

    lease_ms: int = 30_000
    kill_grace_ms: int = 15_000
    progress_interval_ms: int = 200
    max_jobs: int = DEFAULT_LIMITS.max_jobs
    max_args_bytes: int = DEFAULT_LIMITS.max_args_bytes
    max_result_bytes: int = DEFAULT_LIMITS.max_result_bytes
    max_note_bytes: int = DEFAULT_LIMITS.max_note_bytes
    max_status_line_bytes: int = DEFAULT_LIMITS.max_status_line_bytes
    max_traceback_bytes: int = DEFAULT_LIMITS.max_traceback_bytes
    max_output_chunk_bytes: int = DEFAULT_LIMITS.max_output_chunk_bytes

    @classmethod
    def from_limits(cls, limits: Limits, **timings: int) -> Policy:
        """A policy with the given size limits and timings."""
        return cls(
            max_jobs=limits.max_jobs,
            max_args_bytes=limits.max_args_bytes,
            max_result_bytes=limits.max_result_bytes,
            max_note_bytes=limits.max_note_bytes,
            max_status_line_bytes=limits.max_status_line_bytes,
            max_traceback_bytes=limits.max_traceback_bytes,
            max_output_chunk_bytes=limits.max_output_chunk_bytes,
            **timings,
        )


DEFAULT_POLICY = Policy()


def event_id(submission_id: str, seq: int) -> str:
    """The deterministic id of a submission's ``seq``-th event."""
    return f"{submission_id}:{seq}"


def dispatch_id(submission_id: str, job_id: str, attempt: int) -> str:
    """The deterministic id of an attempt's dispatch record."""
    return f"{submission_id}/{job_id}/{attempt}"
