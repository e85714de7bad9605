"""``joblog scheduler``: run one scheduler instance until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from types import FrameType

from engine import collector, metrics
from engine.config import Settings
from engine.lifecycle.admission import AdmissionLimits
from engine.lifecycle.decide import Policy
from engine.logs import configure_logging
from engine.scheduler.service import Scheduler, SchedulerConfig, default_instance_id


def scheduler_main(argv: list[str]) -> int:
    """Runs ``joblog scheduler [options]``; returns the exit code."""
    scheduler, args = build_scheduler(argv)
    collector.tune_for_service()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with metrics.serving(scheduler.telemetry, args.metrics_port, args.metrics_host):
        scheduler.run(stop)
    logging.getLogger("joblog.scheduler").info("stopped: %s", dict(scheduler.metrics.counts))
    if scheduler.abandoned:
        # A client is still inside a call that overran its deadline; destroying it at
        # interpreter exit would wait for that call. Nothing is left to flush.
        logging.shutdown()
        os._exit(0)
    return 0


def build_scheduler(argv: list[str]) -> tuple[Scheduler, argparse.Namespace]:
    """The scheduler ``joblog scheduler [options]`` runs (not started), and its options.

    Raises:
        SystemExit: the options are not valid (argparse's message on stderr).
    """
    parser = argparse.ArgumentParser(
        prog="joblog scheduler",
        description="Decide what happens to every job: the single writer of the events topic.",
    )
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers")
    parser.add_argument("--topic-prefix", help="prefix of joblog's topics (default joblog.)")
    parser.add_argument(
        "--instance-id",
        default=None,
        help="stable id of this instance (its transactional id derives from it); "
        "default: $JOBLOG_SCHEDULER_ID or the host name",
    )
    parser.add_argument("--batch-size", type=int, default=2000, help="records per transaction")
    parser.add_argument("--lease-ms", type=int, default=30_000, help="worker lease")
    parser.add_argument("--kill-grace-ms", type=int, default=15_000, help="wait for a kill")
    parser.add_argument(
        "--session-timeout-ms",
        type=int,
        default=10_000,
        help="how long a silent instance keeps its partitions before the others take them "
        "over (a restarted instance takes them back at once)",
    )
    parser.add_argument(
        "--transaction-timeout-ms",
        type=int,
        default=SchedulerConfig.transaction_timeout_ms,
        help="how long the broker lets a transaction stay open: a killed instance's open "
        "transaction holds up readers of the partitions it wrote to until then "
        "(default %(default)d; it must exceed the longest transaction, docs/operations.md)",
    )
    parser.add_argument(
        "--linger-ms",
        type=float,
        default=SchedulerConfig.linger_s * 1000,
        help="once a record came, how long a batch waits for more before it is decided "
        "(default %(default)g)",
    )
    admission = parser.add_argument_group(
        "admission control",
        "over a limit, a new submission is answered SubmissionThrottled and its client "
        "retries later; 0 turns a limit off",
    )
    for flag, name, text in (
        ("--max-pending-jobs", "max_pending_jobs", "PENDING jobs per queue, cluster-wide"),
        (
            "--max-dispatch-backlog",
            "max_dispatch_backlog",
            "dispatch records of a queue its workers have not done",
        ),
        ("--max-projection-lag", "max_projection_lag", "events the projector has not folded"),
    ):
        env = f"JOBLOG_{name.upper()}"
        default = getattr(AdmissionLimits(), name)
        admission.add_argument(
            flag,
            type=int,
            default=os.environ.get(env, str(default)),  # argparse checks it as it does a flag
            help=f"{text} (default ${env} or {default})",
        )
    metrics.add_arguments(parser)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log line format"
    )
    args = parser.parse_args(argv)
    try:
        limits = AdmissionLimits(
            max_pending_jobs=args.max_pending_jobs,
            max_dispatch_backlog=args.max_dispatch_backlog,
            max_projection_lag=args.max_projection_lag,
        )
    except ValueError as exc:
        parser.error(str(exc))
    configure_logging(args.log_level, args.log_format)
    settings = Settings.from_env(
        bootstrap_servers=args.bootstrap_servers, topic_prefix=args.topic_prefix
    )
    scheduler = Scheduler(
        settings,
        policy=Policy.from_limits(
            settings.limits, lease_ms=args.lease_ms, kill_grace_ms=args.kill_grace_ms
        ),
        config=SchedulerConfig(
            instance_id=args.instance_id or default_instance_id(),
            batch_size=args.batch_size,
            session_timeout_ms=args.session_timeout_ms,
            transaction_timeout_ms=args.transaction_timeout_ms,
            linger_s=args.linger_ms / 1000,
            admission=limits,
        ),
    )
    return scheduler, args
