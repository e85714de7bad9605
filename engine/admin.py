"""Creating joblog's topics and waiting for a cluster (DESIGN.md §2).

Topic layout:

==================  ===========================  ==============================================
topic               partitions                   configuration
==================  ===========================  ==============================================
commands            ``settings.partitions``      broker defaults
reports             ``settings.partitions``      broker defaults
events              ``settings.partitions``      ``retention.ms=-1``, ``retention.bytes=-1``:
                                                 the source of truth is kept forever
state               ``settings.partitions``      ``cleanup.policy=compact``, 64 MiB / 1 h
                                                 segments so the cleaner gets to run on a quiet
                                                 system and rebuilds stay short
dispatch.<queue>    ``settings.partitions``      broker defaults; one topic per worker queue
control             1                            broker defaults: every worker reads all of it
                                                 in its own group, so more partitions add no
                                                 parallelism, and one keeps signals in order
deadletter          1                            ``retention.ms`` 30 days: long enough for an
                                                 operator to notice and replay, bounded so a
                                                 flood of bad records cannot fill the disk
==================  ===========================  ==============================================

Every topic also gets ``max.message.bytes`` = ``JOBLOG_MAX_RECORD_BYTES`` (16 MiB by default,
see :mod:`engine.limits`), above the broker's 1 MB default, so that every record joblog writes
fits by construction; an existing topic with a smaller value is raised to it.

``commands``, ``reports``, ``events`` and ``state`` are co-partitioned. When some of them
already exist, the missing ones are created with the existing count, whatever
``settings.partitions`` says, since partition counts cannot shrink and the scheduler relies on
partition p of one being partition p of all.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # no __all__ in the stubs
    AdminClient,
    AlterConfigOpType,
    ClusterMetadata,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
)

from engine import kafka
from engine.config import Settings
from engine.errors import BrokerError, ConfigurationError, KafkaAuthenticationFailed
from engine.logs import authentication_failure
from engine.topics import Topics

log = logging.getLogger(__name__)

EVENTS_CONFIG: Mapping[str, str] = MappingProxyType({"retention.ms": "-1", "retention.bytes": "-1"})
STATE_CONFIG: Mapping[str, str] = MappingProxyType(
    {
        "cleanup.policy": "compact",
        "segment.bytes": str(64 * 1024 * 1024),
        "segment.ms": str(60 * 60 * 1000),
    }
)
DEADLETTER_CONFIG: Mapping[str, str] = MappingProxyType(
    {"retention.ms": str(30 * 24 * 60 * 60 * 1000)}
)
CONTROL_PARTITIONS = 1
DEADLETTER_PARTITIONS = 1

_MAX_MESSAGE_BYTES = "max.message.bytes"
_LATEST: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]
#: Seconds of failing offset lookups after which :func:`_await_topics` asks with a new client.
_FRESH_CLIENT_AFTER_S = 2.0
_LEGAL_TOPIC = re.compile(r"^[A-Za-z0-9._-]+$")
_MAX_TOPIC_LENGTH = 249


@dataclass(frozen=True)
class TopicSpec:
    """One topic joblog needs.

    Attributes:
        name: the full topic name, prefix included.
        partitions: its partition count.
        config: topic-level settings given at creation.
    """

    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings, queues: Iterable[str] = ("default",)) -> list[TopicSpec]:
    """The topics joblog needs for ``settings`` and the given worker queues.

    Args:
        settings: the prefix, partition count and replication factor to use.
        queues: the worker queues that get a ``dispatch.<queue>`` topic.

    Returns:
        The topics, co-partitioned ones first.

    Raises:
        ConfigurationError: a queue name makes an illegal topic name.
    """
    topics = Topics(settings.topic_prefix)
    count = settings.partitions
    specs = [
        TopicSpec(topics.commands, count),
        TopicSpec(topics.reports, count),
        TopicSpec(topics.events, count, EVENTS_CONFIG),
        TopicSpec(topics.state, count, STATE_CONFIG),
        TopicSpec(topics.control, CONTROL_PARTITIONS),
        TopicSpec(topics.deadletter, DEADLETTER_PARTITIONS, DEADLETTER_CONFIG),
    ]
    dispatch = settings.dispatch_partitions or count
    for queue in dict.fromkeys(queues):
        specs.append(TopicSpec(topics.dispatch(queue), dispatch))
    record_limit = {_MAX_MESSAGE_BYTES: str(settings.limits.max_record_bytes)}
    specs = [replace(spec, config={**spec.config, **record_limit}) for spec in specs]
    for spec in specs:
        _check_name(spec.name)
    return specs


def ensure_topics(
    settings: Settings, queues: Iterable[str] = ("default",), *, timeout: float = 30.0
) -> None:
    """Creates joblog's topics that are missing; safe to call from every process at startup.

    Existing topics are left as they are, but the co-partitioned ones must agree on their
    partition count and an existing ``state`` topic must be compacted.

    Args:
        settings: where the cluster is and how topics are named and sized.
        queues: the worker queues that get a ``dispatch.<queue>`` topic.
        timeout: seconds for the whole operation.

    Raises:
        ConfigurationError: existing topics break co-partitioning or compaction, a queue name
            is illegal, or the cluster rejects a topic's settings.
        BrokerError: the cluster did not answer in time.
    """
    deadline = time.monotonic() + timeout
    specs = topic_specs(settings, queues)
    topics = Topics(settings.topic_prefix)
    admin = kafka.admin_client(settings)
    existing = _partition_counts(_metadata(admin, settings, deadline))
    count = _copartitioned_count(existing, topics, settings)
    copartitioned = set(topics.copartitioned)
    specs = [
        replace(spec, partitions=count) if spec.name in copartitioned else spec for spec in specs
    ]
    missing = [spec for spec in specs if spec.name not in existing]
    if missing:
        _create(admin, settings, missing, deadline)
    existing = _await_topics(admin, settings, specs, deadline)
    # Checked after creation too: another process may have created the topics in between.
    _copartitioned_count(existing, topics, settings)
    _check_compacted(admin, topics.state, deadline)
    _raise_record_limit(admin, [spec.name for spec in specs], settings, deadline)


def grow_dispatch(settings: Settings, queue: str, partitions: int, *, timeout: float = 30.0) -> int:
    """Gives a queue's dispatch topic ``partitions`` partitions (created if missing).

    A queue's worker group takes work with at most as many workers as its dispatch topic has
    partitions (each partition goes to one member); more partitions make room for more
    workers. Partitions cannot be removed. Dispatch records are keyed by job and carry their
    own attempt and dispatch ids, so moving keys to other partitions changes nothing.

    Returns:
        The topic's partition count afterwards.

    Raises:
        ConfigurationError: ``partitions`` is fewer than the topic has, or the queue's name
            makes an illegal topic name.
        BrokerError: the cluster did not answer in time.
    """
    deadline = time.monotonic() + timeout
    name = Topics(settings.topic_prefix).dispatch(queue)
    _check_name(name)
    admin = kafka.admin_client(settings)
    existing = _partition_counts(_metadata(admin, settings, deadline))
    if name not in existing:
        ensure_topics(
            replace(settings, dispatch_partitions=partitions),
            queues=[queue],
            timeout=_remaining(deadline),
        )
        return partitions
    current = existing[name]
    if partitions < current:
        raise ConfigurationError(f"{name} has {current} partitions; partitions cannot be removed")
    if partitions == current:
        return current
    futures = admin.create_partitions(
        [NewPartitions(name, partitions)], request_timeout=_remaining(deadline)
    )
    try:
        futures[name].result(timeout=_remaining(deadline))
    except KafkaException as exc:
        raise BrokerError(f"cannot add partitions to {name}: {exc}") from None
    return partitions


def wait_for_cluster(settings: Settings, timeout: float = 30.0) -> None:
    """Waits until the cluster answers a metadata request with at least one broker.

    Args:
        settings: where the cluster is.
        timeout: seconds to wait.

    Raises:
        BrokerError: no broker answered in time.
    """
    deadline = time.monotonic() + timeout
    addresses = _bootstrap_addresses(settings.bootstrap_servers)
    admin: AdminClient | None = None
    while True:
        # Probing the sockets first keeps librdkafka's connection-refused errors off stderr
        # while a broker is still starting.
        if not addresses or any(_reachable(host, port) for host, port in addresses):
            if admin is None:
                admin = kafka.admin_client(settings)
            remaining = max(0.1, deadline - time.monotonic())
            try:
                if admin.list_topics(timeout=min(remaining, 5.0)).brokers:
                    return
            except KafkaException:
                pass
        if time.monotonic() >= deadline:
            refused = authentication_failure()
            if refused is not None:
                raise KafkaAuthenticationFailed(settings.bootstrap_servers, refused)
            raise BrokerError(
                f"no Kafka broker answered at {settings.bootstrap_servers} within "
                f"{timeout:.0f} s: start one with `joblog broker start` or point "
                "JOBLOG_BOOTSTRAP_SERVERS at a cluster"
            )
        time.sleep(0.1)


def _check_name(name: str) -> None:
    if not _LEGAL_TOPIC.match(name) or len(name) > _MAX_TOPIC_LENGTH or name in {".", ".."}:
        raise ConfigurationError(
            f"{name!r} is not a legal Kafka topic name: use letters, digits, '.', '_' and '-' "
            f"(at most {_MAX_TOPIC_LENGTH} characters) in the topic prefix and queue names"
        )


def _remaining(deadline: float) -> float:
    return max(0.5, deadline - time.monotonic())


def _metadata(admin: AdminClient, settings: Settings, deadline: float) -> ClusterMetadata:
    try:
        return admin.list_topics(timeout=_remaining(deadline))
    except KafkaException as exc:
        raise BrokerError(
            f"cannot read topic metadata from {settings.bootstrap_servers}: {exc.args[0]}"
        ) from exc


def _partition_counts(metadata: ClusterMetadata) -> dict[str, int]:
    return {
        name: len(topic.partitions)
        for name, topic in metadata.topics.items()
        if topic.error is None
    }


def _copartitioned_count(existing: Mapping[str, int], topics: Topics, settings: Settings) -> int:
    present = {name: existing[name] for name in topics.copartitioned if name in existing}
    counts = set(present.values())
    if len(counts) > 1:
        found = ", ".join(f"{name}={count}" for name, count in present.items())
        raise ConfigurationError(
            f"the co-partitioned topics must have one partition count, found {found}; add "
            "partitions to the smaller ones (kafka-topics.sh --alter --partitions N) before "
            "any record is keyed into them, or recreate them"
        )
    if not counts:
        return settings.partitions
    count = counts.pop()
    if count != settings.partitions:
        log.warning(
            "The %s topics have %d partitions; JOBLOG_PARTITIONS=%d is ignored for them",
            settings.topic_prefix,
            count,
            settings.partitions,
        )
    return count


#: ``min.insync.replicas`` of the topics joblog creates at replication factor 3 or more: an
#: acknowledged (``acks=all``) write is on two brokers, and one broker may be down without
#: stopping writes. Below 3 the broker's own default stands.
MIN_INSYNC_REPLICAS = 2


def _with_durability(config: Mapping[str, str], replication_factor: int) -> dict[str, str]:
    """A topic's configuration with ``min.insync.replicas`` set for a replicated topic."""
    chosen = dict(config)
    if replication_factor >= 3:
        chosen.setdefault("min.insync.replicas", str(MIN_INSYNC_REPLICAS))
    return chosen


