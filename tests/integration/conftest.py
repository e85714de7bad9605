"""Fixtures for the tests that run against a real Apache Kafka broker.

Where the broker comes from, in order:

1. ``JOBLOG_BOOTSTRAP_SERVERS`` is set: that cluster (``JOBLOG_KAFKA_*`` settings pass through,
   so SASL/SSL clusters work); topics the tests create are deleted afterwards.
2. A Docker engine answers: Kafka in a container (testcontainers, KRaft).
3. Otherwise: a local single-node KRaft broker (``engine.broker.LocalBroker``) in a temporary
   directory, started once per session.

Every test under this directory gets the ``integration`` marker, so ``pytest -m "not
integration"`` runs the suite without Kafka.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import pytest

from engine.admin import ensure_topics, wait_for_cluster
from engine.broker import LocalBroker
from engine.config import Settings

_HERE = Path(__file__).parent

Mode = Literal["external", "testcontainers", "local"]


@dataclass(frozen=True)
class KafkaUnderTest:
    """The cluster the integration tests talk to.

    Attributes:
        bootstrap_servers: its bootstrap servers.
        mode: where it comes from: ``external``, ``testcontainers`` or ``local``.
    """

    bootstrap_servers: str
    mode: Mode


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaUnderTest]:
    """The session's Kafka cluster (see the module docstring for where it comes from)."""
    external = os.environ.get("JOBLOG_BOOTSTRAP_SERVERS")
    if external:
        wait_for_cluster(Settings.from_env(), timeout=30)
        yield KafkaUnderTest(external, "external")
        return
    if _docker_answers():
        container = _kafka_container()
        container.start()
        try:
            yield KafkaUnderTest(container.get_bootstrap_server(), "testcontainers")
        finally:
            container.stop()
        return
    with LocalBroker(tmp_path_factory.mktemp("kafka")) as broker:
        yield KafkaUnderTest(broker.bootstrap_servers, "local")


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_cluster: KafkaUnderTest) -> str:
    """Bootstrap servers of the session's Kafka cluster."""
    return kafka_cluster.bootstrap_servers


@pytest.fixture
def bare_settings(kafka_cluster: KafkaUnderTest) -> Iterator[Settings]:
    """Settings with a topic prefix of this test's own (``t<8 hex>.``) and no topics yet."""
    settings = Settings.from_env(
        bootstrap_servers=kafka_cluster.bootstrap_servers,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
    )
    yield settings
    if kafka_cluster.mode == "external":
        _delete_topics(settings)


@pytest.fixture
def settings(bare_settings: Settings) -> Settings:
    """Settings with a topic prefix of this test's own, joblog's topics created."""
    ensure_topics(bare_settings)
    return bare_settings


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no SDK, no socket, no permission: all mean "no Docker here"
        return False


def _kafka_container() -> Any:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:
        from testcontainers.kafka import KafkaContainer
    # testcontainers sets the offsets topic to one replica but not the transaction log, so
    # init_transactions() would hang on a single broker without these two.
    return (
        KafkaContainer()
        .with_kraft()
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS", "1")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    )


def _delete_topics(settings: Settings) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(cast("dict[str, str | int | float | bool]", settings.client_config()))
    names = [
        name
        for name in admin.list_topics(timeout=10).topics
        if name.startswith(settings.topic_prefix)
    ]
    if not names:
        return
    for future in admin.delete_topics(names, operation_timeout=30).values():
        # Best effort: a leftover topic must not fail the test.
        with contextlib.suppress(Exception):
            future.result()
