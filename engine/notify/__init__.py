"""Notifications: webhooks and emails for job events (``joblog notifier``).

See :mod:`engine.notify.subscriptions` for the subscriptions file,
:mod:`engine.notify.templates` for the ``${VARIABLES}``, :mod:`engine.notify.signing` for the
Standard Webhooks signature, and :mod:`engine.notify.service` for the delivery guarantees.
"""

from engine.notify.delivery import AttemptResult, DeliveryRetry, Message, build_message
from engine.notify.errors import NotifyError, SignatureError, SubscriptionError
from engine.notify.log import DeliveryLog, read_deliveries
from engine.notify.service import Notifier, NotifierOptions
from engine.notify.signing import generate_secret, sign, signed_headers, verify
from engine.notify.subscriptions import (
    SmtpSettings,
    Subscription,
    SubscriptionSet,
    load_subscriptions,
    parse_subscriptions,
)
from engine.notify.templates import VARIABLES, render, variables

__all__ = [
    "VARIABLES",
    "AttemptResult",
    "DeliveryLog",
    "DeliveryRetry",
    "Message",
    "Notifier",
    "NotifierOptions",
    "NotifyError",
    "SignatureError",
    "SmtpSettings",
    "Subscription",
    "SubscriptionError",
    "SubscriptionSet",
    "build_message",
    "generate_secret",
    "load_subscriptions",
    "parse_subscriptions",
    "read_deliveries",
    "render",
    "sign",
    "signed_headers",
    "variables",
    "verify",
]