def _create(
    admin: AdminClient, settings: Settings, specs: list[TopicSpec], deadline: float
) -> None:
    new_topics = [
        NewTopic(
            spec.name,
            num_partitions=spec.partitions,
            replication_factor=settings.replication_factor,
            config=_with_durability(spec.config, settings.replication_factor),
        )
        for spec in specs
    ]
    wait = _remaining(deadline)
    futures = admin.create_topics(new_topics, operation_timeout=wait, request_timeout=wait)
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            if error.code() in (
                KafkaError.INVALID_CONFIG,
                KafkaError.INVALID_REPLICATION_FACTOR,
                KafkaError.INVALID_PARTITIONS,
                KafkaError.POLICY_VIOLATION,
            ):
                raise ConfigurationError(
                    f"the cluster rejected topic {name}: {error.str()}"
                ) from exc
            raise BrokerError(f"could not create topic {name}: {error.str()}") from exc
        log.info("Created topic %s", name)


def _check_compacted(admin: AdminClient, name: str, deadline: float) -> None:
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    future = admin.describe_configs([resource], request_timeout=_remaining(deadline))[resource]
    try:
        entries = future.result()
    except KafkaException as exc:
        raise BrokerError(f"could not read the configuration of {name}: {exc.args[0]}") from exc
    policy = entries["cleanup.policy"].value if "cleanup.policy" in entries else ""
    if "compact" not in (policy or "").split(","):
        raise ConfigurationError(
            f"topic {name} has cleanup.policy={policy}; joblog keeps submission snapshots "
            "there and needs it compacted: kafka-configs.sh --alter --entity-type topics "
            f"--entity-name {name} --add-config cleanup.policy=compact"
        )


