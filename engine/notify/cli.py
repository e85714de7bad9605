"""``joblog notifier``: deliver webhooks and emails for the events of the cluster.

Usage::

    joblog notifier --subscriptions hooks.yaml [--deliveries .joblog/deliveries.jsonl]
    joblog notifier secret        # print a new whsec_ signing secret
    joblog notifier variables     # list the template variables
    joblog notifier deliveries    # print the deliveries log
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from types import FrameType

from engine import metrics
from engine.config import Settings
from engine.errors import JoblogError
from engine.notify.declared import DeclaredSettings
from engine.notify.delivery import DeliveryRetry
from engine.notify.egress import ALLOW_ENV, DEFAULT_ALLOW, EgressPolicy
from engine.notify.log import read_deliveries
from engine.notify.service import Notifier, NotifierOptions
from engine.notify.signing import generate_secret, secret_key
from engine.notify.subscriptions import SubscriptionSet, load_subscriptions
from engine.notify.templates import VARIABLES

DEFAULT_DELIVERIES = ".joblog/deliveries.jsonl"
#: Where the secret of declared notifications' webhooks is read from by default.
DECLARED_SECRET_ENV = "JOBLOG_NOTIFICATIONS_SECRET"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``joblog notifier``."""
    parser = argparse.ArgumentParser(
        prog="joblog notifier",
        description="Deliver webhooks (signed per Standard Webhooks) and emails for job events. "
        "Subcommands: secret, variables, deliveries.",
    )
    parser.add_argument(
        "--subscriptions",
        metavar="FILE",
        help="YAML or JSON file of subscriptions and SMTP settings (see docs/notifications.md); "
        "without it only the notifications submissions declare are delivered (webhooks only, "
        "emails need the file's smtp section)",
    )
    parser.add_argument(
        "--api-url",
        default=os.environ.get("JOBLOG_API_URL", ""),
        metavar="URL",
        help="base URL of the REST API (joblog ui), for ${JOB_URL} (default $JOBLOG_API_URL)",
    )
    parser.add_argument(
        "--declared-secret-env",
        default=DECLARED_SECRET_ENV,
        metavar="NAME",
        help="environment variable holding the whsec_ secret that signs the webhooks of "
        f"notifications submissions declare (default {DECLARED_SECRET_ENV}; unset: unsigned)",
    )
    parser.add_argument(
        "--deliveries",
        default=DEFAULT_DELIVERIES,
        metavar="PATH",
        help=f"JSON-lines log of every delivery attempt (default {DEFAULT_DELIVERIES})",
    )
    parser.add_argument(
        "--webhook-allow",
        default=os.environ.get(ALLOW_ENV) or DEFAULT_ALLOW,
        metavar="LIST",
        help="what webhooks may reach: public, loopback, private, networks (10.0.0.0/8) and "
        "host patterns (*.example.com), comma-separated; link-local and cloud metadata "
        f"addresses only when a network names them (default ${ALLOW_ENV}, else {DEFAULT_ALLOW})",
    )
    parser.add_argument("--group", help="consumer group (default <prefix>notifier)")
    parser.add_argument("--max-attempts", type=int, default=5, help="attempts per message")
    parser.add_argument(
        "--retry-backoff", type=float, default=1.0, help="seconds before the first retry"
    )
    parser.add_argument(
        "--max-backoff", type=float, default=300.0, help="longest wait between attempts (s)"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per attempt")
    parser.add_argument("--concurrency", type=int, default=8, help="attempts made at once")
    parser.add_argument(
        "--max-pending", type=int, default=1000, help="outstanding messages before pausing"
    )
    parser.add_argument(
        "--max-hold",
        type=float,
        default=60.0,
        help="seconds a failing message may hold back later messages of its job or submission",
    )
    parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="a new group delivers the whole history (default: start at the end of the log)",
    )
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers")
    parser.add_argument("--topic-prefix", help="prefix of joblog's topics (default joblog.)")
    metrics.add_arguments(parser)
    parser.add_argument("--log-level", default="INFO")
    return parser


def notifier_main(argv: list[str]) -> int:
    """Runs ``joblog notifier ...``; returns the exit code (0 ok, 1 error, 2 usage)."""
    if argv and argv[0] == "secret":
        print(generate_secret())
        return 0
    if argv and argv[0] == "variables":
        for name in VARIABLES:
            print(f"${{{name}}}")
        return 0
    if argv and argv[0] == "deliveries":
        return _show_deliveries(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        subscriptions = (
            load_subscriptions(args.subscriptions) if args.subscriptions else SubscriptionSet()
        )
        secret = os.environ.get(args.declared_secret_env) or None
        if secret is not None:
            secret_key(secret)
        egress = EgressPolicy.parse(args.webhook_allow)
    except JoblogError as exc:
        print(f"joblog notifier: {exc}", file=sys.stderr)
        return 2
    if args.max_attempts < 1 or args.concurrency < 1 or args.max_pending < 1:
        print(
            "joblog notifier: --max-attempts, --concurrency and --max-pending must be >= 1",
            file=sys.stderr,
        )
        return 2
    settings = Settings.from_env(
        bootstrap_servers=args.bootstrap_servers, topic_prefix=args.topic_prefix
    )
    notifier = Notifier(
        settings,
        subscriptions,
        deliveries=args.deliveries,
        options=NotifierOptions(
            group_id=args.group,
            retry=DeliveryRetry(
                max_attempts=args.max_attempts,
                backoff_s=args.retry_backoff,
                max_backoff_s=args.max_backoff,
            ),
            timeout_s=args.timeout,
            concurrency=args.concurrency,
            max_pending=args.max_pending,
            max_hold_s=args.max_hold,
            from_beginning=args.from_beginning,
            api_url=args.api_url,
            declared=DeclaredSettings(secret=secret),
            egress=egress,
        ),
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        with metrics.serving(notifier.telemetry, args.metrics_port, args.metrics_host):
            notifier.run(stop)
    except JoblogError as exc:
        print(f"joblog notifier: {exc}", file=sys.stderr)
        return 1
    return 0


def _show_deliveries(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="joblog notifier deliveries", description="Print the deliveries log."
    )
    parser.add_argument("--deliveries", default=DEFAULT_DELIVERIES, metavar="PATH")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--limit", type=int, default=50, help="the last N attempts")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    records = list(read_deliveries(args.deliveries))[-args.limit :]
    for record in records:
        if args.json:
            print(json.dumps(record))
        else:
            code = record.get("status_code") or "-"
            print(
                f"{record['at']}  {record['outcome']:<9} #{record['attempt']} "
                f"{record['subscription']} {record['event']} {record['submission_id']}/"
                f"{record['job_id']} -> {code} {record['error']}".rstrip()
            )
    return 0
