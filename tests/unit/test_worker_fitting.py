"""Fitting reports into the designed limits, and the worker's message channel."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from engine.errors import ResultTooLarge
from engine.lifecycle.records import (
    AttemptRef,
    ExceptionReported,
    Finished,
    Outcome,
    OutputReported,
    ProgressReported,
    Started,
)
from engine.limits import TRUNCATED, Limits
from engine.worker.channel import Channel, ChannelClosed
from engine.worker.cli import parse_size
from engine.worker.fitting import (
    UnserializableResult,
    encode_result,
    fit_report,
    split_output,
)

REF = AttemptRef("s", "j", 1, "s/j/1", "w")
SMALL = Limits(
    max_result_bytes=1_000_000,
    max_status_line_bytes=20,
    max_note_bytes=50,
    max_traceback_bytes=60,
    max_output_chunk_bytes=10,
)


def size(text: str | None) -> int:
    return len((text or "").encode("utf-8"))


class TestResult:
    def test_a_result_within_the_limit_is_its_json(self) -> None:
        assert encode_result({"a": [1, 2]}, SMALL) == '{"a": [1, 2]}'

    def test_a_result_above_the_limit_names_size_limit_setting_and_head(self) -> None:
        value = "x" * 5_200_000
        with pytest.raises(ResultTooLarge) as caught:
            encode_result(value, SMALL)
        note = str(caught.value)
        assert note.startswith("result is 5.2 MB, the limit is 1.0 MB (JOBLOG_MAX_RESULT_BYTES);")
        assert note.endswith("head: " + json.dumps(value)[:200])
        assert (caught.value.limit, caught.value.setting) == (1_000_000, "JOBLOG_MAX_RESULT_BYTES")

    def test_a_result_json_cannot_encode(self) -> None:
        with pytest.raises(UnserializableResult):
            encode_result(object(), SMALL)
        with pytest.raises(UnserializableResult):
            encode_result(float("nan"), SMALL)

    def test_a_finished_with_a_too_large_result_fails(self) -> None:
        finished = Finished(REF, Outcome.COMPLETED, result=json.dumps("y" * 2_000_000))
        (fitted,) = fit_report(finished, SMALL)
        assert isinstance(fitted, Finished)
        assert (fitted.outcome, fitted.error_type, fitted.result) == (
            Outcome.FAILED,
            "ResultTooLarge",
            None,
        )
        assert size(fitted.error_note) <= SMALL.max_note_bytes


class TestTruncation:
    def test_finished_notes_traceback_and_status_line_are_cut(self) -> None:
        finished = Finished(
            REF,
            Outcome.FAILED,
            error_type="E" * 100,
            error_note="n" * 1000,
            traceback="head\n" + "t" * 1000 + "\ntail",
            status_line="é" * 100,
        )
        (fitted,) = fit_report(finished, SMALL)
        assert isinstance(fitted, Finished)
        assert size(fitted.error_note) <= 50 and fitted.error_note.endswith(TRUNCATED)
        assert size(fitted.error_type) <= 20
        assert size(fitted.status_line) <= 20
        assert size(fitted.traceback) <= 60
        assert fitted.traceback.startswith("head") and fitted.traceback.endswith("tail")

    def test_progress_and_exception_reports_are_cut(self) -> None:
        (progress,) = fit_report(ProgressReported(REF, 1.0, None, "s" * 99), SMALL)
        assert isinstance(progress, ProgressReported)
        assert size(progress.status_line) <= 20
        (exception,) = fit_report(ExceptionReported(REF, "T" * 99, "n" * 999, 1, "x" * 999), SMALL)
        assert isinstance(exception, ExceptionReported)
        assert size(exception.note) <= 50 and size(exception.traceback) <= 60

    def test_reports_within_the_limits_are_kept_as_they_are(self) -> None:
        started = Started(REF, pid=1)
        assert fit_report(started, SMALL) == [started]
        progress = ProgressReported(REF, 1.0, 2.0, "ok")
        assert fit_report(progress, SMALL) == [progress]


class TestOutputSplitting:
    def test_a_large_chunk_becomes_chunks_with_running_offsets(self) -> None:
        report = OutputReported(REF, "stdout", "abcdefghij" * 3 + "xyz", offset=7)
        pieces = split_output(report, 10)
        assert [p.chunk for p in pieces] == ["abcdefghij"] * 3 + ["xyz"]
        assert [p.offset for p in pieces] == [7, 17, 27, 37]

    def test_characters_are_never_split_and_only_the_last_piece_is_marked(self) -> None:
        text = "ü€😀" * 20
        report = OutputReported(REF, "stderr", text, offset=0, truncated=True)
        pieces = fit_report(report, SMALL)
        assert "".join(p.chunk for p in pieces) == text  # type: ignore[union-attr]
        assert all(size(p.chunk) <= 10 for p in pieces)  # type: ignore[union-attr]
        assert [p.truncated for p in pieces] == [False] * (len(pieces) - 1) + [True]  # type: ignore[union-attr]
        offsets = [p.offset for p in pieces]  # type: ignore[union-attr]
        lengths = [len(p.chunk) for p in pieces]  # type: ignore[union-attr]
        assert offsets == [sum(lengths[:i]) for i in range(len(pieces))]


class TestChannel:
    def test_messages_cross_in_order_and_eof_is_closed(self) -> None:
        left, right = socket.socketpair()
        sender, receiver = Channel(left), Channel(right)
        big = Finished(REF, Outcome.COMPLETED, result="r" * 3_000_000)
        sender.send(("cancel", "why", 10))
        assert receiver.recv(timeout=0.01) == ("cancel", "why", 10)
        assert receiver.recv(timeout=0.01) is None  # nothing more yet
        threading.Thread(target=sender.send, args=(big,)).start()  # bigger than the buffer
        assert receiver.recv(timeout=5) == big
        sender.close()
        with pytest.raises(ChannelClosed):
            receiver.recv(timeout=1)
        receiver.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1048576", 1048576), ("512M", 512 * 1024**2), ("2g", 2 * 1024**3), ("1.5KiB", 1536)],
)
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected
