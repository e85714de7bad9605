"""Subscriptions: which events are sent where, read from a YAML or JSON file.

The file given to ``joblog notifier --subscriptions FILE``::

    smtp:                              # only needed for email subscriptions
      host: 127.0.0.1
      port: 25
      from: joblog@example.com
      starttls: false                  # upgrade with STARTTLS before sending
      ssl: false                       # connect with implicit TLS (port 465)
      username: joblog                 # optional login; the password from the environment
      password_env: JOBLOG_SMTP_PASSWORD

    subscriptions:
      - id: render-finished            # unique; part of the webhook-id of its messages
        url: https://example.com/hooks/${SUBMISSION_ID}/${JOB_ID}?status=${JOB_STATUS}
        secret_env: RENDER_HOOK_SECRET # or secret: whsec_...; signs per Standard Webhooks
        events: [JobCompleted, JobFailed]   # names or short forms; "*" for every event
        statuses: [COMPLETED, FAILED]  # job status after the event
        tasks: [render]                # the job's task
        submissions: [s-1234]          # submission ids
        jobs: [frame-001]              # job ids
        headers: {X-Team: render}
        body: {job: "${JOB_REF}", status: "${JOB_STATUS}", error: "${JOB_ERROR}"}
        max_attempts: 5
        order: job                     # or submission; see Subscription.order
      - id: ops-mail
        email: ops@example.com         # or url: mailto:ops@example.com
        events: [failed]
        subject: "joblog: ${JOB_NAME} ${JOB_STATUS}"

Filters are lists; an omitted (or empty) filter matches everything, and an event must pass
every filter given. Without ``events`` a subscription receives the events that change a job's
status and ``SubmissionCompleted`` (progress, output and dispatch events are not sent unless
named). ``body`` is a string template sent as it renders (``content_type`` defaults to
``application/json``), or a mapping/list rendered leaf by leaf and sent as JSON; without it a
webhook sends ``{"type", "timestamp", "data"}`` with every template variable in ``data``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.lifecycle.names import EVENT_NAMES, event_names, names_of
from engine.lifecycle.records import Event, JobStatus, SubmissionCompleted, is_pseudo_submission
from engine.lifecycle.views import STATUS_EVENTS, SUBMISSION_EVENTS, JobView
from engine.notify.errors import SubscriptionError
from engine.notify.signing import secret_key
from engine.notify.templates import unknown_placeholders

#: What a subscription without ``events`` receives: the events that change a job's status,
#: and the end of the submission.
DEFAULT_EVENTS: frozenset[str] = STATUS_EVENTS | names_of(SubmissionCompleted)
ORDERS = ("job", "submission")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_KNOWN_KEYS = frozenset(
    {
        "id",
        "url",
        "email",
        "secret",
        "secret_env",
        "events",
        "statuses",
        "tasks",
        "submissions",
        "jobs",
        "headers",
        "body",
        "content_type",
        "subject",
        "max_attempts",
        "timeout",
        "order",
    }
)


@dataclass(frozen=True)
class SmtpSettings:
    """Where email notifications are sent from.

    Attributes:
        host / port: the SMTP server.
        sender: the From address.
        starttls: upgrade the connection with STARTTLS.
        ssl: connect with implicit TLS (SMTPS).
        username / password: login, when the server wants one.
        timeout: seconds for one connection.
    """

    host: str = "127.0.0.1"
    port: int = 25
    sender: str = "joblog@localhost"
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password: str | None = None
    timeout: float = 10.0


@dataclass(frozen=True)
class Subscription:
    """One destination and the events it wants.

    Attributes:
        id: unique name; with the event id it makes the ``webhook-id`` of a message.
        url: the webhook URL template (empty for an email subscription).
        email: the recipient of an email subscription (empty for a webhook).
        secret: the ``whsec_`` signing secret of a webhook (``None``: unsigned).
        events: canonical event names it receives.
        statuses / tasks / submissions / jobs: the other filters (empty: any).
        headers: extra HTTP headers (templates).
        body: the body template (a string, or a JSON-like structure), ``None`` for the default.
        content_type: the Content-Type of a string body.
        subject: the subject template of an email.
        max_attempts: delivery attempts before giving up (``None``: the notifier's default).
        timeout: seconds one attempt may take (``None``: the notifier's default).
        order: ``"job"`` (messages of one job arrive in event order), ``"submission"`` (all
            messages of one submission do), or ``""``: per submission when the subscription
            gets submission events (``SubmissionAccepted``, ``SubmissionCompleted``,
            ``CommandRejected``), per job otherwise.
        notification_id: set for a notification a submission declared
            (:mod:`engine.notify.declared`): ``${NOTIFICATION_ID}``.
    """

    id: str
    url: str = ""
    email: str = ""
    secret: str | None = None
    events: frozenset[str] = DEFAULT_EVENTS
    statuses: frozenset[JobStatus] = frozenset()
    tasks: frozenset[str] = frozenset()
    submissions: frozenset[str] = frozenset()
    jobs: frozenset[str] = frozenset()
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    content_type: str = "application/json"
    subject: str = "joblog: job ${JOB_REF} ${JOB_STATUS}"
    max_attempts: int | None = None
    timeout: float | None = None
    order: str = ""
    notification_id: str = ""

    @property
    def ordering(self) -> str:
        """``"job"`` or ``"submission"``: what the subscription's messages are ordered by."""
        if self.order:
            return self.order
        return "submission" if self.events & SUBMISSION_EVENTS else "job"

    def order_key(self, event: Event) -> tuple[str, ...]:
        """The key whose messages are delivered one at a time, in event order."""
        if self.ordering == "submission" or not event.job_id:
            return (self.id, event.submission_id)
        return (self.id, event.submission_id, event.job_id)

    @property
    def channel(self) -> str:
        """``webhook`` or ``email``."""
        return "email" if self.email else "webhook"

    @property
    def target(self) -> str:
        return self.email or self.url

    def matches(self, event: Event, job: JobView | None) -> bool:
        """Whether this subscription wants ``event`` (``job``: its job after the event).

        A ledger's decisions (an idempotency key's, a limit's) and a queue's settings are the
        engine's own bookkeeping, never sent: the jobs they concern get their own events
        (``JobSkipped``, ``JobPending``, ``JobHeld``, ``JobDispatched``).
        """
        if event.name not in self.events or is_pseudo_submission(event.submission_id):
            return False
        if self.submissions and event.submission_id not in self.submissions:
            return False
        if self.jobs and event.job_id not in self.jobs:
            return False
        if self.tasks and (job is None or job.task not in self.tasks):
            return False
        if self.statuses:
            status: str | None
            if isinstance(event.body, SubmissionCompleted):
                status = str(event.body.status)
            else:
                status = str(job.status) if job is not None else None
            if status not in self.statuses:
                return False
        return True


@dataclass(frozen=True)
class SubscriptionSet:
    """Everything a subscriptions file holds."""

    subscriptions: tuple[Subscription, ...] = ()
    smtp: SmtpSettings | None = None


def load_subscriptions(path: str | Path, env: Mapping[str, str] | None = None) -> SubscriptionSet:
    """Reads a YAML or JSON subscriptions file (see the module docstring).

    Args:
        path: the file.
        env: where ``secret_env`` and ``password_env`` are looked up (``os.environ``).

    Raises:
        SubscriptionError: the file cannot be read or an entry is malformed.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SubscriptionError(f"cannot read subscriptions file {file}: {exc}") from exc
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise SubscriptionError(f"{file} is not valid YAML/JSON: {exc}") from exc
    return parse_subscriptions(data or {}, env=env, source=str(file))


def parse_subscriptions(
    data: Any, *, env: Mapping[str, str] | None = None, source: str = "subscriptions"
) -> SubscriptionSet:
    """Builds subscriptions from decoded YAML/JSON (a mapping, or a bare list of entries).

    Raises:
        SubscriptionError: an entry is malformed.
    """
    environment = os.environ if env is None else env
    if isinstance(data, list):
        data = {"subscriptions": data}
    if not isinstance(data, Mapping):
        raise SubscriptionError(f"{source}: expected a mapping with a 'subscriptions' list")
    unknown = set(data) - {"subscriptions", "smtp"}
    if unknown:
        raise SubscriptionError(f"{source}: unknown top-level keys {sorted(unknown)}")
    entries = data.get("subscriptions") or []
    if not isinstance(entries, list):
        raise SubscriptionError(f"{source}: 'subscriptions' must be a list")
    subscriptions = tuple(
        _subscription(entry, index, environment, source) for index, entry in enumerate(entries)
    )
    seen: set[str] = set()
    for item in subscriptions:
        if item.id in seen:
            raise SubscriptionError(f"{source}: two subscriptions have the id {item.id!r}")
        seen.add(item.id)
    smtp = _smtp(data["smtp"], environment, source) if data.get("smtp") else None
    return SubscriptionSet(subscriptions, smtp)


def _subscription(entry: Any, index: int, env: Mapping[str, str], source: str) -> Subscription:
    where = f"{source}: subscription #{index + 1}"
    if not isinstance(entry, Mapping):
        raise SubscriptionError(f"{where} must be a mapping")
    unknown = set(entry) - _KNOWN_KEYS
    if unknown:
        raise SubscriptionError(f"{where} has unknown keys {sorted(unknown)}")
    sub_id = str(entry.get("id") or f"subscription-{index + 1}")
    if not _ID.match(sub_id):
        raise SubscriptionError(f"{where}: id {sub_id!r} may hold letters, digits and ._:-")
    where = f"{source}: subscription {sub_id!r}"
    url = str(entry.get("url") or "")
    email = str(entry.get("email") or "")
    if url.startswith("mailto:"):
        email, url = url.removeprefix("mailto:"), ""
    if bool(url) == bool(email):
        raise SubscriptionError(f"{where} needs exactly one of 'url' and 'email'")
    if url and not url.startswith(("http://", "https://")):
        raise SubscriptionError(f"{where}: url must start with http://, https:// or mailto:")
    if email and not _EMAIL.match(email):
        raise SubscriptionError(f"{where}: {email!r} is not an email address")
    secret = entry.get("secret")
    if entry.get("secret_env"):
        name = str(entry["secret_env"])
        if name not in env:
            raise SubscriptionError(f"{where}: environment variable {name} is not set")
        secret = env[name]
    if secret is not None:
        secret = str(secret)
        try:
            secret_key(secret)
        except SubscriptionError as exc:
            raise SubscriptionError(f"{where}: {exc}") from None
    events = _names(entry.get("events"), where)
    statuses = frozenset(
        _status(value, where) for value in _strings(entry.get("statuses"), where, "statuses")
    )
    headers = entry.get("headers") or {}
    if not isinstance(headers, Mapping):
        raise SubscriptionError(f"{where}: headers must be a mapping")
    body = entry.get("body")
    subject = str(entry.get("subject") or Subscription.subject)
    for part in (url, headers, body, subject):
        bad = unknown_placeholders(part)
        if bad:
            raise SubscriptionError(
                f"{where}: unknown template variable(s) {', '.join(sorted(set(bad)))}; "
                "see `joblog notifier variables`"
            )
    max_attempts = entry.get("max_attempts")
    if max_attempts is not None and (not isinstance(max_attempts, int) or max_attempts < 1):
        raise SubscriptionError(f"{where}: max_attempts must be a positive integer")
    timeout = entry.get("timeout")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise SubscriptionError(f"{where}: timeout must be a positive number of seconds")
    order = str(entry.get("order") or "")
    if order and order not in ORDERS:
        raise SubscriptionError(f"{where}: order must be one of {', '.join(ORDERS)}")
    return Subscription(
        id=sub_id,
        url=url,
        email=email,
        secret=secret,
        events=events,
        statuses=statuses,
        tasks=frozenset(_strings(entry.get("tasks"), where, "tasks")),
        submissions=frozenset(_strings(entry.get("submissions"), where, "submissions")),
        jobs=frozenset(_strings(entry.get("jobs"), where, "jobs")),
        headers={str(key): str(value) for key, value in headers.items()},
        body=body,
        content_type=str(entry.get("content_type") or "application/json"),
        subject=subject,
        max_attempts=max_attempts,
        timeout=None if timeout is None else float(timeout),
        order=order,
    )


def _strings(value: Any, where: str, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, Sequence):
        raise SubscriptionError(f"{where}: {key} must be a list")
    return [str(item) for item in value]


def _names(value: Any, where: str) -> frozenset[str]:
    names = _strings(value, where, "events")
    if not names:
        return DEFAULT_EVENTS
    if "*" in names:
        return frozenset(EVENT_NAMES)
    out: set[str] = set()
    for name in names:
        try:
            out |= event_names(name)
        except ValueError as exc:
            raise SubscriptionError(f"{where}: {exc}") from None
    return frozenset(out)


def _status(value: str, where: str) -> JobStatus:
    try:
        return JobStatus(value.upper())
    except ValueError:
        known = ", ".join(status.value for status in JobStatus)
        raise SubscriptionError(f"{where}: unknown status {value!r} (known: {known})") from None


def _smtp(value: Any, env: Mapping[str, str], source: str) -> SmtpSettings:
    if not isinstance(value, Mapping):
        raise SubscriptionError(f"{source}: smtp must be a mapping")
    unknown = set(value) - {
        "host",
        "port",
        "from",
        "starttls",
        "ssl",
        "username",
        "password",
        "password_env",
        "timeout",
    }
    if unknown:
        raise SubscriptionError(f"{source}: smtp has unknown keys {sorted(unknown)}")
    password = value.get("password")
    if value.get("password_env"):
        name = str(value["password_env"])
        if name not in env:
            raise SubscriptionError(f"{source}: smtp: environment variable {name} is not set")
        password = env[name]
    try:
        port = int(value.get("port", 25))
        timeout = float(value.get("timeout", 10.0))
    except (TypeError, ValueError):
        raise SubscriptionError(f"{source}: smtp port and timeout must be numbers") from None
    return SmtpSettings(
        host=str(value.get("host", "127.0.0.1")),
        port=port,
        sender=str(value.get("from", "joblog@localhost")),
        starttls=bool(value.get("starttls", False)),
        ssl=bool(value.get("ssl", False)),
        username=None if value.get("username") is None else str(value["username"]),
        password=None if password is None else str(password),
        timeout=timeout,
    )
