"""The projection commands of ``joblog``: ``projector``, ``sql`` and ``projections ...``.

``engine/cli.py`` hands these commands over with :func:`projections_main`::

    joblog projector [--db PATH] [--group G] [--from-beginning] [--no-serve] [--no-workers]
    joblog sql [--db PATH] [--json] "SELECT ..."
    joblog projections rebuild [--db PATH] [--as-of OFFSET|P:OFFSET,...|ISO-TIME] [--out PATH]
    joblog projections status [--db PATH]
    joblog projections views

Kafka settings come from ``JOBLOG_*`` variables (:meth:`engine.config.Settings.from_env`);
``--bootstrap-servers`` and ``--topic-prefix`` override them. The database defaults to
``$JOBLOG_PROJECTION_DB`` or ``joblog.duckdb``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from engine import collector, metrics
from engine.config import Settings
from engine.errors import JoblogError
from projections.projector import lag, run_projector
from projections.reader import ProjectionReader
from projections.rebuild import rebuild
from projections.schema import VIEWS

DEFAULT_DB = "joblog.duckdb"
_MAX_CELL = 80


def projections_main(argv: list[str]) -> int:
    """Runs one projection command.

    Args:
        argv: the command and its arguments, e.g. ``["sql", "--json", "SELECT 1"]``.

    Returns:
        The exit status: 0 on success, 1 on an error (printed to stderr), 2 on bad usage.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        result: int = args.run(args)
        return result
    except JoblogError as exc:
        print(f"joblog {argv[0]}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="joblog", description="joblog projections")
    commands = parser.add_subparsers(dest="command", required=True)

    projector = commands.add_parser(
        "projector", help="project the events into a DuckDB file and serve queries on it"
    )
    _db(projector)
    _kafka(projector)
    projector.add_argument("--group", help="consumer group (default: <prefix>projector)")
    projector.add_argument(
        "--from-beginning",
        action="store_true",
        help="empty the file and project the whole log again",
    )
    projector.add_argument(
        "--no-serve", action="store_true", help="do not answer queries while running"
    )
    projector.add_argument(
        "--no-workers", action="store_true", help="do not read heartbeats (no workers table)"
    )
    projector.add_argument("--batch-size", type=int, default=5_000, help="records per batch")
    metrics.add_arguments(projector)
    projector.set_defaults(run=_projector)

    sql = commands.add_parser("sql", help="run one read-only query on the projection")
    _db(sql)
    sql.add_argument("--json", action="store_true", help="print a JSON array of rows")
    sql.add_argument("query", help='e.g. "SELECT * FROM status_counts"')
    sql.set_defaults(run=_sql)

    group = commands.add_parser("projections", help="rebuild or inspect the projection")
    actions = group.add_subparsers(dest="action", required=True)
    build = actions.add_parser("rebuild", help="rebuild from offset 0 into a fresh file")
    _db(build)
    _kafka(build)
    build.add_argument(
        "--as-of",
        help="the state at a past point: an offset (1200), offsets per partition "
        "(0:1200,1:980) or an ISO-8601 time",
    )
    build.add_argument("--out", help="write here (default: --db, or <db>.as-of.duckdb)")
    build.set_defaults(run=_rebuild)
    status = actions.add_parser("status", help="stored offsets and lag behind the log")
    _db(status)
    _kafka(status)
    status.set_defaults(run=_status)
    views = actions.add_parser("views", help="list the views with what each answers")
    views.set_defaults(run=_views)
    return parser


def _db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=os.environ.get("JOBLOG_PROJECTION_DB", DEFAULT_DB),
        help="the projection's DuckDB file (default: $JOBLOG_PROJECTION_DB or joblog.duckdb)",
    )


def _kafka(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers")
    parser.add_argument("--topic-prefix", help="prefix of the topic names")


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        bootstrap_servers=args.bootstrap_servers, topic_prefix=args.topic_prefix
    )


def _projector(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    collector.tune_for_service()
    stats = run_projector(
        _settings(args),
        args.db,
        group=args.group,
        from_beginning=args.from_beginning,
        serve=not args.no_serve,
        workers=not args.no_workers,
        batch_size=args.batch_size,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
    )
    print(
        f"projector stopped: {stats.events} events in {stats.batches} batches, "
        f"{stats.dead_letters} dead letters",
        file=sys.stderr,
    )
    return 0


def _sql(args: argparse.Namespace) -> int:
    table = ProjectionReader(args.db).arrow(args.query)
    rows = table.to_pylist()
    if args.json:
        print(json.dumps(rows, default=_json_value, indent=2))
    else:
        print(format_table(table.column_names, rows))
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    result = rebuild(_settings(args), args.db, as_of=args.as_of, out=args.out)
    print(
        f"rebuilt {result.path}: {result.events} events, {result.heartbeats} heartbeats "
        f"in {result.seconds:.1f}s"
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    rows = lag(_settings(args), args.db)
    print(
        format_table(
            ["topic", "partition", "next_offset", "end_offset", "lag"],
            [row._asdict() for row in rows],
        )
    )
    return 0


def _views(args: argparse.Namespace) -> int:
    width = max(len(name) for name in VIEWS)
    for name, (description, _) in VIEWS.items():
        print(f"{name:<{width}}  {description}")
    return 0


def format_table(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    """Rows as an aligned text table, long cells cut, with a row count below."""
    cells = [[_cell(row[name]) for name in columns] for row in rows]
    widths = [max([len(name), *(len(line[i]) for line in cells)]) for i, name in enumerate(columns)]
    rule = "  ".join("-" * width for width in widths)
    lines = ["  ".join(name.ljust(width) for name, width in zip(columns, widths, strict=True))]
    lines.append(rule)
    for line in cells:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, datetime):
        text = value.isoformat(sep=" ", timespec="milliseconds" if value.microsecond else "seconds")
    elif isinstance(value, date):
        text = value.isoformat()
    elif isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
