"""The configuration files of a single-node KRaft broker, as pure functions of its settings.

Nothing here starts a process or touches the network, so the generated files are unit-tested
on their own.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from pathlib import Path

from engine.errors import ConfigurationError

NODE_ID = 1

# Each of these makes one broker behave like a well-formed cluster for joblog:
#   - the internal topics (consumer offsets, transaction state, share-group state) default to
#     replication factor 3 and would never be created on one node, so transactions and group
#     coordination would hang;
#   - a single partition for each internal topic keeps startup and coordinator loading short;
#   - without the rebalance delay at 0 every consumer group join waits 3 s;
#   - auto-creation is off, as on most production clusters, so a topic joblog forgot to create
#     fails loudly instead of appearing with the wrong partition count;
#   - the log cleaner's dedupe buffer defaults to 128 MiB of heap, too much for a 512 MiB JVM.
SINGLE_NODE_DEFAULTS: Mapping[str, str] = {
    "num.partitions": "1",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "share.coordinator.state.topic.num.partitions": "1",
    "group.initial.rebalance.delay.ms": "0",
    "auto.create.topics.enable": "false",
    "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
    "num.network.threads": "2",
    "num.io.threads": "4",
}

LOG4J2_PROPERTIES = """\
# Written by joblog's local broker launcher; rewritten on every start.
shutdownHook = disable
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = WARN
"""


def cluster_defaults(brokers: int) -> dict[str, str]:
    """The replication settings of a cluster of ``brokers`` nodes, over the single-node ones.

    Three or more nodes: every internal topic at replication factor 3 with two in-sync
    replicas required, so one node may die without losing an acknowledged write or stopping
    writes (producers use ``acks=all``, librdkafka's default and required by transactions).
    """
    if brokers < 1:
        raise ConfigurationError(f"a cluster needs at least one broker, not {brokers}")
    replicas = str(min(3, brokers))
    in_sync = str(2 if brokers >= 3 else 1)
    return {
        **SINGLE_NODE_DEFAULTS,
        "num.partitions": "1",
        "default.replication.factor": replicas,
        "min.insync.replicas": in_sync,
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": in_sync,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": in_sync,
        # A replica that fell out of sync never becomes leader (Kafka's default, kept
        # explicit): that would drop acknowledged records.
        "unclean.leader.election.enable": "false",
        # A crashed producer's open transaction holds up read_committed readers of every
        # partition it wrote to until the broker aborts it, which it checks every 10 s by
        # default; checked every second, it is aborted within a second of its timeout.
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
        # A crashed node is fenced (its partitions get new leaders) once it missed its
        # heartbeats this long; Kafka's default, 9 s, is tuned for busy production networks.
        "broker.session.timeout.ms": "4000",
        "broker.heartbeat.interval.ms": "1000",
    }


def server_properties(
    *,
    log_dir: Path,
    broker_port: int,
    controller_port: int,
    host: str = "127.0.0.1",
    overrides: Mapping[str, str] | None = None,
    node_id: int = NODE_ID,
    voters: str | None = None,
    defaults: Mapping[str, str] = SINGLE_NODE_DEFAULTS,
    protocol: str = "PLAINTEXT",
    controller_protocol: str = "PLAINTEXT",
) -> dict[str, str]:
    """The ``server.properties`` of a combined broker+controller KRaft node.

    The listeners bind and advertise an IPv4 address rather than ``localhost``, because
    librdkafka may resolve ``localhost`` to ``::1`` where nothing listens.

    Args:
        log_dir: where the broker keeps its partitions and the metadata log.
        broker_port: port of the listener clients connect to.
        controller_port: port of the CONTROLLER listener (the KRaft quorum).
        host: address to bind and advertise.
        overrides: broker settings that win over the generated ones.
        node_id: the node's id in the cluster.
        voters: the KRaft quorum, ``id@host:port,...`` (default: this node alone).
        defaults: replication and sizing settings (:data:`SINGLE_NODE_DEFAULTS`, or
            :func:`cluster_defaults` for a cluster).
        protocol: the client listener's security protocol, also its name (``PLAINTEXT``,
            ``SASL_PLAINTEXT``, ``SASL_SSL``); brokers talk to each other on it too.
        controller_protocol: the security protocol of the CONTROLLER listener.

    Returns:
        The settings, in the order they are written.

    Raises:
        ConfigurationError: a port is outside 1..65535 or both ports are equal.
    """
    for name, port in (("broker port", broker_port), ("controller port", controller_port)):
        if not 0 < port < 65536:
            raise ConfigurationError(f"{name} {port} is outside 1..65535")
    if broker_port == controller_port:
        raise ConfigurationError(f"broker and controller both use port {broker_port}")
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters or f"{node_id}@{host}:{controller_port}",
        "listeners": f"{protocol}://{host}:{broker_port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"{protocol}://{host}:{broker_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": protocol,
        "listener.security.protocol.map": f"CONTROLLER:{controller_protocol},{protocol}:{protocol}",
        "log.dirs": str(log_dir),
        **defaults,
    }
    props.update(overrides or {})
    return props


def render_properties(props: Mapping[str, str], header: str | None = None) -> str:
    """Writes settings in Java ``.properties`` syntax.

    Args:
        props: the settings.
        header: an optional comment for the first line.

    Returns:
        The file's text, one ``key=value`` a line.
    """
    lines = [f"# {header}"] if header else []
    lines += [f"{_escape(key, is_key=True)}={_escape(value)}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def parse_properties(text: str) -> dict[str, str]:
    """Reads the simple ``.properties`` files :func:`render_properties` writes.

    Comments, blank lines, ``key=value`` and ``key: value`` are understood; line continuations
    are not (joblog never writes them).

    Args:
        text: the file's text.

    Returns:
        The settings.
    """
    props: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, value = _split(line)
        props[_unescape(key)] = _unescape(value)
    return props


def client_listener(props: Mapping[str, str]) -> tuple[str, str] | None:
    """The name and ``host:port`` of the first advertised listener (the clients'), if any."""
    for entry in props.get("advertised.listeners", "").split(","):
        name, _, address = entry.strip().partition("://")
        if name and address:
            return name, address
    return None


def listener_port(props: Mapping[str, str], listener: str) -> int | None:
    """The port of one named listener in ``listeners``, or None when it is absent."""
    for entry in props.get("listeners", "").split(","):
        name, _, address = entry.strip().partition("://")
        if name == listener and ":" in address:
            port = address.rsplit(":", 1)[1]
            if port.isdigit():
                return int(port)
    return None


def new_cluster_id() -> str:
    """A random KRaft cluster id, as ``kafka-storage.sh random-uuid`` prints one.

    Kafka ids are 16 random bytes in URL-safe base64 without padding; Kafka never hands out
    one that starts with ``-`` because command-line tools would take it for an option.
    """
    while True:
        encoded = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not encoded.startswith("-"):
            return encoded


def is_cluster_id(value: str) -> bool:
    """Whether ``value`` has the shape of a KRaft cluster id."""
    if len(value) != 22:
        return False
    try:
        return len(base64.urlsafe_b64decode(value + "==")) == 16
    except ValueError:
        return False


def _escape(text: str, *, is_key: bool = False) -> str:
    out = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    if is_key:
        out = out.replace("=", "\\=").replace(":", "\\:").replace(" ", "\\ ")
    return out


def _unescape(text: str) -> str:
    out: list[str] = []
    chars = iter(text)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        following = next(chars, "")
        out.append({"n": "\n", "r": "\r", "t": "\t"}.get(following, following))
    return "".join(out)


def _split(line: str) -> tuple[str, str]:
    escaped = False
    for index, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in "=:":
            return line[:index].rstrip(), line[index + 1 :].lstrip()
    return line, ""
