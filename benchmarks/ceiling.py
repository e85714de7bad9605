"""The ceiling: how many records per second plain confluent-kafka moves on the same broker.

Records are joblog events (Avro single-object encoded, keyed by submission id) made by the
real decider, so their size matches what joblog writes. The producer uses the settings of the
scheduler's producer (linger, batch size, lz4) without transactions; the consumer reads them
back with the settings of joblog's consumers (read_committed, batches of 1,000), without
decoding: Kafka and the client library alone.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from engine.config import Settings


def raw_kafka(
    settings: Settings, records: Sequence[tuple[bytes, bytes]], partitions: int = 6
) -> dict[str, Any]:
    """Produces ``records`` to a fresh topic, then consumes them; returns records/s of each."""
    topic = f"{settings.topic_prefix}ceiling.{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers, **settings.kafka})
    admin.create_topics([NewTopic(topic, partitions, settings.replication_factor)])[topic].result(
        30
    )
    _wait_for_leaders(settings, topic, partitions)
    producer = Producer(
        settings.producer_config(
            **{
                "enable.idempotence": True,
                "linger.ms": 5,
                "batch.num.messages": 10_000,
                "compression.type": "lz4",
            }
        )
    )
    # Connected, with its producer id, before the clock starts.
    producer.produce(topic, key=records[0][0], value=records[0][1])
    producer.flush(30)
    started = time.perf_counter()
    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(120)
    produce_s = time.perf_counter() - started

    consumer = Consumer(
        settings.client_config(
            **{
                "group.id": f"ceiling-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
            }
        )
    )
    consumer.subscribe([topic])
    got = 0
    first = None
    deadline = time.monotonic() + 300
    while got < len(records) + 1 and time.monotonic() < deadline:
        batch = consumer.consume(1000, timeout=0.5)
        if batch and first is None:
            first = time.perf_counter()
        for message in batch:
            error = message.error()
            if error is None or error.code() != KafkaError._PARTITION_EOF:
                got += 1
    consume_s = time.perf_counter() - (first or time.perf_counter())
    consumer.close()
    admin.delete_topics([topic])
    size = sum(len(v) for _, v in records) / max(len(records), 1)
    return {
        "records": len(records),
        "consumed": got - 1,
        "value_bytes": size,
        "produce_s": produce_s,
        "produce_per_s": len(records) / produce_s,
        "consume_s": consume_s,
        "consume_per_s": got / consume_s if consume_s > 0 else float("nan"),
    }


def _wait_for_leaders(settings: Settings, topic: str, partitions: int, timeout: float = 30) -> None:
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers, **settings.kafka})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metadata = admin.list_topics(topic, timeout=10).topics.get(topic)
        if (
            metadata is not None
            and metadata.error is None
            and len(metadata.partitions) == partitions
            and all(p.leader >= 0 for p in metadata.partitions.values())
        ):
            return
        time.sleep(0.1)
