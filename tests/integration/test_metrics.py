"""Every service's /metrics, /healthz and /readyz against a real broker.

A scheduler, a worker, a projector and a notifier run in threads, each serving its own
endpoint on a port the kernel picks, as ``--metrics-port`` makes them do; a few jobs run; the
counters are scraped over HTTP. A scheduler started by its command line serves its endpoint
on the port given.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from engine import Job, Joblog, SubmissionStatus
from engine.config import Settings
from engine.metrics import MetricsServer, PortRange, Telemetry, serving
from engine.notify import Notifier, NotifierOptions, parse_subscriptions
from engine.scheduler.service import Scheduler, SchedulerConfig
from engine.worker import Worker
from projections.projector import Projector
from tests.integration.test_client import FAST, POLICY, REGISTRY
from tests.integration.test_notify import QUICK
from tests.unit.test_notify_endpoints import WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: MetricsServer) -> Samples:
    """``(sample name, sorted labels) -> value`` of one ``GET /metrics``."""
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def eventually(server: MetricsServer, check: Callable[[Samples], bool], what: str) -> Samples:
    """Scrapes until ``check`` holds (generous timeout: the machine is shared)."""
    deadline = time.monotonic() + 90
    while True:
        samples = scrape(server)
        if check(samples):
            return samples
        if time.monotonic() > deadline:
            relevant = {k: v for k, v in samples.items() if k[0].startswith("joblog_")}
            raise AssertionError(f"{what} never held; last scrape: {relevant}")
        time.sleep(0.5)


@contextmanager
def running(
    service: Callable[[threading.Event], object], telemetry: Telemetry, name: str
) -> Iterator[MetricsServer]:
    """Runs a service's loop in a thread and serves its endpoint on a free port."""
    telemetry.lag.interval_ms = 1_000  # lag figures within a second, not five
    stop = threading.Event()
    with serving(telemetry, PortRange(0, 0), "127.0.0.1") as server:
        assert server is not None
        thread = threading.Thread(target=service, args=(stop,), name=name, daemon=True)
        thread.start()
        try:
            yield server
        finally:
            stop.set()
            thread.join(30)
            assert not thread.is_alive(), f"the {name} did not stop"


