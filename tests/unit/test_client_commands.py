"""The client's pure parts without a broker: limits, ids, matching decisions, typed errors."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from engine import cli
from engine.client import (
    check_encoded,
    check_submission,
    decision_of,
    id_time_ms,
    new_id,
    rejection_error,
    submit_command,
)
from engine.clock import now_ms
from engine.errors import (
    ArgumentsTooLarge,
    CommandRejectedError,
    JobNotCanceled,
    JobNotDeleted,
    JobNotRetried,
    LimitExceeded,
    SubmissionTooLarge,
    TooManyJobs,
)
from engine.lifecycle.records import (
    CancelJobs,
    CommandRejected,
    DeleteJobs,
    Event,
    EventBody,
    JobCanceled,
    JobDeleted,
    JobDispatched,
    JobSpec,
    JobSubmitted,
    RetryJob,
    SubmissionAccepted,
)
from engine.limits import Limits
from engine.watch import SubmissionRejected, SubmissionView

SID = "s-1"


def ev(body: EventBody, job_id: str = "", submission_id: str = SID) -> Event:
    return Event(f"{submission_id}:1", submission_id, job_id, 1, 0, body)


def spec(job_id: str, args: str = "{}") -> JobSpec:
    return JobSpec(job_id=job_id, task="t", args=args)


# --------------------------------------------------------------------------- limits


def test_arguments_beyond_the_limit_name_it() -> None:
    command = submit_command([spec("x", json.dumps({"args": ["a" * 5_200_000]}))])
    with pytest.raises(ArgumentsTooLarge) as caught:
        check_submission(command, Limits())
    error = caught.value
    assert str(error).startswith("job 'x' arguments are 5.2 MB, the limit is 1 MiB")
    assert error.setting == "JOBLOG_MAX_ARGS_BYTES" and error.limit == Limits().max_args_bytes
    assert isinstance(error, LimitExceeded)


def test_too_many_jobs_and_too_large_submissions() -> None:
    command = submit_command([spec(f"j{n}") for n in range(3)])
    with pytest.raises(TooManyJobs) as many:
        check_submission(command, Limits(max_jobs=2))
    assert "JOBLOG_MAX_JOBS" in str(many.value) and many.value.size == 3
    limits = Limits(max_submit_bytes=100, max_record_bytes=200)
    with pytest.raises(SubmissionTooLarge) as large:
        check_encoded(command, b"x" * 101, limits)
    assert "split it into several submissions" in str(large.value)
    check_encoded(command, b"x" * 100, limits)
    cancel = CancelJobs("c-1", SID, reason="r")
    with pytest.raises(LimitExceeded):
        check_encoded(cancel, b"x" * 201, limits)


def test_the_cli_refuses_an_oversized_file_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBLOG_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    big = tmp_path / "big.json"
    big.write_text(json.dumps([{"id": "x", "task": "t", "args": ["a" * 5_200_000]}]))
    assert cli.main(["submit", "--file", str(big)]) == cli.EXIT_FAILED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(JOBLOG_MAX_ARGS_BYTES)" in err[0]


# --------------------------------------------------------------------------- ids


def test_ids_carry_their_creation_time() -> None:
    before = now_ms()
    made = new_id("s-")
    assert made.startswith("s-") and len(made) == 34
    created = id_time_ms(made)
    assert created is not None and before <= created <= now_ms()
    assert uuid.UUID(made[2:]).version == 7
    assert new_id("s-") != made


@pytest.mark.parametrize(
    "other", [f"s-{uuid.uuid4().hex}", "basic", "s-not-hex", "s-" + "0" * 32, "s-" + "f" * 32]
)
def test_other_ids_have_no_time(other: str) -> None:
    assert id_time_ms(other) is None


# --------------------------------------------------------------------------- decisions


def test_a_submit_is_decided_by_its_own_acceptance_or_rejection() -> None:
    command = submit_command([spec("a")], submission_id=SID)
    mine = SubmissionAccepted(command.command_id, "", (), ("a",))
    other = SubmissionAccepted("c-other", "", (), ("a",))
    assert decision_of(command, ev(mine)) is True
    assert decision_of(command, ev(other)) is None
    assert decision_of(command, ev(JobSubmitted(spec("a")), "a")) is None
    rejected = CommandRejected(command.command_id, "SubmitJobs", "cycle", "a -> a")
    assert decision_of(command, ev(rejected)) is False
    assert decision_of(command, ev(mine, submission_id="s-2")) is None


def test_cancel_retry_and_delete_are_decided_by_their_effects() -> None:
    cancel = CancelJobs("c-1", SID, "a")
    assert decision_of(cancel, ev(JobCanceled("r"), "a")) is True
    assert decision_of(cancel, ev(CommandRejected("c-2", "CancelJobs", "x", "y"))) is None
    retry = RetryJob("c-3", SID, "a")
    assert decision_of(retry, ev(JobDispatched(2, "default", "d"), "a")) is True
    assert decision_of(retry, ev(JobDispatched(2, "default", "d"), "b")) is None
    delete = DeleteJobs("c-4", SID, "a")
    assert decision_of(delete, ev(JobDeleted(), "b")) is None
    assert decision_of(delete, ev(JobDeleted(), "a")) is True
    assert decision_of(DeleteJobs("c-5", SID), ev(JobDeleted(), "b")) is True


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        (CancelJobs("c-1", SID, "a"), JobNotCanceled),
        (RetryJob("c-1", SID, "a"), JobNotRetried),
        (DeleteJobs("c-1", SID), JobNotDeleted),
        (submit_command([spec("a")], submission_id=SID), SubmissionRejected),
    ],
)
def test_each_command_has_its_rejection_error(
    command: CancelJobs | RetryJob | DeleteJobs, kind: type[CommandRejectedError]
) -> None:
    body = CommandRejected(command.command_id, type(command).__name__, "code_x", "what to fix")
    error = rejection_error(command, body)
    assert type(error) is kind
    assert (error.code, error.reason) == ("code_x", "what to fix")
    assert error.command_id == body.command_id
    assert "(code_x): what to fix" in str(error)


# --------------------------------------------------------------------------- known submissions


def test_a_rejected_cancel_does_not_make_a_submission_known() -> None:
    view = SubmissionView(SID)
    view.apply(ev(CommandRejected("c-1", "CancelJobs", "unknown_submission", "no such")))
    assert not view.known and not view.done
    view.apply(ev(CommandRejected("c-2", "SubmitJobs", "cycle", "a -> a")))
    assert view.known and view.done
    view.apply(ev(SubmissionAccepted("c-3", "", (), ("a",))))
    assert view.known and view.rejection is None  # a later valid submit supersedes it
