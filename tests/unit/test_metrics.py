"""engine.metrics without a broker: ports, health, lag from statistics, counts, the endpoint."""

from __future__ import annotations

import argparse
import json
import re
import socket
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from engine.errors import ConfigurationError
from engine.metrics import (
    NOTIFIER_COUNTS,
    PORT_ENV,
    PROJECTOR_COUNTS,
    SCHEDULER_COUNTS,
    WORKER_COUNTS,
    ConsumerLag,
    Count,
    Health,
    MetricsServer,
    PortRange,
    Telemetry,
    add_arguments,
    class_families,
    count_families,
    exposition,
    parse_ports,
    serving,
)


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``(sample name, sorted labels) -> value`` of a Prometheus text exposition."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


# --------------------------------------------------------------------- ports


def test_ports_are_a_port_a_range_or_off() -> None:
    assert parse_ports("9400") == PortRange(9400, 9400)
    assert parse_ports(" 9400-9409 ") == PortRange(9400, 9409)
    assert parse_ports(9401) == PortRange(9401, 9401)
    assert parse_ports("0") is None
    assert parse_ports("") is None
    assert parse_ports(None) is None
    assert str(PortRange(9400, 9409)) == "9400-9409"
    for wrong in ("http", "9409-9400", "70000", "-5", "9400-x"):
        with pytest.raises(ConfigurationError):
            parse_ports(wrong)


# --------------------------------------------------------------------- health


def test_health_is_live_while_the_loop_turns_and_ready_when_the_service_says_so() -> None:
    ready = False
    health = Health(lambda: ready, stale_after_s=3600)
    assert health.liveness() == (True, "starting")
    assert health.readiness()[0] is False
    health.beat()
    assert health.liveness()[0] is True
    assert health.readiness() == (False, "not ready: no partitions assigned yet")
    ready = True
    assert health.readiness() == (True, "ready")
    health.stopped()
    assert health.liveness() == (False, "stopped")
    assert health.readiness() == (False, "stopped")


def test_a_loop_that_stopped_turning_is_not_live() -> None:
    health = Health(stale_after_s=0.0)
    health.beat()
    health._beat -= 1.0  # the last turn was a second ago
    live, why = health.liveness()
    assert live is False
    assert "has not turned for" in why
    assert health.readiness()[0] is False


# --------------------------------------------------------------------- lag


def _stats(partitions: dict[str, dict[str, object]]) -> str:
    return json.dumps({"name": "c", "topics": {"p.events": {"partitions": partitions}}})


def test_lag_sums_assigned_partitions_per_topic_from_statistics() -> None:
    lag = ConsumerLag()
    lag.on_stats(
        _stats(
            {
                # consumed up to 93 of 100: 7 behind, whatever was committed
                "0": {
                    "desired": True,
                    "ls_offset": 100,
                    "hi_offset": 101,
                    "app_offset": 93,
                    "committed_offset": 10,
                    "consumer_lag": 90,
                },
                # nothing consumed yet: from the committed offset
                "1": {
                    "desired": True,
                    "ls_offset": -1,
                    "hi_offset": 40,
                    "app_offset": -1001,
                    "committed_offset": 38,
                },
                # no position known at all: librdkafka's own figure, if any
                "3": {"desired": True, "ls_offset": -1, "hi_offset": -1, "consumer_lag": 4},
                "2": {"desired": False, "consumer_lag": 999, "ls_offset": 5, "app_offset": 0},
                "-1": {"desired": False, "consumer_lag": -1},
            }
        )
    )
    assert lag.records_behind() == {"p.events": 7 + 2 + 4}
    assert lag.ends() == {("p.events", 0): 100, ("p.events", 1): 40}
    lag.on_stats("not json")  # ignored, the last figures stay
    assert lag.records_behind() == {"p.events": 13}
    config = lag.consumer_config()
    assert config["statistics.interval.ms"] == lag.interval_ms
    assert config["stats_cb"] == lag.on_stats


@dataclass
class FakeRecord:
    name: str
    ms: int
    kind: int = 1

    def topic(self) -> str:
        return self.name

    def timestamp(self) -> tuple[int, int]:
        return self.kind, self.ms


