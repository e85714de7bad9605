"""Signing webhooks the Standard Webhooks way (https://www.standardwebhooks.com).

Every webhook carries three headers:

* ``webhook-id``: the message id, the same for every attempt of one notification (receivers
  use it to drop duplicates: delivery is at least once);
* ``webhook-timestamp``: seconds since the epoch when the attempt was made;
* ``webhook-signature``: ``v1,<base64 HMAC-SHA256>`` of ``"<id>.<timestamp>.<body>"``, keyed
  with the base64-decoded part of the subscription's secret ``whsec_<base64>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

from engine.notify.errors import SignatureError, SubscriptionError

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
#: Receivers reject timestamps further than this from their clock (replay protection).
DEFAULT_TOLERANCE_S = 5 * 60


def generate_secret(size: int = 24) -> str:
    """A new random signing secret, ``whsec_`` followed by base64 of ``size`` random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(size)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret.

    Raises:
        SubscriptionError: the secret is not ``whsec_`` followed by base64.
    """
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SubscriptionError(
            "a webhook secret must be 'whsec_' followed by base64; "
            "make one with `joblog notifier secret`"
        ) from None
    if not key:
        raise SubscriptionError("a webhook secret must not be empty")
    return key


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value (``v1,<base64>``) of one attempt."""
    content = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signed_headers(
    secret: str | None, message_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (no signature without a secret)."""
    at = int(time.time()) if timestamp is None else timestamp
    headers = {"webhook-id": message_id, "webhook-timestamp": str(at)}
    if secret:
        headers["webhook-signature"] = sign(secret, message_id, at, body)
    return headers


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Checks a received webhook, as a receiver should.

    Args:
        secret: the subscription's ``whsec_`` secret.
        headers: the request headers (names in any case).
        body: the raw request body.
        tolerance_s: how far the timestamp may be from ``now``.
        now: the receiver's clock (``time.time()`` when omitted).

    Raises:
        SignatureError: a header is missing, the timestamp is out of tolerance, or no
            ``v1`` signature matches.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        message_id = lowered["webhook-id"]
        raw_timestamp = lowered["webhook-timestamp"]
        signatures = lowered["webhook-signature"]
    except KeyError as missing:
        raise SignatureError(f"missing header {missing.args[0]}") from None
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise SignatureError(f"webhook-timestamp {raw_timestamp!r} is not an integer") from None
    clock = time.time() if now is None else now
    if abs(clock - timestamp) > tolerance_s:
        raise SignatureError(f"webhook-timestamp {timestamp} is outside the tolerance")
    expected = sign(secret, message_id, timestamp, body).split(",", 1)[1]
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == SIGNATURE_VERSION and hmac.compare_digest(value, expected):
            return
    raise SignatureError("no webhook-signature matches the body")
