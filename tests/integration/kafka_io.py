"""Reading and writing joblog topics in integration tests (the real broker, no mocks)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from engine import codec
from engine.config import Settings
from engine.lifecycle.records import (
    AttemptRef,
    Claimed,
    Dispatch,
    Event,
    Finished,
    Outcome,
    Report,
    Started,
)
from engine.topics import Topics

T = TypeVar("T")


def read_all(
    settings: Settings, topic: str, decode: Callable[[bytes], T], timeout: float = 10.0
) -> list[tuple[bytes | None, T]]:
    """Every committed record of a topic, decoded, in partition then offset order."""
    consumer = Consumer(
        settings.client_config(
            **{
                "group.id": f"test-read-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            }
        )
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        ends = {}
        assignment = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                assignment.append(TopicPartition(topic, p, low))
        out: dict[int, list[tuple[bytes | None, T]]] = {p: [] for p in ends}
        if not assignment:
            return []
        consumer.assign(assignment)
        pending = set(ends)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.2):
                error = message.error()
                p = message.partition()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(p)
                    continue
                out[p].append((message.key(), decode(message.value())))
                if message.offset() + 1 >= ends[p]:
                    pending.discard(p)
        return [item for p in sorted(out) for item in out[p]]
    finally:
        consumer.close()


def events_by_submission(settings: Settings, timeout: float = 10.0) -> dict[str, list[Event]]:
    """The committed events of every submission, in log order."""
    by: dict[str, list[Event]] = {}
    for _, event in read_all(
        settings, Topics(settings.topic_prefix).events, codec.decode_event, timeout
    ):
        by.setdefault(event.submission_id, []).append(event)
    return by


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.3) -> None:
    """Polls ``predicate`` until it holds; fails the test with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class EchoWorker:
    """A stand-in worker that completes every dispatch at once: Claimed, Started, Finished.

    It runs no code: it exercises the scheduler's protocol with real Kafka records.
    """

    def __init__(
        self,
        settings: Settings,
        queue: str = "default",
        worker_id: str = "echo",
        result_of: Callable[[Dispatch], str] | None = None,
    ) -> None:
        self.settings = settings
        self.result_of = result_of
        self.topics = Topics(settings.topic_prefix)
        self.queue = queue
        self.worker_id = worker_id
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EchoWorker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        consumer = Consumer(
            self.settings.client_config(
                **{
                    "group.id": f"{self.settings.topic_prefix}echo-{self.queue}",
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "earliest",
                    "fetch.wait.max.ms": 10,
                }
            )
        )
        producer = Producer(self.settings.producer_config(**{"enable.idempotence": True}))
        consumer.subscribe([self.topics.dispatch(self.queue)])
        try:
            while not self._stop.is_set():
                for message in consumer.consume(100, timeout=0.1):
                    if message.error() is not None:
                        continue
                    dispatch = codec.decode_dispatch(message.value())
                    self.seen.append(dispatch.dispatch_id)
                    ref = AttemptRef(
                        dispatch.submission_id,
                        dispatch.job_id,
                        dispatch.attempt,
                        dispatch.dispatch_id,
                        self.worker_id,
                    )
                    reports: list[Report] = [
                        Claimed(ref),
                        Started(ref),
                        Finished(
                            ref,
                            Outcome.COMPLETED,
                            result="null" if self.result_of is None else self.result_of(dispatch),
                        ),
                    ]
                    for report in reports:
                        producer.produce(
                            self.topics.reports,
                            key=ref.submission_id.encode(),
                            value=codec.encode_report(report),
                        )
                producer.poll(0)
        finally:
            producer.flush(10)
            consumer.close()
