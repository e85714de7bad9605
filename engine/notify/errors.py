"""Exceptions of the notifier."""

from __future__ import annotations

from engine.errors import JoblogError


class NotifyError(JoblogError):
    """Root of the notifier's own errors."""


class SubscriptionError(NotifyError):
    """A subscriptions file is malformed; the message names the entry and what to fix."""


class SignatureError(NotifyError):
    """A webhook's signature headers are missing, stale or do not match its body."""
