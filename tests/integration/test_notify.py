"""The notifier against a real broker, scheduler and worker, a real HTTP server and SMTP sink."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import Producer

from engine import Job, Joblog, SubmissionStatus, codec
from engine.config import Settings
from engine.lifecycle.records import (
    Event,
    EventBody,
    JobAssigned,
    JobCompleted,
    JobPending,
    JobSpec,
    JobStarted,
    JobSubmitted,
    SubmissionAccepted,
)
from engine.notify import (
    DeliveryRetry,
    Notifier,
    NotifierOptions,
    generate_secret,
    parse_subscriptions,
    read_deliveries,
    verify,
)
from engine.notify.subscriptions import SubscriptionSet
from engine.topics import Topics
from tests.integration.test_client import engine_running
from tests.unit.test_notify_endpoints import SmtpSink, WebhookReceiver

QUICK = DeliveryRetry(max_attempts=5, backoff_s=0.2, multiplier=2.0, jitter=0.0)


@contextmanager
def notifier_running(
    settings: Settings, subscriptions: SubscriptionSet, deliveries: Path
) -> Iterator[Notifier]:
    notifier = Notifier(
        settings,
        subscriptions,
        deliveries=deliveries,
        options=NotifierOptions(retry=QUICK, timeout_s=5, commit_interval_s=0.2),
    )
    stop = threading.Event()
    thread = threading.Thread(target=notifier.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert notifier.ready.wait(60), "the notifier never got its partitions"
        yield notifier
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the notifier did not stop"


def test_webhooks_carry_template_values_and_valid_signatures_and_are_retried(
    settings: Settings, tmp_path: Path
) -> None:
    receiver = WebhookReceiver().start()
    smtp = SmtpSink().start()
    secret = generate_secret()
    subscriptions = parse_subscriptions(
        {
            "smtp": {"host": "127.0.0.1", "port": smtp.port, "from": "joblog@example.com"},
            "subscriptions": [
                {
                    "id": "done",
                    "url": receiver.url
                    + "/done/${SUBMISSION_ID}/${JOB_ID}?event=${EVENT}&status=${JOB_STATUS}",
                    "secret": secret,
                    "events": ["JobCompleted", "JobFailed"],
                    "body": {
                        "job": "${JOB_ID}",
                        "name": "${JOB_NAME}",
                        "status": "${JOB_STATUS}",
                        "submitted": "${JOB_SUBMIT_TIME}",
                        "started": "${JOB_START_TIME}",
                        "ended": "${JOB_END_TIME}",
                        "error": "${JOB_ERROR}",
                    },
                },
                {
                    "id": "flaky-endpoint",
                    "url": receiver.url + "/flaky/${JOB_ID}",
                    "secret": secret,
                    "events": ["SubmissionCompleted"],
                },
                {"id": "mail", "email": "ops@example.com", "events": ["failed"]},
            ],
        }
    )
    receiver.fail_first("/flaky/", 2)
    deliveries = tmp_path / "deliveries.jsonl"
    try:
        with (
            engine_running(settings, workers=1),
            notifier_running(settings, subscriptions, deliveries) as notifier,
        ):
            jl = Joblog(settings)
            submission = jl.submit(
                Job("ok", task="double", args=[21], name="Double it"),
                Job("bad", task="fail_with", args=["InputMissing", "frame 12 missing"]),
            )
            view = submission.wait_until_done(timeout=60)
            jl.close()
            assert view.outcome is SubmissionStatus.FAILED
            done = receiver.wait_for(2, path_prefix="/done/")
            flaky = receiver.wait_for(3, path_prefix="/flaky/")
            (mail,) = smtp.wait_for(1)
            # Let the notifier record the last attempt before it stops.
            deadline_records = _wait_records(deliveries, 6)
            assert notifier.metrics["delivered"] >= 4
    finally:
        receiver.stop()
        smtp.stop()

    by_job = {r.path.split("/")[3].split("?")[0]: r for r in done}
    ok, bad = by_job["ok"], by_job["bad"]
    assert ok.path == f"/done/{submission.id}/ok?event=JobCompleted&status=COMPLETED"
    assert bad.path == f"/done/{submission.id}/bad?event=JobFailed&status=FAILED"
    for request in (ok, bad):
        verify(secret, request.headers, request.body)
        assert request.headers["webhook-id"].startswith("msg_")
    body = json.loads(ok.body)
    assert body["job"] == "ok" and body["name"] == "Double it" and body["status"] == "COMPLETED"
    assert body["submitted"] <= body["started"] <= body["ended"]
    assert body["submitted"].endswith("Z") and body["error"] == ""
    assert json.loads(bad.body)["error"] == "InputMissing: frame 12 missing"

    assert [r.status for r in flaky] == [503, 503, 200]
    assert len({r.headers["webhook-id"] for r in flaky}) == 1  # one message, three attempts
    for request in flaky:
        verify(secret, request.headers, request.body)
    assert json.loads(flaky[-1].body)["type"] == "SubmissionCompleted"

    assert mail["To"] == "ops@example.com"
    assert mail["Subject"] == f"joblog: job {submission.id}/bad FAILED"
    assert "Error: InputMissing: frame 12 missing" in mail.get_content()

    attempts = [r for r in deadline_records if r["subscription"] == "flaky-endpoint"]
    assert [(r["attempt"], r["outcome"], r["status_code"]) for r in attempts] == [
        (1, "retrying", 503),
        (2, "retrying", 503),
        (3, "delivered", 200),
    ]
    assert attempts[0]["next_attempt_at"] is not None


def _wait_records(path: Path, count: int, timeout: float = 10.0) -> list[dict[str, object]]:
    import time

    deadline = time.monotonic() + timeout
    while True:
        records = list(read_deliveries(path))
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def test_a_restarted_notifier_does_not_resend_what_it_delivered(
    settings: Settings, tmp_path: Path
) -> None:
    receiver = WebhookReceiver().start()
    subscriptions = parse_subscriptions(
        [{"id": "all", "url": receiver.url + "/${JOB_ID}", "events": ["JobCompleted"]}]
    )
    deliveries = tmp_path / "deliveries.jsonl"
    try:
        with engine_running(settings, workers=1):
            jl = Joblog(settings)
            with notifier_running(settings, subscriptions, deliveries):
                first = jl.submit(task="double", args=[1], job_id="first")
                first.wait_until_done(timeout=60)
                receiver.wait_for(1)
            second = jl.submit(task="double", args=[2], job_id=f"second-{uuid.uuid4().hex[:6]}")
            second.wait_until_done(timeout=60)
            with notifier_running(settings, subscriptions, deliveries):
                got = receiver.wait_for(2)
            jl.close()
    finally:
        receiver.stop()
    paths = [r.path for r in got]
    assert paths[0] == "/first" and paths[1].startswith("/second-")
    assert len(receiver.requests) == 2


def _produce(settings: Settings, events: list[Event]) -> None:
    producer = Producer(settings.producer_config(**{"enable.idempotence": True}))
    for event in events:
        producer.produce(
            Topics(settings.topic_prefix).events,
            key=event.submission_id.encode(),
            value=codec.encode_event(event),
        )
    assert producer.flush(30) == 0


def _log(sid: str, *items: tuple[str, EventBody, int]) -> list[Event]:
    return [
        Event(f"{sid}:{seq}", sid, job_id, seq, at, body)
        for seq, (job_id, body, at) in enumerate(items, start=1)
    ]


def test_webhooks_of_a_job_arrive_in_event_order_and_a_poison_event_stops_no_other(
    settings: Settings, tmp_path: Path
) -> None:
    receiver = WebhookReceiver().start()
    subscriptions = parse_subscriptions(
        [
            {
                "id": "ordered",
                "url": receiver.url + "/${JOB_ID}/${EVENT}",
                "events": ["JobSubmitted", "JobPending", "JobAssigned", "JobStarted", "completed"],
            }
        ]
    )
    t = 1_700_000_000_000
    sid, other = f"s-{uuid.uuid4().hex[:6]}", f"s-{uuid.uuid4().hex[:6]}"
    events = _log(
        sid,
        ("", SubmissionAccepted("c", "alice", (), ("a", "b")), t),
        ("a", JobSubmitted(JobSpec("a", task="t")), t),
        ("b", JobSubmitted(JobSpec("b", task="t")), t),
        ("a", JobPending(1, "default", "d-a", t), t + 1),
        ("b", JobPending(1, "default", "d-b", t), 10**16),  # no calendar time: cannot render
        ("a", JobAssigned(1, "d-a", "w-1", 30_000), t + 2),
        ("a", JobStarted(1, "w-1", started_at=t + 3), t + 3),
        ("b", JobAssigned(1, "d-b", "w-1", 30_000), t + 3),
        ("a", JobCompleted(1, ended_at=t + 9), t + 10),
    ) + _log(
        other,
        ("c", JobSubmitted(JobSpec("c", task="t")), t),
        ("c", JobPending(1, "default", "d-c", t), t + 1),
        ("c", JobAssigned(1, "d-c", "w-2", 30_000), t + 2),
    )
    # The first message of job a is slow and then fails: the later ones of a wait for it,
    # those of b and c do not.
    gate = receiver.hold("/a/JobSubmitted")
    receiver.fail_first("/a/JobSubmitted", 1)
    deliveries = tmp_path / "deliveries.jsonl"
    try:
        with notifier_running(settings, subscriptions, deliveries) as notifier:
            _produce(settings, events)
            others = receiver.wait_for(2, path_prefix="/b/") + receiver.wait_for(
                3, path_prefix="/c/"
            )
            assert receiver.arrived_held.wait(30)
            assert [r.path for r in receiver.requests if r.path.startswith("/a/")] == []
            gate.set()
            a = receiver.wait_for(6, path_prefix="/a/")
            records = _wait_records(deliveries, 1 + 11)
            assert notifier.metrics["render_errors"] == 1
    finally:
        gate.set()
        receiver.stop()

    assert [(r.path, r.status) for r in a] == [
        ("/a/JobSubmitted", 503),
        ("/a/JobSubmitted", 200),
        ("/a/JobPending", 200),
        ("/a/JobAssigned", 200),
        ("/a/JobStarted", 200),
        ("/a/JobCompleted", 200),
    ]
    assert [r.path for r in others] == [
        "/b/JobSubmitted",
        "/b/JobAssigned",
        "/c/JobSubmitted",
        "/c/JobPending",
        "/c/JobAssigned",
    ]
    (unrenderable,) = [r for r in records if r["outcome"] == "unrenderable"]
    assert (unrenderable["event_id"], unrenderable["job_id"]) == (f"{sid}:5", "b")
    assert unrenderable["error"]
