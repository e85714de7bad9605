"""The local broker's generated files, its cache layout and joblog's topic layout, no broker."""

from __future__ import annotations

import os
import socket
import stat
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from engine.admin import (
    CONTROL_PARTITIONS,
    DEADLETTER_PARTITIONS,
    TopicSpec,
    topic_specs,
    wait_for_cluster,
)
from engine.broker.cli import build_parser
from engine.broker.distribution import (
    KAFKA_VERSION,
    KafkaDistribution,
    cache_root,
    find_java,
    find_maven,
    render_pom,
    resolve_kafka,
)
from engine.broker.local import JVM_OPTIONS, LocalBroker, jvm_options
from engine.broker.properties import (
    LOG4J2_PROPERTIES,
    SINGLE_NODE_DEFAULTS,
    cluster_defaults,
    is_cluster_id,
    listener_port,
    new_cluster_id,
    parse_properties,
    render_properties,
    server_properties,
)
from engine.config import Settings
from engine.errors import BrokerError, ConfigurationError

POM = "{http://maven.apache.org/POM/4.0.0}"


def _props(**overrides: str) -> dict[str, str]:
    return server_properties(
        log_dir=Path("/data/kafka-logs"),
        broker_port=19092,
        controller_port=19093,
        overrides=overrides,
    )


def test_server_properties_describe_one_combined_kraft_node_on_ipv4() -> None:
    props = _props()

    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == "/data/kafka-logs"


def test_server_properties_let_transactions_and_groups_work_on_one_node() -> None:
    props = _props()

    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "min.insync.replicas",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "false"


def test_overrides_win_over_generated_settings() -> None:
    props = _props(**{"auto.create.topics.enable": "true", "log.retention.hours": "1"})

    assert props["auto.create.topics.enable"] == "true"
    assert props["log.retention.hours"] == "1"
    assert set(SINGLE_NODE_DEFAULTS) <= set(props)


@pytest.mark.parametrize(("broker", "controller"), [(0, 9093), (9092, 70000), (9092, 9092)])
def test_bad_ports_are_configuration_errors(broker: int, controller: int) -> None:
    with pytest.raises(ConfigurationError):
        server_properties(log_dir=Path("/x"), broker_port=broker, controller_port=controller)


def test_properties_round_trip_through_the_file_format() -> None:
    props = {**_props(), "weird.path": "C:\\kafka\\logs", "multi": "a\nb"}

    text = render_properties(props, header="generated")

    assert text.startswith("# generated\n")
    assert parse_properties(text) == props


def test_parse_properties_reads_java_syntax() -> None:
    text = "# comment\n! also a comment\n\nkey = value\nother: x=y\nempty\n"

    assert parse_properties(text) == {"key": "value", "other": "x=y", "empty": ""}


def test_listener_port_finds_each_listener() -> None:
    props = _props()

    assert listener_port(props, "PLAINTEXT") == 19092
    assert listener_port(props, "CONTROLLER") == 19093
    assert listener_port(props, "SSL") is None
    assert listener_port({}, "PLAINTEXT") is None


def test_log4j_configuration_logs_to_the_console_and_keeps_logging_through_shutdown() -> None:
    config = parse_properties(LOG4J2_PROPERTIES)

    assert config["appender.out.type"] == "Console"
    assert config["rootLogger.appenderRef.out.ref"] == "OUT"
    assert config["shutdownHook"] == "disable"


def test_cluster_ids_look_like_kafkas() -> None:
    ids = {new_cluster_id() for _ in range(200)}

    assert len(ids) == 200
    assert all(is_cluster_id(cluster_id) for cluster_id in ids)
    assert not any(cluster_id.startswith("-") for cluster_id in ids)
    assert not is_cluster_id("not-an-id")


def test_pom_depends_on_kafka_and_a_log4j_binding() -> None:
    root = ET.fromstring(render_pom("4.3.1", "2.25.4"))

    assert root.findtext(f"{POM}packaging") == "pom"
    deps = {
        (dep.findtext(f"{POM}artifactId"), dep.findtext(f"{POM}version"))
        for dep in root.iter(f"{POM}dependency")
    }
    assert deps == {("kafka_2.13", "4.3.1"), ("log4j-slf4j-impl", "2.25.4")}


def test_cache_root_honours_the_environment() -> None:
    assert cache_root({"JOBLOG_CACHE_DIR": "/c"}) == Path("/c")
    assert cache_root({"XDG_CACHE_HOME": "/x"}) == Path("/x/joblog")
    assert cache_root({}) == Path.home() / ".cache" / "joblog"


def test_a_complete_cache_is_used_without_maven(tmp_path: Path) -> None:
    home = tmp_path / f"kafka-{KAFKA_VERSION}"
    (home / "libs").mkdir(parents=True)
    (home / "libs" / "b.jar").touch()
    (home / "libs" / "a.jar").touch()
    (home / "COMPLETE").touch()

    dist = resolve_kafka(cache_dir=tmp_path, env={"PATH": ""})

    assert dist == KafkaDistribution(KAFKA_VERSION, home)
    assert dist.classpath() == os.pathsep.join([str(home / "libs/a.jar"), str(home / "libs/b.jar")])


def test_an_incomplete_cache_without_maven_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="apt-get install maven"):
        resolve_kafka(cache_dir=tmp_path, env={"PATH": str(tmp_path)})


