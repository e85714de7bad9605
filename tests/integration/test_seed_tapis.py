"""Tapis's job monitoring on joblog against a real broker (seed: Tapis's "Job monitoring").

The seed's examples, through joblog's API: webhooks declared in the submission with every
template variable the seed lists, an email address as ``url`` (a real SMTP sink), Tapis's
``persistent`` rule, notifications added and removed later (and kept across a notifier
restart), the history with status, description and progress, and polling with backoff.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from engine import Job, Joblog, SubmissionStatus
from engine.cli import main
from engine.client import add_notification_command
from engine.config import Settings
from engine.errors import NotificationNotChanged
from engine.lifecycle.records import (
    JobStatus,
    Notification,
    NotificationAdded,
    NotificationRemoved,
)
from engine.lifecycle.views import JobView
from engine.monitoring import InvalidNotification
from engine.notify import Notifier, NotifierOptions, generate_secret, parse_subscriptions, verify
from engine.notify.declared import DeclaredSettings
from engine.notify.delivery import DeliveryRetry
from engine.notify.subscriptions import SubscriptionSet
from engine.notify.templates import job_uuid
from tests.integration.test_client import engine_running
from tests.unit.test_notify_endpoints import SmtpSink, WebhookReceiver

QUICK = DeliveryRetry(max_attempts=5, backoff_s=0.2, multiplier=2.0, jitter=0.0)
API = "https://jobs.example.com"


@contextmanager
def notifier_running(
    settings: Settings,
    subscriptions: SubscriptionSet,
    deliveries: Path,
    secret: str | None,
    replay_max: int = NotifierOptions.replay_max,
) -> Iterator[Notifier]:
    notifier = Notifier(
        settings,
        subscriptions,
        deliveries=deliveries,
        options=NotifierOptions(
            retry=QUICK,
            timeout_s=5,
            commit_interval_s=0.2,
            api_url=API,
            declared=DeclaredSettings(secret=secret),
            replay_max=replay_max,
        ),
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


def _query(path: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(path).query).items()}


def test_webhooks_and_an_email_declared_in_the_submission_carry_every_variable(
    settings: Settings, tmp_path: Path
) -> None:
    receiver = WebhookReceiver().start()
    smtp = SmtpSink().start()
    secret = generate_secret()
    smtp_only = parse_subscriptions(
        {"smtp": {"host": "127.0.0.1", "port": smtp.port, "from": "tapis@example.com"}}
    )
    base = receiver.url
    every = "&".join(
        f"{name.lower()}=${{{name}}}"
        for name in (
            "UUID",
            "EVENT",
            "JOB_STATUS",
            "JOB_URL",
            "JOB_ID",
            "JOB_SYSTEM",
            "JOB_NAME",
            "JOB_START_TIME",
            "JOB_END_TIME",
            "JOB_SUBMIT_TIME",
            "JOB_ARCHIVE_PATH",
            "JOB_ARCHIVE_URL",
            "JOB_ERROR",
            "JOB_UUID",
            "NOTIFICATION_ID",
        )
    )
    notifications = [
        # the seed's three example URLs
        {"url": base + "/?job_id=${JOB_ID}&job_status=${EVENT}", "event": "FINISHED"},
        {
            "url": base + "/trigger/job/${JOB_NAME}/${EVENT}",
            "event": "*",
            "persistent": True,
            "job": "pyplot",
        },
        {
            "id": "every",
            "url": base + "/webhooks/?nonce=sdfkajerouiwe234289fahlkqr&" + every,
            "event": "FINISHED",
        },
        {"url": "ops@example.com", "event": "FINISHED"},
    ]
    try:
        with (
            engine_running(settings, workers=1),
            notifier_running(settings, smtp_only, tmp_path / "d.jsonl", secret),
        ):
            jl = Joblog(settings)
            submission = jl.submit(
                Job(
                    "pyplot",
                    task="double",
                    args=[21],
                    name="demo-pyplot-demo-advanced test-1414139896",
                    labels={"archive_path": "s3://archive/jobs/job-${JOB_ID}"},
                ),
                notifications=notifications,
                wait=True,
            )
            view = submission.wait_until_done(timeout=60)
            assert view.outcome is SubmissionStatus.COMPLETED
            every_hook = receiver.wait_for(1, timeout=60, path_prefix="/webhooks/")
            finished = receiver.wait_for(1, timeout=60, path_prefix="/?job_id=")
            (mail,) = smtp.wait_for(1, timeout=60)
            history = jl.history(submission.id)
            trigger = receiver.wait_for(
                sum(1 for e in history if e.job_id == "pyplot"), timeout=60, path_prefix="/trigger/"
            )
            jl.close()
    finally:
        receiver.stop()
        smtp.stop()

    sid = submission.id
    (hook,) = every_hook
    values = _query(hook.path)
    started = view.jobs["pyplot"].run_at
    assert values["event"] == "JobCompleted" and values["job_status"] == "COMPLETED"
    assert values["job_id"] == "pyplot"
    assert values["job_name"] == "demo-pyplot-demo-advanced test-1414139896"
    assert values["job_url"] == f"{API}/api/v1/jobs/{sid}/pyplot"
    assert values["job_system"]  # the worker's host
    assert values["job_archive_path"] == "s3://archive/jobs/job-pyplot"
    assert values["job_archive_url"] == "s3://archive/jobs/job-pyplot"
    assert values["job_uuid"] == job_uuid(sid, "pyplot")
    assert values["notification_id"] == "every"
    assert values["uuid"].startswith(f"{sid}:")
    assert started is not None and values["job_start_time"].startswith(started.strftime("%Y-"))
    assert values["job_end_time"] and values["job_submit_time"]
    assert values.get("job_error", "") == ""
    verify(secret, hook.headers, hook.body)  # signed like the file's subscriptions (raises)
    (first,) = finished
    assert _query(first.path) == {"job_id": "pyplot", "job_status": "JobCompleted"}
    # "*": every event of the job, in order, with its name in the path
    names = [r.path.rsplit("/", 1)[1] for r in trigger]
    assert names == [e.name for e in history if e.job_id == "pyplot"]
    assert all(
        r.path.startswith("/trigger/job/demo-pyplot-demo-advanced%20test-1414139896/")
        for r in trigger
    )
    assert mail["To"] == "ops@example.com"
    text = mail.get_content()
    assert f'The status of job {sid}/pyplot, "demo-pyplot-demo-advanced test-1414139896,"' in text
    assert "has changed to COMPLETED" in text
    assert f"URL: {API}/api/v1/jobs/{sid}/pyplot" in text
    assert "Output Path: s3://archive/jobs/job-pyplot" in text
    # Tapis's persistent=false: each of those three is removed right after it fired
    removed = [e for e in history if isinstance(e.body, NotificationRemoved)]
    completed = next(e for e in history if e.name == "JobCompleted")
    assert len(removed) == 3
    assert all(
        isinstance(e.body, NotificationRemoved) and e.body.fired_seq == completed.seq
        for e in removed
    )


def test_notifications_added_and_removed_later_survive_a_notifier_restart(
    settings: Settings, tmp_path: Path
) -> None:
    receiver = WebhookReceiver().start()
    deliveries = tmp_path / "d.jsonl"
    try:
        with engine_running(settings, workers=1):
            jl = Joblog(settings)
            submission = jl.submit(
                Job("gate", task="double", args=[1], kwargs={"seconds": 120}),
                Job("after", task="double", args=[2], depends_on=["gate"]),
                wait=True,
            )
            with notifier_running(settings, SubscriptionSet(), deliveries, None):
                once = jl.add_notification(
                    f"{submission.id}/after", receiver.url + "/once/${EVENT}", wait=True
                )
                assert isinstance(once.result().body, NotificationAdded)
                kept = jl.add_notification(
                    submission.id,
                    receiver.url + "/kept/${JOB_ID}/${EVENT}",
                    "CANCELED",
                    persistent=True,
                    notification_id="kept",
                    wait=True,
                )
                assert isinstance(kept.result().body, NotificationAdded)
                gone = jl.add_notification(
                    submission.id,
                    receiver.url + "/gone",
                    "*",
                    persistent=True,
                    notification_id="gone",
                    wait=True,
                )
                assert gone.accepted()
                jl.remove_notification(submission.id, "gone", wait=True)
                with pytest.raises(InvalidNotification):  # checked before it is sent
                    jl.add_notification(submission.id, "ftp://nowhere", wait=True)
                # any Kafka client may send one: the scheduler rejects it with the reason
                raw = add_notification_command(submission.id, Notification("", "ftp://nowhere"))
                with pytest.raises(NotificationNotChanged) as rejected:
                    jl.producer.send_tracked(raw).result(30)
                assert rejected.value.code == "bad_notification"
                assert "http://" in rejected.value.reason
                with pytest.raises(NotificationNotChanged) as unknown:
                    jl.remove_notification(submission.id, "gone", wait=True)
                assert unknown.value.code == "unknown_notification"
                listed = {n.notification_id: n for n in jl.notifications(submission.id)}
                assert set(listed) == {once.result().body.notification.notification_id, "kept"}  # type: ignore[union-attr]
            # a new notifier of the same group learns them again from the events topic
            with notifier_running(settings, SubscriptionSet(), deliveries, None):
                jl.cancel(submission.id, "gate", wait=True)
                view = submission.wait_until_done(timeout=60)
                assert view.jobs["after"].status is JobStatus.ABANDONED
                got_once = receiver.wait_for(1, timeout=60, path_prefix="/once/")
                got_kept = receiver.wait_for(1, timeout=60, path_prefix="/kept/")
            history = jl.history(submission.id)
            jl.close()
    finally:
        receiver.stop()
    assert [r.path for r in got_once] == ["/once/JobAbandoned"]
    assert [r.path for r in got_kept] == ["/kept/gate/JobCanceled"]
    assert not [r for r in receiver.requests if r.path.startswith("/gone")]
    fired = [e for e in history if isinstance(e.body, NotificationRemoved) and e.body.fired_seq]
    (abandoned,) = [e for e in history if e.name == "JobAbandoned"]
    assert [e.body.fired_seq for e in fired] == [abandoned.seq]  # type: ignore[union-attr]


def test_a_notification_declared_before_the_replay_window_still_reaches_a_new_notifier(
    settings: Settings, tmp_path: Path
) -> None:
    """A notifier replays only the tail of the log; the notifications in place come from the
    scheduler's snapshots in ``state``, however long ago they were declared."""
    receiver = WebhookReceiver().start()
    try:
        with engine_running(settings, workers=1):
            jl = Joblog(settings)
            submission = jl.submit(
                Job("gate", task="double", args=[1], kwargs={"seconds": 120}),
                notifications=[
                    {
                        "url": receiver.url + "/early/${EVENT}",
                        "event": "CANCELED",
                        "persistent": True,
                    }
                ],
                wait=True,
            )
            kept = jl.add_notification(
                submission.id, receiver.url + "/later/${EVENT}", "CANCELED", persistent=True
            )
            assert kept.accepted()
            # the scheduler snapshots a submission whose changes are older than
            # SchedulerConfig.snapshot_max_age_ms (5 s)
            time.sleep(8)
            # no replay at all: what it knows of the submission comes from the snapshot
            with notifier_running(
                settings, SubscriptionSet(), tmp_path / "d.jsonl", None, replay_max=0
            ):
                jl.cancel(submission.id, "gate", wait=True)
                got = receiver.wait_for(2, timeout=60)
            jl.close()
    finally:
        receiver.stop()
    assert sorted(r.path for r in got) == ["/early/JobCanceled", "/later/JobCanceled"]


