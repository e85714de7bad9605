"""Building notification messages and making one delivery attempt (HTTP or SMTP).

A :class:`Message` is what one subscription gets for one event: rendered once, sent as many
times as it takes. Each :func:`attempt` returns an :class:`AttemptResult`; the notifier
decides whether to retry (:func:`backoff_s`).
"""

from __future__ import annotations

import hashlib
import json
import random
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage

from engine.lifecycle.records import Event
from engine.notify.egress import EgressPolicy, TargetRefused, open_guarded
from engine.notify.signing import signed_headers
from engine.notify.subscriptions import SmtpSettings, Subscription
from engine.notify.templates import iso, render, render_structure, variables
from engine.watch import JobView, to_datetime

USER_AGENT = "joblog-notifier/1"
_RESPONSE_SNIPPET = 200
#: HTTP statuses that say the endpoint will never take the message: no retry.
PERMANENT_STATUSES = frozenset({410})


@dataclass(frozen=True)
class Message:
    """One rendered notification of one event for one subscription.

    Attributes:
        message_id: ``msg_`` + a hash of subscription and event: the same for every attempt
            and every redelivery, so receivers can drop duplicates (``webhook-id``).
        subscription: where it goes.
        event: the event it is about.
        target: the rendered URL, or the email address.
        body: the rendered body.
        headers: the rendered extra headers (webhooks).
        subject: the rendered subject (email).
        content_type: the body's media type.
    """

    message_id: str
    subscription: Subscription
    event: Event
    target: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    subject: str = ""
    content_type: str = "application/json"


@dataclass(frozen=True)
class AttemptResult:
    """How one attempt went.

    Attributes:
        ok: the endpoint took the message (HTTP 2xx, or the SMTP server accepted it).
        permanent: retrying cannot help (HTTP 410 Gone, a malformed message).
        status_code: the HTTP status, when a response came.
        error: what went wrong.
        response: the start of the response body.
        duration_ms: how long the attempt took.
        refused: nothing was sent: the target is outside the webhook allow-list
            (:mod:`engine.notify.egress`); also ``permanent``.
    """

    ok: bool
    permanent: bool = False
    status_code: int | None = None
    error: str = ""
    response: str = ""
    duration_ms: int = 0
    refused: bool = False


def message_id(subscription_id: str, event_id: str) -> str:
    """The stable ``webhook-id`` of an event's message to a subscription."""
    digest = hashlib.sha256(f"{subscription_id}\n{event_id}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def build_message(
    subscription: Subscription, event: Event, job: JobView | None, *, api_url: str = ""
) -> Message:
    """Renders the message ``subscription`` gets for ``event`` (``job``: after the event;
    ``api_url``: the REST API's base URL, for ``${JOB_URL}``)."""
    values = variables(event, job, api_url=api_url, notification_id=subscription.notification_id)
    mid = message_id(subscription.id, event.event_id)
    if subscription.email:
        body = (
            render(subscription.body, values)
            if isinstance(subscription.body, str)
            else default_email_body(values)
        )
        return Message(
            mid,
            subscription,
            event,
            subscription.email,
            body.encode(),
            subject=render(subscription.subject, values),
            content_type="text/plain",
        )
    template = subscription.body
    content_type = subscription.content_type
    if template is None:
        payload = {
            "type": event.name,
            "timestamp": iso(to_datetime(event.timestamp)),
            "data": {name.lower(): value for name, value in values.items()},
        }
        data = json.dumps(payload, separators=(",", ":")).encode()
        content_type = "application/json"
    elif isinstance(template, str):
        data = render(template, values).encode()
    else:
        data = json.dumps(render_structure(template, values), separators=(",", ":")).encode()
        content_type = "application/json"
    headers = {name: render(value, values) for name, value in subscription.headers.items()}
    return Message(
        mid,
        subscription,
        event,
        render(subscription.url, values, url=True),
        data,
        headers=headers,
        content_type=content_type,
    )


def default_email_body(values: dict[str, str]) -> str:
    """The text of an email without a body template, after Tapis's job emails."""
    if values["JOB_ID"]:
        head = (
            f'The status of job {values["JOB_REF"]}, "{values["JOB_NAME"]}," '
            f"has changed to {values['JOB_STATUS']}."
        )
    else:
        head = f"Submission {values['SUBMISSION_ID']} has changed to {values['JOB_STATUS']}."
    lines = [
        head,
        "",
        f"Event: {values['EVENT']}",
        f"Message: {values['EVENT_DESCRIPTION']}",
        f"Submission: {values['SUBMISSION_ID']}",
    ]
    if values["JOB_ID"]:
        lines += [
            f"Name: {values['JOB_NAME']}",
            f"URL: {values['JOB_URL'] or '-'}",
            f"Task: {values['JOB_TASK'] or '-'}",
            f"System: {values['JOB_SYSTEM'] or '-'}",
            f"Attempt: {values['JOB_ATTEMPT'] or '-'}",
            f"Submit Time: {values['JOB_SUBMIT_TIME'] or '-'}",
            f"Start Time: {values['JOB_START_TIME'] or '-'}",
            f"End Time: {values['JOB_END_TIME'] or '-'}",
        ]
        if values["JOB_ARCHIVE_PATH"]:
            lines.append(f"Output Path: {values['JOB_ARCHIVE_PATH']}")
        if values["JOB_ARCHIVE_URL"]:
            lines.append(f"Output URL: {values['JOB_ARCHIVE_URL']}")
        if values["JOB_ERROR"]:
            lines.append(f"Error: {values['JOB_ERROR']}")
    return "\n".join(lines) + "\n"