def test_missing_java_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="openjdk-17-jre-headless"):
        find_java({"PATH": str(tmp_path)})


def test_java_home_wins_over_path(tmp_path: Path) -> None:
    java = tmp_path / "bin" / "java"
    java.parent.mkdir()
    java.write_text("#!/bin/sh\n")
    java.chmod(java.stat().st_mode | stat.S_IXUSR)

    assert find_java({"JAVA_HOME": str(tmp_path), "PATH": ""}) == str(java)


def test_joblog_mvn_must_be_executable(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="JOBLOG_MVN"):
        find_maven({"JOBLOG_MVN": str(tmp_path / "nope")})


def test_cds_archives_are_per_jvm_build(tmp_path: Path) -> None:
    dist = KafkaDistribution(KAFKA_VERSION, tmp_path)
    first, second = tmp_path / "java-a", tmp_path / "java-b"
    first.write_text("a")
    second.write_text("bb")

    assert dist.cds_archive(str(first)) != dist.cds_archive(str(second))
    assert dist.cds_archive(str(first)).parent == tmp_path / "cds"


def test_extra_jvm_options_come_last_and_a_chosen_collector_replaces_the_default() -> None:
    assert jvm_options() == list(JVM_OPTIONS)
    assert jvm_options(["-Xmx1g"])[-1] == "-Xmx1g"
    with_g1 = jvm_options(["-XX:+UseG1GC"])
    assert [o for o in with_g1 if o.startswith("-XX:+Use") and o.endswith("GC")] == ["-XX:+UseG1GC"]


def test_a_data_directory_without_a_broker_reports_not_running(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path)
    (tmp_path / "broker.pid").write_text("999999999\n")

    status = broker.status()

    assert not status.running
    assert status.bootstrap_servers is None
    with pytest.raises(BrokerError, match="no broker has been started"):
        _ = broker.bootstrap_servers
    broker.stop()
    assert not (tmp_path / "broker.pid").exists()


def test_cli_parses_every_command() -> None:
    parser = build_parser()

    start = parser.parse_args(["start", "--data-dir", "/d", "--port", "0", "--foreground"])
    assert (start.command, start.data_dir, start.port, start.foreground) == (
        "start",
        Path("/d"),
        0,
        True,
    )
    assert parser.parse_args(["logs", "-n", "5", "-f"]).lines == 5
    for command in ("stop", "status"):
        assert parser.parse_args([command]).command == command


def _names(specs: list[TopicSpec]) -> list[str]:
    return [spec.name for spec in specs]


def test_topic_specs_follow_the_design() -> None:
    settings = Settings(topic_prefix="jl.", partitions=4)

    specs = {spec.name: spec for spec in topic_specs(settings, queues=("default", "gpu"))}

    assert list(specs) == [
        "jl.commands",
        "jl.reports",
        "jl.events",
        "jl.state",
        "jl.control",
        "jl.deadletter",
        "jl.dispatch.default",
        "jl.dispatch.gpu",
    ]
    for name in ("jl.commands", "jl.reports", "jl.events", "jl.state", "jl.dispatch.gpu"):
        assert specs[name].partitions == 4
    assert specs["jl.control"].partitions == CONTROL_PARTITIONS
    assert specs["jl.deadletter"].partitions == DEADLETTER_PARTITIONS
    assert specs["jl.events"].config["retention.ms"] == "-1"
    assert specs["jl.events"].config["retention.bytes"] == "-1"
    assert specs["jl.state"].config["cleanup.policy"] == "compact"


def test_repeated_queues_get_one_dispatch_topic() -> None:
    names = _names(topic_specs(Settings(), queues=("default", "default")))

    assert names.count("joblog.dispatch.default") == 1


@pytest.mark.parametrize("queue", ["with space", "slash/queue", "x" * 250])
def test_illegal_queue_names_are_configuration_errors(queue: str) -> None:
    with pytest.raises(ConfigurationError, match="legal Kafka topic name"):
        topic_specs(Settings(), queues=(queue,))


def test_wait_for_cluster_gives_up_with_a_hint(unused_port: int) -> None:
    settings = Settings(bootstrap_servers=f"127.0.0.1:{unused_port}")
    started = time.monotonic()

    with pytest.raises(BrokerError, match="joblog broker start"):
        wait_for_cluster(settings, timeout=0.5)
    assert time.monotonic() - started < 5


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_cluster_of_three_replicates_three_ways_and_needs_two_in_sync() -> None:
    props = server_properties(
        log_dir=Path("/tmp/x"),
        broker_port=9092,
        controller_port=9093,
        node_id=2,
        voters="1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097",
        defaults=cluster_defaults(3),
    )
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"].count("@") == 3
    for key in ("default.replication.factor", "offsets.topic.replication.factor"):
        assert props[key] == "3"
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"
    assert props["transaction.state.log.replication.factor"] == "3"
    assert props["unclean.leader.election.enable"] == "false"


def test_smaller_clusters_never_ask_for_more_replicas_than_brokers() -> None:
    assert cluster_defaults(1)["default.replication.factor"] == "1"
    assert cluster_defaults(2)["min.insync.replicas"] == "1"
    with pytest.raises(ConfigurationError):
        cluster_defaults(0)
