"""What joblog relies on from Kafka, checked against a real broker.

Transactions hide aborted records from read_committed consumers, consumer groups resume from
committed offsets, records survive a broker restart, and joblog's topics are created once with
the settings DESIGN.md §2 asks for.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from engine.admin import ensure_topics
from engine.broker import LocalBroker
from engine.config import Settings
from engine.errors import ConfigurationError
from engine.topics import Topics
from tests.integration.conftest import KafkaUnderTest

POLL_DEADLINE = 30.0


def _config(settings: Settings, **extra: object) -> dict[str, Any]:
    return cast("dict[str, Any]", settings.client_config(**extra))


def _consumer(settings: Settings, group: str | None = None, **extra: object) -> Consumer:
    return Consumer(
        _config(
            settings,
            **{
                "group.id": group or f"test-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                **extra,
            },
        )
    )


def _poll(consumer: Consumer, count: int, deadline: float = POLL_DEADLINE) -> list[Message]:
    """Polls until ``count`` records arrived (failing the test after ``deadline`` seconds)."""
    records: list[Message] = []
    give_up = time.monotonic() + deadline
    while len(records) < count:
        assert time.monotonic() < give_up, f"got {len(records)} of {count} records in time"
        message = consumer.poll(0.2)
        if message is None:
            continue
        error = message.error()
        if error is not None:
            assert error.code() == KafkaError._PARTITION_EOF, error
            continue
        records.append(message)
    return records


def _values(records: list[Message]) -> list[bytes]:
    return [cast(bytes, record.value()) for record in records]


def _admin(settings: Settings) -> AdminClient:
    return AdminClient(_config(settings))


@pytest.fixture
def admin(settings: Settings) -> AdminClient:
    return _admin(settings)


def test_read_committed_sees_committed_records_and_never_aborted_ones(settings: Settings) -> None:
    topic = Topics(settings.topic_prefix).events
    producer = Producer(_config(settings, **{"transactional.id": f"tx-{uuid.uuid4().hex[:8]}"}))
    producer.init_transactions(30)
    for value, commit in ((b"aborted-1", False), (b"committed-1", True), (b"aborted-2", False)):
        producer.begin_transaction()
        producer.produce(topic, key=b"submission-1", value=value)
        producer.flush(10)
        if commit:
            producer.commit_transaction(10)
        else:
            producer.abort_transaction(10)
    # The last committed record marks the end: everything before it in the partition is
    # decided, so a read_committed consumer that saw an aborted record would have shown it.
    producer.begin_transaction()
    producer.produce(topic, key=b"submission-1", value=b"end")
    producer.commit_transaction(10)

    committed = _consumer(settings, **{"isolation.level": "read_committed"})
    committed.subscribe([topic])
    uncommitted = _consumer(settings, **{"isolation.level": "read_uncommitted"})
    uncommitted.subscribe([topic])
    try:
        assert _values(_poll(committed, 2)) == [b"committed-1", b"end"]
        assert _values(_poll(uncommitted, 4)) == [
            b"aborted-1",
            b"committed-1",
            b"aborted-2",
            b"end",
        ]
    finally:
        committed.close()
        uncommitted.close()


def test_a_new_consumer_in_the_group_resumes_from_committed_offsets(settings: Settings) -> None:
    topic = Topics(settings.topic_prefix).commands
    producer = Producer(_config(settings, **{"enable.idempotence": True}))
    for index in range(10):
        producer.produce(topic, key=b"submission-1", value=str(index).encode())
    assert producer.flush(10) == 0
    group = f"workers-{uuid.uuid4().hex[:8]}"

    first = _consumer(settings, group)
    first.subscribe([topic])
    try:
        taken = _poll(first, 4)
        first.commit(message=taken[-1], asynchronous=False)
    finally:
        first.close()
    assert _values(taken) == [b"0", b"1", b"2", b"3"]

    second = _consumer(settings, group)
    second.subscribe([topic])
    try:
        resumed = _poll(second, 6)
        partition = TopicPartition(topic, taken[-1].partition())
        [offset] = second.committed([partition], timeout=10)
    finally:
        second.close()
    assert _values(resumed) == [str(index).encode() for index in range(4, 10)]
    assert offset.offset == 4


@pytest.fixture
def own_broker(kafka_cluster: KafkaUnderTest, tmp_path: Path) -> Iterator[LocalBroker]:
    if kafka_cluster.mode != "local":
        pytest.skip("restarts only a broker this test run owns (local mode)")
    broker = LocalBroker(tmp_path / "kafka")
    try:
        yield broker
    finally:
        broker.stop()


def test_records_and_offsets_survive_a_broker_restart(own_broker: LocalBroker) -> None:
    own_broker.start()
    settings = Settings(bootstrap_servers=own_broker.bootstrap_servers, partitions=2)
    ensure_topics(settings)
    topic = Topics(settings.topic_prefix).events
    producer = Producer(_config(settings, **{"transactional.id": "restart-test"}))
    producer.init_transactions(30)
    producer.begin_transaction()
    for index in range(5):
        producer.produce(topic, key=b"submission-1", value=f"event-{index}".encode())
    producer.commit_transaction(10)
    reader = _consumer(settings, "projector", **{"isolation.level": "read_committed"})
    reader.subscribe([topic])
    try:
        first = _poll(reader, 2)
        reader.commit(message=first[-1], asynchronous=False)
    finally:
        reader.close()
    cluster_id = (own_broker.data_dir / "cluster.id").read_text()
    bootstrap = own_broker.bootstrap_servers

    own_broker.stop()
    assert not own_broker.is_running()
    assert not own_broker.pid_file.exists()
    own_broker.start()

    assert own_broker.bootstrap_servers == bootstrap
    assert (own_broker.data_dir / "cluster.id").read_text() == cluster_id
    elsewhere = LocalBroker(own_broker.data_dir).status()
    assert elsewhere.running and elsewhere.pid == own_broker.pid
    assert elsewhere.bootstrap_servers == bootstrap
    admin = _admin(settings)
    described = admin.describe_cluster(request_timeout=10).result()
    assert described.cluster_id == cluster_id.strip()

    everything = _consumer(settings, **{"isolation.level": "read_committed"})
    everything.subscribe([topic])
    resumed = _consumer(settings, "projector", **{"isolation.level": "read_committed"})
    resumed.subscribe([topic])
    try:
        assert _values(_poll(everything, 5)) == [f"event-{i}".encode() for i in range(5)]
        assert _values(_poll(resumed, 3)) == [f"event-{i}".encode() for i in range(2, 5)]
    finally:
        everything.close()
        resumed.close()


def _describe(admin: AdminClient, name: str) -> dict[str, str | None]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    entries = admin.describe_configs([resource], request_timeout=10)[resource].result()
    return {key: entry.value for key, entry in entries.items()}


def _partitions(admin: AdminClient, name: str) -> int:
    return len(admin.list_topics(name, timeout=10).topics[name].partitions)


def test_ensure_topics_is_idempotent_and_applies_the_topic_settings(
    settings: Settings, admin: AdminClient
) -> None:
    ensure_topics(settings)
    ensure_topics(settings, queues=("default", "gpu"))
    topics = Topics(settings.topic_prefix)

    events = _describe(admin, topics.events)
    assert (events["retention.ms"], events["retention.bytes"]) == ("-1", "-1")
    assert _describe(admin, topics.state)["cleanup.policy"] == "compact"
    for name in (*topics.copartitioned, topics.dispatch("default"), topics.dispatch("gpu")):
        assert _partitions(admin, name) == settings.partitions, name
    assert _partitions(admin, topics.control) == 1
    assert _partitions(admin, topics.deadletter) == 1


def _create(admin: AdminClient, *topics: NewTopic) -> None:
    for future in admin.create_topics(list(topics), operation_timeout=10).values():
        future.result()


def test_missing_copartitioned_topics_take_the_existing_partition_count(
    bare_settings: Settings,
) -> None:
    settings = bare_settings
    admin = _admin(settings)
    topics = Topics(settings.topic_prefix)
    _create(admin, NewTopic(topics.commands, num_partitions=2, replication_factor=1))

    ensure_topics(settings)

    for name in topics.copartitioned:
        assert _partitions(admin, name) == 2, name


def test_ensure_topics_rejects_copartitioned_topics_of_different_sizes(
    bare_settings: Settings,
) -> None:
    settings = bare_settings
    admin = _admin(settings)
    topics = Topics(settings.topic_prefix)
    _create(
        admin,
        NewTopic(topics.commands, num_partitions=2, replication_factor=1),
        NewTopic(topics.events, num_partitions=3, replication_factor=1),
    )

    with pytest.raises(ConfigurationError, match="one partition count"):
        ensure_topics(settings)


def test_ensure_topics_rejects_a_state_topic_that_is_not_compacted(
    bare_settings: Settings,
) -> None:
    settings = bare_settings
    admin = _admin(settings)
    state = Topics(settings.topic_prefix).state
    _create(admin, NewTopic(state, num_partitions=settings.partitions, replication_factor=1))

    with pytest.raises(ConfigurationError, match="compact"):
        ensure_topics(settings)
