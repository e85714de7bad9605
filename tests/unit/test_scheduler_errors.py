"""How the scheduler classifies the errors its consumer hands it; no broker."""

from __future__ import annotations

from confluent_kafka import KafkaError

from engine.scheduler.service import _consumer_fatal


def test_a_fatal_error_delivered_as_a_record_is_fatal_though_its_flag_is_not_set() -> None:
    # what consume() returns once the group fenced this static member: code _FATAL,
    # fatal() False
    delivered = KafkaError(KafkaError._FATAL, "Static consumer fenced by other consumer")
    assert not delivered.fatal()
    assert _consumer_fatal(delivered)


def test_a_flagged_fatal_error_is_fatal() -> None:
    assert _consumer_fatal(KafkaError(KafkaError._FENCED, "fenced", fatal=True))


def test_transient_consumer_errors_are_not_fatal() -> None:
    for code in (
        KafkaError._PARTITION_EOF,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    ):
        assert not _consumer_fatal(KafkaError(code))
