"""A local Apache Kafka cluster of several KRaft nodes on this machine, for failover tests.

Each node is a combined broker+controller :class:`~engine.broker.local.LocalBroker` in its own
data directory (``node-1/``, ``node-2/``, ...) with its own ports on 127.0.0.1; together they
form one KRaft quorum. Topics default to replication factor 3 with ``min.insync.replicas=2``
(:func:`~engine.broker.properties.cluster_defaults`), so one node may crash without losing an
acknowledged record or stopping writes.

Example::

    with LocalCluster(tmp_path / "cluster", brokers=3) as cluster:
        settings = Settings(bootstrap_servers=cluster.bootstrap_servers, replication_factor=3)
        ...
        cluster.kill(cluster.leader_of("joblog.events", 0))   # a crash of that partition's leader
        cluster.start_node(...)
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from engine.broker.distribution import KAFKA_VERSION
from engine.broker.local import HOST, LocalBroker, _create_offsets_topic
from engine.broker.properties import cluster_defaults, new_cluster_id
from engine.broker.security import BrokerSecurity
from engine.errors import BrokerError


class LocalCluster:
    """``brokers`` KRaft nodes (each broker and controller) forming one cluster.

    Args:
        data_dir: the cluster's directory; node ``n`` lives in ``node-<n>/``.
        brokers: how many nodes (3 by default: the smallest cluster that survives a crash
            with ``min.insync.replicas=2``).
        version: the Apache Kafka version to run.
        properties: broker settings that win over the generated ones, on every node.
        jvm_options: extra JVM options of every node.
        startup_timeout: seconds to wait for the quorum to answer once the JVMs run.
        security: SASL/SCRAM (and TLS) with ACLs enforced on every node
            (:class:`~engine.broker.security.BrokerSecurity`; one admin password for all).
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        brokers: int = 3,
        version: str = KAFKA_VERSION,
        properties: Mapping[str, str] | None = None,
        jvm_options: Sequence[str] = (),
        startup_timeout: float = 120.0,
        security: BrokerSecurity | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.startup_timeout = startup_timeout
        self._remove_on_stop = False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        id_file = self.data_dir / "cluster.id"
        if not id_file.exists():
            id_file.write_text(new_cluster_id() + "\n")
        cluster_id = id_file.read_text().strip()
        ports = _free_ports(2 * brokers)
        controllers = ports[brokers:]
        voters = ",".join(f"{n}@{HOST}:{port}" for n, port in enumerate(controllers, start=1))
        defaults = cluster_defaults(brokers)
        self.nodes: dict[int, LocalBroker] = {
            n: LocalBroker(
                self.data_dir / f"node-{n}",
                port=ports[n - 1],
                version=version,
                properties=properties,
                jvm_options=jvm_options,
                startup_timeout=startup_timeout,
                node_id=n,
                controller_port=controllers[n - 1],
                voters=voters,
                cluster_id=cluster_id,
                defaults=defaults,
                security=security,
            )
            for n in range(1, brokers + 1)
        }

    @classmethod
    def temporary(cls, **options: Any) -> LocalCluster:
        """A cluster in a new temporary directory that :meth:`stop` deletes."""
        cluster = cls(tempfile.mkdtemp(prefix="joblog-cluster-"), **options)
        cluster._remove_on_stop = True
        return cluster

    @property
    def bootstrap_servers(self) -> str:
        """Every node's client address, comma-separated."""
        return ",".join(f"{HOST}:{node.port}" for node in self.nodes.values())

    def start(self) -> LocalCluster:
        """Launches every node, then waits until each answers and all see each other.

        Raises:
            BrokerError: a node did not come up in time (the message ends with its log).
        """
        formatted = False
        try:
            for node in self.nodes.values():
                formatted = node.launch()[0] or formatted
            deadline = time.monotonic() + self.startup_timeout
            admin = None
            for node in self.nodes.values():
                admin = node.wait_ready(max(1.0, deadline - time.monotonic()))
            self.wait_for_brokers(len(self.nodes), max(1.0, deadline - time.monotonic()))
            if formatted and admin is not None:
                _create_offsets_topic(admin)
            self.nodes[1].add_users()
        except BrokerError:
            self.stop()
            raise
        return self

    def start_node(self, node_id: int) -> None:
        """Starts one (stopped or killed) node again and waits until it answers."""
        node = self.nodes[node_id]
        node.launch()
        node.wait_ready()

    def kill(self, node_id: int) -> None:
        """SIGKILLs one node: a crash, with no clean shutdown."""
        self.nodes[node_id].kill()

    def stop_node(self, node_id: int) -> None:
        """Stops one node cleanly (SIGTERM, a controlled shutdown)."""
        self.nodes[node_id].stop()

    def stop(self, timeout: float = 10.0) -> None:
        """Stops every node at once (a :meth:`temporary` cluster's directory is deleted).

        The nodes get SIGTERM together: stopped one by one, the last ones would wait for a
        quorum that is already gone.
        """
        threads = [
            threading.Thread(target=node.stop, args=(timeout,), daemon=True)
            for node in self.nodes.values()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self._remove_on_stop:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def running(self) -> list[int]:
        """The ids of the nodes whose JVM is alive."""
        return [n for n, node in self.nodes.items() if node.is_running()]

    def client_settings(self, user: str | None = None) -> dict[str, str]:
        """The librdkafka settings of a client of a secured cluster (see
        :meth:`LocalBroker.client_settings`); empty for an open one."""
        return self.nodes[1].client_settings(user)

    def admin(self) -> AdminClient:
        """An admin client of the whole cluster (quiet: its connection errors are expected)."""
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.bootstrap_servers,
            "log_level": 0,
            **self.client_settings(),
        }
        return AdminClient(config)

    def wait_for_brokers(self, count: int, timeout: float = 60.0) -> None:
        """Waits until the cluster's metadata lists ``count`` live brokers."""
        admin = self.admin()
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            with contextlib.suppress(KafkaException):
                seen = len(admin.list_topics(timeout=2).brokers)
                if seen >= count:
                    return
            time.sleep(0.2)
        raise BrokerError(f"the cluster lists {seen} brokers, not {count}, after {timeout:.0f} s")

    def leaders(self, topic_prefix: str = "") -> dict[tuple[str, int], int]:
        """The leader node of every partition of the topics whose name starts with the prefix
        (-1: none)."""
        metadata = self.admin().list_topics(timeout=10)
        return {
            (name, partition.id): partition.leader
            for name, topic in metadata.topics.items()
            if name.startswith(topic_prefix)
            for partition in topic.partitions.values()
        }

    def leader_of(self, topic: str, partition: int) -> int:
        """The node that leads ``topic``'s ``partition`` now.

        Raises:
            BrokerError: the partition has no leader or does not exist.
        """
        leader = self.leaders(topic).get((topic, partition), -1)
        if leader < 0:
            raise BrokerError(f"{topic}[{partition}] has no leader")
        return leader

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalCluster({str(self.data_dir)!r}, brokers={len(self.nodes)})"


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports on the loopback address (held open while picked)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
