"""The worker's Kafka clients: built on the shared settings (:mod:`engine.kafka`) once the
cluster answers, and closed within a deadline.

* ``reports``: an idempotent producer (acks=all).
* ``dispatch.<queue>``: consumer group ``<prefix>workers.<queue>``, cooperative-sticky,
  offsets stored and committed by the worker only, a bounded prefetch.
* ``control``: every partition assigned (no group), from the end at start-up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from confluent_kafka import OFFSET_END, Consumer, KafkaException, Producer, TopicPartition

from engine import kafka
from engine.config import Settings
from engine.errors import BrokerError
from engine.topics import Topics
from engine.worker.logs import kafka_log, log_event, log_event_to

STARTUP_TRY_S = 5.0


@dataclass(frozen=True)
class Clients:
    """A worker's three clients."""

    producer: Producer
    dispatch: Consumer
    control: Consumer


def until_reachable(stop: threading.Event, step: Callable[[], None]) -> bool:
    """Runs ``step`` until it works, retrying with backoff while the cluster is away.

    Returns:
        ``False`` when ``stop`` was set first.

    Raises:
        ConfigurationError: the cluster answered but the topics are wrong.
    """
    delay = 0.5
    while not stop.is_set():
        try:
            step()
            return True
        except (BrokerError, KafkaException) as exc:
            log_event_to(kafka_log, logging.WARNING, "cluster not reachable, retrying", error=exc)
            stop.wait(delay)
            delay = min(delay * 2, 10.0)
    return False


def build_clients(
    settings: Settings,
    queue: str,
    worker_id: str,
    session_timeout_ms: int,
    dispatch_config: Mapping[str, object] | None = None,
) -> Clients:
    """Creates the producer and the two consumers (nothing assigned or subscribed yet).

    ``dispatch_config`` adds settings to the dispatch consumer (its statistics callback).
    """
    topics = Topics(settings.topic_prefix)
    producer = kafka.producer(
        settings,
        {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "client.id": f"joblog-worker-{worker_id}",
        },
        writes=(topics.reports, topics.deadletter),
    )
    tunable = {
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(session_timeout_ms // 4, 500),
        "partition.assignment.strategy": "cooperative-sticky",
        # Dispatch records are small; a bounded prefetch keeps a paused worker lean.
        "queued.max.messages.kbytes": 1024,
        "fetch.wait.max.ms": 100,
    }
    dispatch = kafka.consumer(
        settings,
        f"{settings.topic_prefix}workers.{queue}",
        {
            "client.id": f"joblog-worker-{worker_id}",
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            **(dispatch_config or {}),
        },
        overridable=tunable,
    )
    control = kafka.consumer(
        settings,
        f"{settings.topic_prefix}worker-control.{worker_id}",
        {"fetch.wait.max.ms": 50},
    )
    return Clients(producer=producer, dispatch=dispatch, control=control)


def assign_from_end(consumer: Consumer, topic: str) -> None:
    """Assigns every partition of ``topic`` to ``consumer``, from its end."""
    # From the end: a kill can only be for an attempt this process claimed, and every claim
    # comes after this point.
    metadata = consumer.list_topics(topic, timeout=STARTUP_TRY_S)
    partitions = sorted(metadata.topics[topic].partitions) if topic in metadata.topics else []
    assignment = []
    for partition in partitions:
        try:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=STARTUP_TRY_S
            )
        except KafkaException:
            high = OFFSET_END
        assignment.append(TopicPartition(topic, partition, high))
    if not assignment:
        log_event(logging.WARNING, "control topic missing", topic=topic)
    consumer.assign(assignment)


def within(timeout_s: float, what: str, step: Callable[[], object]) -> None:
    """Runs ``step`` in a helper thread and waits at most ``timeout_s`` for it: librdkafka's
    synchronous commit and consumer close have no deadline of their own and block while the
    cluster is unreachable."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            step()
        except (KafkaException, RuntimeError) as exc:
            failure.append(exc)

    helper = threading.Thread(target=run, name=f"joblog-{what.replace(' ', '-')}", daemon=True)
    helper.start()
    helper.join(timeout_s)
    if helper.is_alive():
        log_event_to(
            kafka_log, logging.WARNING, f"{what} did not finish in time", timeout_s=timeout_s
        )
    elif failure:
        log_event_to(kafka_log, logging.WARNING, f"{what} failed", error=failure[0])