def _raise_record_limit(
    admin: AdminClient, names: list[str], settings: Settings, deadline: float
) -> None:
    """Raises ``max.message.bytes`` of topics created before the limit, or by someone else."""
    wanted = settings.limits.max_record_bytes
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    futures = admin.describe_configs(resources, request_timeout=_remaining(deadline))
    low: list[ConfigResource] = []
    for resource, future in futures.items():
        try:
            entries = future.result()
        except KafkaException as exc:
            raise BrokerError(
                f"could not read the configuration of {resource.name}: {exc.args[0]}"
            ) from exc
        entry = entries.get(_MAX_MESSAGE_BYTES)
        if entry is not None and entry.value is not None and int(entry.value) < wanted:
            low.append(resource)
    if not low:
        return
    updates = [
        ConfigResource(
            ConfigResource.Type.TOPIC,
            resource.name,
            incremental_configs=[
                ConfigEntry(
                    _MAX_MESSAGE_BYTES,
                    str(wanted),
                    incremental_operation=AlterConfigOpType.SET,
                )
            ],
        )
        for resource in low
    ]
    altered = admin.incremental_alter_configs(updates, request_timeout=_remaining(deadline))
    for resource, future in altered.items():
        try:
            future.result()
        except KafkaException as exc:
            raise ConfigurationError(
                f"topic {resource.name} accepts smaller records than JOBLOG_MAX_RECORD_BYTES="
                f"{wanted} and could not be changed ({exc.args[0].str()}): kafka-configs.sh "
                f"--alter --entity-type topics --entity-name {resource.name} --add-config "
                f"max.message.bytes={wanted}, or lower JOBLOG_MAX_RECORD_BYTES"
            ) from exc
        log.info("Raised max.message.bytes of %s to %d", resource.name, wanted)


