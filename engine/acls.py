"""The least-privilege ACLs of a joblog deployment, one principal per service.

What each service does on the cluster, read from its code, and the ACLs that allows (``T`` is
the topic prefix; every consumer may also write ``deadletter`` where it gives up on a record):

==========  ==================================================================================
role        needs
==========  ==================================================================================
scheduler   reads ``commands``, ``reports``, ``state`` and ``events`` (rebuild); writes
            ``events``, ``dispatch.*``, ``control``, ``state``, ``commands`` (idempotency-key
            traffic between partitions) and ``deadletter`` in transactions (transactional ids
            ``T scheduler.*``); commits in group ``T scheduler`` (and reads in
            ``T scheduler-rebuild-*``); creates ``dispatch.<queue>`` on demand and reads
            topic configurations on the way (``ensure_topics``)
worker      reads ``dispatch.<queue>`` in group ``T workers.<queue>`` and ``control`` (group
            ``T worker-control.<id>``); writes ``reports`` and ``deadletter`` (idempotent);
            checks the topics at start-up (describe, describe configs)
client      writes ``commands`` (idempotent); reads ``events`` (waits, watchers; groups
            ``T watch-*``, assigned, never committed)
ui          what a client does (the REST API sends commands and streams events)
projector   reads ``events`` and ``reports`` (the workers table) in group ``T projector``
            (and ``T projector-*`` for rebuilds and status); writes ``deadletter``
notifier    reads ``events`` in group ``T notifier`` and ``state`` (declared notifications,
            groups ``T notifier-seed-*``)
==========  ==================================================================================

Nobody but the scheduler may write ``events``, ``dispatch.*``, ``control`` or ``state``: a
client or a worker cannot forge a decision. ``IDEMPOTENT_WRITE`` on the cluster is granted to
the idempotent producers for brokers before 3.0 (later ones accept a ``WRITE`` on any topic).

:func:`acl_rules` is pure; :func:`apply_acls` creates the bindings through the Admin API.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from engine.errors import BrokerError, ConfigurationError
from engine.topics import Topics

if TYPE_CHECKING:
    from confluent_kafka.admin import (  # type: ignore[attr-defined]  # no __all__ in the stubs
        AclBinding,
        AdminClient,
    )

CLUSTER = "kafka-cluster"
"""The name of Kafka's one cluster resource."""


class Role(StrEnum):
    """A joblog service that gets a principal of its own."""

    SCHEDULER = "scheduler"
    WORKER = "worker"
    CLIENT = "client"
    UI = "ui"
    PROJECTOR = "projector"
    NOTIFIER = "notifier"


@dataclass(frozen=True, order=True)
class AclRule:
    """One ALLOW binding of the deployment's ACL set.

    Attributes:
        principal: ``User:<name>``.
        resource_type: ``TOPIC``, ``GROUP``, ``TRANSACTIONAL_ID`` or ``CLUSTER``.
        pattern_type: ``LITERAL`` or ``PREFIXED``.
        name: the resource name, or the prefix.
        operation: ``READ``, ``WRITE``, ``CREATE``, ``DESCRIBE``, ``DESCRIBE_CONFIGS``,
            ``IDEMPOTENT_WRITE``.
        role: the service it is for.
        why: what the service does with it.
        host: the hosts it applies to (``*``: any).
    """

    principal: str
    resource_type: str
    pattern_type: str
    name: str
    operation: str
    role: str = field(compare=False)
    why: str = field(compare=False, default="")
    host: str = "*"


@dataclass(frozen=True)
class Deployment:
    """What the ACL set is computed for.

    Attributes:
        topic_prefix: the prefix of every topic, group and transactional id.
        principals: the principal of each role (default: ``User:<prefix>-<role>``, the
            prefix without its trailing dot); a role mapped to the empty string gets none.
        queues: the worker queues; empty: any queue (``dispatch.`` prefixed ACLs).
    """

    topic_prefix: str = "joblog."
    principals: Mapping[Role, str] = field(default_factory=dict)
    queues: tuple[str, ...] = ()

    def principal(self, role: Role) -> str:
        """The principal of ``role`` (``User:`` added to a bare name)."""
        name = self.principals.get(role)
        if name is None:
            name = f"{self.topic_prefix.rstrip('.-_') or 'joblog'}-{role.value}"
        if not name:
            return ""
        return name if ":" in name else f"User:{name}"


def default_principals(topic_prefix: str) -> dict[Role, str]:
    """The principal each role gets unless told otherwise."""
    deployment = Deployment(topic_prefix)
    return {role: deployment.principal(role) for role in Role}


