"""Notifications without a broker: subscriptions, templates, signatures, one delivery attempt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.lifecycle.records import (
    Event,
    EventBody,
    FailureReason,
    JobCompleted,
    JobDeleted,
    JobFailed,
    JobProgressed,
    JobSpec,
    JobStarted,
    JobSubmitted,
    SubmissionCompleted,
    SubmissionStatus,
)
from engine.notify import (
    DeliveryLog,
    SignatureError,
    SmtpSettings,
    SubscriptionError,
    build_message,
    generate_secret,
    load_subscriptions,
    parse_subscriptions,
    read_deliveries,
    render,
    sign,
    signed_headers,
    variables,
    verify,
)
from engine.notify.delivery import DeliveryRetry, attempt, backoff_s, message_id
from engine.watch import SubmissionView
from tests.unit.test_notify_endpoints import SmtpSink, WebhookReceiver, receiver, smtp_sink

__all__ = ["receiver", "smtp_sink"]

T0 = 1_700_000_000_000
SID = "s-42"


def event(seq: int, job_id: str, body: EventBody, at: int = 0) -> Event:
    return Event(f"{SID}:{seq}", SID, job_id, seq, T0 + at, body)


def history() -> tuple[SubmissionView, list[Event]]:
    spec = JobSpec(job_id="frame-1", name="Frame 1", task="render", queue="gpu")
    events = [
        event(1, "frame-1", JobSubmitted(spec)),
        event(2, "frame-1", JobStarted(attempt=1, worker_id="w-1"), at=1500),
        event(3, "frame-1", JobProgressed(1, 5.0, 10.0, "half way"), at=2000),
        event(4, "frame-1", JobFailed(1, FailureReason.ERROR, "ValueError", "bad frame"), 3250),
    ]
    view = SubmissionView(SID)
    for item in events:
        view.apply(item)
    return view, events


# --------------------------------------------------------------------------- signing


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_verify_accepts_its_own_headers_and_rejects_tampering() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    headers = signed_headers(secret, "msg_1", b"payload", timestamp=1000)
    verify(secret, headers, b"payload", now=1010)
    with pytest.raises(SignatureError, match="matches"):
        verify(secret, headers, b"payload!", now=1010)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(secret, headers, b"payload", now=1000 + 3600)
    with pytest.raises(SignatureError, match="webhook-signature"):
        verify(secret, {"webhook-id": "x", "webhook-timestamp": "1"}, b"", now=1)


def test_unsigned_headers_without_a_secret() -> None:
    headers = signed_headers(None, "msg_1", b"x", timestamp=5)
    assert headers == {"webhook-id": "msg_1", "webhook-timestamp": "5"}


# --------------------------------------------------------------------------- templates


def test_variables_fill_tapis_names_from_the_fold() -> None:
    view, events = history()
    values = variables(events[-1], view.jobs["frame-1"])
    assert values["JOB_ID"] == "frame-1"
    assert values["SUBMISSION_ID"] == SID
    assert values["JOB_NAME"] == "Frame 1"
    assert values["EVENT"] == "JobFailed"
    assert values["JOB_STATUS"] == "FAILED"
    assert values["JOB_SUBMIT_TIME"] == "2023-11-14T22:13:20.000Z"
    assert values["JOB_START_TIME"] == "2023-11-14T22:13:21.500Z"
    assert values["JOB_END_TIME"] == "2023-11-14T22:13:23.250Z"
    assert values["JOB_ERROR"] == "ValueError: bad frame"
    assert values["JOB_PROGRESS"] == "5"
    assert values["JOB_ATTEMPT"] == "1"


def test_running_job_has_empty_end_time_and_error() -> None:
    _, events = history()
    partial = SubmissionView(SID)
    for item in events[:2]:
        partial.apply(item)
    values = variables(events[1], partial.jobs["frame-1"])
    assert values["JOB_STATUS"] == "RUNNING"
    assert values["JOB_END_TIME"] == ""
    assert values["JOB_ERROR"] == ""


def test_render_quotes_values_in_urls_only() -> None:
    values = {"JOB_ID": "a b/c", "EVENT": "JobCompleted"}
    template = "http://h/x/${JOB_ID}?e=${EVENT}&u=${UNKNOWN}"
    assert render(template, values, url=True) == "http://h/x/a%20b%2Fc?e=JobCompleted&u=${UNKNOWN}"
    assert render("${JOB_ID}", values) == "a b/c"


# --------------------------------------------------------------------------- subscriptions


def test_parse_subscriptions_file(tmp_path: Path) -> None:
    secret = generate_secret()
    path = tmp_path / "hooks.yaml"
    path.write_text(
        """