def attempt(
    message: Message,
    *,
    timeout: float = 10.0,
    smtp: SmtpSettings | None = None,
    egress: EgressPolicy | None = None,
) -> AttemptResult:
    """Makes one delivery attempt of ``message``; never raises for delivery failures.

    A webhook goes only to an address ``egress`` allows (default: ``public,loopback``);
    another target is a permanent, ``refused`` failure and nothing is sent.
    """
    started = time.monotonic()
    if message.subscription.email:
        result = _send_email(message, smtp, timeout)
    else:
        result = _post(message, timeout, egress or EgressPolicy())
    elapsed = round((time.monotonic() - started) * 1000)
    return AttemptResult(
        ok=result.ok,
        permanent=result.permanent,
        status_code=result.status_code,
        error=result.error,
        response=result.response,
        duration_ms=elapsed,
        refused=result.refused,
    )


def _post(message: Message, timeout: float, egress: EgressPolicy) -> AttemptResult:
    headers = {
        "Content-Type": message.content_type,
        "User-Agent": USER_AGENT,
        **message.headers,
        # Signed per attempt: the timestamp is part of what is signed.
        **signed_headers(message.subscription.secret, message.message_id, message.body),
    }
    request = urllib.request.Request(message.target, data=message.body, headers=headers)
    try:
        with open_guarded(egress, request, timeout) as response:
            code = int(response.status)
            text = response.read(_RESPONSE_SNIPPET).decode("utf-8", "replace")
            return AttemptResult(ok=200 <= code < 300, status_code=code, response=text)
    except TargetRefused as exc:
        return AttemptResult(ok=False, permanent=True, refused=True, error=str(exc))
    except urllib.error.HTTPError as exc:
        text = exc.read(_RESPONSE_SNIPPET).decode("utf-8", "replace") if exc.fp else ""
        return AttemptResult(
            ok=False,
            permanent=exc.code in PERMANENT_STATUSES,
            status_code=exc.code,
            error=f"HTTP {exc.code} {exc.reason}",
            response=text,
        )
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return AttemptResult(ok=False, error=f"{type(exc).__name__}: {reason}")


def _send_email(message: Message, smtp: SmtpSettings | None, timeout: float) -> AttemptResult:
    if smtp is None:
        return AttemptResult(
            ok=False,
            permanent=True,
            error="no smtp settings: add an 'smtp' section to the subscriptions file",
        )
    email = EmailMessage()
    email["From"] = smtp.sender
    email["To"] = message.target
    email["Subject"] = message.subject
    email["Message-ID"] = f"<{message.message_id}@joblog>"
    email.set_content(message.body.decode())
    try:
        client: smtplib.SMTP
        if smtp.ssl:
            client = smtplib.SMTP_SSL(
                smtp.host, smtp.port, timeout=timeout, context=ssl.create_default_context()
            )
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=timeout)
        with client:
            if smtp.starttls and not smtp.ssl:
                client.starttls(context=ssl.create_default_context())
            if smtp.username:
                client.login(smtp.username, smtp.password or "")
            client.send_message(email)
        return AttemptResult(ok=True, response="accepted")
    except smtplib.SMTPRecipientsRefused as exc:
        return AttemptResult(ok=False, permanent=True, error=f"recipient refused: {exc}")
    except (smtplib.SMTPException, OSError) as exc:
        return AttemptResult(ok=False, error=f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class DeliveryRetry:
    """Exponential backoff of failed deliveries.

    Attributes:
        max_attempts: attempts in all before giving up.
        backoff_s: delay before the second attempt.
        multiplier: factor applied for each further attempt.
        max_backoff_s: upper bound of a delay.
        jitter: fraction of the delay drawn at random (±).
    """

    max_attempts: int = 5
    backoff_s: float = 1.0
    multiplier: float = 2.0
    max_backoff_s: float = 300.0
    jitter: float = 0.1


def backoff_s(
    policy: DeliveryRetry, failed_attempts: int, rng: random.Random | None = None
) -> float:
    """Seconds to wait after the ``failed_attempts``-th failure."""
    delay = min(
        policy.max_backoff_s, policy.backoff_s * policy.multiplier ** max(0, failed_attempts - 1)
    )
    if policy.jitter:
        delay *= 1 + (rng or random).uniform(-policy.jitter, policy.jitter)
    return max(0.0, delay)
