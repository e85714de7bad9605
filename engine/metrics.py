"""Prometheus metrics and health endpoints of joblog's services.

Every service (scheduler, worker, projector, notifier, web ui) owns one :class:`Telemetry`:
its own registry (several services can share a process, each with its own), its
:class:`Health` (``/healthz``: the loop is turning; ``/readyz``: partitions assigned), and the
:class:`ConsumerLag` of its consumer. :class:`MetricsServer` serves the three paths over HTTP
on a port, or the first free port of a range, so that several workers on one host never
collide; :func:`serving` is what the command lines use.

Counting costs next to nothing on the hot paths: the services keep counting in the plain
``Counter``\\ s they already had, and those are turned into Prometheus families only when
``/metrics`` is scraped (:class:`Count` tables and :func:`count_families`). What cannot wait
for a scrape is done once per batch: a histogram observation per transaction, the newest
record timestamp of a batch (:meth:`ConsumerLag.seen`), and librdkafka's statistics every
few seconds (:meth:`ConsumerLag.on_stats`) for the records behind.

A web server of its own (the ui) mounts a registry with :func:`exposition`. Every metric,
its type, labels and meaning is listed in ``docs/operations.md``.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.errors import ConfigurationError

log = logging.getLogger("joblog.metrics")

#: The port (``9400``), port range (``9400-9409``) or ``0`` (off) of a service's endpoint.
PORT_ENV = "JOBLOG_METRICS_PORT"
#: The address the endpoint listens on (default all interfaces).
HOST_ENV = "JOBLOG_METRICS_HOST"
DEFAULT_HOST = "0.0.0.0"

#: Buckets of the transaction and commit time histograms, in seconds.
TIME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: How often librdkafka hands a consumer's statistics (records behind) to the service.
STATS_INTERVAL_MS = 5_000

#: A loop that has not turned for this long is reported dead by ``/healthz``. Long enough
#: for the slowest step a healthy loop takes (a scheduler rebuilding a partition, up to 60 s).
STALE_AFTER_S = 120.0


# --------------------------------------------------------------------- where it listens


class PortRange(NamedTuple):
    """The ports an endpoint may bind: the first free one from ``first`` to ``last``.

    ``PortRange(0, 0)`` binds a port the kernel picks (tests).
    """

    first: int
    last: int

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


def parse_ports(value: str | int | None) -> PortRange | None:
    """Reads ``--metrics-port``: ``PORT``, ``FIRST-LAST``, or ``0``/empty for no endpoint.

    Raises:
        ConfigurationError: not a port, or a range that is empty or out of 1-65535.
    """
    text = str(value if value is not None else "").strip()
    if text in ("", "0"):
        return None
    first_text, _, last_text = text.partition("-")
    try:
        first = int(first_text)
        last = int(last_text) if last_text else first
    except ValueError:
        raise ConfigurationError(
            f"metrics port {text!r} is not a port, a range like 9400-9409, or 0 (off)"
        ) from None
    if not 1 <= first <= last <= 65535:
        raise ConfigurationError(
            f"metrics port {text!r} must be a port or a rising range within 1-65535"
        )
    return PortRange(first, last)


def default_ports(env: Mapping[str, str] | None = None) -> str:
    """The ``--metrics-port`` default: ``$JOBLOG_METRICS_PORT``, else ``0`` (off)."""
    return (os.environ if env is None else env).get(PORT_ENV, "0")


def default_host(env: Mapping[str, str] | None = None) -> str:
    """The ``--metrics-host`` default: ``$JOBLOG_METRICS_HOST``, else all interfaces."""
    return (os.environ if env is None else env).get(HOST_ENV, DEFAULT_HOST)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--metrics-port`` and ``--metrics-host`` to a service's command line."""
    parser.add_argument(
        "--metrics-port",
        type=_port_argument,
        default=default_ports(),
        help="serve /metrics, /healthz and /readyz on this port, or on the first free one "
        "of a range like 9400-9409 (several processes on one host); 0: off "
        f"(default: ${PORT_ENV} or 0)",
    )
    parser.add_argument(
        "--metrics-host",
        default=default_host(),
        help=f"address of the metrics endpoint (default: ${HOST_ENV} or {DEFAULT_HOST})",
    )