def _await_topics(
    admin: AdminClient, settings: Settings, specs: list[TopicSpec], deadline: float
) -> dict[str, int]:
    """Waits until every partition of every topic has a leader that serves it.

    The metadata names a partition's leader a moment before that broker has taken the
    leadership on, and in that moment offset lookups fail with NOT_LEADER_FOR_PARTITION, which
    librdkafka's watermark queries do not retry. Asking each leader for its end offsets closes
    that window before the caller reads or writes.
    """
    while True:
        metadata = _metadata(admin, settings, deadline)
        waiting = [spec.name for spec in specs if not _has_leaders(metadata, spec.name)]
        if not waiting:
            break
        if time.monotonic() >= deadline:
            raise BrokerError(f"topics without a leader after the timeout: {waiting}")
        time.sleep(0.05)
    pending = [
        TopicPartition(spec.name, partition)
        for spec in specs
        for partition in metadata.topics[spec.name].partitions
    ]
    fresh_at = time.monotonic() + _FRESH_CLIENT_AFTER_S
    while pending:
        queries = {partition: _LATEST for partition in pending}
        futures = admin.list_offsets(queries, request_timeout=_remaining(deadline))
        errors = {partition: future.exception() for partition, future in futures.items()}
        pending = [partition for partition, error in errors.items() if error is not None]
        if not pending:
            break
        seen = sorted({str(errors[partition]) for partition in pending})
        if time.monotonic() >= deadline:
            names = sorted({partition.topic for partition in pending})
            raise BrokerError(
                f"partitions of {names} not served by a leader after the timeout: {seen}"
            )
        if time.monotonic() >= fresh_at:
            # A client whose cached leaders stay stale keeps asking the wrong broker; a new
            # client learns the leaders from scratch.
            log.info("Offset lookups still fail (%s); retrying with a new admin client", seen)
            admin = kafka.admin_client(settings)
            fresh_at = time.monotonic() + _FRESH_CLIENT_AFTER_S
        time.sleep(0.05)
    return _partition_counts(metadata)


def _has_leaders(metadata: ClusterMetadata, name: str) -> bool:
    topic = metadata.topics.get(name)
    if topic is None or topic.error is not None or not topic.partitions:
        return False
    return all(partition.leader >= 0 for partition in topic.partitions.values())


def _bootstrap_addresses(servers: str) -> list[tuple[str, int]]:
    addresses: list[tuple[str, int]] = []
    for entry in servers.split(","):
        address = entry.strip().rpartition("://")[2]
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            return []
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
