"""Fitting what a task produces into the designed limits (:mod:`engine.limits`).

Every report a worker sends must fit one Kafka record, by construction:

=====================================  ====================================================
what                                   beyond its limit
=====================================  ====================================================
a task's JSON result                   the attempt fails: ``ResultTooLarge``, the note says
                                       the size, the limit, its variable and the head
status lines (progress, ``Finished``)  cut to ``max_status_line_bytes``
error and exception notes              cut to ``max_note_bytes``
exception types                        cut to ``max_status_line_bytes``
tracebacks                             cut in the middle to ``max_traceback_bytes``
output chunks                          split into chunks of ``max_output_chunk_bytes``
=====================================  ====================================================
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from engine.errors import ResultTooLarge
from engine.lifecycle.records import (
    AttemptReport,
    ExceptionReported,
    Finished,
    OutputReported,
    ProgressReported,
)
from engine.limits import Limits, describe_bytes, setting_name, truncate_middle, truncate_text

RESULT_HEAD_CHARS = 200


class UnserializableResult(ValueError):
    """A task's return value cannot be encoded as JSON."""


def encode_result(value: Any, limits: Limits) -> str:
    """The JSON of a task's return value, checked against ``max_result_bytes``.

    Raises:
        UnserializableResult: JSON cannot encode the value.
        ResultTooLarge: the JSON is larger than the limit.
    """
    try:
        result = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UnserializableResult(f"the task's return value is not JSON-encodable: {exc}") from exc
    check_result(result, limits)
    return result


def check_result(result: str, limits: Limits) -> None:
    """Raises :class:`ResultTooLarge` when the JSON ``result`` is above ``max_result_bytes``."""
    size = len(result.encode("utf-8"))
    limit = limits.max_result_bytes
    if size <= limit:
        return
    setting = setting_name("max_result_bytes")
    head = result[:RESULT_HEAD_CHARS]
    raise ResultTooLarge(
        f"result is {describe_bytes(size)}, the limit is {describe_bytes(limit)} ({setting}); "
        f"head: {head}",
        size=size,
        limit=limit,
        setting=setting,
    )


def fit_report(report: AttemptReport, limits: Limits) -> list[AttemptReport]:
    """``report`` within the limits: usually itself, cut where needed; output may be split.

    A ``Finished`` whose result is too large becomes a FAILED one with ``ResultTooLarge``.
    """
    if isinstance(report, ProgressReported):
        return [replace(report, status_line=_status(report.status_line, limits))]
    if isinstance(report, ExceptionReported):
        return [
            replace(
                report,
                type=truncate_text(report.type, limits.max_status_line_bytes),
                note=truncate_text(report.note, limits.max_note_bytes),
                traceback=truncate_middle(report.traceback, limits.max_traceback_bytes),
            )
        ]
    if isinstance(report, OutputReported):
        return list(split_output(report, limits.max_output_chunk_bytes))
    if isinstance(report, Finished):
        return [fit_finished(report, limits)]
    return [report]


def fit_finished(report: Finished, limits: Limits) -> Finished:
    """A ``Finished`` within the limits (see :func:`fit_report`)."""
    if report.result is not None:
        try:
            check_result(report.result, limits)
        except ResultTooLarge as exc:
            report = replace(
                report,
                outcome=type(report.outcome).FAILED,
                result=None,
                error_type=type(exc).__name__,
                error_note=str(exc),
            )
    return replace(
        report,
        error_type=truncate_text(report.error_type, limits.max_status_line_bytes),
        error_note=truncate_text(report.error_note, limits.max_note_bytes),
        traceback=truncate_middle(report.traceback, limits.max_traceback_bytes),
        status_line=_status(report.status_line, limits),
    )


def split_output(report: OutputReported, max_bytes: int) -> list[OutputReported]:
    """``report`` as chunks of at most ``max_bytes`` UTF-8 bytes, offsets counting on.

    A character is never split; only the last piece keeps the ``truncated`` mark.
    """
    raw = report.chunk.encode("utf-8")
    if len(raw) <= max_bytes:
        return [report]
    pieces: list[str] = []
    start = 0
    while start < len(raw):
        end = min(len(raw), start + max(max_bytes, 4))
        while end < len(raw) and raw[end] & 0xC0 == 0x80:  # inside a character: back off
            end -= 1
        pieces.append(raw[start:end].decode("utf-8"))
        start = end
    out = []
    offset = report.offset
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        out.append(replace(report, chunk=piece, offset=offset, truncated=report.truncated and last))
        offset += len(piece)
    return out


def _status(line: str | None, limits: Limits) -> str | None:
    return None if line is None else truncate_text(line, limits.max_status_line_bytes)
