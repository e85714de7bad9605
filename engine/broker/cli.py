"""``joblog broker start|stop|status|logs``: the local broker from the command line."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

from engine.broker.distribution import KAFKA_VERSION
from engine.broker.local import DEFAULT_DATA_DIR, LocalBroker
from engine.errors import BrokerError

DEFAULT_PORT = 9092
"""The client port of a new broker: the one joblog's settings use by default."""

EXIT_NOT_RUNNING = 3


def build_parser(prog: str = "joblog broker") -> argparse.ArgumentParser:
    """The argument parser of ``joblog broker``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Run a single-node Apache Kafka broker (KRaft) from Maven Central jars and the "
            "machine's Java, for the demo and for development."
        ),
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"the broker's configuration, data, pid file and log (default: {DEFAULT_DATA_DIR})",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    start = commands.add_parser(
        "start", parents=[common], help="start the broker (in the background by default)"
    )
    start.add_argument(
        "--port",
        type=int,
        default=None,
        help=(
            f"client port; 0 picks a free one (default: the last run's port, else {DEFAULT_PORT})"
        ),
    )
    start.add_argument(
        "--foreground",
        action="store_true",
        help="stay attached and stop the broker on Ctrl-C or SIGTERM",
    )
    start.add_argument(
        "--kafka-version",
        default=KAFKA_VERSION,
        help=f"Apache Kafka version to run (default: {KAFKA_VERSION})",
    )
    commands.add_parser("stop", parents=[common], help="stop the broker")
    commands.add_parser(
        "status", parents=[common], help=f"show the broker's state (exit {EXIT_NOT_RUNNING}: down)"
    )
    logs = commands.add_parser("logs", parents=[common], help="print the broker's log")
    logs.add_argument("-n", "--lines", type=int, default=100, help="lines to print (default 100)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    return parser


def broker_main(argv: Sequence[str], *, prog: str = "joblog broker") -> int:
    """Runs ``joblog broker ...``.

    Args:
        argv: the arguments after ``broker``.
        prog: the program name shown in help and usage.

    Returns:
        The process exit code: 0 on success, 1 on a broker error, 3 from ``status`` when the
        broker is not running.
    """
    args = build_parser(prog).parse_args(list(argv))
    _show_progress()
    try:
        if args.command == "start":
            return _start(args)
        broker = LocalBroker(args.data_dir)
        if args.command == "stop":
            return _stop(broker)
        if args.command == "status":
            return _status(broker)
        return _logs(broker, lines=args.lines, follow=args.follow)
    except BrokerError as exc:
        print(f"joblog broker: {exc}", file=sys.stderr)
        return 1


def _start(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    port: int | None = args.port
    if port is None and not (data_dir / "server.properties").exists():
        port = DEFAULT_PORT
    broker = LocalBroker(data_dir, port=port, version=args.kafka_version)
    running = broker.status()
    if running.running:
        print(f"Kafka broker already running at {running.bootstrap_servers} (pid {running.pid})")
        print(f"export JOBLOG_BOOTSTRAP_SERVERS={running.bootstrap_servers}")
        return 0
    broker.start(detach=not args.foreground)
    print(
        f"Apache Kafka {broker.version} broker running at {broker.bootstrap_servers} "
        f"(pid {broker.pid}), started in {broker.started_in or 0.0:.1f} s"
    )
    print(f"data dir: {broker.data_dir}   log: {broker.log_file}")
    print(f"export JOBLOG_BOOTSTRAP_SERVERS={broker.bootstrap_servers}")
    sys.stdout.flush()
    if not args.foreground:
        return 0
    return _stay_attached(broker)


def _stay_attached(broker: LocalBroker) -> int:
    def _on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_signal)
    try:
        code = broker.wait()
    except KeyboardInterrupt:
        print("Stopping the broker...", file=sys.stderr)
        broker.stop()
        return 0
    print(f"the broker exited with code {code}; see {broker.log_file}", file=sys.stderr)
    return 1


def _stop(broker: LocalBroker) -> int:
    status = broker.status()
    if not status.running:
        print(f"no Kafka broker running from {broker.data_dir}")
        return 0
    started = time.monotonic()
    broker.stop()
    print(f"stopped the broker (pid {status.pid}) in {time.monotonic() - started:.1f} s")
    return 0


def _status(broker: LocalBroker) -> int:
    status = broker.status()
    if not status.running:
        print(f"not running (data dir {status.data_dir})")
        return EXIT_NOT_RUNNING
    print(f"running at {status.bootstrap_servers} (pid {status.pid})")
    print(f"data dir: {status.data_dir}   log: {status.log_file}")
    return 0


def _logs(broker: LocalBroker, *, lines: int, follow: bool) -> int:
    if not broker.log_file.exists():
        print(f"no broker log at {broker.log_file}", file=sys.stderr)
        return 1
    tail = broker.log_tail(lines)
    if tail:
        print(tail)
    if follow:
        with contextlib.suppress(KeyboardInterrupt):
            _follow(broker.log_file, sys.stdout)
    return 0


def _follow(path: Path, out: TextIO) -> None:
    """Prints what is appended to ``path``, reopening it when a restart replaces it."""
    handle = path.open("r", errors="replace")
    handle.seek(0, os.SEEK_END)
    inode = os.fstat(handle.fileno()).st_ino
    try:
        while True:
            chunk = handle.read()
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            time.sleep(0.2)
            try:
                replaced = path.stat().st_ino != inode
            except FileNotFoundError:
                continue
            if replaced:
                handle.close()
                handle = path.open("r", errors="replace")
                inode = os.fstat(handle.fileno()).st_ino
    finally:
        handle.close()


def _show_progress() -> None:
    """Lets the launcher's progress lines (download, readiness) reach the terminal."""
    logger = logging.getLogger("engine.broker")
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
