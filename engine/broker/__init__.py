"""A local Apache Kafka broker (KRaft), or a cluster of them, run from Maven Central jars.

Used by the demo and the integration tests when no cluster is configured; production runs
against any Kafka cluster through ``JOBLOG_BOOTSTRAP_SERVERS``.
"""

from engine.broker.cluster import LocalCluster
from engine.broker.distribution import KAFKA_VERSION, KafkaDistribution, resolve_kafka
from engine.broker.local import DEFAULT_DATA_DIR, BrokerStatus, LocalBroker
from engine.broker.security import BrokerSecurity

__all__ = [
    "DEFAULT_DATA_DIR",
    "KAFKA_VERSION",
    "BrokerSecurity",
    "BrokerStatus",
    "KafkaDistribution",
    "LocalBroker",
    "LocalCluster",
    "resolve_kafka",
]
