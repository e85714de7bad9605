"""Admission control on the real broker: a busy engine throttles new submissions, clients
back off, submit again with new command ids and get in once the engine caught up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from engine import cli, kafka
from engine.admin import ensure_topics
from engine.api import Joblog
from engine.config import Settings
from engine.errors import EngineBusy, UnknownSubmission
from engine.lifecycle.admission import AdmissionLimits
from engine.lifecycle.records import (
    JobStatus,
    SubmissionAccepted,
    SubmissionThrottled,
    ThrottleCause,
)
from engine.scheduler.load import LoadMonitor
from engine.scheduler.service import Scheduler, SchedulerConfig
from engine.topics import Topics
from engine.ui.config import UiConfig
from engine.ui.server import UiServer
from engine.worker import Worker
from tests.integration.conftest import KafkaUnderTest
from tests.integration.kafka_io import events_by_submission, wait_for
from tests.integration.test_client import FAST, POLICY, REGISTRY, _thread
from tests.integration.test_scheduler import assert_contiguous

ROOT = Path(__file__).resolve().parents[2]
SUBMIT = ["--task", "double", "--arg", "5", "--queue", "cli", "--wait", "--wait-timeout", "120"]


def _settings(kafka_cluster: KafkaUnderTest) -> Settings:
    settings = Settings.from_env(
        bootstrap_servers=kafka_cluster.bootstrap_servers,
        topic_prefix=f"adm{uuid.uuid4().hex[:8]}.",
        partitions=1,
    )
    ensure_topics(settings)
    return settings


@contextmanager
def _scheduler(settings: Settings, limits: AdmissionLimits) -> Iterator[Scheduler]:
    scheduler = Scheduler(
        settings,
        policy=POLICY,
        config=SchedulerConfig(
            instance_id=f"adm-{uuid.uuid4().hex[:8]}", admission=limits, load_interval_s=0.5
        ),
    )
    with _thread(scheduler.run, "scheduler"):
        assert scheduler.ready.wait(60), "the scheduler never got its partitions"
        yield scheduler


@contextmanager
def _worker(settings: Settings, queue: str) -> Iterator[Worker]:
    worker = Worker(settings, queue, 4, REGISTRY, f"w-{queue}", options=FAST)
    with _thread(worker.run, f"worker-{queue}"):
        assert worker.ready.wait(60), "the worker got no partitions"
        yield worker


def _throttles(settings: Settings, submission_id: str) -> list[SubmissionThrottled]:
    events = events_by_submission(settings, timeout=10).get(submission_id, [])
    return [e.body for e in events if isinstance(e.body, SubmissionThrottled)]


def test_pending_jobs_over_the_limit_throttle_until_a_worker_takes_them(
    kafka_cluster: KafkaUnderTest,
) -> None:
    settings = _settings(kafka_cluster)
    told: list[tuple[EngineBusy, float]] = []
    with ExitStack() as stack:
        stack.enter_context(_scheduler(settings, AdmissionLimits(max_pending_jobs=2)))
        jl = stack.enter_context(
            Joblog(settings, on_throttled=lambda busy, delay: told.append((busy, delay)))
        )
        # no worker on the queue yet: two jobs wait there, PENDING
        first = [jl.submit(task="double", args=[n], queue="slow", wait=True) for n in range(2)]
        third = jl.submit(task="double", args=[2], queue="slow")
        decided: list[object] = []
        waiter = threading.Thread(target=lambda: decided.append(third.result(15)), daemon=True)
        waiter.start()
        wait_for(lambda: bool(told), 30, "the client to be told the engine is busy")
        busy, delay = told[0]
        assert busy.cause == ThrottleCause.PENDING_JOBS
        assert (busy.queue, busy.load, busy.limit) == ("slow", 2, 2)
        assert busy.submission_id == third.id and delay >= busy.retry_after
        with _worker(settings, "slow"):
            waiter.join(120)
            assert decided, "the throttled submission was never taken"
            accepted = decided[0]
            assert isinstance(getattr(accepted, "body", None), SubmissionAccepted)
            for submission in (*first, third):
                view = submission.wait_until_done(timeout=60)
                assert {j.status for j in view.jobs.values()} == {JobStatus.COMPLETED}
    throttles = _throttles(settings, third.id)
    assert throttles and all(t.cause == "pending_jobs" for t in throttles)
    assert third.command_id not in {t.command_id for t in throttles}, "a new command id"
    assert len({t.command_id for t in throttles}) == len(throttles)
    by = events_by_submission(settings, timeout=10)
    assert_contiguous(by)
    assert [e.seq for e in by[third.id] if isinstance(e.body, SubmissionThrottled)] == [0] * len(
        throttles
    )


def test_a_dispatch_backlog_throttles_the_command_line_which_says_so_and_retries(
    kafka_cluster: KafkaUnderTest, tmp_path: Path
) -> None:
    settings = _settings(kafka_cluster)
    limits = AdmissionLimits(max_pending_jobs=0, max_dispatch_backlog=2)
    with _scheduler(settings, limits) as scheduler, Joblog(settings) as jl:
        for n in range(2):
            jl.submit(task="double", args=[n], queue="cli", wait=True)
        assert scheduler.load is not None
        wait_for(
            lambda: (
                scheduler.load is not None
                and scheduler.load.latest.dispatch_backlog.get("cli", 0) >= 2
            ),
            30,
            "the monitor to see the backlog",
        )
        env = dict(
            os.environ,
            JOBLOG_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
            JOBLOG_TOPIC_PREFIX=settings.topic_prefix,
        )
        err_path = tmp_path / "stderr"
        with open(err_path, "w") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "engine.cli", "submit", *SUBMIT],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
            try:
                wait_for(
                    lambda: "engine busy (dispatch_backlog)" in err_path.read_text(),
                    60,
                    "the command line to say the engine is busy",
                )
                with _worker(settings, "cli"):
                    out, _ = process.communicate(timeout=120)
            finally:
                if process.poll() is None:
                    process.kill()
        assert process.returncode == 0, err_path.read_text()
        text = err_path.read_text()
        assert "again in" in text and "max_dispatch_backlog=2" in text
        assert "COMPLETED" in out


def _post(url: str, token: str, body: object) -> tuple[int, dict[str, object], str | None]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), response.headers["Retry-After"]
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers["Retry-After"]


def test_the_rest_api_answers_a_throttled_submission_503_with_retry_after(
    kafka_cluster: KafkaUnderTest, tmp_path: Path
) -> None:
    settings = _settings(kafka_cluster)
    token = "admission-token-" + uuid.uuid4().hex
    config = UiConfig.from_env({}, port=0, token=token, db_path=tmp_path / "joblog.duckdb")
    body = {"jobs": [{"id": "a", "task": "double", "args": [1], "queue": "api"}]}
    with (
        _scheduler(settings, AdmissionLimits(max_pending_jobs=1)),
        UiServer(config, settings) as server,
    ):
        url = f"{server.url}/api/v1/submissions"
        status, first, _ = _post(url, token, body)
        assert status == 201, first
        status, busy, retry_after = _post(url, token, body)
    assert status == 503, busy
    assert busy["throttled"] is True and busy["accepted"] is False
    assert busy["code"] == "pending_jobs"
    assert isinstance(busy["retry_after_ms"], int) and busy["retry_after_ms"] >= 500
    assert "max_pending_jobs=1" in str(busy["reason"])
    assert retry_after is not None and int(retry_after) >= 1


def test_the_monitor_measures_backlogs_and_the_projection_lag(
    kafka_cluster: KafkaUnderTest,
) -> None:
    settings = _settings(kafka_cluster)
    limits = AdmissionLimits(max_dispatch_backlog=1, max_projection_lag=1)
    with _scheduler(settings, AdmissionLimits(max_pending_jobs=0)), Joblog(settings) as jl:
        for n in range(3):
            jl.submit(task="double", args=[n], queue="m", wait=True)
    monitor = LoadMonitor(settings, limits)
    load = monitor.sample()
    # three dispatch records, each followed by a transaction marker (one submit a
    # transaction here): records are counted, not offsets
    assert load.dispatch_backlog["m"] == 3
    assert load.dispatch_backlog["default"] == 0
    assert load.projection_lag == 0, "no projector has committed: nothing to wait for"
    # a projector that folded one event
    events = Topics(settings.topic_prefix).events
    consumer = kafka.consumer(settings, f"{settings.topic_prefix}projector")
    try:
        consumer.commit(offsets=[TopicPartition(events, 0, 1)], asynchronous=False)
    finally:
        consumer.close()
    probe = kafka.consumer(settings, f"probe-{uuid.uuid4().hex[:6]}")
    try:
        _, end = probe.get_watermark_offsets(TopicPartition(events, 0), timeout=10)
    finally:
        probe.close()
    assert monitor.sample().projection_lag == end - 1


def _transactions(settings: Settings, topic: str, sizes: list[int], *, abort: bool = False) -> None:
    """One transaction per size, each writing that many records to partition 0 of ``topic``."""
    producer = kafka.producer(settings, {"transactional.id": f"adm-{uuid.uuid4().hex[:8]}"})
    producer.init_transactions(30)
    for size in sizes:
        producer.begin_transaction()
        for n in range(size):
            producer.produce(topic, key=b"k", value=str(n).encode(), partition=0)
        if abort:
            producer.flush(30)  # an abort drops what was not sent yet: these are on the log
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)


def test_the_monitor_counts_dispatch_records_not_markers_aborts_or_open_transactions(
    kafka_cluster: KafkaUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(kafka_cluster)
    ensure_topics(settings, ["raw"])
    topic = Topics(settings.topic_prefix).dispatch("raw")
    monitor = LoadMonitor(settings, AdmissionLimits(max_dispatch_backlog=1), timeout_s=10)

    def backlog() -> int:
        return monitor.sample().dispatch_backlog["raw"]

    def settles_at(count: int, what: str) -> None:
        # a commit or abort returns before the coordinator wrote its markers, and the last
        # stable offset the monitor reads to moves once they are in
        wait_for(lambda: backlog() == count, 15, what)

    try:
        _transactions(settings, topic, [1, 1, 3])  # offsets 0, 2, 4-6; markers 1, 3, 7
        _transactions(settings, topic, [2], abort=True)  # offsets 8-9 aborted, marker 10
        settles_at(5, "5 records behind a group that never committed")
        # a transaction still open: past the last stable offset, not counted, not waited for
        open_ = kafka.producer(settings, {"transactional.id": f"adm-{uuid.uuid4().hex[:8]}"})
        open_.init_transactions(30)
        open_.begin_transaction()
        open_.produce(topic, key=b"k", value=b"open", partition=0)
        open_.flush(30)
        started = time.monotonic()
        assert backlog() == 5
        assert time.monotonic() - started < 5, "the count waited on the open transaction"
        open_.abort_transaction(30)  # offset 11 aborted, marker 12
        # the workers committed the offset after their last record, which is a marker's
        group = f"{settings.topic_prefix}workers.raw"
        worker = kafka.consumer(settings, group)
        try:
            worker.commit(offsets=[TopicPartition(topic, 0, 5)], asynchronous=False)
            settles_at(2, "2 records after the committed offset")
            worker.commit(offsets=[TopicPartition(topic, 0, 7)], asynchronous=False)
            settles_at(0, "markers and aborted records only: no backlog")
            _transactions(settings, topic, [1] * 20)  # offsets 13-52, a marker after each
            worker.commit(offsets=[TopicPartition(topic, 0, 13)], asynchronous=False)
            settles_at(20, "20 records in 40 offsets")
            # past MAX_COUNTED records the rest is extrapolated from the share read
            monkeypatch.setattr("engine.scheduler.load.MAX_COUNTED", 5)
            estimate = backlog()
            assert 16 <= estimate <= 24, f"{estimate}: an estimate near 20, not 40 offsets"
        finally:
            worker.close()
    finally:
        monitor.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_a_submission_left_throttled_says_so_when_looked_up(
    kafka_cluster: KafkaUnderTest,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that gives up at once (``throttle_wait=0``) gets EngineBusy; a later look at
    the id says it was throttled, not just that it is unknown."""
    settings = _settings(kafka_cluster)
    with (
        _scheduler(settings, AdmissionLimits(max_pending_jobs=1)),
        Joblog(settings, throttle_wait=0) as jl,
    ):
        jl.submit(task="double", args=[1], queue="idle", wait=True)
        with pytest.raises(EngineBusy) as raised:
            jl.submit(task="double", args=[2], queue="idle", submission_id="left", wait=True)
        assert raised.value.cause == "pending_jobs"
        with pytest.raises(UnknownSubmission, match="throttled, the engine was busy") as unknown:
            jl.view("left")
        assert unknown.value.throttled is not None
    monkeypatch.setenv("JOBLOG_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
    monkeypatch.setenv("JOBLOG_TOPIC_PREFIX", settings.topic_prefix)
    assert cli.main(["status", "left"]) != 0
    assert "throttled" in capsys.readouterr().err