smtp: {host: 127.0.0.1, port: 2525, from: jl@example.com}
subscriptions:
  - id: done
    url: http://127.0.0.1/hook/${JOB_ID}
    secret_env: HOOK_SECRET
    events: [completed, JobFailed]
    tasks: [render]
    body: {job: "${JOB_REF}", status: "${JOB_STATUS}"}
  - id: mail
    url: mailto:ops@example.com
    statuses: [failed]
""",
        encoding="utf-8",
    )
    loaded = load_subscriptions(path, env={"HOOK_SECRET": secret})
    done, mail = loaded.subscriptions
    assert done.events == {"JobCompleted", "JobFailed"}
    assert done.secret == secret
    assert done.channel == "webhook"
    assert mail.channel == "email" and mail.email == "ops@example.com"
    assert loaded.smtp == SmtpSettings(host="127.0.0.1", port=2525, sender="jl@example.com")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"id": "x"}, "exactly one of"),
        ({"url": "ftp://x"}, "must start with"),
        ({"url": "http://x/${NOPE}"}, "unknown template variable"),
        ({"url": "http://x", "events": ["Nope"]}, "unknown event name"),
        ({"url": "http://x", "statuses": ["DONE"]}, "unknown status"),
        ({"url": "http://x", "secret": "whsec_***"}, "base64"),
        ({"url": "http://x", "colour": "red"}, "unknown keys"),
        ({"url": "http://x", "secret_env": "MISSING_VAR"}, "not set"),
    ],
)
def test_bad_subscriptions_say_what_to_fix(entry: dict[str, object], message: str) -> None:
    with pytest.raises(SubscriptionError, match=message):
        parse_subscriptions([entry], env={})


def test_filters() -> None:
    view, events = history()
    job = view.jobs["frame-1"]
    (sub,) = parse_subscriptions(
        [{"url": "http://x", "statuses": ["FAILED"], "tasks": ["render"]}]
    ).subscriptions
    assert sub.matches(events[-1], job)
    assert not sub.matches(events[1], job.__class__(SID, "frame-1", task="render"))
    (other_task,) = parse_subscriptions([{"url": "http://x", "tasks": ["other"]}]).subscriptions
    assert not other_task.matches(events[-1], job)
    (default,) = parse_subscriptions([{"url": "http://x"}]).subscriptions
    assert not default.matches(events[2], job)  # progress is not sent unless named
    (everything,) = parse_subscriptions([{"url": "http://x", "events": "*"}]).subscriptions
    assert everything.matches(events[2], job)
    done = event(9, "", SubmissionCompleted(SubmissionStatus.FAILED, (("FAILED", 1),)))
    (outcome,) = parse_subscriptions([{"url": "http://x", "statuses": ["FAILED"]}]).subscriptions
    assert outcome.matches(done, None)


def test_a_subscription_may_name_flux_events_that_stand_for_several() -> None:
    (sub,) = parse_subscriptions([{"url": "http://x", "events": ["finish", "start"]}]).subscriptions
    assert sub.events == frozenset({"JobCompleted", "JobFailed", "JobCanceled", "JobStarted"})
    with pytest.raises(SubscriptionError, match="no joblog counterpart"):
        parse_subscriptions([{"url": "http://x", "events": ["urgency"]}])


# --------------------------------------------------------------------------- messages


def test_default_webhook_body_and_stable_message_id() -> None:
    view, events = history()
    (sub,) = parse_subscriptions([{"id": "s", "url": "http://h/${JOB_ID}"}]).subscriptions
    message = build_message(sub, events[-1], view.jobs["frame-1"])
    payload = json.loads(message.body)
    assert payload["type"] == "JobFailed"
    assert payload["data"]["job_error"] == "ValueError: bad frame"
    assert message.target == "http://h/frame-1"
    assert message.message_id == message_id("s", events[-1].event_id)
    again = build_message(sub, events[-1], view.jobs["frame-1"])
    assert again.message_id == message.message_id


def test_structured_body_stays_valid_json_with_quotes_in_values() -> None:
    spec = JobSpec(job_id="j", task="t")
    failed = event(2, "j", JobFailed(1, FailureReason.ERROR, "E", 'said "no"\n'))
    view = SubmissionView(SID)
    view.apply(event(1, "j", JobSubmitted(spec)))
    view.apply(failed)
    (sub,) = parse_subscriptions(
        [{"url": "http://h", "body": {"error": "${JOB_ERROR}", "n": 1}}]
    ).subscriptions
    payload = json.loads(build_message(sub, failed, view.jobs["j"]).body)
    assert payload == {"error": 'E: said "no"\n', "n": 1}


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    policy = DeliveryRetry(backoff_s=1.0, multiplier=2.0, max_backoff_s=5.0, jitter=0.0)
    assert [backoff_s(policy, n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]


# --------------------------------------------------------------------------- one attempt


def test_attempt_posts_a_signed_webhook(receiver: WebhookReceiver) -> None:
    view, events = history()
    secret = generate_secret()
    (sub,) = parse_subscriptions(
        [{"id": "s", "url": f"{receiver.url}/h/${{JOB_ID}}", "secret": secret}]
    ).subscriptions
    message = build_message(sub, events[-1], view.jobs["frame-1"])
    result = attempt(message, timeout=5)
    assert result.ok and result.status_code == 200
    (got,) = receiver.wait_for(1)
    assert got.path == "/h/frame-1"
    verify(secret, got.headers, got.body)
    assert got.headers["webhook-id"] == message.message_id


def test_attempt_reports_http_failures(receiver: WebhookReceiver) -> None:
    view, events = history()
    receiver.fail_first("/", 1)
    (sub,) = parse_subscriptions([{"url": f"{receiver.url}/x"}]).subscriptions
    result = attempt(build_message(sub, events[-1], view.jobs["frame-1"]), timeout=5)
    assert not result.ok and not result.permanent
    assert result.status_code == 503 and "503" in result.error


def test_attempt_reports_unreachable_endpoints() -> None:
    view, events = history()
    (sub,) = parse_subscriptions([{"url": "http://127.0.0.1:9/x"}]).subscriptions
    result = attempt(build_message(sub, events[-1], view.jobs["frame-1"]), timeout=2)
    assert not result.ok and result.status_code is None and result.error


def test_attempt_sends_email(smtp_sink: SmtpSink) -> None:
    view, events = history()
    (sub,) = parse_subscriptions([{"email": "ops@example.com"}]).subscriptions
    smtp = SmtpSettings(port=smtp_sink.port, sender="joblog@example.com")
    result = attempt(build_message(sub, events[-1], view.jobs["frame-1"]), smtp=smtp)
    assert result.ok, result.error
    (mail,) = smtp_sink.wait_for(1)
    assert mail["Subject"] == f"joblog: job {SID}/frame-1 FAILED"
    text = mail.get_content()
    assert 'The status of job s-42/frame-1, "Frame 1," has changed to FAILED.' in text
    assert "Error: ValueError: bad frame" in text


def test_email_without_smtp_settings_gives_up_at_once() -> None:
    view, events = history()
    (sub,) = parse_subscriptions([{"email": "ops@example.com"}]).subscriptions
    result = attempt(build_message(sub, events[-1], view.jobs["frame-1"]))
    assert not result.ok and result.permanent


def test_delivery_log_writes_json_lines(tmp_path: Path) -> None:
    view, events = history()
    (sub,) = parse_subscriptions([{"id": "s", "url": "http://h"}]).subscriptions
    message = build_message(sub, events[-1], view.jobs["frame-1"])
    deliveries = DeliveryLog(tmp_path / "d" / "deliveries.jsonl")
    from engine.notify import AttemptResult

    deliveries.record(message, 1, AttemptResult(ok=True, status_code=200), outcome="delivered")
    deliveries.close()
    (record,) = read_deliveries(tmp_path / "d" / "deliveries.jsonl")
    assert record["outcome"] == "delivered"
    assert record["subscription"] == "s"
    assert record["event"] == "JobFailed"
    assert record["message_id"] == message.message_id


def test_completed_event_body() -> None:
    spec = JobSpec(job_id="j", task="t")
    view = SubmissionView(SID)
    view.apply(event(1, "j", JobSubmitted(spec)))
    done = event(2, "j", JobCompleted(1, result="42"))
    view.apply(done)
    assert variables(done, view.jobs["j"])["JOB_ERROR"] == ""


def test_messages_are_ordered_per_job_or_per_submission() -> None:
    def key(entry: dict[str, object], job_id: str) -> tuple[str, ...]:
        (subscription,) = parse_subscriptions([entry]).subscriptions
        return subscription.order_key(Event("e", "s-1", job_id, 1, 0, JobDeleted()))

    jobs_only = {"id": "j", "url": "http://h/", "events": ["completed", "failed"]}
    assert key(jobs_only, "a") == ("j", "s-1", "a")
    assert key(jobs_only, "") == ("j", "s-1")
    # The default events include SubmissionCompleted: one order for the whole submission.
    assert key({"id": "d", "url": "http://h/"}, "a") == ("d", "s-1")
    assert key({**jobs_only, "order": "submission"}, "a") == ("j", "s-1")
    assert key({"id": "d", "url": "http://h/", "order": "job"}, "a") == ("d", "s-1", "a")
    with pytest.raises(SubscriptionError, match="order must be one of job, submission"):
        parse_subscriptions([{**jobs_only, "order": "none"}])


def test_an_unrenderable_message_is_logged_without_an_attempt(tmp_path: Path) -> None:
    (subscription,) = parse_subscriptions([{"id": "x", "url": "http://h/${JOB_ID}"}]).subscriptions
    log = DeliveryLog(tmp_path / "d.jsonl")
    event = Event("s-1:4", "s-1", "a", 4, 10**16, JobDeleted())
    log.record_unrenderable(subscription, event, "ValueError: year is out of range")
    log.close()
    (line,) = read_deliveries(tmp_path / "d.jsonl")
    assert (line["outcome"], line["attempt"], line["event_id"]) == ("unrenderable", 0, "s-1:4")
    assert line["message_id"] == message_id("x", "s-1:4")
    assert line["error"] == "ValueError: year is out of range"


def test_a_key_ledgers_decisions_are_never_sent() -> None:
    from engine.lifecycle.records import IdempotencyKeyDecided, KeyDecision, key_ledger_id

    ledger = key_ledger_id("invoice-7")
    decided = Event(
        f"{ledger}:1",
        ledger,
        "",
        1,
        T0,
        IdempotencyKeyDecided("invoice-7", f"{SID}/bill", KeyDecision.GRANTED),
    )
    (everything,) = parse_subscriptions([{"url": "http://x", "events": "*"}]).subscriptions
    assert not everything.matches(decided, None)
    view = SubmissionView(ledger)
    assert view.apply(decided) == (None, None) and not view.jobs, "no job of its own"
