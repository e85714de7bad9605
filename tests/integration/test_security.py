"""joblog on a broker with SASL/SCRAM and ACLs enforced, one principal per service.

The test starts its own local broker with a SASL_PLAINTEXT listener (SCRAM-SHA-512) and the
StandardAuthorizer, creates the topics as the admin, applies ``joblog acls --apply``, then
runs the scheduler, a worker and a projector as processes, each with its own principal given
through the ``JOBLOG_KAFKA_*`` variables, and a client in this process with the client's.
The happy path works; a client cannot forge an event, a report, a dispatch, a control signal
or a snapshot, nor take the scheduler's transactional id; a worker cannot write events.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from engine import kafka
from engine.acls import Role
from engine.admin import ensure_topics
from engine.api import Joblog
from engine.broker import LocalBroker
from engine.broker.security import BrokerSecurity, client_environment, new_password
from engine.config import Settings
from engine.errors import KafkaAuthenticationFailed
from engine.lifecycle.records import JobStatus, SubmissionStatus
from engine.topics import Topics

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "sec."
PRINCIPALS = {role: f"sec-{role.value}" for role in Role}

pytestmark = pytest.mark.timeout(300)


@dataclass(frozen=True)
class SecureCluster:
    broker: LocalBroker

    def settings(self, role: Role | None = None) -> Settings:
        """Settings of one service's principal (``None``: the admin)."""
        user = PRINCIPALS[role] if role is not None else None
        return Settings(
            bootstrap_servers=self.broker.bootstrap_servers,
            topic_prefix=PREFIX,
            partitions=3,
            kafka=self.broker.client_settings(user),
        )

    def environment(self, role: Role | None) -> dict[str, str]:
        """The environment of a joblog process running as ``role`` (``None``: the admin)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBLOG_")}
        env.update(
            JOBLOG_BOOTSTRAP_SERVERS=self.broker.bootstrap_servers,
            JOBLOG_TOPIC_PREFIX=PREFIX,
            PYTHONPATH=str(ROOT),
            **client_environment(self.settings(role).kafka),
        )
        return env


@pytest.fixture(scope="module")
def secure() -> Iterator[SecureCluster]:
    users = {name: new_password() for name in PRINCIPALS.values()}
    broker = LocalBroker.temporary(security=BrokerSecurity(users=users))
    with broker:
        cluster = SecureCluster(broker)
        ensure_topics(cluster.settings(), ["default"])
        applied = subprocess.run(
            [sys.executable, "-m", "engine.cli", "acls", "--apply", "--json"],
            env=cluster.environment(None),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert applied.returncode == 0, applied.stderr
        assert '"applied"' in applied.stdout
        yield cluster


@contextmanager
def service(
    secure: SecureCluster, role: Role, argv: list[str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", *argv],
            cwd=ROOT,
            env=secure.environment(role),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def eventually(check: Any, timeout: float, what: str, log_dir: Path) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {path.name}\n{path.read_text()[-3000:]}" for path in log_dir.glob("*.log")
            )
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.3)


def test_every_service_with_its_own_principal_runs_a_job(
    secure: SecureCluster, tmp_path: Path
) -> None:
    db = tmp_path / "projection.duckdb"
    with ExitStack() as stack:
        stack.enter_context(
            service(
                secure,
                Role.SCHEDULER,
                ["scheduler", "--instance-id", f"sec-{uuid.uuid4().hex[:6]}"],
                tmp_path / "scheduler.log",
            )
        )
        stack.enter_context(
            service(
                secure,
                Role.WORKER,
                ["worker", "--tasks", "tests.integration.sample_tasks", "--isolation", "thread"],
                tmp_path / "worker.log",
            )
        )
        stack.enter_context(
            service(secure, Role.PROJECTOR, ["projector", "--db", str(db)], tmp_path / "p.log")
        )
        client = Joblog(secure.settings(Role.CLIENT), db_path=db)
        stack.callback(client.close)
        submission = client.submit(task="add", args=[20, 22])
        view = submission.wait_until_done(timeout=120)
        assert view.outcome is SubmissionStatus.COMPLETED
        assert view.jobs["add"].status is JobStatus.COMPLETED and view.jobs["add"].result == "42"

        watched = [event.name for event in client.history(submission.id)]
        assert "JobSubmitted" in watched and "JobCompleted" in watched

        def projected() -> list[dict[str, Any]]:
            try:
                rows = client.query(
                    "SELECT status FROM jobs WHERE submission_id = ?", [submission.id]
                )
            except Exception:
                return []
            return [row for row in rows if row["status"] == "COMPLETED"]

        eventually(projected, 60, "the job COMPLETED in the projection", tmp_path)

        # A job of a queue nobody created yet: the scheduler creates its dispatch topic.
        gpu = client.submit(task="add", args=[1, 1], queue="gpu")
        gpu.event_wait("add", "JobPending", timeout=60)
        admin = kafka.admin_client(secure.settings())
        assert f"{PREFIX}dispatch.gpu" in admin.list_topics(timeout=10).topics


FORGED_BY_CLIENT = ["events", "reports", "dispatch.default", "control", "state"]


@pytest.mark.parametrize("topic", FORGED_BY_CLIENT)
def test_a_client_cannot_forge_scheduler_or_worker_records(
    secure: SecureCluster, topic: str
) -> None:
    assert produce_error(secure.settings(Role.CLIENT), PREFIX + topic) == (
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    )


@pytest.mark.parametrize("role", [Role.WORKER, Role.PROJECTOR, Role.NOTIFIER, Role.UI])
def test_only_the_scheduler_writes_events(secure: SecureCluster, role: Role) -> None:
    assert produce_error(secure.settings(role), Topics(PREFIX).events) == (
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    )


def test_the_principals_write_what_they_are_for(secure: SecureCluster) -> None:
    topics = Topics(PREFIX)
    assert produce_error(secure.settings(Role.CLIENT), topics.commands) is None
    assert produce_error(secure.settings(Role.WORKER), topics.reports) is None


def test_a_client_cannot_take_the_schedulers_transactional_id(secure: SecureCluster) -> None:
    producer = kafka.producer(
        secure.settings(Role.CLIENT), {"transactional.id": f"{PREFIX}scheduler.forged"}
    )
    with pytest.raises(KafkaException) as refused:
        producer.init_transactions(15)
    assert refused.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


def test_a_client_cannot_read_reports(secure: SecureCluster) -> None:
    settings = secure.settings(Role.CLIENT)
    reports = Topics(PREFIX).reports
    consumer = kafka.consumer(settings, f"{PREFIX}watch-{uuid.uuid4().hex}")
    try:
        described = consumer.list_topics(reports, timeout=10).topics[reports]
        assert described.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        consumer.subscribe([reports])
        error = None
        for _ in range(40):
            message = consumer.poll(0.5)
            if message is not None and message.error() is not None:
                error = message.error().code()
                break
        assert error == KafkaError.TOPIC_AUTHORIZATION_FAILED
    finally:
        consumer.close()


def test_a_wrong_password_is_refused_with_a_clear_error(secure: SecureCluster) -> None:
    settings = secure.settings(Role.CLIENT)
    wrong = replace(settings, kafka={**settings.kafka, "sasl.password": "not-the-password"})
    client = Joblog(wrong)
    try:
        with pytest.raises(KafkaAuthenticationFailed, match="refused this client's credentials"):
            client.submit(task="add", args=[1, 2])
    finally:
        client.close()
    env = secure.environment(Role.CLIENT)
    env["JOBLOG_KAFKA_SASL_PASSWORD"] = "not-the-password"
    cli = subprocess.run(
        [sys.executable, "-m", "engine.cli", "status", "s-unknown"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 1
    assert "refused this client's credentials" in cli.stderr
    assert "JOBLOG_KAFKA_SASL_PASSWORD" in cli.stderr


def produce_error(settings: Settings, topic: str) -> int | None:
    """The error code of one record produced to ``topic`` (``None``: it was written)."""
    outcome: list[KafkaError | None] = []
    producer: Producer = kafka.producer(settings, {"message.timeout.ms": 15000})
    producer.produce(topic, key=b"k", value=b"v", on_delivery=lambda err, _msg: outcome.append(err))
    producer.flush(20)
    assert outcome, f"no delivery report for {topic}"
    error = outcome[0]
    return None if error is None else error.code()


def test_a_sasl_ssl_broker_is_reached_only_by_clients_that_trust_its_authority(
    tmp_path: Path,
) -> None:
    with LocalBroker(tmp_path / "kafka", security=BrokerSecurity(tls=True)) as broker:
        trusting = broker.client_settings()
        assert trusting["security.protocol"] == "SASL_SSL" and "ssl.ca.location" in trusting
        settings = Settings(bootstrap_servers=broker.bootstrap_servers, topic_prefix="tls.")
        ensure_topics(replace(settings, kafka=trusting), ["default"])
        untrusting = {k: v for k, v in trusting.items() if k != "ssl.ca.location"}
        admin = kafka.admin_client(replace(settings, kafka=untrusting))
        with pytest.raises(KafkaException):
            admin.list_topics(timeout=5)
