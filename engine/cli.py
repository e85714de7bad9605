"""``joblog``: the command line of joblog.

Client commands (this module)::

    joblog submit --task NAME [--arg V]... [--kwarg K=V]...   one task job
    joblog submit [options] -- CMD [ARG]...                    one shell-command job
    joblog submit --file jobs.yaml                             a graph and/or tree of jobs
    joblog cancel|retry|delete REF [JOB]                       REF: SUBMISSION or SUBMISSION/JOB
    joblog watch SUBMISSION                                    live progress, then a summary
    joblog status REF | history REF | jobs [filters]
    joblog topics create|list|describe
    joblog acls [--apply] [--format table|kafka-acls|json]    the least-privilege ACL set

Services and tools, handed over to their packages (loaded only when used)::

    joblog broker | scheduler | worker | projector | projections | sql | notifier | demo | ui

Each command imports what it needs inside its handler, on purpose: the module alone loads in
~0.13 s, everything a command might need (librdkafka, DuckDB, Arrow, the worker, the
scheduler) in ~1 s, and a user typing ``joblog status`` or ``--help`` should not wait for the
packages of every other command.

Global options go before the command: ``--bootstrap-servers``, ``--topic-prefix``. Every
client command takes ``--json`` for scripts. ``submit``, ``cancel``, ``retry`` and ``delete``
wait for the scheduler's decision (``--wait-timeout``, 15 s; ``--no-wait`` just sends). A
failure, an unreachable cluster included (within 5 s), is one line on stderr; librdkafka's
log lines show only with ``JOBLOG_LOG_LEVEL``. Exit codes: 0 success; 1 a job failed, a
command was rejected, or something was not found; 2 bad usage; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from engine.api import Joblog, Submission
    from engine.client import CommandHandle
    from engine.errors import EngineBusy
    from engine.lifecycle.records import Event
    from engine.lifecycle.views import JobView, SubmissionView

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Seconds a client command waits for the scheduler's decision on its command.
DECISION_TIMEOUT_S = 15.0
#: Seconds ``joblog watch`` gives an id with no events to appear (one sent a moment ago).
WATCH_APPEAR_TIMEOUT_S = 2.0

#: Commands handed over to other packages: name -> (module, function, help).
DELEGATED: dict[str, tuple[str, str, str]] = {
    "broker": ("engine.broker.cli", "broker_main", "run a local single-node Kafka broker"),
    "scheduler": ("engine.scheduler.cli", "scheduler_main", "run a scheduler instance"),
    "worker": ("engine.worker.cli", "worker_main", "run a worker of one queue"),
    "projector": ("projections.cli", "projections_main", "project events into DuckDB"),
    "projections": ("projections.cli", "projections_main", "rebuild or inspect projections"),
    "sql": ("projections.cli", "projections_main", "run SQL on the projections"),
    "notifier": ("engine.notify.cli", "notifier_main", "deliver webhooks and emails"),
    "demo": ("engine.demo", "main", "run everything locally on a sample workload"),
    "ui": ("engine.ui.server", "ui_main", "serve the REST API and the live web dashboard"),
}
#: Delegates that take the command name as their first argument.
_WITH_NAME = frozenset({"projector", "projections", "sql"})

CLIENT_COMMANDS: dict[str, str] = {
    "submit": "submit a task, a shell command, or a graph/tree from a file",
    "cancel": "cancel a job (dependents are abandoned) or a whole submission",
    "retry": "run a job waiting for its retry backoff now",
    "rerun": "run a failed, canceled or abandoned job (or a submission's failed part) again",
    "delete": "delete a finished job or submission (--force: unfinished too)",
    "watch": "watch a submission live: progress bars, then a summary",
    "status": "show a submission or job, from the event stream",
    "history": "list a job's history (status and description per event)",
    "notifications": "add, remove or list a submission's webhooks and emails (Tapis's)",
    "jobs": "list jobs from the projections (filters: status, task, submission)",
    "topics": "create, list or describe joblog's topics",
    "queues": "list queues; pause, resume or limit one; add dispatch partitions",
    "why": "why jobs wait: their pending reason, line position and estimated start",
    "schedules": "create, list, pause, resume, trigger or delete cron and interval schedules",
    "acls": "print (or --apply) the least-privilege ACLs of each service's principal",
}

_STATUS_STYLE = {
    "SUBMITTED": "white",
    "BLOCKED": "magenta",
    "PENDING": "yellow",
    "ASSIGNED": "cyan",
    "RUNNING": "bold cyan",
    "COMPLETED": "green",
    "FAILED": "bold red",
    "CANCELED": "red",
    "SKIPPED": "dim green",
    "ABANDONED": "dim red",
}


class UsageError(Exception):
    """Bad arguments: exit code 2."""


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """The ``joblog`` console script.

    Args:
        argv: the arguments after the program name (``sys.argv[1:]`` when omitted).

    Returns:
        The exit code.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _global_options(args)
    except UsageError as exc:
        print(f"joblog: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args or args[0] in ("-h", "--help", "help"):
        print(_overview())
        return EXIT_OK
    if args[0] == "--version":
        print(f"joblog {_version()}")
        return EXIT_OK
    name, rest = args[0], args[1:]
    try:
        if name in DELEGATED:
            return _delegate(name, rest)
        if name in CLIENT_COMMANDS:
            return _client_command(name, rest)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    print(f"joblog: unknown command {name!r}; see `joblog --help`", file=sys.stderr)
    return EXIT_USAGE


def _global_options(args: list[str]) -> list[str]:
    """Applies ``--bootstrap-servers``/``--topic-prefix`` before the command to the env."""
    names = {
        "--bootstrap-servers": "JOBLOG_BOOTSTRAP_SERVERS",
        "--topic-prefix": "JOBLOG_TOPIC_PREFIX",
    }
    while args and args[0].split("=", 1)[0] in names:
        option, eq, value = args[0].partition("=")
        if eq:
            args = args[1:]
        else:
            if len(args) < 2:
                raise UsageError(f"{option} needs a value")
            value, args = args[1], args[2:]
        os.environ[names[option]] = value
    return args


def _overview() -> str:
    lines = [
        "usage: joblog [--bootstrap-servers HOST:PORT] [--topic-prefix PREFIX] COMMAND ...",
        "",
        "An event-sourced job engine on Apache Kafka.",
        "",
        "client commands:",
    ]
    lines += [f"  {name:<12} {text}" for name, text in CLIENT_COMMANDS.items()]
    lines += ["", "services and tools:"]
    lines += [f"  {name:<12} {text}" for name, (_, _, text) in DELEGATED.items()]
    lines += [
        "",
        "`joblog COMMAND --help` describes a command. Settings come from JOBLOG_* environment",
        "variables (see README.md, Configuration). Exit codes: 0 ok, 1 failed or not found,",
        "2 bad usage.",
    ]
    return "\n".join(lines)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("joblog")
    except PackageNotFoundError:
        return "unknown"


def _delegate(name: str, rest: list[str]) -> int:
    module_name, function, _ = DELEGATED[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        print(f"joblog {name}: not available ({exc})", file=sys.stderr)
        return EXIT_FAILED
    run: Callable[[list[str]], int] = getattr(module, function)
    argv = [name, *rest] if name in _WITH_NAME else rest
    return int(run(argv) or 0)


def _client_command(name: str, rest: list[str]) -> int:
    from engine.errors import JoblogError

    parser = _parser(name)
    command: list[str] | None = None
    if name == "schedules" and "--" in rest:
        # a run's command after --: argparse's subcommands do not pass it through
        cut = rest.index("--")
        rest, command = rest[:cut], rest[cut + 1 :]
    try:
        args = parser.parse_args(rest)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if command is not None:
        args.cmd = command
    _client_logging()
    handler: Callable[[argparse.Namespace], int] = args.run
    try:
        return handler(args)
    except UsageError as exc:
        print(f"joblog {name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (JoblogError, ValueError) as exc:
        print(f"joblog {name}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        text = _kafka_error_text(exc)
        if text is None:
            raise
        print(f"joblog {name}: Kafka error: {text}", file=sys.stderr)
        return EXIT_FAILED


def _client_logging() -> None:
    """Log lines of a client command: librdkafka's only when ``JOBLOG_LOG_LEVEL`` asks.

    A client command ends with one line that says what went wrong (an unreachable cluster
    included), so librdkafka's connection errors, already routed to the ``joblog.kafka``
    loggers, are held back; ``JOBLOG_LOG_LEVEL=INFO`` (or ``DEBUG``) shows them again.
    """
    import logging

    level = os.environ.get("JOBLOG_LOG_LEVEL")
    if level:
        from engine.logs import configure_logging

        configure_logging(level)
        return
    logging.getLogger("joblog.kafka").setLevel(logging.CRITICAL)


def _kafka_error_text(exc: BaseException) -> str | None:
    """The one-line text of a confluent-kafka exception, or ``None`` for anything else."""
    if type(exc).__module__.split(".")[0] not in ("confluent_kafka", "cimpl"):
        return None
    error = exc.args[0] if exc.args else None
    text = getattr(error, "str", None)
    return str(text()) if callable(text) else str(exc)


# --------------------------------------------------------------------------- parsers


def _parser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"joblog {name}", description=CLIENT_COMMANDS[name])
    build = {
        "submit": _submit_parser,
        "cancel": _cancel_parser,
        "retry": _retry_parser,
        "delete": _delete_parser,
        "watch": _watch_parser,
        "status": _status_parser,
        "history": _history_parser,
        "notifications": _notifications_parser,
        "jobs": _jobs_parser,
        "topics": _topics_parser,
        "rerun": _rerun_parser,
        "queues": _queues_parser,
        "why": _why_parser,
        "schedules": _schedules_parser,
        "acls": _acls_parser,
    }[name]
    build(parser)
    return parser


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _ref(parser: argparse.ArgumentParser, *, job_required: bool = False) -> None:
    parser.add_argument("ref", metavar="REF", help="SUBMISSION or SUBMISSION/JOB")
    parser.add_argument("job", nargs="?", help="the job, when REF names only the submission")
    parser.set_defaults(job_required=job_required)


def _submit_parser(parser: argparse.ArgumentParser) -> None:
    parser.usage = (
        "joblog submit (--task NAME [--arg V]... [--kwarg K=V]... | --file FILE | -- CMD ...) "
        "[options]"
    )
    what = parser.add_argument_group("what to run (one of)")
    what.add_argument("--task", help="a registered task name")
    what.add_argument("--file", "-f", help="YAML/JSON file with a graph and/or tree of jobs")
    what.add_argument(
        "cmd", nargs=argparse.REMAINDER, metavar="-- CMD", help="a shell command after --"
    )
    args = parser.add_argument_group("task arguments (JSON values, else strings)")
    args.add_argument("--arg", action="append", default=[], metavar="V", help="positional")
    args.add_argument("--kwarg", action="append", default=[], metavar="K=V", help="keyword")
    job = parser.add_argument_group("job options (one job: --task or a command)")
    job.add_argument("--id", dest="job_id", help="the job's key (default from task/command)")
    job.add_argument("--name", default="", help="a human name")
    job.add_argument("--queue", help="worker queue (default: default)")
    job.add_argument("--retries", type=int, help="retries after a failed attempt")
    job.add_argument("--retry-backoff", type=float, help="seconds before the first retry")
    job.add_argument("--timeout", type=float, help="run timeout of an attempt, seconds")
    job.add_argument("--queue-timeout", type=float, help="longest wait for a worker, seconds")
    job.add_argument(
        "--idempotency-key",
        help="run the job at most once per key across the cluster (a duplicate is SKIPPED)",
    )
    job.add_argument(
        "--priority",
        type=int,
        help="higher runs first (within the submission, and in a limit's line)",
    )
    job.add_argument(
        "--not-before",
        metavar="TIME",
        help="do not start before TIME: ISO 8601 (UTC unless it names a zone), or +SECONDS",
    )
    job.add_argument(
        "--concurrency-key",
        metavar="KEY",
        help="jobs sharing KEY share its limits cluster-wide (--max-running, --rate-limit)",
    )
    job.add_argument("--max-running", type=int, default=0, metavar="N", help="of the key")
    job.add_argument(
        "--rate-limit", metavar="N/PERIOD", help="starts of the key per period: 10/s, 100/m"
    )
    job.add_argument("--env", action="append", default=[], metavar="K=V", help="command env")
    job.add_argument("--cwd", help="working directory of the command")
    sub = parser.add_argument_group("submission")
    sub.add_argument("--label", action="append", default=[], metavar="K=V", help="a tag")
    sub.add_argument("--submission-id", help="the id to use (a resubmit is then rejected)")
    sub.add_argument("--wait", action="store_true", help="wait until done; exit 1 unless ok")
    sub.add_argument("--watch", action="store_true", help="show live progress until done")
    sub.add_argument(
        "--wait-timeout",
        type=float,
        metavar="S",
        help="seconds to wait for the scheduler's decision (default 15); with --wait/--watch, "
        "for the submission to finish (default: no limit)",
    )
    sub.add_argument("--no-wait", action="store_true", help="send the submission and exit at once")
    sub.add_argument(
        "--notify",
        action="append",
        default=[],
        metavar="URL",
        help="a webhook URL template or an email address to notify (repeatable; a file's "
        "'notifications' list is added)",
    )
    sub.add_argument(
        "--notify-on",
        default="*",
        metavar="EVENT",
        help="what --notify fires on: *, an event, a status or a Tapis status (default *)",
    )
    sub.add_argument(
        "--persistent",
        action="store_true",
        help="--notify stays after it fired (default: Tapis's, removed after its first event)",
    )
    _json_flag(parser)
    parser.set_defaults(run=cmd_submit)


def _notifications_parser(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a webhook or an email to a submission or job")
    _ref(add)
    add.add_argument("--url", required=True, help="an http(s) URL template or an email address")
    add.add_argument("--event", default="*", help="what it fires on (default *)")
    add.add_argument("--persistent", action="store_true", help="keep it after it fired")
    add.add_argument("--id", dest="notification_id", default="", help="its id")
    _decision_flags(add)
    add.set_defaults(run=cmd_notifications_add)
    remove = actions.add_parser("remove", help="remove a notification by its id")
    remove.add_argument("ref", metavar="SUBMISSION")
    remove.add_argument("notification_id", metavar="ID")
    remove.set_defaults(job=None, job_required=False)
    _decision_flags(remove)
    remove.set_defaults(run=cmd_notifications_remove)
    listing = actions.add_parser("list", help="the notifications in place")
    _ref(listing)
    _json_flag(listing)
    listing.set_defaults(run=cmd_notifications_list)


def _cancel_parser(parser: argparse.ArgumentParser) -> None:
    _ref(parser)
    parser.add_argument(
        "--mode",
        choices=("kill", "finish"),
        default="kill",
        help="a RUNNING job: kill it (default) or let it finish and abandon its dependents",
    )
    parser.add_argument("--reason", default="", help="recorded on the canceled jobs")
    _decision_flags(parser)
    parser.set_defaults(run=cmd_cancel)


def _retry_parser(parser: argparse.ArgumentParser) -> None:
    _ref(parser, job_required=True)
    _decision_flags(parser)
    parser.set_defaults(run=cmd_retry)


def _rerun_parser(parser: argparse.ArgumentParser) -> None:
    _ref(parser)
    _decision_flags(parser)
    parser.set_defaults(run=cmd_rerun)


def _queues_parser(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="queues, their settings, jobs and workers")
    listing.add_argument("--db", help="projection file")
    _json_flag(listing)
    listing.set_defaults(run=cmd_queues_list)
    for name, text in (
        ("pause", "hold the dispatch of the queue's jobs"),
        ("resume", "dispatch the queue's held jobs again"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("queue")
        action.add_argument("--timeout", type=float, default=DECISION_TIMEOUT_S, metavar="S")
        _json_flag(action)
        action.set_defaults(run=cmd_queues_set, paused=name == "pause")
    limit = actions.add_parser("limit", help="set the queue's cluster-wide limits")
    limit.add_argument("queue")
    limit.add_argument("--max-running", type=int, metavar="N", help="0 removes the limit")
    limit.add_argument(
        "--rate-limit", metavar="N/PERIOD", help="starts per period (10/s, 100/m); 0/s removes it"
    )
    limit.add_argument("--timeout", type=float, default=DECISION_TIMEOUT_S, metavar="S")
    _json_flag(limit)
    limit.set_defaults(run=cmd_queues_set, paused=None)
    grow = actions.add_parser(
        "grow", help="give the queue's dispatch topic more partitions (room for more workers)"
    )
    grow.add_argument("queue")
    grow.add_argument("--partitions", type=int, required=True, metavar="N")
    _json_flag(grow)
    grow.set_defaults(run=cmd_queues_grow)


def _schedules_parser(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser(
        "create",
        help="create a schedule: its jobs are submitted at every slot",
        usage="joblog schedules create ID (--cron EXPR | --every DURATION) "
        "(--task NAME [--arg V]... | --file FILE | -- CMD ...) [options]",
    )
    create.add_argument("schedule_id", metavar="ID", help="the schedule's id (never reused)")
    when = create.add_argument_group("when (one of)")
    when.add_argument("--cron", metavar="EXPR", help="five cron fields, e.g. '30 2 * * 1-5'")
    when.add_argument("--every", metavar="DURATION", help="an interval: 90s, 15m, 1h30m, 1d")
    when.add_argument(
        "--timezone", default="UTC", metavar="ZONE", help="IANA zone of --cron (Europe/Berlin)"
    )
    when.add_argument("--offset", metavar="DURATION", help="past each multiple of --every")
    when.add_argument(
        "--overlap",
        default="skip",
        choices=["skip", "buffer_one", "allow_all"],
        help="a slot while the previous run goes on (default: skip)",
    )
    when.add_argument(
        "--catchup-window",
        default="60s",
        metavar="DURATION",
        help="after downtime, missed slots this recent still fire (default: 60s)",
    )
    when.add_argument("--start-at", metavar="TIME", help="no slot before (ISO 8601)")
    when.add_argument("--end-at", metavar="TIME", help="no slot after (ISO 8601)")
    when.add_argument("--paused", action="store_true", help="create it paused")
    what = create.add_argument_group("what each run submits (one of)")
    what.add_argument("--task", help="a registered task name")
    what.add_argument("--file", "-f", help="YAML/JSON file with a graph and/or tree of jobs")
    # not REMAINDER: that would take the options after ID for the command (the words after
    # -- are split off before parsing, see _client_command)
    what.add_argument("cmd", nargs="*", metavar="-- CMD", help="a command, after --")
    what.add_argument("--arg", action="append", default=[], metavar="V", help="task argument")
    what.add_argument("--kwarg", action="append", default=[], metavar="K=V", help="keyword")
    what.add_argument("--id", dest="job_id", help="the job's key (default from task/command)")
    what.add_argument("--queue", help="worker queue")
    what.add_argument("--retries", type=int, help="retries after a failed attempt")
    what.add_argument("--timeout", type=float, help="run timeout of an attempt, seconds")
    what.add_argument("--label", action="append", default=[], metavar="K=V", help="run label")
    create.add_argument("--decision-timeout", type=float, default=DECISION_TIMEOUT_S, metavar="S")
    _json_flag(create)
    create.set_defaults(run=cmd_schedules_create)
    listing = actions.add_parser("list", help="schedules: spec, status, next slot, runs")
    listing.add_argument("--db", help="projection file")
    _json_flag(listing)
    listing.set_defaults(run=cmd_schedules_list)
    show = actions.add_parser("show", help="a schedule's decided slots: fired or skipped")
    show.add_argument("schedule_id", metavar="ID")
    show.add_argument("--db", help="projection file")
    show.add_argument("--limit", type=int, default=20, metavar="N", help="the last N slots")
    _json_flag(show)
    show.set_defaults(run=cmd_schedules_show)
    for name, text in (
        ("pause", "stop firing until resumed"),
        ("resume", "fire again from the next slot"),
        ("trigger", "fire once now"),
        ("delete", "never fire again (the id stays taken)"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("schedule_id", metavar="ID")
        action.add_argument("--timeout", type=float, default=DECISION_TIMEOUT_S, metavar="S")
        _json_flag(action)
        action.set_defaults(run=cmd_schedules_change, change=name)


def _why_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref", nargs="?", metavar="REF", help="SUBMISSION or SUBMISSION/JOB")
    parser.add_argument("job", nargs="?", help="the job, when REF names only the submission")
    parser.add_argument("--db", help="projection file")
    _json_flag(parser)
    parser.set_defaults(run=cmd_why, job_required=False)


def _delete_parser(parser: argparse.ArgumentParser) -> None:
    _ref(parser)
    parser.add_argument("--force", action="store_true", help="delete unfinished jobs too")
    _decision_flags(parser)
    parser.set_defaults(run=cmd_delete)


def _decision_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        "--wait-timeout",
        dest="timeout",
        type=float,
        default=DECISION_TIMEOUT_S,
        metavar="S",
        help="seconds to wait for the scheduler's decision (default 15)",
    )
    parser.add_argument("--no-wait", action="store_true", help="send the command and exit at once")
    _json_flag(parser)


def _watch_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submission", help="the submission id")
    parser.add_argument("--timeout", type=float, help="give up after this many seconds")
    parser.add_argument(
        "--events", action="store_true", help="print every event instead of progress bars"
    )
    parser.add_argument(
        "--no-history", action="store_true", help="start at the end of the log (live only)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print events as JSON lines (a 'live' flag on each)"
    )
    parser.set_defaults(run=cmd_watch)


def _status_parser(parser: argparse.ArgumentParser) -> None:
    _ref(parser)
    parser.add_argument(
        "--source",
        choices=("events", "projections"),
        default="events",
        help="read the event stream (default, always current) or the projections",
    )
    parser.add_argument("--db", help="projection file (with --source projections)")
    parser.add_argument(
        "--poll",
        action="store_true",
        help="poll until it ends (exponential backoff), printing each change; exit 1 "
        "unless it completed",
    )
    parser.add_argument("--poll-initial", type=float, default=1.0, metavar="S")
    parser.add_argument("--poll-max", type=float, default=60.0, metavar="S")
    parser.add_argument("--timeout", type=float, metavar="S", help="with --poll: give up after S")
    _json_flag(parser)
    parser.set_defaults(run=cmd_status)


def _history_parser(parser: argparse.ArgumentParser) -> None:
    _ref(parser)
    parser.add_argument(
        "--source",
        choices=("events", "projections"),
        default="events",
        help="read the event stream (default) or the projections' job_history view",
    )
    parser.add_argument("--db", help="projection file (with --source projections)")
    parser.add_argument("--all", action="store_true", help="include progress and output events")
    _json_flag(parser)
    parser.set_defaults(run=cmd_history)


def _jobs_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--status", action="append", default=[], help="only this status (repeatable)"
    )
    parser.add_argument("--task", help="only jobs of this task")
    parser.add_argument("--submission", help="only jobs of this submission")
    parser.add_argument("--limit", type=int, default=100, help="the newest N (default 100)")
    parser.add_argument("--deleted", action="store_true", help="include deleted jobs")
    parser.add_argument("--db", help="projection file (default $JOBLOG_PROJECTION_DB)")
    _json_flag(parser)
    parser.set_defaults(run=cmd_jobs)


def _topics_parser(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create the missing topics")
    create.add_argument(
        "--queue", action="append", default=[], help="a worker queue (repeatable; default: default)"
    )
    create.add_argument("--partitions", type=int, help="partitions of the keyed topics")
    create.add_argument("--timeout", type=float, default=30.0)
    _json_flag(create)
    create.set_defaults(run=cmd_topics_create)
    listing = actions.add_parser("list", help="list the topics under the prefix")
    _json_flag(listing)
    listing.set_defaults(run=cmd_topics_list)
    describe = actions.add_parser("describe", help="partitions and settings of each topic")
    describe.add_argument("topic", nargs="*", help="topic names (default: all under the prefix)")
    _json_flag(describe)
    describe.set_defaults(run=cmd_topics_describe)


def _acls_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "The least-privilege ACLs of a deployment: one principal per service (scheduler, "
        "worker, client, ui, projector, notifier). Printed by default; --apply creates them "
        "through the Admin API, as the principal the JOBLOG_KAFKA_* settings name (a super "
        "user). See docs/operations.md, Security."
    )
    parser.add_argument(
        "--principal",
        action="append",
        default=[],
        metavar="ROLE=NAME",
        help="the principal of a role, e.g. worker=User:render-workers (repeatable; default "
        "User:<prefix>-<role>; ROLE= leaves the role out)",
    )
    parser.add_argument(
        "--queue",
        action="append",
        default=[],
        help="a worker queue (repeatable): workers may read only these dispatch topics "
        "(default: every queue, by prefix)",
    )
    parser.add_argument(
        "--format",
        choices=("table", "kafka-acls", "json"),
        default="table",
        help="table (default), kafka-acls.sh commands, or JSON",
    )
    parser.add_argument(
        "--apply", action="store_true", help="create the ACLs on the cluster (idempotent)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds for --apply")
    _json_flag(parser)
    parser.set_defaults(run=cmd_acls)


# --------------------------------------------------------------------------- helpers


def _client(db: str | None = None) -> Joblog:
    from engine.api import Joblog

    return Joblog(db_path=db, on_throttled=_tell_throttled)


def _tell_throttled(busy: EngineBusy, delay: float) -> None:
    """A throttled submission, on stderr: the engine is behind; the client tries again."""
    print(
        f"joblog: engine busy ({busy.cause}): {busy.detail}; "
        f"submitting {busy.submission_id} again in {delay:.1f} s",
        file=sys.stderr,
    )


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def _print_json(value: Any) -> None:
    print(json.dumps(value, default=_json_default, indent=None, separators=(",", ":")))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def parse_value(text: str) -> Any:
    """A command-line value: JSON when it parses (``21``, ``[1,2]``, ``true``), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _pairs(items: Sequence[str], option: str, *, values: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"{option} takes KEY=VALUE, not {item!r}")
        out[key] = parse_value(value) if values else value
    return out


def _resolve(args: argparse.Namespace) -> tuple[str, str | None]:
    from engine.api import resolve

    submission_id, job = resolve(args.ref, args.job)
    if getattr(args, "job_required", False) and job is None:
        raise UsageError("name the job: SUBMISSION/JOB or SUBMISSION JOB")
    return submission_id, job


def job_to_dict(job: JobView) -> dict[str, Any]:
    """A job view as plain JSON-able data (durations included)."""
    data = asdict(job)
    data["ref"] = job.ref
    data["execution_duration"] = job.execution_duration
    data["pending_duration"] = job.pending_duration
    data["blocked_duration"] = job.blocked_duration
    return data


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _time(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone().strftime("%H:%M:%S")


def styled_status(status: str) -> str:
    """A status in rich markup with its colour."""
    return f"[{_STATUS_STYLE.get(status, 'white')}]{status}[/]"


# --------------------------------------------------------------------------- submit


def cmd_submit(args: argparse.Namespace) -> int:
    """``joblog submit``."""
    from engine.api import load_jobs
    from engine.monitoring import load_notifications

    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    given = sum(bool(x) for x in (args.task, args.file, command))
    if given != 1:
        raise UsageError("give exactly one of --task NAME, --file FILE or -- CMD ...")
    if args.no_wait and (args.wait or args.watch):
        raise UsageError("--no-wait sends and exits; it does not go with --wait or --watch")
    client = _client()
    labels = _pairs(args.label, "--label")
    if args.file:
        if args.arg or args.kwarg or args.job_id:
            raise UsageError("--arg, --kwarg and --id describe one job; not with --file")
        jobs, file_labels = load_jobs(args.file)
        submission = client.submit(
            *jobs,
            labels={**file_labels, **labels},
            submission_id=args.submission_id,
            notifications=[*load_notifications(args.file), *_notify(args)],
        )
    else:
        if command and (args.arg or args.kwarg):
            raise UsageError("--arg and --kwarg are task arguments; a command takes its own")
        submission = client.submit(
            task=args.task,
            args=[parse_value(value) for value in args.arg],
            kwargs=_pairs(args.kwarg, "--kwarg", values=True),
            command=command or None,
            job_id=args.job_id,
            name=args.name,
            queue=args.queue,
            retries=args.retries,
            retry_backoff=args.retry_backoff,
            timeout=args.timeout,
            queue_timeout=args.queue_timeout,
            idempotency_key=args.idempotency_key,
            priority=args.priority,
            not_before=_not_before(args.not_before),
            concurrency_key=args.concurrency_key,
            max_running=args.max_running,
            rate_limit=args.rate_limit,
            env=_pairs(args.env, "--env"),
            cwd=args.cwd,
            labels=labels,
            submission_id=args.submission_id,
            notifications=_notify(args),
        )
    try:
        if args.wait or args.watch:
            submission.settle()  # a throttled submission is sent again before it is watched
            if args.watch and not args.json:
                return watch_live(
                    submission.id,
                    timeout=args.wait_timeout,
                    start_offset=submission.command.start_offset if submission.command else None,
                    appear_timeout=None,
                )
            view = submission.wait_until_done(timeout=args.wait_timeout)
            return _report_outcome(view, as_json=args.json)
        return _submit_decision(args, submission)
    finally:
        client.close()


def _not_before(text: str | None) -> float | None:
    """``--not-before``: ``+SECONDS`` from now, or an ISO 8601 time, as epoch seconds."""
    if text is None:
        return None
    if text.startswith("+"):
        try:
            return datetime.now().timestamp() + float(text[1:])
        except ValueError:
            raise UsageError(f"--not-before {text!r}: +SECONDS takes a number") from None
    from engine.api import epoch_ms

    return epoch_ms(text) / 1000


def _submit_decision(args: argparse.Namespace, submission: Submission) -> int:
    """Waits for the decision on a submit (unless ``--no-wait``) and reports it."""
    from engine.errors import DecisionTimeout, EngineBusy
    from engine.watch import SubmissionRejected

    decision, code, reason = "sent", "", ""
    timeout = DECISION_TIMEOUT_S if args.wait_timeout is None else args.wait_timeout
    if not args.no_wait:
        try:
            submission.result(timeout)
            decision = "accepted"
        except SubmissionRejected as exc:
            decision, code, reason = "rejected", exc.code, exc.reason
        except EngineBusy as exc:
            decision, code, reason = "throttled", exc.cause, exc.detail
        except DecisionTimeout:
            reason = (
                f"no decision within {timeout:g} s; the submission waits in Kafka for a "
                "scheduler (is `joblog scheduler` running?)"
            )
    if args.json:
        _print_json(
            {
                "submission_id": submission.id,
                "command_id": submission.command_id,
                "jobs": list(submission.job_ids),
                "decision": decision,
                "code": code,
                "reason": reason,
            }
        )
    elif decision == "rejected":
        print(
            f"joblog submit: submission {submission.id} was rejected ({code}): {reason}",
            file=sys.stderr,
        )
    elif decision == "throttled":
        print(
            f"joblog submit: the engine stayed busy ({code}), submission {submission.id} was "
            f"not taken: {reason}; submit it again later",
            file=sys.stderr,
        )
    else:
        print(submission.id)
        print(
            f"submitted {len(submission.job_ids)} job(s): {', '.join(submission.job_ids)}",
            file=sys.stderr,
        )
        if reason:
            print(f"joblog submit: {reason}", file=sys.stderr)
        print(f"watch it with: joblog watch {submission.id}", file=sys.stderr)
    return EXIT_FAILED if decision in ("rejected", "throttled") else EXIT_OK


def _report_outcome(view: SubmissionView, *, as_json: bool) -> int:
    ok = view.outcome is not None and view.outcome.value == "COMPLETED"
    if as_json:
        _print_json(
            {
                "submission_id": view.submission_id,
                "outcome": None if view.outcome is None else str(view.outcome),
                "jobs": [job_to_dict(job) for job in view.jobs.values()],
            }
        )
    else:
        console = _console()
        console.print(summary_table(view))
        console.print(outcome_line(view))
    return EXIT_OK if ok else EXIT_FAILED


# --------------------------------------------------------------------------- cancel/retry/delete


def _send_and_confirm(
    args: argparse.Namespace,
    submission_id: str,
    job_id: str | None,
    send: Callable[[Joblog], CommandHandle],
    what: str,
) -> int:
    """Sends a command, then (unless ``--no-wait``) waits for the scheduler's decision.

    The decision is read from the submission's partition of ``events``, from its end offset
    just before the command was sent (:class:`~engine.client.CommandHandle`).
    """
    from engine.errors import CommandRejectedError, DecisionTimeout

    client = _client()
    try:
        handle = send(client)
        decision, detail = "sent", ""
        if not args.no_wait:
            try:
                handle.result(args.timeout)
                decision = "done"
            except CommandRejectedError as exc:
                decision, detail = "rejected", f"{exc.code}: {exc.reason}"
            except DecisionTimeout:
                detail = (
                    f"no decision within {args.timeout:g} s; the command waits in Kafka for "
                    "a scheduler"
                )
    finally:
        client.close()
    _emit_decision(args, what, submission_id, job_id, handle.command_id, decision, detail)
    return EXIT_FAILED if decision == "rejected" else EXIT_OK


def _emit_decision(
    args: argparse.Namespace,
    what: str,
    submission_id: str,
    job_id: str | None,
    command_id: str,
    decision: str,
    detail: str,
) -> None:
    ref = f"{submission_id}/{job_id}" if job_id else submission_id
    if args.json:
        _print_json(
            {
                "command": what,
                "submission_id": submission_id,
                "job_id": job_id,
                "command_id": command_id,
                "decision": decision,
                "detail": detail,
            }
        )
        return
    if decision == "rejected":
        print(f"{what} {ref}: rejected: {detail}", file=sys.stderr)
    elif decision == "done":
        print(f"{what} {ref}: done")
    else:
        print(f"{what} {ref}: sent{f' ({detail})' if detail else ''}")


def _notify(args: argparse.Namespace) -> list[dict[str, Any]]:
    return [
        {"url": url, "event": args.notify_on, "persistent": args.persistent} for url in args.notify
    ]


def cmd_notifications_add(args: argparse.Namespace) -> int:
    """``joblog notifications add``."""
    submission_id, job_id = _resolve(args)
    target = f"{submission_id}/{job_id}" if job_id else submission_id

    def send(client: Joblog) -> CommandHandle:
        return client.add_notification(
            target,
            args.url,
            args.event,
            persistent=args.persistent,
            notification_id=args.notification_id,
        )

    return _send_and_confirm(args, submission_id, job_id, send, "add notification to")


def cmd_notifications_remove(args: argparse.Namespace) -> int:
    """``joblog notifications remove``."""
    submission_id = args.ref

    def send(client: Joblog) -> CommandHandle:
        return client.remove_notification(submission_id, args.notification_id)

    return _send_and_confirm(
        args, submission_id, None, send, f"remove notification {args.notification_id} of"
    )


def cmd_notifications_list(args: argparse.Namespace) -> int:
    """``joblog notifications list``."""
    submission_id, job_id = _resolve(args)
    client = _client()
    try:
        target = f"{submission_id}/{job_id}" if job_id else submission_id
        found = client.notifications(target)
    finally:
        client.close()
    if args.json:
        _print_json([vars(n) for n in found])
        return EXIT_OK
    rows = [
        [n.notification_id, n.job_id or "*", n.event, "yes" if n.persistent else "no", n.url]
        for n in found
    ]
    print(plain_table(["ID", "JOB", "EVENT", "PERSISTENT", "URL"], rows))
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    """``joblog cancel``."""
    submission_id, job_id = _resolve(args)

    def send(client: Joblog) -> CommandHandle:
        return client.cancel(submission_id, job_id, mode=args.mode, reason=args.reason)

    return _send_and_confirm(args, submission_id, job_id, send, "cancel")


def cmd_retry(args: argparse.Namespace) -> int:
    """``joblog retry``."""
    submission_id, job_id = _resolve(args)
    assert job_id is not None

    def send(client: Joblog) -> CommandHandle:
        return client.retry(submission_id, job_id)

    return _send_and_confirm(args, submission_id, job_id, send, "retry")


def cmd_rerun(args: argparse.Namespace) -> int:
    """``joblog rerun``."""
    submission_id, job_id = _resolve(args)

    def send(client: Joblog) -> CommandHandle:
        return client.rerun(submission_id, job_id, wait=False)

    return _send_and_confirm(args, submission_id, job_id, send, "rerun")


def cmd_schedules_create(args: argparse.Namespace) -> int:
    """``joblog schedules create``: decided by the schedule's scheduler, as an event."""
    from engine.api import load_jobs

    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    if sum(bool(x) for x in (args.task, args.file, command)) != 1:
        raise UsageError("give exactly one of --task NAME, --file FILE or -- CMD ...")
    if (args.cron is None) == (args.every is None):
        raise UsageError("give exactly one of --cron EXPR and --every DURATION")
    labels = _pairs(args.label, "--label")
    when: dict[str, Any] = {
        "cron": args.cron,
        "every": args.every,
        "timezone": args.timezone,
        "offset": args.offset,
        "overlap": args.overlap,
        "catchup_window": args.catchup_window,
        "start_at": args.start_at,
        "end_at": args.end_at,
        "paused": args.paused,
        "decision_timeout": args.decision_timeout,
    }
    client = _client()
    try:
        if args.file:
            jobs, file_labels = load_jobs(args.file)
            client.schedule(args.schedule_id, *jobs, labels={**file_labels, **labels}, **when)
        else:
            if command and (args.arg or args.kwarg):
                raise UsageError("--arg and --kwarg are task arguments; a command takes its own")
            client.schedule(
                args.schedule_id,
                task=args.task,
                args=[parse_value(value) for value in args.arg],
                kwargs=_pairs(args.kwarg, "--kwarg", values=True),
                command=command or None,
                job_id=args.job_id,
                queue=args.queue,
                retries=args.retries,
                timeout=args.timeout,
                labels=labels,
                **when,
            )
    finally:
        client.close()
    if args.json:
        _print_json({"schedule_id": args.schedule_id, "created": True})
    else:
        how = f"cron {args.cron!r} in {args.timezone}" if args.cron else f"every {args.every}"
        state = " (paused)" if args.paused else ""
        print(f"schedule {args.schedule_id} created{state}: {how}, overlap {args.overlap}")
    return EXIT_OK


def cmd_schedules_change(args: argparse.Namespace) -> int:
    """``joblog schedules pause|resume|trigger|delete``."""
    client = _client()
    run: str | None = None
    try:
        if args.change == "pause":
            client.pause_schedule(args.schedule_id, timeout=args.timeout)
        elif args.change == "resume":
            client.resume_schedule(args.schedule_id, timeout=args.timeout)
        elif args.change == "trigger":
            run = client.trigger_schedule(args.schedule_id, timeout=args.timeout)
        else:
            client.delete_schedule(args.schedule_id, timeout=args.timeout)
    finally:
        client.close()
    done = {"pause": "paused", "resume": "resumed", "trigger": "triggered", "delete": "deleted"}
    if args.json:
        out: dict[str, Any] = {"schedule_id": args.schedule_id, "decision": done[args.change]}
        if run is not None:
            out["run_submission_id"] = run
        _print_json(out)
    elif run is not None:
        print(f"schedule {args.schedule_id}: triggered, run {run}")
    else:
        print(f"schedule {args.schedule_id}: {done[args.change]}")
    return EXIT_OK


def cmd_schedules_list(args: argparse.Namespace) -> int:
    """``joblog schedules list``: from the projections' ``schedules`` view."""
    from engine.lifecycle.describe import duration_text

    client = _client(args.db)
    rows = client.schedules()
    if args.json:
        _print_json(rows)
        return EXIT_OK
    from rich.table import Table

    table = Table(title="schedules")
    table.add_column("schedule", no_wrap=True)
    for column in ("status", "when", "overlap", "next slot", "fired", "skipped"):
        table.add_column(column)
    for row in rows:
        if row["cron"]:
            when = f"{row['cron']} ({row['timezone']})"
        else:
            when = f"every {duration_text(row['interval_ms'])}"
        table.add_row(
            row["schedule_id"],
            row["status"] or "-",
            when,
            row["overlap"],
            _stamp(row["next_at"]),
            str(row["fired"]),
            str(row["skipped"]),
        )
    _console().print(table)
    return EXIT_OK


def cmd_schedules_show(args: argparse.Namespace) -> int:
    """``joblog schedules show``: a schedule's last decided slots."""
    client = _client(args.db)
    rows = client.schedule_firings(args.schedule_id)[-args.limit :]
    if args.json:
        _print_json(rows)
        return EXIT_OK
    if not rows:
        print(f"schedule {args.schedule_id}: no slot decided yet (or not projected yet)")
        return EXIT_OK
    from rich.table import Table

    table = Table(title=f"schedule {args.schedule_id}")
    table.add_column("slot", no_wrap=True)
    for column in ("decision", "why"):
        table.add_column(column)
    table.add_column("run", no_wrap=True)
    for column in ("outcome", "wall"):
        table.add_column(column)
    for row in rows:
        decision = row["decision"] if row["slots"] == 1 else f"{row['decision']} x{row['slots']}"
        outcome = row["run_outcome"] or ("running" if row["run_submission_id"] else "-")
        table.add_row(
            _stamp(row["slot"]),
            decision,
            row["reason"],
            row["run_submission_id"] or "-",
            outcome,
            _duration(row["run_wall_time"]),
        )
    _console().print(table)
    return EXIT_OK


def _stamp(moment: datetime | None) -> str:
    """A moment in UTC to the second, or ``-``."""
    if moment is None:
        return "-"
    return moment.replace(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_queues_list(args: argparse.Namespace) -> int:
    """``joblog queues list``: from the projections' ``queues`` view."""
    client = _client(args.db)
    rows = client.queues()
    if args.json:
        _print_json(rows)
        return EXIT_OK
    from rich.table import Table

    table = Table(title="queues")
    for column in ("queue", "state", "limits", "waiting", "held", "running", "workers"):
        table.add_column(column)
    for row in rows:
        limits = []
        if row["max_running"]:
            limits.append(f"{row['max_running']} running")
        if row["rate_limit"]:
            limits.append(f"{row['rate_limit']}/{row['rate_period_ms'] / 1000:g}s")
        state = "paused" if row["paused"] else "running"
        if row["paused"] and row["paused_partitions"]:
            state = f"paused ({row['paused_partitions']} partition(s))"
        table.add_row(
            row["queue"],
            state,
            ", ".join(limits) or "-",
            str(row["waiting"]),
            str(row["held"]),
            str(row["running"]),
            str(row["workers_alive"]),
        )
    _console().print(table)
    return EXIT_OK


def cmd_queues_set(args: argparse.Namespace) -> int:
    """``joblog queues pause|resume|limit``: one command per partition, each decided."""
    from engine.api import parse_rate
    from engine.errors import CommandRejectedError

    rate: int | None = None
    period: int | None = None
    if getattr(args, "rate_limit", None) is not None:
        rate, period = parse_rate(args.rate_limit)
    max_running = getattr(args, "max_running", None)
    if args.paused is None and rate is None and max_running is None:
        raise UsageError("give --max-running and/or --rate-limit")
    client = _client()
    try:
        client.configure_queue(
            args.queue,
            paused=args.paused,
            max_running=max_running,
            rate_limit=rate,
            rate_period_ms=period,
            timeout=args.timeout,
        )
    except CommandRejectedError as exc:
        print(f"joblog queues: rejected ({exc.code}): {exc.reason}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()
    what = {True: "paused", False: "resumed", None: "limits set"}[args.paused]
    if args.json:
        _print_json({"queue": args.queue, "decision": what})
    else:
        print(f"queue {args.queue}: {what} in every partition")
    return EXIT_OK


def cmd_queues_grow(args: argparse.Namespace) -> int:
    """``joblog queues grow``: more partitions for a queue's dispatch topic."""
    from engine.admin import grow_dispatch
    from engine.config import Settings

    count = grow_dispatch(Settings.from_env(), args.queue, args.partitions)
    if args.json:
        _print_json({"queue": args.queue, "partitions": count})
    else:
        print(
            f"dispatch topic of queue {args.queue}: {count} partitions "
            f"(up to {count} workers of the queue take work at once)"
        )
    return EXIT_OK


def cmd_why(args: argparse.Namespace) -> int:
    """``joblog why``: the ``pending_reasons`` view, for everything or a submission or job."""
    client = _client(args.db)
    if args.ref is None:
        rows = client.pending_reasons()
    else:
        submission_id, job_id = _resolve(args)
        rows = client.pending_reasons(submission_id, job_id)
    if args.json:
        _print_json(rows)
        return EXIT_OK
    if not rows:
        print("no job is waiting" + (f" in {args.ref}" if args.ref else ""))
        return EXIT_OK
    from rich.table import Table

    table = Table(title="why jobs wait")
    for column in ("job", "status", "reason", "detail", "position", "until / estimate"):
        table.add_column(column)
    for row in rows:
        when = row["until"] or row["estimated_start"]
        table.add_row(
            f"{row['submission_id']}/{row['job_id']}",
            styled_status(row["status"]),
            row["reason"] or "-",
            row["detail"] or "-",
            "-" if row["position"] is None else str(row["position"]),
            "-" if when is None else str(when),
        )
    _console().print(table)
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    """``joblog delete``."""
    submission_id, job_id = _resolve(args)

    def send(client: Joblog) -> CommandHandle:
        return client.delete(submission_id, job_id, force=args.force, wait=False)

    return _send_and_confirm(args, submission_id, job_id, send, "delete")


# --------------------------------------------------------------------------- watch


def cmd_watch(args: argparse.Namespace) -> int:
    """``joblog watch``."""
    if args.json or args.events:
        return _watch_events(args)
    return watch_live(args.submission, timeout=args.timeout, appear_timeout=WATCH_APPEAR_TIMEOUT_S)


def _event_dict(event: Event, status: str | None, live: bool) -> dict[str, Any]:
    from engine.notify.templates import describe_event

    return {
        "seq": event.seq,
        "timestamp": datetime.fromtimestamp(event.timestamp / 1000).astimezone().isoformat(),
        "submission_id": event.submission_id,
        "job_id": event.job_id,
        "event": event.name,
        "status": status,
        "description": describe_event(event),
        "live": live,
    }


def _watch_events(args: argparse.Namespace) -> int:
    from engine.config import Settings
    from engine.lifecycle.views import SubmissionView
    from engine.watch import LIVE, Live, event_watch

    view = SubmissionView(args.submission)
    live = False
    # The history is always read, so the exit code tells how a finished submission ended;
    # --no-history only keeps it from being printed.
    for item in event_watch(
        args.submission,
        from_start=True,
        timeout=args.timeout,
        settings=Settings.from_env(),
        appear_timeout=WATCH_APPEAR_TIMEOUT_S,
    ):
        if item is LIVE:
            live = True
            if not args.json:
                print("-- live --")
            continue
        if isinstance(item, Live):
            continue
        _, after = view.apply(item)
        status = None if after is None else str(after.status)
        if view.outcome is not None and after is None:
            status = str(view.outcome)
        if not live and args.no_history:
            continue
        data = _event_dict(item, status, live)
        if args.json:
            _print_json(data)
        else:
            who = item.job_id or "(submission)"
            print(f"{data['timestamp'][11:23]}  {who:<20} {item.name:<20} {data['description']}")
    if view.rejection is not None:
        return EXIT_FAILED
    return (
        EXIT_OK if view.outcome is not None and view.outcome.value == "COMPLETED" else (EXIT_FAILED)
    )


def render_submission(view: SubmissionView, *, limit: int = 25) -> RenderableType:
    """The live display of a submission: one progress bar per job and a status line."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True, max_width=28)
    table.add_column(no_wrap=True, width=10)
    table.add_column(width=30)
    table.add_column(no_wrap=True, width=6, justify="right")
    table.add_column(no_wrap=True, max_width=40)
    jobs = list(view.jobs.values())
    active = [j for j in jobs if not j.is_terminal]
    shown = (active + [j for j in jobs if j.is_terminal])[:limit] if len(jobs) > limit else jobs
    for job in shown:
        fraction = job.fraction
        if job.status.value == "COMPLETED":
            fraction = 1.0
        if fraction is None:
            bar = ProgressBar(total=None, pulse=job.status.value == "RUNNING", width=30)
            if job.status.value != "RUNNING":
                bar = ProgressBar(total=1, completed=0, width=30)
        else:
            bar = ProgressBar(total=1.0, completed=fraction, width=30)
        percent = "" if fraction is None else f"{100 * fraction:.0f}%"
        note = job.status_line or job.error or ""
        table.add_row(
            Text(job.display_name if job.job_id == job.display_name else job.job_id),
            Text.from_markup(styled_status(job.status.value)),
            bar,
            percent,
            Text(note, style="dim"),
        )
    if len(jobs) > len(shown):
        table.add_row(Text(f"… and {len(jobs) - len(shown)} more", style="dim"), "", "", "", "")
    return Group(Text.from_markup(status_line(view)), table)


def status_line(view: SubmissionView) -> str:
    """``s-… 3/7 done · 2 running · 1 failed`` in rich markup."""
    counts = view.counts()
    total = len(view.jobs)
    done = sum(n for status, n in counts.items() if status.is_terminal)
    parts = [f"[bold]{view.submission_id}[/]  {done}/{total} done"]
    for status, n in sorted(counts.items(), key=lambda item: item[0].value):
        if status.value != "COMPLETED":
            parts.append(f"{n} {styled_status(status.value).replace(status.value, status.lower())}")
    if view.outcome is not None:
        parts.append(f"→ {styled_status(view.outcome.value)}")
    return " · ".join(parts)


def outcome_line(view: SubmissionView) -> str:
    """The final line of a watch, in rich markup."""
    if view.rejection is not None:
        return f"[bold red]rejected[/] ({view.rejection.code}): {view.rejection.reason}"
    if view.outcome is None:
        return f"{view.submission_id}: not done"
    return f"{view.submission_id}: {styled_status(view.outcome.value)}"


def summary_table(view: SubmissionView, title: str | None = None) -> RenderableType:
    """The final table of a watch: status, attempts, durations and errors per job."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("job", overflow="fold")
    table.add_column("task / command", no_wrap=True, max_width=24, overflow="ellipsis")
    table.add_column("status")
    table.add_column("attempts", justify="right")
    table.add_column("waited", justify="right")
    table.add_column("ran", justify="right")
    table.add_column("error / result", overflow="fold", max_width=50)
    for job in view.jobs.values():
        what = job.task or " ".join(job.command or ())
        if job.status.value == "SKIPPED":
            detail = job.error_note  # why: e.g. the job that completed its idempotency key
        elif job.status.is_success:
            detail = job.result or ("" if job.exit_code is None else f"exit {job.exit_code}")
        elif job.pending_reason and not job.is_terminal:
            detail = f"waits: {job.pending_detail or job.pending_reason}"  # why it is not running
        else:
            detail = job.error
        table.add_row(
            job.job_id,
            what,
            styled_status(job.status.value),
            str(job.attempt) if job.attempt else "-",
            _duration(job.pending_duration),
            _duration(job.execution_duration),
            detail,
        )
    return table


def watch_live(
    submission_id: str,
    *,
    timeout: float | None = None,
    console: Console | None = None,
    title: str | None = None,
    appear_timeout: float | None = WATCH_APPEAR_TIMEOUT_S,
    start_offset: int | None = None,
) -> int:
    """Shows a submission's progress live, then its summary; returns 0 if it completed.

    Raises:
        UnknownSubmission: the id has no events after ``appear_timeout`` seconds.
    """
    from rich.live import Live

    from engine.config import Settings
    from engine.lifecycle.views import SubmissionView
    from engine.watch import SubmissionRejected, wait_until_done

    out = console or _console()
    view = SubmissionView(submission_id)
    with Live(render_submission(view), console=out, refresh_per_second=8, transient=True) as live:

        def refresh(current: SubmissionView) -> None:
            live.update(render_submission(current))

        try:
            view = wait_until_done(
                submission_id,
                progress=refresh,
                timeout=timeout,
                interval=0.25,
                settings=Settings.from_env(),
                appear_timeout=appear_timeout,
                start_offset=start_offset,
            )
        except SubmissionRejected as exc:
            live.stop()
            out.print(f"[bold red]rejected[/] ({exc.code}): {exc.reason}")
            return EXIT_FAILED
    out.print(summary_table(view, title=title))
    out.print(outcome_line(view))
    return (
        EXIT_OK if view.outcome is not None and view.outcome.value == "COMPLETED" else (EXIT_FAILED)
    )


# --------------------------------------------------------------------------- status / history


def cmd_status(args: argparse.Namespace) -> int:
    """``joblog status``."""
    submission_id, job_id = _resolve(args)
    client = _client(args.db)
    if args.poll:
        return _poll(args, client, submission_id, job_id)
    if args.source == "projections":
        if job_id is not None:
            jobs = [client.get_job(submission_id, job_id)]
        else:
            jobs = client.get_jobs(submission_id=submission_id, include_deleted=True)
            if not jobs:
                from engine.api import JobNotFound

                raise JobNotFound(f"no jobs of {submission_id} in {client.db_path}")
        outcome = None
    else:
        view = client.view(submission_id)
        if job_id is not None and job_id not in view.jobs:
            from engine.api import JobNotFound

            raise JobNotFound(f"submission {submission_id} has no job {job_id!r}")
        jobs = [view.jobs[job_id]] if job_id is not None else list(view.jobs.values())
        outcome = view.outcome
        if view.rejection is not None:
            print(
                f"{submission_id}: rejected ({view.rejection.code}): {view.rejection.reason}",
                file=sys.stderr,
            )
            return EXIT_FAILED
    if args.json:
        payload: dict[str, Any] = {
            "submission_id": submission_id,
            "outcome": None if outcome is None else str(outcome),
            "jobs": [job_to_dict(job) for job in jobs],
        }
        _print_json(payload if job_id is None else payload["jobs"][0])
        return EXIT_OK
    console = _console()
    if job_id is not None:
        console.print(_job_panel(jobs[0]))
    else:
        from engine.lifecycle.views import SubmissionView

        view = SubmissionView(submission_id, jobs={job.job_id: job for job in jobs})
        view.outcome = outcome
        console.print(summary_table(view))
        console.print(status_line(view))
    return EXIT_OK


def _poll(args: argparse.Namespace, client: Joblog, submission_id: str, job_id: str | None) -> int:
    """``joblog status --poll``: one line per change of status, then the outcome."""
    from engine.lifecycle import views
    from engine.monitoring import PollTimeout

    def show(observed: JobView | SubmissionView) -> None:
        at = _time(datetime.now().astimezone())
        if isinstance(observed, views.JobView):
            if args.json:
                _print_json({"at": at, **job_to_dict(observed)})
            else:
                print(f"{at}  {observed.ref}  {observed.status}", flush=True)
        elif args.json:
            _print_json({"at": at, "submission_id": submission_id, "line": status_line(observed)})
        else:
            print(f"{at}  {status_line(observed)}", flush=True)

    try:
        final = client.poll_status(
            submission_id,
            job_id,
            initial=args.poll_initial,
            max_interval=max(args.poll_max, args.poll_initial),
            timeout=args.timeout,
            source=args.source,
            on_status=show,
        )
    except PollTimeout as exc:
        print(f"joblog status: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()
    if isinstance(final, views.JobView):
        ok = final.status.is_success
    else:
        ok = final.outcome is not None and str(final.outcome) == "COMPLETED"
    return EXIT_OK if ok else EXIT_FAILED


def _job_panel(job: JobView) -> RenderableType:
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("job", job.ref),
        ("name", job.display_name),
        ("task", job.task or "-"),
        ("command", " ".join(job.command) if job.command else "-"),
        ("queue", job.queue),
        ("status", styled_status(job.status.value)),
        ("attempt", f"{job.attempt} of {job.max_attempts}"),
        ("worker", job.worker_id or "-"),
        ("depends on", ", ".join(job.depends_on) or "-"),
        ("parent", job.parent or "-"),
        ("submitted", str(job.submitted_at or "-")),
        ("started", str(job.run_at or "-")),
        ("finished", str(job.finished_at or "-")),
        ("pending", _duration(job.pending_duration)),
        ("ran", _duration(job.execution_duration)),
    ]
    if job.progress is not None:
        total = f"/{job.total:g}" if job.total else ""
        rows.append(("progress", f"{job.progress:g}{total}"))
    if job.status_line:
        rows.append(("status line", job.status_line))
    if job.pending_reason:
        until = f" (until {_time(job.pending_until)})" if job.pending_until else ""
        rows.append(("waiting", f"{job.pending_reason}: {job.pending_detail}{until}"))
    if job.error:
        rows.append(("error", job.error))
    if job.result is not None:
        rows.append(("result", job.result))
    if job.exit_code is not None:
        rows.append(("exit code", str(job.exit_code)))
    for key, value in rows:
        table.add_row(key, value)
    return table


def cmd_history(args: argparse.Namespace) -> int:
    """``joblog history``: Tapis-style status + description per event."""
    from engine.lifecycle.names import names_of
    from engine.lifecycle.records import JobDispatched, JobOutput, JobProgressed

    quiet = names_of(JobProgressed, JobOutput, JobDispatched)  # shown with --all only
    submission_id, job_id = _resolve(args)
    client = _client(args.db)
    entries: list[dict[str, Any]] = []
    if args.source == "projections":
        sql = (
            "SELECT created, event, status, description, job_id, seq FROM job_history "
            "WHERE submission_id = ?"
        )
        params: list[Any] = [submission_id]
        if job_id is not None:
            sql += " AND job_id = ?"
            params.append(job_id)
        for row in client.query(sql, params):
            if args.all or row["event"] not in quiet:
                created = row["created"]
                entries.append(
                    {
                        "created": created.isoformat() if created else None,
                        "job_id": row["job_id"],
                        "event": row["event"],
                        "status": row["status"],
                        "description": row["description"],
                    }
                )
    else:
        from engine.lifecycle.views import SubmissionView, to_datetime
        from engine.notify.templates import describe_event, iso

        view = SubmissionView(submission_id)
        for event in client.history(submission_id, job_id):
            _, after = view.apply(event)
            if not args.all and event.name in quiet:
                continue
            status = str(after.status) if after is not None else None
            if after is None and view.outcome is not None:
                status = str(view.outcome)
            entry: dict[str, Any] = {
                "created": iso(to_datetime(event.timestamp)),
                "job_id": event.job_id,
                "event": event.name,
                "status": status,
                "description": describe_event(event),
            }
            if isinstance(event.body, JobProgressed):  # Tapis's "progress" object
                body = event.body
                entry["progress"] = {
                    "value": body.value,
                    "total": body.total,
                    "status_line": body.status_line,
                }
            entries.append(entry)
    if not entries:
        from engine.api import JobNotFound

        ref = f"{submission_id}/{job_id}" if job_id else submission_id
        raise JobNotFound(f"no history for {ref}")
    if args.json:
        _print_json(entries)
        return EXIT_OK
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    table.add_column("created")
    if job_id is None:
        table.add_column("job")
    table.add_column("status")
    table.add_column("description", overflow="fold")
    for entry in entries:
        cells = [entry["created"] or "-"]
        if job_id is None:
            cells.append(entry["job_id"] or "-")
        cells += [styled_status(entry["status"]) if entry["status"] else "-", entry["description"]]
        table.add_row(*cells)
    _console().print(table)
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace) -> int:
    """``joblog jobs``."""
    client = _client(args.db)
    jobs = client.get_jobs(
        status=args.status or None,
        task=args.task,
        submission_id=args.submission,
        include_deleted=args.deleted,
        limit=args.limit,
    )
    if args.json:
        _print_json([job_to_dict(job) for job in jobs])
        return EXIT_OK
    rows = [
        [
            job.ref,
            _clip(job.task or " ".join(job.command or ()), 24),
            job.status.value,
            str(job.attempt),
            _time(job.submitted_at),
            _duration(job.execution_duration),
            "" if job.status.is_success else job.error,
        ]
        for job in jobs
    ]
    print(
        plain_table(["JOB", "TASK/COMMAND", "STATUS", "TRIES", "SUBMITTED", "RAN", "ERROR"], rows)
    )
    print(f"{len(jobs)} job(s)")
    return EXIT_OK


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def plain_table(header: list[str], rows: list[list[str]]) -> str:
    """Aligned columns like ``kubectl get``; the last column is cut to the terminal width."""
    import shutil

    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    room = shutil.get_terminal_size((120, 24)).columns - sum(widths) - 2 * len(widths)
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, _clip(row[-1], max(room, 20))]).rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------------------- acls


def cmd_acls(args: argparse.Namespace) -> int:
    """``joblog acls``."""
    from engine import acls
    from engine.config import Settings

    settings = Settings.from_env()
    principals: dict[acls.Role, str] = {}
    for item in args.principal:
        role, eq, name = item.partition("=")
        if not eq or role not in {r.value for r in acls.Role}:
            roles = ", ".join(r.value for r in acls.Role)
            raise UsageError(f"--principal {item!r}: give ROLE=NAME, ROLE one of {roles}")
        principals[acls.Role(role)] = name
    deployment = acls.Deployment(settings.topic_prefix, principals, tuple(args.queue))
    rules = acls.acl_rules(deployment)
    if args.apply:
        from engine.kafka import admin_client

        _reachable(settings)
        created = acls.apply_acls(admin_client(settings), rules, timeout=args.timeout)
        if args.json:
            _print_json({"applied": created})
        else:
            print(f"{created} ACL bindings in place at {settings.bootstrap_servers}")
        return EXIT_OK
    if args.json or args.format == "json":
        print(acls.render_json(rules))
    elif args.format == "kafka-acls":
        print(acls.render_kafka_acls(rules, settings.bootstrap_servers))
    else:
        print(acls.render_table(rules))
    return EXIT_OK


# --------------------------------------------------------------------------- topics


def cmd_topics_create(args: argparse.Namespace) -> int:
    """``joblog topics create``."""
    from dataclasses import replace

    from engine.admin import ensure_topics, topic_specs
    from engine.config import Settings

    settings = Settings.from_env()
    if args.partitions is not None:
        if args.partitions < 1:
            raise UsageError("--partitions must be at least 1")
        settings = replace(settings, partitions=args.partitions)
    queues = args.queue or ["default"]
    _reachable(settings)
    ensure_topics(settings, queues, timeout=args.timeout)
    names = [spec.name for spec in topic_specs(settings, queues)]
    if args.json:
        _print_json({"topics": names})
    else:
        for name in names:
            print(name)
    return EXIT_OK


def _topic_metadata() -> tuple[Any, Any, str]:
    """An admin client, the cluster's metadata, and the topic prefix.

    Raises:
        KafkaUnreachable: no broker answered within the connect timeout.
    """
    from engine.client import cluster_metadata
    from engine.config import Settings
    from engine.kafka import admin_client

    settings = Settings.from_env()
    admin = admin_client(settings)
    return admin, cluster_metadata(admin, settings), settings.topic_prefix


def _reachable(settings: Any) -> None:
    """Raises :class:`~engine.errors.KafkaUnreachable` unless the cluster answers quickly."""
    from engine.client import cluster_metadata
    from engine.kafka import admin_client

    cluster_metadata(admin_client(settings), settings)


def cmd_topics_list(args: argparse.Namespace) -> int:
    """``joblog topics list``."""
    _, metadata, prefix = _topic_metadata()
    names = sorted(name for name in metadata.topics if name.startswith(prefix))
    if args.json:
        _print_json(
            [{"topic": name, "partitions": len(metadata.topics[name].partitions)} for name in names]
        )
    else:
        for name in names:
            print(f"{name}\t{len(metadata.topics[name].partitions)}")
    return EXIT_OK


def cmd_topics_describe(args: argparse.Namespace) -> int:
    """``joblog topics describe``."""
    from confluent_kafka.admin import ConfigResource  # type: ignore[attr-defined]

    admin, metadata, prefix = _topic_metadata()
    names = args.topic or sorted(name for name in metadata.topics if name.startswith(prefix))
    missing = [name for name in names if name not in metadata.topics]
    if missing:
        from engine.api import JobNotFound

        raise JobNotFound(f"no such topic(s): {', '.join(missing)}")
    interesting = ("cleanup.policy", "retention.ms", "retention.bytes", "segment.bytes")
    resources = [ConfigResource("TOPIC", name) for name in names]
    configs: dict[str, dict[str, str]] = {}
    for resource, future in admin.describe_configs(resources).items():
        try:
            entries = future.result(timeout=15)
        except Exception:
            entries = {}
        configs[resource.name] = {key: entries[key].value for key in interesting if key in entries}
    rows = []
    for name in names:
        topic = metadata.topics[name]
        replicas = {len(p.replicas) for p in topic.partitions.values()}
        rows.append(
            {
                "topic": name,
                "partitions": len(topic.partitions),
                "replication_factor": max(replicas) if replicas else 0,
                "config": configs.get(name, {}),
            }
        )
    if args.json:
        _print_json(rows)
        return EXIT_OK
    from rich.table import Table

    table = Table()
    for column in ("topic", "partitions", "replicas", *interesting):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["topic"],
            str(row["partitions"]),
            str(row["replication_factor"]),
            *(row["config"].get(key, "-") for key in interesting),
        )
    _console().print(table)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
