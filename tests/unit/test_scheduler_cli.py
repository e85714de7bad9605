"""``joblog scheduler``'s options reach the scheduler it builds (nothing is started)."""

from __future__ import annotations

import pytest

from engine.lifecycle.admission import AdmissionLimits
from engine.scheduler.cli import build_scheduler


def test_defaults_keep_the_documented_limits() -> None:
    scheduler, _ = build_scheduler(["--instance-id", "s1"])
    config = scheduler.config
    assert config.instance_id == "s1"
    assert config.admission == AdmissionLimits()
    assert config.admission.max_pending_jobs == 1_000_000
    assert config.transaction_timeout_ms == 30_000
    assert scheduler.load is None, "no limit needs the brokers' offsets"


def test_flags_set_admission_control_and_the_transaction_timeout() -> None:
    scheduler, _ = build_scheduler(
        [
            "--max-pending-jobs=10",
            "--max-dispatch-backlog=20",
            "--max-projection-lag=30",
            "--transaction-timeout-ms=10000",
        ]
    )
    config = scheduler.config
    assert config.admission == AdmissionLimits(10, 20, 30)
    assert config.transaction_timeout_ms == 10_000
    assert scheduler.load is not None, "a sampled limit starts the load monitor with the loop"


def test_the_environment_gives_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBLOG_MAX_PENDING_JOBS", "0")
    monkeypatch.setenv("JOBLOG_MAX_PROJECTION_LAG", "5000")
    scheduler, _ = build_scheduler([])
    assert scheduler.config.admission == AdmissionLimits(0, 0, 5_000)
    scheduler, _ = build_scheduler(["--max-pending-jobs", "7"])
    assert scheduler.config.admission.max_pending_jobs == 7


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-pending-jobs", "many"], "invalid int value"),
        (["--max-dispatch-backlog", "-1"], "max_dispatch_backlog must be 0 (off) or more"),
    ],
)
def test_bad_values_are_refused_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_scheduler(argv)
    assert message in capsys.readouterr().err
