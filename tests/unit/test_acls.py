"""The least-privilege ACL set (engine.acls) and a secured broker's settings, no broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.acls import AclRule, Deployment, Role, acl_rules, bindings, render_kafka_acls
from engine.broker.properties import client_listener, server_properties
from engine.broker.security import BrokerSecurity, client_environment
from engine.cli import main
from engine.config import Settings
from engine.errors import ConfigurationError

PREFIX = "joblog."


def allowed(rules: list[AclRule], role: Role) -> set[tuple[str, str, str, str]]:
    return {(r.resource_type, r.pattern_type, r.name, r.operation) for r in rules if r.role == role}


def may(rules: list[AclRule], role: Role, operation: str, topic: str) -> bool:
    """Whether ``role`` may do ``operation`` on ``topic`` (literal or by prefix)."""
    return any(
        r.role == role
        and r.resource_type == "TOPIC"
        and r.operation == operation
        and (r.name == topic if r.pattern_type == "LITERAL" else topic.startswith(r.name))
        for r in rules
    )


RULES = acl_rules(Deployment(PREFIX))
SCHEDULER_ONLY = ["events", "dispatch.default", "dispatch.gpu", "control", "state"]


@pytest.mark.parametrize("topic", SCHEDULER_ONLY)
def test_only_the_scheduler_writes_the_decided_topics(topic: str) -> None:
    writers = {role for role in Role if may(RULES, role, "WRITE", PREFIX + topic)}
    assert writers == {Role.SCHEDULER}


def test_each_role_writes_what_it_is_for_and_nothing_else() -> None:
    writes = {
        role: sorted(
            r.name
            for r in RULES
            if r.role == role and r.operation == "WRITE" and r.resource_type == "TOPIC"
        )
        for role in Role
    }
    assert writes == {
        Role.SCHEDULER: sorted(
            f"{PREFIX}{t}"
            for t in ("commands", "events", "state", "control", "deadletter", "dispatch.")
        ),
        Role.WORKER: [f"{PREFIX}deadletter", f"{PREFIX}reports"],
        Role.CLIENT: [f"{PREFIX}commands"],
        Role.UI: [f"{PREFIX}commands"],
        Role.PROJECTOR: [f"{PREFIX}deadletter"],
        Role.NOTIFIER: [],
    }


def test_the_scheduler_has_its_transactions_group_and_queue_creation() -> None:
    scheduler = allowed(RULES, Role.SCHEDULER)
    assert ("TRANSACTIONAL_ID", "PREFIXED", f"{PREFIX}scheduler.", "WRITE") in scheduler
    assert ("TRANSACTIONAL_ID", "PREFIXED", f"{PREFIX}scheduler.", "DESCRIBE") in scheduler
    assert ("GROUP", "PREFIXED", f"{PREFIX}scheduler", "READ") in scheduler
    assert ("TOPIC", "PREFIXED", f"{PREFIX}dispatch.", "CREATE") in scheduler
    creators = {r.role for r in RULES if r.operation == "CREATE"}
    assert creators == {Role.SCHEDULER}
    transactional = {r.role for r in RULES if r.resource_type == "TRANSACTIONAL_ID"}
    assert transactional == {Role.SCHEDULER}


def test_readers_get_their_groups_and_clients_read_only_events() -> None:
    assert ("GROUP", "PREFIXED", f"{PREFIX}workers.", "READ") in allowed(RULES, Role.WORKER)
    assert ("GROUP", "PREFIXED", f"{PREFIX}projector", "READ") in allowed(RULES, Role.PROJECTOR)
    assert ("GROUP", "PREFIXED", f"{PREFIX}notifier", "READ") in allowed(RULES, Role.NOTIFIER)
    assert ("GROUP", "PREFIXED", f"{PREFIX}watch-", "READ") in allowed(RULES, Role.CLIENT)
    reads = {r.name for r in RULES if r.role == Role.CLIENT and r.operation == "READ"}
    assert reads == {f"{PREFIX}events", f"{PREFIX}watch-"}


def test_named_queues_narrow_the_workers_to_their_dispatch_topics() -> None:
    rules = acl_rules(Deployment(PREFIX, queues=("gpu",)))
    assert may(rules, Role.WORKER, "READ", f"{PREFIX}dispatch.gpu")
    assert not may(rules, Role.WORKER, "READ", f"{PREFIX}dispatch.default")
    assert ("GROUP", "LITERAL", f"{PREFIX}workers.gpu", "READ") in allowed(rules, Role.WORKER)
    assert may(rules, Role.SCHEDULER, "WRITE", f"{PREFIX}dispatch.default")  # any queue


def test_principals_default_to_the_prefix_and_may_be_named_or_left_out() -> None:
    assert {r.principal for r in RULES if r.role == Role.WORKER} == {"User:joblog-worker"}
    rules = acl_rules(
        Deployment("t1.", {Role.WORKER: "render", Role.UI: "", Role.NOTIFIER: "User:hooks"})
    )
    assert {r.principal for r in rules if r.role == Role.WORKER} == {"User:render"}
    assert not [r for r in rules if r.role == Role.UI]
    assert {r.principal for r in rules if r.role == Role.NOTIFIER} == {"User:hooks"}
    assert {r.principal for r in rules if r.role == Role.SCHEDULER} == {"User:t1-scheduler"}


def test_one_principal_for_two_roles_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="several roles"):
        acl_rules(Deployment(PREFIX, {Role.CLIENT: "app", Role.UI: "app"}))


def test_rules_become_admin_bindings_and_kafka_acls_commands() -> None:
    made = bindings(RULES)
    assert len(made) == len(RULES) == len(set(RULES))
    lines = render_kafka_acls(RULES, "b:9092").splitlines()
    assert len(lines) == len(RULES)
    assert any(
        "--operation IdempotentWrite --cluster" in line and "joblog-client" in line
        for line in lines
    )
    assert any(
        "--operation Write --transactional-id 'joblog.scheduler.' "
        "--resource-pattern-type prefixed" in line
        for line in lines
    )


def test_joblog_acls_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--topic-prefix", "p.", "acls", "--json", "--principal", "worker=w"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {row["principal"] for row in printed if row["role"] == "worker"} == {"User:w"}
    assert all(row["name"].startswith("p.") or row["name"] == "kafka-cluster" for row in printed)


def test_joblog_acls_refuses_an_unknown_role(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["acls", "--principal", "admin=x"]) == 2
    assert "ROLE one of scheduler" in capsys.readouterr().err


# --------------------------------------------------------------------------- broker settings


def test_a_secured_broker_listens_with_sasl_and_enforces_acls(tmp_path: Path) -> None:
    security = BrokerSecurity(users={"joblog-client": "pw-client"}, admin_password="pw-admin")
    props = server_properties(
        log_dir=tmp_path,
        broker_port=9092,
        controller_port=9093,
        overrides=security.server_properties(),
        protocol=security.protocol,
        controller_protocol="SASL_PLAINTEXT",
    )
    assert client_listener(props) == ("SASL_PLAINTEXT", "127.0.0.1:9092")
    assert props["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["super.users"] == "User:admin"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert "PLAINTEXT://" not in props["listeners"].replace("SASL_PLAINTEXT://", "")
    assert security.format_arguments() == [
        "--add-scram",
        "SCRAM-SHA-512=[name=admin,password=pw-admin,iterations=8192]",
        "--add-scram",
        "SCRAM-SHA-512=[name=joblog-client,password=pw-client,iterations=8192]",
    ]


def test_client_settings_pass_through_the_environment() -> None:
    security = BrokerSecurity(users={"joblog-client": "pw-client"})
    env = client_environment(security.client_settings("joblog-client"))
    assert env["JOBLOG_KAFKA_SASL_USERNAME"] == "joblog-client"
    settings = Settings.from_env(env)
    assert settings.kafka == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "joblog-client",
        "sasl.password": "pw-client",
    }
    with pytest.raises(ConfigurationError, match="no SCRAM user"):
        security.client_settings("nobody")


def test_passwords_the_kafka_tools_cannot_quote_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="cannot quote"):
        BrokerSecurity(users={"a": "x,y"})
