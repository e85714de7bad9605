"""docker-compose.yml and docker-compose.cluster.yml cannot run here (no Docker engine);
check what can be checked: they parse, every joblog service runs a real `joblog` command, the
files they mount load, and the cluster variant's three brokers form one quorum with the
replication settings joblog needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from engine.broker.properties import is_cluster_id
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


def cluster_compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.cluster.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _brokers(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if name.startswith("kafka")}


def test_the_cluster_variant_runs_three_brokers_in_one_quorum() -> None:
    services = cluster_compose()["services"]
    brokers = _brokers(services)
    assert sorted(brokers) == ["kafka-1", "kafka-2", "kafka-3"]
    single = compose()["services"]["kafka"]
    environments = [broker["environment"] for broker in brokers.values()]
    assert {broker["image"] for broker in brokers.values()} == {single["image"]}
    assert all("healthcheck" in broker for broker in brokers.values())
    assert sorted(int(env["KAFKA_NODE_ID"]) for env in environments) == [1, 2, 3]
    assert len({env["CLUSTER_ID"] for env in environments}) == 1
    assert is_cluster_id(environments[0]["CLUSTER_ID"])
    for name, env in zip(brokers, environments, strict=True):
        voters = dict(v.split("@") for v in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
        # every voter is one of the brokers, on its CONTROLLER listener's port
        assert voters == {
            str(other["KAFKA_NODE_ID"]): f"{other_name}:9093"
            for other_name, other in zip(brokers, environments, strict=True)
        }
        assert "CONTROLLER://:9093" in env["KAFKA_LISTENERS"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert f"PLAINTEXT://{name}:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    host_ports = [broker["ports"][0].split(":")[0] for broker in brokers.values()]
    assert len(set(host_ports)) == 3
    volumes = [broker["volumes"][0].split(":")[0] for broker in brokers.values()]
    assert len(set(volumes)) == 3, "each broker keeps its own log"


def test_the_cluster_variant_replicates_three_ways_with_two_in_sync() -> None:
    for env in (b["environment"] for b in _brokers(cluster_compose()["services"]).values()):
        for key in (
            "KAFKA_DEFAULT_REPLICATION_FACTOR",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
        ):
            assert str(env[key]) == "3", key
        for key in (
            "KAFKA_MIN_INSYNC_REPLICAS",
            "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR",
        ):
            assert str(env[key]) == "2", key
        assert str(env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"]) == "false"
        assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]) == "false"


def test_the_cluster_variant_points_every_service_at_every_broker() -> None:
    services = cluster_compose()["services"]
    brokers = set(_brokers(services))
    known = set(CLIENT_COMMANDS) | set(DELEGATED)
    for name, service in services.items():
        if name in brokers:
            continue
        assert service["command"][0] in known, (name, service["command"])
        env = service["environment"]
        servers = {address.split(":")[0] for address in env["JOBLOG_BOOTSTRAP_SERVERS"].split(",")}
        assert servers == brokers, name
        assert env["JOBLOG_REPLICATION_FACTOR"] == "3", name
        assert brokers <= set(service["depends_on"]), name
    schedulers = [s for name, s in services.items() if s.get("command", [""])[0] == "scheduler"]
    assert len(schedulers) >= 2
    ids = [s["command"][s["command"].index("--instance-id") + 1] for s in schedulers]
    assert len(set(ids)) == len(ids), "scheduler instances need ids of their own"
