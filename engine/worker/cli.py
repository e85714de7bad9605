"""``joblog worker``: run one worker until SIGTERM or Ctrl-C.

Example::

    joblog worker --queue default --concurrency 8 --tasks myproject.tasks,myproject.more

The first SIGTERM (or Ctrl-C) stops taking work and drains running attempts for up to
``--drain-timeout`` seconds; what is still running then is reported unfinished and retried
elsewhere. A second signal ends the drain at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from types import FrameType

from confluent_kafka import KafkaException

from engine import metrics
from engine.config import Settings
from engine.errors import JoblogError
from engine.logs import configure_logging
from engine.worker.attempt import AttemptOptions
from engine.worker.forkserver import keep_from_children, release_fd
from engine.worker.output import OutputLimits
from engine.worker.tasks import TaskRegistry
from engine.worker.worker import ISOLATIONS, POOL, Worker, WorkerOptions

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``joblog worker``."""
    parser = argparse.ArgumentParser(
        prog="joblog worker",
        description="Run jobs of one queue: registered Python tasks and shell commands.",
    )
    parser.add_argument("--queue", default="default", help="the queue to serve (default: default)")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="attempts run at once (default: 4)"
    )
    parser.add_argument(
        "--tasks",
        action="append",
        default=[],
        metavar="MODULES",
        help="comma-separated modules whose @task functions this worker runs; repeatable",
    )
    parser.add_argument("--worker-id", help="this worker's id (default: host-pid-random)")
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers")
    parser.add_argument("--topic-prefix", help="prefix of joblog's topics (default joblog.)")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds running attempts may finish after a stop signal (default: 30)",
    )
    parser.add_argument(
        "--session-timeout-ms",
        type=int,
        default=10_000,
        help="consumer group session timeout: how soon a crashed worker's share moves",
    )
    parser.add_argument(
        "--max-output-bytes",
        type=int,
        default=OutputLimits.max_bytes,
        help="captured stdout+stderr kept per attempt (default: 1 MiB)",
    )
    parser.add_argument(
        "--isolation",
        choices=ISOLATIONS,
        default=POOL,
        help="pool (default): each Python task attempt in a warm child process, reused for "
        "later attempts (killable, a crash or leak ends only the attempt and its process); "
        "process-per-attempt: a fresh child process for each attempt (nothing carries over "
        "from one attempt to the next; slower); thread: on a worker thread (cooperative "
        "cancel only)",
    )
    parser.add_argument(
        "--max-attempts-per-child",
        type=int,
        default=WorkerOptions.max_attempts_per_child,
        metavar="N",
        help="pool mode: replace a child process after N attempts (default: 1000; 0: never)",
    )
    parser.add_argument(
        "--task-memory-limit",
        type=parse_size,
        default=0,
        metavar="SIZE",
        help="most resident memory (RSS) of one task's process, e.g. 512M or 2G; above it "
        "the attempt fails with MemoryLimitExceeded, and a pool child above half of it after an "
        "attempt is replaced (default: no limit; process isolation)",
    )
    parser.add_argument(
        "--run-dir",
        metavar="DIR",
        help="root of the attempts' running directories (JobContext.running_dir, cgkit's "
        "runningDir; default: $JOBLOG_RUN_DIR, else joblog-runs in the temporary directory)",
    )
    metrics.add_arguments(parser)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log line format"
    )
    return parser


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """``512M``, ``2G``, ``1048576`` (bytes; K, M, G, T are powers of 1024).

    Raises:
        argparse.ArgumentTypeError: not a size.
    """
    raw = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = raw[-1:] if raw[-1:] in _SIZE_UNITS else ""
    number = raw[: len(raw) - len(unit)]
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 512M or 2G") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return int(value * _SIZE_UNITS[unit])


def worker_main(argv: list[str]) -> int:
    """Runs ``joblog worker [options]``.

    Args:
        argv: the arguments after ``worker``.

    Returns:
        The exit code: 0 after a clean stop, 1 on a Kafka or joblog error, 2 on bad usage.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.concurrency < 1:
        parser.print_usage(sys.stderr)
        print("joblog worker: --concurrency must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if args.max_attempts_per_child < 0:
        parser.print_usage(sys.stderr)
        print("joblog worker: --max-attempts-per-child must be 0 or more", file=sys.stderr)
        return EXIT_USAGE
    # Like `python -m`, let task modules of the current directory be found.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    modules = [name.strip() for item in args.tasks for name in item.split(",") if name.strip()]
    try:
        registry = TaskRegistry.from_modules(modules)
    except JoblogError as exc:
        print(f"joblog worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(args.log_level, args.log_format)
    settings = Settings.from_env(
        bootstrap_servers=args.bootstrap_servers, topic_prefix=args.topic_prefix
    )
    worker = Worker(
        settings,
        args.queue,
        args.concurrency,
        registry,
        worker_id=args.worker_id,
        options=WorkerOptions(
            drain_timeout_s=args.drain_timeout,
            session_timeout_ms=args.session_timeout_ms,
            attempt=AttemptOptions(
                output_limits=OutputLimits(max_bytes=args.max_output_bytes),
                memory_limit_bytes=args.task_memory_limit,
                run_dir=args.run_dir or "",
            ),
            isolation=args.isolation,
            max_attempts_per_child=args.max_attempts_per_child,
        ),
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            worker.hurry()
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        with metrics.serving(worker.telemetry, args.metrics_port, args.metrics_host) as server:
            port_fd = None if server is None else server.fileno()
            if port_fd is not None:
                keep_from_children(port_fd)  # the task processes never hold the port
            try:
                worker.run(stop)
            finally:
                if port_fd is not None:
                    release_fd(port_fd)
    except (KafkaException, JoblogError) as exc:
        logging.getLogger("joblog.worker").error("worker failed: %s", exc)
        return EXIT_FAILURE
    return EXIT_OK
