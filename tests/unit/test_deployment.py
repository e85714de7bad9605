"""docker-compose.yml cannot run here (no Docker engine); check what can be checked: it
parses, every joblog service runs a real `joblog` command, and the files it mounts load."""

from __future__ import annotations

from pathlib import Path

import yaml

from engine.cli import CLIENT_COMMANDS, DELEGATED
from engine.notify.subscriptions import load_subscriptions

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, object]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_every_joblog_service_runs_a_joblog_command() -> None:
    services = compose()["services"]
    assert isinstance(services, dict)
    assert {"kafka", "topics", "scheduler", "worker", "projector", "notifier"} <= set(services)
    known = set(CLIENT_COMMANDS) | set(DELEGATED)
    for name, service in services.items():
        if name == "kafka":
            assert "healthcheck" in service
            continue
        command = service["command"]
        assert command[0] in known, (name, command)
        assert service["environment"]["JOBLOG_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_the_notifier_subscriptions_load() -> None:
    subscriptions = load_subscriptions(
        ROOT / "deploy" / "subscriptions.yaml",
        env={"JOBLOG_HOOK_SECRET": "whsec_Y2hhbmdlLW1lLWNoYW5nZS1tZS1jaGFuZ2UtbWU="},
    )
    assert [s.id for s in subscriptions.subscriptions] == ["jobs-finished"]
