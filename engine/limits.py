"""The designed size limits of joblog, one place for all of them.

Every record joblog writes fits the broker's limits by construction: the topics joblog
creates get ``max.message.bytes = max_record_bytes`` and every producer gets a matching
``message.max.bytes``; each input that could make a record large is checked where it enters
(the client for arguments and submissions, the worker for results, output and messages, the
scheduler again for anything a foreign client or worker sends), with a typed error or a
truncation that names the limit. The scheduler's state is snapshotted per job, so no record
grows with the size of a submission.

==========================  =============================  =======  ==========================
limit                       environment variable           default  what happens beyond it
==========================  =============================  =======  ==========================
``max_record_bytes``        ``JOBLOG_MAX_RECORD_BYTES``    16 MiB   topic ``max.message.bytes``
``max_submit_bytes``        ``JOBLOG_MAX_SUBMIT_BYTES``    15 MiB   ``SubmissionTooLarge``
``max_jobs``                ``JOBLOG_MAX_JOBS``            100,000  ``TooManyJobs``
``max_args_bytes``          ``JOBLOG_MAX_ARGS_BYTES``      1 MiB    ``ArgumentsTooLarge``
``max_result_bytes``        ``JOBLOG_MAX_RESULT_BYTES``    1 MiB    attempt FAILED
                                                                    ``ResultTooLarge``
``max_status_line_bytes``   ``JOBLOG_MAX_STATUS_LINE_BYTES`` 1 KiB  truncated
``max_note_bytes``          ``JOBLOG_MAX_NOTE_BYTES``      64 KiB   truncated (error and
                                                                    exception notes, reasons)
``max_traceback_bytes``     ``JOBLOG_MAX_TRACEBACK_BYTES`` 64 KiB   truncated (head and tail)
``max_output_chunk_bytes``  ``JOBLOG_MAX_OUTPUT_CHUNK_BYTES`` 64 KiB  split into chunks
==========================  =============================  =======  ==========================

The submit limit stays below the record limit, so an accepted submission always fits its
command record; the per-job limits are far below it, so a job's events, its dispatch record
and its snapshot (spec + result + notes) always fit one record.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from engine.errors import ConfigurationError

KiB = 1024
MiB = 1024 * 1024

TRUNCATED = "…[truncated]"


@dataclass(frozen=True)
class Limits:
    """Designed sizes of what enters joblog (see the module docstring).

    Attributes:
        max_record_bytes: the largest Kafka record joblog writes; topics joblog creates get
            this ``max.message.bytes`` and producers a matching ``message.max.bytes``.
        max_submit_bytes: the largest encoded submit command.
        max_jobs: the most jobs in one submission.
        max_args_bytes: the largest JSON arguments of one job.
        max_result_bytes: the largest JSON result of one task.
        max_status_line_bytes: the longest status line (longer ones are truncated).
        max_note_bytes: the longest error or exception note (longer ones are truncated).
        max_traceback_bytes: the longest traceback kept (head and tail).
        max_output_chunk_bytes: the largest chunk of command output in one report.
    """

    max_record_bytes: int = 16 * MiB
    max_submit_bytes: int = 15 * MiB
    max_jobs: int = 100_000
    max_args_bytes: int = 1 * MiB
    max_result_bytes: int = 1 * MiB
    max_status_line_bytes: int = 1 * KiB
    max_note_bytes: int = 64 * KiB
    max_traceback_bytes: int = 64 * KiB
    max_output_chunk_bytes: int = 64 * KiB

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        """Reads ``JOBLOG_MAX_*`` variables (see the module docstring); others keep defaults.

        Raises:
            ConfigurationError: a value is not a positive integer, or the submit limit is not
                below the record limit.
        """
        env = os.environ if env is None else env
        values: dict[str, int] = {}
        for f in fields(cls):
            name = setting_name(f.name)
            raw = env.get(name)
            if raw is None:
                continue
            try:
                value = int(raw)
            except ValueError:
                raise ConfigurationError(f"{name}={raw!r} is not an integer") from None
            if value < 1:
                raise ConfigurationError(f"{name}={raw!r} must be at least 1")
            values[f.name] = value
        limits = cls(**values)
        if limits.max_submit_bytes >= limits.max_record_bytes:
            raise ConfigurationError(
                f"JOBLOG_MAX_SUBMIT_BYTES ({limits.max_submit_bytes}) must be below "
                f"JOBLOG_MAX_RECORD_BYTES ({limits.max_record_bytes})"
            )
        return limits

    def producer_message_max_bytes(self) -> int:
        """librdkafka's ``message.max.bytes`` for joblog's producers (a record plus framing)."""
        return self.max_record_bytes + 64 * KiB


def setting_name(field_name: str) -> str:
    """The environment variable of a :class:`Limits` field: ``JOBLOG_MAX_ARGS_BYTES``."""
    return f"JOBLOG_{field_name.upper()}"


def describe_bytes(size: int) -> str:
    """A size for a person: ``5.2 MB``, ``830 KB``, ``12 bytes``."""
    if size >= 1_000_000:
        return f"{size / 1_000_000:.1f} MB"
    if size >= 1_000:
        return f"{size / 1_000:.0f} KB"
    return f"{size} bytes"


def truncate_text(text: str, limit_bytes: int) -> str:
    """``text`` cut to at most ``limit_bytes`` UTF-8 bytes, marked as truncated."""
    raw = text.encode("utf-8")
    if len(raw) <= limit_bytes:
        return text
    marker = TRUNCATED.encode("utf-8")
    keep = max(0, limit_bytes - len(marker))
    return raw[:keep].decode("utf-8", "ignore") + TRUNCATED


def truncate_middle(text: str, limit_bytes: int) -> str:
    """``text`` cut to at most ``limit_bytes`` UTF-8 bytes keeping its head and tail."""
    raw = text.encode("utf-8")
    if len(raw) <= limit_bytes:
        return text
    marker = f"\n{TRUNCATED}\n".encode()
    keep = max(0, limit_bytes - len(marker))
    head = raw[: keep // 2].decode("utf-8", "ignore")
    tail = raw[len(raw) - (keep - keep // 2) :].decode("utf-8", "ignore")
    return head + marker.decode() + tail


DEFAULT_LIMITS = Limits()