def acl_rules(deployment: Deployment) -> list[AclRule]:
    """The least-privilege ALLOW bindings of ``deployment``, sorted, without duplicates.

    Raises:
        ConfigurationError: two roles share a principal (each service needs its own, or the
            set would grant one the other's rights without saying so).
    """
    principals = [deployment.principal(role) for role in Role if deployment.principal(role)]
    shared = {name for name in principals if principals.count(name) > 1}
    if shared:
        raise ConfigurationError(
            f"principal(s) {sorted(shared)} serve several roles; give each service its own"
        )
    rules: dict[AclRule, None] = {}
    for role in Role:
        principal = deployment.principal(role)
        if principal:
            for rule in _role_rules(role, principal, deployment):
                rules.setdefault(rule, None)
    return sorted(rules)


def _role_rules(role: Role, principal: str, deployment: Deployment) -> Iterable[AclRule]:
    prefix = deployment.topic_prefix
    topics = Topics(prefix)

    def topic(name: str, *operations: str, why: str, prefixed: bool = False) -> list[AclRule]:
        pattern = "PREFIXED" if prefixed else "LITERAL"
        return [
            AclRule(principal, "TOPIC", pattern, name, operation, role.value, why)
            for operation in operations
        ]

    def group(name: str, why: str, *, prefixed: bool = True) -> AclRule:
        pattern = "PREFIXED" if prefixed else "LITERAL"
        return AclRule(principal, "GROUP", pattern, name, "READ", role.value, why)

    def idempotent() -> AclRule:
        why = "idempotent producer (brokers before 3.0)"
        operation = "IDEMPOTENT_WRITE"
        return AclRule(principal, "CLUSTER", "LITERAL", CLUSTER, operation, role.value, why)

    dead = topic(topics.deadletter, "WRITE", "DESCRIBE", why="dead-letters undecodable records")
    dispatch_prefix = topics.dispatch("")
    match role:
        case Role.SCHEDULER:
            yield from topic(
                topics.commands,
                "READ",
                "WRITE",
                "DESCRIBE",
                why="decides commands; forwards idempotency-key traffic",
            )
            yield from topic(topics.reports, "READ", "DESCRIBE", why="decides worker reports")
            yield from topic(
                topics.events,
                "READ",
                "WRITE",
                "DESCRIBE",
                why="the single writer of events; reads them back on rebuild",
            )
            yield from topic(
                topics.state, "READ", "WRITE", "DESCRIBE", why="snapshots of live submissions"
            )
            yield from topic(topics.control, "WRITE", "DESCRIBE", why="cancel and kill signals")
            yield from topic(
                dispatch_prefix,
                "WRITE",
                "DESCRIBE",
                "CREATE",
                prefixed=True,
                why="dispatches jobs; creates a new queue's topic on demand",
            )
            yield from topic(
                prefix,
                "DESCRIBE",
                "DESCRIBE_CONFIGS",
                prefixed=True,
                why="checks the topics' partitions and settings",
            )
            yield from dead
            yield group(f"{prefix}scheduler", "its group and its rebuild readers")
            why = "admission control reads the committed offsets of the workers and projector"
            watched = ((f"{prefix}workers.", "PREFIXED"), (f"{prefix}projector", "LITERAL"))
            for name, pattern in watched:
                yield AclRule(principal, "GROUP", pattern, name, "DESCRIBE", role.value, why)
            why = "transactions (one id per instance)"
            for operation in ("WRITE", "DESCRIBE"):
                yield AclRule(
                    principal,
                    "TRANSACTIONAL_ID",
                    "PREFIXED",
                    f"{prefix}scheduler.",
                    operation,
                    role.value,
                    why,
                )
        case Role.WORKER:
            if deployment.queues:
                for queue in deployment.queues:
                    yield from topic(
                        topics.dispatch(queue),
                        "READ",
                        "DESCRIBE",
                        why=f"runs the jobs of queue {queue}",
                    )
                    yield group(
                        f"{prefix}workers.{queue}", f"the group of queue {queue}", prefixed=False
                    )
            else:
                yield from topic(
                    dispatch_prefix,
                    "READ",
                    "DESCRIBE",
                    prefixed=True,
                    why="runs the jobs of every queue",
                )
                yield group(f"{prefix}workers.", "the group of each queue")
            yield from topic(topics.control, "READ", "DESCRIBE", why="cancel and kill signals")
            yield group(f"{prefix}worker-control.", "its control reader (assigned, no commits)")
            yield from topic(topics.reports, "WRITE", "DESCRIBE", why="reports attempts")
            yield from topic(
                prefix,
                "DESCRIBE",
                "DESCRIBE_CONFIGS",
                prefixed=True,
                why="checks the topics at start-up",
            )
            yield from dead
            yield idempotent()
        case Role.CLIENT | Role.UI:
            yield from topic(topics.commands, "WRITE", "DESCRIBE", why="sends commands")
            yield from topic(topics.events, "READ", "DESCRIBE", why="waits for and watches events")
            yield group(f"{prefix}watch-", "event readers (assigned, no commits)")
            yield idempotent()
        case Role.PROJECTOR:
            yield from topic(topics.events, "READ", "DESCRIBE", why="projects events")
            yield from topic(topics.reports, "READ", "DESCRIBE", why="the workers table")
            yield from dead
            yield group(f"{prefix}projector", "its group, rebuild and status readers")
            yield idempotent()
        case Role.NOTIFIER:
            yield from topic(topics.events, "READ", "DESCRIBE", why="delivers notifications")
            yield from topic(
                topics.state, "READ", "DESCRIBE", why="declared notifications of live submissions"
            )
            yield group(f"{prefix}notifier", "its group and its seed readers")