def test_seconds_behind_is_the_newest_record_age_while_records_are_behind() -> None:
    lag = ConsumerLag()
    lag.seen([FakeRecord("a", 1_000), FakeRecord("b", 2_000), FakeRecord("a", 4_000)])
    lag.seen([FakeRecord("b", 9_999, kind=0)])  # no timestamp: the last one stays
    assert lag.seconds_behind("a", behind=3, now_ms=10_000) == 6.0
    assert lag.seconds_behind("b", behind=3, now_ms=10_000) == 8.0
    assert lag.seconds_behind("a", behind=0, now_ms=10_000) == 0.0
    assert lag.seconds_behind("unseen", behind=3, now_ms=10_000) == 0.0


# --------------------------------------------------------------------- counts

TABLE = {
    "claimed": Count("joblog_test_claimed_total", "Claimed."),
    "dead_letters": Count("joblog_test_dead_letters_total", "Dead.", {"service": "worker"}),
    "finished.": Count("joblog_test_finished_total", "Finished.", label="outcome"),
    "delivered": Count("joblog_test_deliveries_total", "By outcome.", {"outcome": "delivered"}),
    "gave_up": Count("joblog_test_deliveries_total", "By outcome.", {"outcome": "gave_up"}),
}


def test_counts_become_counters_through_a_table() -> None:
    telemetry = Telemetry("worker", process=False)
    counts: Counter[str] = Counter({"claimed": 3, "finished.COMPLETED": 2, "finished.FAILED": 1})
    counts["delivered"] += 4
    counts["unlisted"] += 9
    telemetry.counts(lambda: counts, TABLE)
    body, content_type = telemetry.render()
    assert content_type.startswith("text/plain")
    got = samples(body)
    assert got[("joblog_test_claimed_total", ())] == 3
    assert got[("joblog_test_dead_letters_total", (("service", "worker"),))] == 0
    assert got[("joblog_test_finished_total", (("outcome", "COMPLETED"),))] == 2
    assert got[("joblog_test_finished_total", (("outcome", "FAILED"),))] == 1
    assert got[("joblog_test_deliveries_total", (("outcome", "delivered"),))] == 4
    assert got[("joblog_test_deliveries_total", (("outcome", "gave_up"),))] == 0
    assert not any("unlisted" in name for name, _ in got)
    counts["claimed"] += 1  # read at each scrape: the next one sees it
    assert samples(telemetry.render()[0])[("joblog_test_claimed_total", ())] == 4


def test_count_families_merge_keys_of_one_metric() -> None:
    families = count_families({"delivered": 1, "gave_up": 2}, TABLE)
    (deliveries,) = [f for f in families if f.name == "joblog_test_deliveries"]
    assert sorted(s.labels["outcome"] for s in deliveries.samples) == ["delivered", "gave_up"]


def test_class_counts_are_labelled_by_class_name() -> None:
    class SubmitJobs: ...

    class Tick: ...

    counts = {Tick: 2, SubmitJobs: 5}
    family = class_families("joblog_test_inputs_total", "Inputs.", "input", counts)
    assert [(s.labels["input"], s.value) for s in family.samples] == [
        ("SubmitJobs", 5),
        ("Tick", 2),
    ]


def test_every_service_exports_its_lag_loop_and_readiness() -> None:
    ready = False
    telemetry = Telemetry("projector", ready=lambda: ready)
    telemetry.lag.on_stats(_stats({"0": {"desired": True, "ls_offset": 9, "app_offset": 4}}))
    telemetry.histogram("joblog_test_commit_seconds", "Commit time.").observe(0.02)

    def broken() -> list[object]:
        raise RuntimeError("a source that fails")

    telemetry.collect(broken)  # type: ignore[arg-type]
    got = samples(telemetry.render()[0])
    labels = (("service", "projector"), ("topic", "p.events"))
    assert got[("joblog_consumer_lag_records", labels)] == 5
    assert ("joblog_consumer_lag_seconds", labels) in got
    assert got[("joblog_ready", (("service", "projector"),))] == 0
    assert ("joblog_loop_seconds_since_turn", (("service", "projector"),)) in got
    assert got[("joblog_test_commit_seconds_count", ())] == 1
    assert any(name.startswith("process_") for name, _ in got)
    ready = True
    assert samples(telemetry.render()[0])[("joblog_ready", (("service", "projector"),))] == 1