def _port_argument(text: str) -> PortRange | None:
    try:
        return parse_ports(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --------------------------------------------------------------------- health


class Health:
    """Liveness and readiness of one service loop.

    Args:
        ready: whether the service is ready (has its partitions); always ready when omitted.
        stale_after_s: a loop that has not turned for this long is not live. A loop that has
            not turned yet counts from the creation of this object (start-up is live).
    """

    def __init__(
        self, ready: Callable[[], bool] | None = None, stale_after_s: float = STALE_AFTER_S
    ) -> None:
        self._ready = ready
        self.stale_after_s = stale_after_s
        self._beat = time.monotonic()
        self._turned = False
        self._stopped = False

    def beat(self) -> None:
        """The loop turned once (call it every turn: one clock read)."""
        self._beat = time.monotonic()
        self._turned = True

    def stopped(self) -> None:
        """The loop has ended: the service is no longer live."""
        self._stopped = True

    def seconds_since_beat(self) -> float:
        """How long ago the loop last turned (or this object was made)."""
        return time.monotonic() - self._beat

    def liveness(self) -> tuple[bool, str]:
        """Whether the loop is turning, and a line that says so."""
        if self._stopped:
            return False, "stopped"
        age = self.seconds_since_beat()
        if age > self.stale_after_s:
            return False, f"the loop has not turned for {age:.1f} s"
        if not self._turned:
            return True, "starting"
        return True, f"ok: the loop turned {age:.3f} s ago"

    def readiness(self) -> tuple[bool, str]:
        """Whether the service is live and ready, and a line that says so."""
        live, why = self.liveness()
        if not live:
            return False, why
        if self._ready is not None and not self._ready():
            return False, "not ready: no partitions assigned yet"
        return True, "ready"


# --------------------------------------------------------------------- consumer lag


class _Record(Protocol):
    def topic(self) -> str | None: ...

    def timestamp(self) -> tuple[int, int]: ...


@dataclass
class ConsumerLag:
    """How far one consumer is behind, per topic: in records and in seconds.

    Records behind come from librdkafka's statistics (each assigned partition's last stable
    offset less the position consumed, summed per topic), refreshed every ``interval_ms``.
    Seconds behind is the age of the newest record consumed from the topic while records are
    behind, and 0 once the consumer is caught up.

    Attributes:
        interval_ms: how often librdkafka reports statistics.
    """

    interval_ms: int = STATS_INTERVAL_MS
    _behind: dict[str, int] = field(default_factory=dict)
    _ends: dict[tuple[str, int], int] = field(default_factory=dict)
    _newest_ms: dict[str, int] = field(default_factory=dict)

    def consumer_config(self) -> dict[str, object]:
        """The consumer settings that hand its statistics to :meth:`on_stats`."""
        return {"statistics.interval.ms": self.interval_ms, "stats_cb": self.on_stats}

    def on_stats(self, payload: str) -> None:
        """Takes librdkafka's statistics (JSON) of the consumer; runs in its poll thread."""
        try:
            stats = json.loads(payload)
        except ValueError:
            return
        behind: dict[str, int] = {}
        ends: dict[tuple[str, int], int] = {}
        for topic, data in (stats.get("topics") or {}).items():
            for key, part in (data.get("partitions") or {}).items():
                partition = int(key)
                if partition < 0 or not part.get("desired"):
                    continue  # the internal "-1" entry, or a partition not assigned here
                end = int(part.get("ls_offset", -1))
                if end < 0:
                    end = int(part.get("hi_offset", -1))
                # the position consumed, not the committed offset: the scheduler commits its
                # offsets in its transactions, which the consumer's own figures never see
                position = int(part.get("app_offset", -1))
                if position < 0:
                    position = int(part.get("committed_offset", -1))
                if end >= 0:
                    ends[(topic, partition)] = end
                if end >= 0 and position >= 0:
                    lag = end - position
                else:
                    lag = int(part.get("consumer_lag", -1))
                behind[topic] = behind.get(topic, 0) + max(lag, 0)
        self._behind, self._ends = behind, ends

    def seen(self, records: Sequence[_Record]) -> None:
        """Notes the newest record timestamp per topic of a consumed batch (once per batch)."""
        found: dict[str, int] = {}
        for record in reversed(records[-256:]):
            topic = record.topic()
            if topic is None or topic in found:
                continue
            kind, ms = record.timestamp()
            if kind:  # 0: the record has no timestamp (or it is an error)
                found[topic] = ms
        if found:
            self._newest_ms.update(found)

    def records_behind(self) -> dict[str, int]:
        """Records behind per topic, as of the last statistics."""
        return dict(self._behind)

    def ends(self) -> dict[tuple[str, int], int]:
        """The end (last stable offset) of every assigned partition, as of the last statistics."""
        return dict(self._ends)

    def seconds_behind(self, topic: str, behind: int, now_ms: int | None = None) -> float:
        """Seconds behind on ``topic`` given the records behind it (0 when caught up)."""
        newest = self._newest_ms.get(topic)
        if behind <= 0 or newest is None:
            return 0.0
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return max(0.0, (now - newest) / 1000)

    def families(self, service: str) -> list[Metric]:
        """``joblog_consumer_lag_records`` and ``joblog_consumer_lag_seconds``."""
        records = GaugeMetricFamily(
            "joblog_consumer_lag_records",
            "Records the service's consumer is behind the end of each topic.",
            labels=["service", "topic"],
        )
        seconds = GaugeMetricFamily(
            "joblog_consumer_lag_seconds",
            "Age of the newest record consumed from each topic while records are behind.",
            labels=["service", "topic"],
        )
        for topic, behind in sorted(self.records_behind().items()):
            records.add_metric([service, topic], behind)
            seconds.add_metric([service, topic], self.seconds_behind(topic, behind))
        return [records, seconds]


# --------------------------------------------------------------------- counts


@dataclass(frozen=True)
class Count:
    """How one key of a service's ``Counter`` becomes a Prometheus counter.

    Attributes:
        name: the metric's name (ending in ``_total``).
        documentation: its help line.
        labels: constant labels of this key's series.
        label: for a key ending in ``.`` (a prefix such as ``finished.``), the label that
            takes the rest of each matching key (``finished.COMPLETED`` -> ``COMPLETED``).
    """

    name: str
    documentation: str
    labels: Mapping[str, str] = field(default_factory=dict)
    label: str | None = None


def count_families(counts: Mapping[str, int], table: Mapping[str, Count]) -> list[Metric]:
    """The counters of ``table`` with their values in ``counts`` (0 for a key not counted yet).

    Several keys can feed one metric with different labels; a prefix key adds one series per
    matching key.
    """
    families: dict[str, CounterMetricFamily] = {}
    for key, spec in table.items():
        names = [*spec.labels] + ([spec.label] if spec.label else [])
        family = families.get(spec.name)
        if family is None:
            family = CounterMetricFamily(spec.name, spec.documentation, labels=names)
            families[spec.name] = family
        values = list(spec.labels.values())
        if spec.label is None:
            family.add_metric(values, counts.get(key, 0))
            continue
        for counted, value in sorted(counts.items()):
            if counted.startswith(key):
                family.add_metric([*values, counted[len(key) :]], value)
    return list(families.values())


def class_families(
    name: str, documentation: str, label: str, counts: Mapping[type, int]
) -> CounterMetricFamily:
    """A counter with one series per class counted (``Counter[type]``, the cheapest key)."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for kind, value in sorted((cls.__name__, value) for cls, value in counts.items()):
        family.add_metric([kind], value)
    return family


def gauge(name: str, documentation: str, value: float, **labels: str) -> GaugeMetricFamily:
    """A gauge family of one series."""
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


# --------------------------------------------------------------------- what each service counts

#: The scheduler's ``Metrics.counts`` as counters.
SCHEDULER_COUNTS: Mapping[str, Count] = {
    "transactions": Count(
        "joblog_scheduler_transactions_total", "Kafka transactions the scheduler committed."
    ),
    "commands": Count(
        "joblog_scheduler_records_consumed_total",
        "Records decoded from the input topics.",
        {"topic": "commands"},
    ),
    "reports": Count(
        "joblog_scheduler_records_consumed_total",
        "Records decoded from the input topics.",
        {"topic": "reports"},
    ),
    "events": Count(
        "joblog_scheduler_records_produced_total",
        "Records the scheduler produced, by kind.",
        {"kind": "event"},
    ),
    "dispatches": Count(
        "joblog_scheduler_records_produced_total",
        "Records the scheduler produced, by kind.",
        {"kind": "dispatch"},
    ),
    "controls": Count(
        "joblog_scheduler_records_produced_total",
        "Records the scheduler produced, by kind.",
        {"kind": "control"},
    ),
    "key_commands": Count(
        "joblog_scheduler_records_produced_total",
        "Records the scheduler produced, by kind.",
        {"kind": "key_command"},
    ),
    "snapshot_records": Count(
        "joblog_scheduler_records_produced_total",
        "Records the scheduler produced, by kind.",
        {"kind": "snapshot"},
    ),
    "snapshots": Count("joblog_scheduler_snapshots_total", "Submission snapshots written."),
    "timers": Count("joblog_scheduler_timers_total", "Timers that fired (retries, timeouts)."),
    "rejections": Count("joblog_scheduler_rejections_total", "Commands rejected."),
    "throttled": Count(
        "joblog_scheduler_submissions_throttled_total",
        "New submissions answered SubmissionThrottled (admission control).",
    ),
    "stale_reports": Count(
        "joblog_scheduler_stale_reports_total", "Worker reports the rules ignored as stale."
    ),
    "poison_batches": Count(
        "joblog_scheduler_poison_batches_total",
        "Batches that could not be written and were bisected to their poison record.",
    ),
    "dead_letters": Count(
        "joblog_dead_letters_total",
        "Records sent to the dead-letter topic.",
        {"service": "scheduler"},
    ),
    "restarts": Count(
        "joblog_restarts_total",
        "Times the service replaced its clients (and the scheduler its book).",
        {"service": "scheduler", "what": "clients_and_book"},
    ),
}

#: The worker's ``metrics`` counter as counters.
WORKER_COUNTS: Mapping[str, Count] = {
    "claimed": Count("joblog_worker_attempts_claimed_total", "Attempts the worker claimed."),
    "finished.": Count(
        "joblog_worker_attempts_finished_total",
        "Attempts that ended on this worker, by outcome.",
        label="outcome",
    ),
    "kills": Count("joblog_worker_kills_total", "Kills of running attempts received."),
    "duplicates": Count(
        "joblog_worker_duplicate_dispatches_total",
        "Dispatch records not run again (running or finished here already).",
    ),
    "heartbeats": Count("joblog_worker_heartbeats_total", "Heartbeat rounds sent."),
    "dead_letters": Count(
        "joblog_dead_letters_total", "Records sent to the dead-letter topic.", {"service": "worker"}
    ),
}

#: The projector's ``ProjectorStats`` as counters.
PROJECTOR_COUNTS: Mapping[str, Count] = {
    "events": Count("joblog_projection_events_total", "Events folded into the projection."),
    "duplicates": Count(
        "joblog_projection_duplicate_events_total", "Events skipped as already folded in."
    ),
    "heartbeats": Count(
        "joblog_projection_heartbeats_total", "Heartbeats and departures folded into workers."
    ),
    "batches": Count("joblog_projection_batches_total", "DuckDB transactions committed."),
    "dead_letters": Count(
        "joblog_dead_letters_total",
        "Records sent to the dead-letter topic.",
        {"service": "projector"},
    ),
    "restarts": Count(
        "joblog_restarts_total",
        "Times the service replaced its clients (and the scheduler its book).",
        {"service": "projector", "what": "consumer"},
    ),
}

#: The notifier's ``metrics`` counter as counters.
NOTIFIER_COUNTS: Mapping[str, Count] = {
    "events": Count("joblog_notify_events_total", "Events the notifier read."),
    "messages": Count(
        "joblog_notify_messages_total", "Notifications rendered for delivery (webhook or mail)."
    ),
    **{
        key: Count(
            "joblog_notify_deliveries_total",
            "Delivery attempts by outcome: delivered, retrying (failed, tried again), "
            "gave_up (failed for good), revoked (its partition went elsewhere), refused "
            "(target outside the webhook allow-list).",
            {"outcome": outcome},
        )
        for key, outcome in (
            ("delivered", "delivered"),
            ("retries", "retrying"),
            ("gave_up", "gave_up"),
            ("revoked", "revoked"),
            ("refused", "refused"),
        )
    },
    **{
        key: Count(
            "joblog_notify_errors_total",
            "Events or deliveries the notifier could not handle, by stage.",
            {"stage": stage},
        )
        for key, stage in (
            ("fold_errors", "fold"),
            ("render_errors", "render"),
            ("log_errors", "log"),
        )
    },
}


# --------------------------------------------------------------------- one service


class _Scrape(Collector):
    """Builds the families of the telemetry's sources when the registry is collected."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def describe(self) -> Iterable[Metric]:
        return []  # the sources read the service, which may not have started yet

    def collect(self) -> Iterable[Metric]:
        telemetry = self.telemetry
        service = telemetry.service
        yield from telemetry.lag.families(service)
        health = telemetry.health
        yield gauge(
            "joblog_loop_seconds_since_turn",
            "Seconds since the service's loop last turned.",
            health.seconds_since_beat(),
            service=service,
        )
        yield gauge(
            "joblog_ready",
            "1 when the service is ready (partitions assigned), else 0.",
            1.0 if health.readiness()[0] else 0.0,
            service=service,
        )
        for source in list(telemetry.sources):
            try:
                yield from source()
            except Exception as exc:  # one broken source must not hide the others
                log.warning("metrics source %r failed: %r", source, exc)


class Telemetry:
    """The metrics and health of one service instance.

    Args:
        service: ``scheduler``, ``worker``, ``projector``, ``notifier``, ``ui``: the
            ``service`` label of the families every service shares.
        ready: whether the service is ready (see :class:`Health`).
        stale_after_s: see :class:`Health`.
        process: also export the process' CPU, memory and file descriptors
            (``process_*``).

    Attributes:
        registry: this service's registry (serve it, or mount it with :func:`exposition`).
        health: the loop's liveness and readiness.
        lag: the lag of the service's consumer.
        sources: functions called at each scrape, each returning metric families.
    """

    def __init__(
        self,
        service: str,
        *,
        ready: Callable[[], bool] | None = None,
        stale_after_s: float = STALE_AFTER_S,
        process: bool = True,
    ) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self.health = Health(ready, stale_after_s)
        self.lag = ConsumerLag()
        self.sources: list[Callable[[], Iterable[Metric]]] = []
        self.registry.register(_Scrape(self))
        if process:
            ProcessCollector(registry=self.registry)

    def collect(self, source: Callable[[], Iterable[Metric]]) -> None:
        """Adds a source of families, called at each scrape (not on the service's loop)."""
        self.sources.append(source)

    def counts(self, counts: Callable[[], Mapping[str, int]], table: Mapping[str, Count]) -> None:
        """Exports a service's ``Counter`` through ``table`` (read at each scrape)."""
        self.collect(lambda: count_families(dict(counts()), table))

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = TIME_BUCKETS,
    ) -> Histogram:
        """A histogram in this registry (observe it once per batch, not per record)."""
        return Histogram(
            name, documentation, labelnames, registry=self.registry, buckets=tuple(buckets)
        )

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        """A counter in this registry, for what no ``Counter`` of the service counts."""
        return Counter(name, documentation, labelnames, registry=self.registry)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry's exposition and its content type (see :func:`exposition`)."""
        return exposition(self.registry, accept)