def test_history_as_tapis_shows_it_and_polling_with_backoff(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with engine_running(settings, workers=1):
        jl = Joblog(settings)
        submission = jl.submit(
            Job("frame", task="render", args=[7], kwargs={"steps": 3, "pause": 0.3}), wait=True
        )
        seen: list[JobStatus] = []

        def on_status(observed: object) -> None:
            assert isinstance(observed, JobView)
            seen.append(observed.status)

        final = jl.poll_status(
            submission.id,
            "frame",
            initial=0.05,
            max_interval=0.5,
            timeout=120,
            on_status=on_status,
        )
        assert isinstance(final, JobView) and final.status is JobStatus.COMPLETED
        assert seen[-1] is JobStatus.COMPLETED and len(seen) == len(set(seen))
        whole = jl.poll_status(submission.id, initial=0.05, timeout=60)
        assert not isinstance(whole, JobView) and whole.outcome is SubmissionStatus.COMPLETED
        jl.close()

        monkeypatch.setenv("JOBLOG_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
        monkeypatch.setenv("JOBLOG_TOPIC_PREFIX", settings.topic_prefix)
        assert main(["history", f"{submission.id}/frame", "--all", "--json"]) == 0
        entries = json.loads(capsys.readouterr().out)
        assert main(["status", f"{submission.id}/frame", "--poll", "--poll-initial", "0.05"]) == 0
        polled = capsys.readouterr().out
    # Tapis's fields: created, status, description; progress on the copy-in-progress lines
    assert entries[0]["status"] == "SUBMITTED" and entries[-1]["status"] == "COMPLETED"
    assert all(entry["created"].endswith("Z") and entry["description"] for entry in entries)
    progress = [entry for entry in entries if "progress" in entry]
    assert progress and progress[-1]["progress"]["total"] == 3
    assert progress[-1]["status"] == "RUNNING"
    assert f"{submission.id}/frame  COMPLETED" in polled