# --------------------------------------------------------------------------- rendering


def render_table(rules: Sequence[AclRule]) -> str:
    """The rules as aligned columns, one binding a line."""
    header = ["ROLE", "PRINCIPAL", "RESOURCE", "PATTERN", "NAME", "OPERATION", "WHY"]
    rows = [
        [r.role, r.principal, r.resource_type, r.pattern_type, r.name, r.operation, r.why]
        for r in sorted(rules, key=_by_role)
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def render_kafka_acls(rules: Sequence[AclRule], bootstrap_servers: str) -> str:
    """The rules as ``kafka-acls.sh --add`` commands, one binding a line."""
    option = {
        "TOPIC": "--topic",
        "GROUP": "--group",
        "TRANSACTIONAL_ID": "--transactional-id",
    }
    lines = []
    for rule in sorted(rules, key=_by_role):
        resource = (
            "--cluster"
            if rule.resource_type == "CLUSTER"
            else f"{option[rule.resource_type]} '{rule.name}'"
        )
        pattern = " --resource-pattern-type prefixed" if rule.pattern_type == "PREFIXED" else ""
        operation = "".join(word.capitalize() for word in rule.operation.split("_"))
        lines.append(
            f"kafka-acls.sh --bootstrap-server {bootstrap_servers}"
            " --command-config admin.properties --add"
            f" --allow-principal '{rule.principal}' --allow-host '{rule.host}'"
            f" --operation {operation} {resource}{pattern}"
        )
    return "\n".join(lines)


def render_json(rules: Sequence[AclRule]) -> str:
    """The rules as a JSON array of objects (the fields of :class:`AclRule`)."""
    return json.dumps([asdict(rule) for rule in sorted(rules, key=_by_role)], indent=2)


def _by_role(rule: AclRule) -> tuple[int, AclRule]:
    return list(Role).index(Role(rule.role)), rule


# --------------------------------------------------------------------------- applying


def bindings(rules: Sequence[AclRule]) -> list[AclBinding]:
    """The rules as confluent-kafka ``AclBinding`` objects."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    resource_types = {
        "TOPIC": ResourceType.TOPIC,
        "GROUP": ResourceType.GROUP,
        "TRANSACTIONAL_ID": ResourceType.TRANSACTIONAL_ID,
        "CLUSTER": ResourceType.BROKER,  # librdkafka's name for Kafka's cluster resource
    }
    return [
        AclBinding(
            resource_types[rule.resource_type],
            rule.name,
            ResourcePatternType[rule.pattern_type],
            rule.principal,
            rule.host,
            AclOperation[rule.operation],
            AclPermissionType.ALLOW,
        )
        for rule in rules
    ]


def apply_acls(admin: AdminClient, rules: Sequence[AclRule], *, timeout: float = 30.0) -> int:
    """Creates the bindings (creating one that exists already changes nothing).

    Args:
        admin: an admin client of a principal allowed to alter ACLs (a super user).
        rules: the bindings.
        timeout: seconds for the request.

    Returns:
        How many bindings were sent.

    Raises:
        BrokerError: the cluster refused a binding (the message names the first few).
    """
    from confluent_kafka import KafkaException

    if not rules:
        return 0
    futures = admin.create_acls(bindings(rules), request_timeout=timeout)
    refused: list[str] = []
    for binding, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            refused.append(f"{binding}: {exc.args[0].str() if exc.args else exc}")
    if refused:
        raise BrokerError(
            f"the cluster refused {len(refused)} of {len(rules)} ACL(s), e.g. "
            + "; ".join(refused[:3])
            + ". Is the admin client a super user (or allowed to ALTER the cluster)? Does the "
            "cluster run an authorizer (authorizer.class.name)?"
        )
    return len(rules)