def exposition(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """A registry's metrics as a ``GET /metrics`` answers them.

    Args:
        registry: what to expose (:attr:`Telemetry.registry`).
        accept: the request's ``Accept`` header: OpenMetrics when it asks for it, else the
            Prometheus text format.

    Returns:
        The body and its ``Content-Type``.
    """
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


# --------------------------------------------------------------------- the endpoint


class MetricsServer:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` of one service over HTTP.

    ``/healthz`` and ``/readyz`` answer 200 or 503 with a line of text that says why.

    Args:
        telemetry: what to serve.
        ports: the port, or the range whose first free port is bound.
        host: the address to listen on.
    """

    #: Longest wait for a request's bytes: a slow client never holds a handler thread.
    REQUEST_TIMEOUT_S = 10.0

    def __init__(self, telemetry: Telemetry, ports: PortRange, host: str = DEFAULT_HOST) -> None:
        self.telemetry = telemetry
        self.ports = ports
        self.host = host
        self.port: int | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the endpoint (``127.0.0.1`` for all interfaces)."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> int:
        """Binds the first free port of the range and serves on a daemon thread.

        Returns:
            The port bound.

        Raises:
            ConfigurationError: every port of the range is taken.
        """
        handler = _handler(self.telemetry, self.REQUEST_TIMEOUT_S)
        taken: OSError | None = None
        for port in range(self.ports.first, self.ports.last + 1):
            try:
                server = ThreadingHTTPServer((self.host, port), handler)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                taken = exc
                continue
            server.daemon_threads = True
            self._server = server
            self.port = int(server.server_address[1])
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.5},
                name=f"metrics-{self.telemetry.service}",
                daemon=True,
            )
            self._thread.start()
            log.info("%s metrics and health on %s", self.telemetry.service, self.url)
            return self.port
        raise ConfigurationError(
            f"no free port for the {self.telemetry.service}'s metrics in {self.ports} "
            f"({taken}); give each process on this host its own --metrics-port, or a range"
        )

    def fileno(self) -> int:
        """The listening socket's descriptor (a worker keeps it from its task processes).

        Raises:
            RuntimeError: the server is not started.
        """
        if self._server is None:
            raise RuntimeError("the metrics server is not started")
        return self._server.fileno()

    def stop(self) -> None:
        """Stops serving and closes the socket (within about a second)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)


def _handler(telemetry: Telemetry, timeout_s: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = timeout_s

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, content_type = telemetry.render(self.headers.get("Accept"))
                self._answer(200, body, content_type)
            elif path in ("/healthz", "/readyz"):
                health = telemetry.health
                good, why = health.liveness() if path == "/healthz" else health.readiness()
                self._answer(200 if good else 503, f"{why}\n".encode(), "text/plain")
            else:
                self._answer(404, b"/metrics, /healthz or /readyz\n", "text/plain")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


@contextmanager
def serving(
    telemetry: Telemetry, ports: str | int | PortRange | None, host: str | None = None
) -> Iterator[MetricsServer | None]:
    """Serves a service's metrics and health for the length of the block (none if off).

    Args:
        telemetry: the service's telemetry.
        ports: ``--metrics-port`` as given (see :func:`parse_ports`), or a range.
        host: the address to listen on (``$JOBLOG_METRICS_HOST`` or all interfaces).

    Raises:
        ConfigurationError: the ports are malformed or all taken.
    """
    wanted = ports if isinstance(ports, PortRange) else parse_ports(ports)
    if wanted is None:
        yield None
        return
    server = MetricsServer(telemetry, wanted, host or default_host())
    server.start()
    try:
        yield server
    finally:
        server.stop()


__all__ = [
    "DEFAULT_HOST",
    "HOST_ENV",
    "NOTIFIER_COUNTS",
    "PORT_ENV",
    "PROJECTOR_COUNTS",
    "SCHEDULER_COUNTS",
    "STALE_AFTER_S",
    "STATS_INTERVAL_MS",
    "TIME_BUCKETS",
    "WORKER_COUNTS",
    "ConsumerLag",
    "Count",
    "Health",
    "MetricsServer",
    "PortRange",
    "Telemetry",
    "add_arguments",
    "class_families",
    "count_families",
    "default_host",
    "default_ports",
    "exposition",
    "gauge",
    "parse_ports",
    "serving",
]