def test_every_service_counts_what_it_did_and_answers_health(
    settings: Settings, tmp_path: Path
) -> None:
    receiver = WebhookReceiver().start()
    receiver.fail_first("/done/", 1)
    subscriptions = parse_subscriptions(
        {
            "subscriptions": [
                {"id": "done", "url": receiver.url + "/done/${JOB_ID}", "events": ["JobCompleted"]}
            ]
        }
    )
    scheduler = Scheduler(
        settings, policy=POLICY, config=SchedulerConfig(instance_id=f"sch-{uuid.uuid4().hex}")
    )
    worker = Worker(settings, "default", 2, REGISTRY, "metrics-w1", options=FAST)
    projector = Projector(settings, tmp_path / "joblog.duckdb", poll_timeout=0.1)
    notifier = Notifier(
        settings,
        subscriptions,
        deliveries=tmp_path / "deliveries.jsonl",
        options=NotifierOptions(retry=QUICK, timeout_s=5, commit_interval_s=0.2),
    )
    with ExitStack() as stack:
        servers = {
            name: stack.enter_context(running(service.run, service.telemetry, name))
            for name, service in [
                ("scheduler", scheduler),
                ("worker", worker),
                ("projector", projector),
                ("notifier", notifier),
            ]
        }
        for name, server in servers.items():
            assert status(f"{server.url}/healthz") == 200, name
        assert scheduler.ready.wait(60), "the scheduler never got its partitions"
        assert worker.ready.wait(60), "the worker got no partitions"
        assert projector.ready.wait(60), "the projector never got its partitions"
        assert notifier.ready.wait(60), "the notifier never got its partitions"
        for name, server in servers.items():
            assert status(f"{server.url}/readyz") == 200, name
            ready = scrape(server)
            assert value(ready, "joblog_ready", service=name) == 1, name

        jl = Joblog(settings)
        try:
            submission = jl.submit(*(Job(f"j{n}", task="double", args=[n]) for n in range(3)))
            view = submission.wait_until_done(timeout=90)
        finally:
            jl.close()
        assert view.outcome is SubmissionStatus.COMPLETED

        decided = scrape(servers["scheduler"])
        assert value(decided, "joblog_scheduler_decisions_total", input="SubmitJobs") >= 1
        assert value(decided, "joblog_scheduler_decisions_total", input="Finished") >= 3
        assert value(decided, "joblog_scheduler_events_total", event="JobCompleted") == 3
        assert value(decided, "joblog_scheduler_events_total", event="SubmissionAccepted") == 1
        assert value(decided, "joblog_scheduler_transactions_total") >= 1
        assert value(decided, "joblog_scheduler_records_produced_total", kind="dispatch") == 3
        assert value(decided, "joblog_scheduler_transaction_seconds_count", step="commit") >= 1
        assert value(decided, "joblog_scheduler_partitions") == settings.partitions
        assert value(decided, "joblog_dead_letters_total", service="scheduler") == 0
        eventually(
            servers["scheduler"],
            lambda s: ("joblog_consumer_lag_records", _lag("scheduler", settings, "reports")) in s,
            "the scheduler's lag on reports",
        )

        ran = scrape(servers["worker"])
        assert value(ran, "joblog_worker_attempts_claimed_total") == 3
        assert value(ran, "joblog_worker_attempts_finished_total", outcome="COMPLETED") == 3
        assert value(ran, "joblog_worker_slots", state="total") == 2
        assert value(ran, "joblog_worker_slots", state="busy") == 0
        assert value(ran, "joblog_worker_attempts_running") == 0
        eventually(
            servers["worker"],
            lambda s: (
                value(s, "joblog_consumer_lag_records", **_lag_of("worker", settings)) == 0
                and ("joblog_consumer_lag_records", _lag("worker", settings, "dispatch.default"))
                in s
            ),
            "the worker's lag on its dispatch topic",
        )

        projected = eventually(
            servers["projector"],
            lambda s: value(s, "joblog_jobs", status="COMPLETED") == 3,
            "three completed jobs in the projection",
        )
        assert value(projected, "joblog_projection_events_total") > 0
        assert value(projected, "joblog_projection_batches_total") > 0
        assert value(projected, "joblog_projection_commit_seconds_count") > 0
        eventually(
            servers["projector"],
            lambda s: (
                ("joblog_projection_lag_records", (("topic", settings.topic_prefix + "events"),))
                in s
                and value(
                    s, "joblog_projection_lag_records", topic=settings.topic_prefix + "events"
                )
                == 0
            ),
            "the projection caught up with events",
        )

        delivered = eventually(
            servers["notifier"],
            lambda s: value(s, "joblog_notify_deliveries_total", outcome="delivered") == 3,
            "three webhooks delivered",
        )
        assert value(delivered, "joblog_notify_deliveries_total", outcome="retrying") == 1
        assert value(delivered, "joblog_notify_deliveries_total", outcome="gave_up") == 0
        assert value(delivered, "joblog_notify_events_total") > 0
        assert len(receiver.wait_for(4, path_prefix="/done/")) == 4

        for name, server in servers.items():
            final = scrape(server)
            assert value(final, "joblog_loop_seconds_since_turn", service=name) < 60, name
            assert any(key[0].startswith("process_") for key in final), name


def _lag(service: str, settings: Settings, topic: str) -> tuple[tuple[str, str], ...]:
    return (("service", service), ("topic", settings.topic_prefix + topic))


def _lag_of(service: str, settings: Settings) -> dict[str, str]:
    return {"service": service, "topic": settings.topic_prefix + "dispatch.default"}


def test_the_scheduler_command_line_serves_metrics_on_the_port_given(settings: Settings) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "JOBLOG_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "JOBLOG_TOPIC_PREFIX": settings.topic_prefix,
        "JOBLOG_METRICS_PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.scheduler", "--instance-id", f"cli-{uuid.uuid4().hex[:6]}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if status(f"{url}/readyz") == 200:
                    break
            except urllib.error.URLError:
                pass  # not listening yet
            assert process.poll() is None, "the scheduler exited"
            assert time.monotonic() < deadline, "the scheduler never became ready"
            time.sleep(0.5)
        assert status(f"{url}/healthz") == 200
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            body = response.read().decode()
        assert 'joblog_ready{service="scheduler"} 1.0' in body
        assert "joblog_scheduler_transactions_total" in body
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(60) == 0
        finally:
            if process.poll() is None:
                process.kill()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