def test_exposition_speaks_openmetrics_when_asked() -> None:
    telemetry = Telemetry("ui", process=False)
    body, content_type = exposition(telemetry.registry, "application/openmetrics-text")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


# --------------------------------------------------------------------- the endpoint


def test_the_endpoint_serves_metrics_and_health() -> None:
    ready = False
    telemetry = Telemetry("scheduler", ready=lambda: ready, process=False)
    with serving(telemetry, PortRange(0, 0), "127.0.0.1") as server:
        assert server is not None and server.port
        status, body, _ = get(f"{server.url}/metrics")
        assert status == 200
        assert ("joblog_ready", (("service", "scheduler"),)) in samples(body)
        assert get(f"{server.url}/healthz")[:2] == (200, b"starting\n")
        assert get(f"{server.url}/readyz")[0] == 503
        telemetry.health.beat()
        ready = True
        assert get(f"{server.url}/readyz")[:2] == (200, b"ready\n")
        assert get(f"{server.url}/nothing")[0] == 404
        telemetry.health.stopped()
        assert get(f"{server.url}/healthz")[:2] == (503, b"stopped\n")
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{server.url}/healthz", timeout=5)


def test_processes_on_one_host_take_the_next_free_port_of_a_range() -> None:
    first = _free_port_pair()
    holder = socket.socket()
    holder.bind(("127.0.0.1", first))
    holder.listen()
    try:
        telemetry = Telemetry("worker", process=False)
        with serving(telemetry, f"{first}-{first + 1}", "127.0.0.1") as server:
            assert server is not None
            assert server.port == first + 1
            assert get(f"{server.url}/healthz")[0] == 200
        taken = MetricsServer(telemetry, PortRange(first, first), "127.0.0.1")
        with pytest.raises(ConfigurationError, match="no free port"):
            taken.start()
    finally:
        holder.close()


def test_no_endpoint_when_the_port_is_zero() -> None:
    with serving(Telemetry("notifier", process=False), "0") as server:
        assert server is None


def _free_port_pair() -> int:
    """A port p such that p and p + 1 were both free a moment ago."""
    for _ in range(50):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
        probe.close()
        if port >= 65535:
            continue
        with socket.socket() as other:
            try:
                other.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two free ports in a row")


# --------------------------------------------------------------------- the command line


def test_the_command_line_takes_a_port_or_a_range_with_the_environment_as_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PORT_ENV, "9400-9403")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).metrics_port == PortRange(9400, 9403)
    assert parser.parse_args(["--metrics-port", "9500"]).metrics_port == PortRange(9500, 9500)
    assert parser.parse_args(["--metrics-port", "0"]).metrics_port is None
    assert parser.parse_args([]).metrics_host == "0.0.0.0"
    with pytest.raises(SystemExit):
        parser.parse_args(["--metrics-port", "web"])


# --------------------------------------------------------------------- docs and dashboards

ROOT = Path(__file__).resolve().parents[2]
_METRIC = re.compile(r"\b((?:joblog|process)_[a-z_]+)")


def _documented() -> set[str]:
    text = (ROOT / "docs" / "operations.md").read_text()
    return set(re.findall(r"^\| `((?:joblog)_[a-z_]+)` \|", text, flags=re.MULTILINE))


def test_every_counted_metric_is_documented() -> None:
    tables = (SCHEDULER_COUNTS, WORKER_COUNTS, PROJECTOR_COUNTS, NOTIFIER_COUNTS)
    counted = {spec.name for table in tables for spec in table.values()}
    assert counted <= _documented(), counted - _documented()


def test_the_dashboard_and_the_scrape_config_name_what_exists() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "joblog.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    suffixes = ("_bucket", "_count", "_sum")
    named = {
        name.removesuffix(next((s for s in suffixes if name.endswith(s)), ""))
        for expr in exprs
        for name in _METRIC.findall(expr)
    }
    assert named <= _documented(), named - _documented()
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in scrape["scrape_configs"]}
    assert jobs == {f"joblog-{s}" for s in ("scheduler", "worker", "projector", "notifier")}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for service in ("scheduler", "worker", "projector", "notifier"):
        assert compose[service]["environment"]["JOBLOG_METRICS_PORT"] == "9400", service
        assert "healthz" in " ".join(compose[service]["healthcheck"]["test"]), service
