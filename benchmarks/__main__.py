"""``python -m benchmarks run [--smoke | --quick | --full]`` and ``python -m benchmarks
failover [...]`` (:mod:`benchmarks.failover`): see BENCHMARKS.md."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from benchmarks import report
from benchmarks.plan import PLANS
from benchmarks.run import PEERS, RESULTS, run

ROOT = Path(__file__).resolve().parent.parent


def _peers(text: str) -> tuple[str, ...]:
    """``--peers celery,temporal`` as a tuple; an unknown name is an argparse error."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = sorted(set(names) - set(PEERS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer {', '.join(unknown)} (of {PEERS})")
    return names


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["failover"]:
        from benchmarks import failover

        return failover.main(arguments[1:])
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="joblog's benchmarks: throughput, latency, projection, recovery, queries, "
        "against raw Kafka, Celery and Temporal on the same machine.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    go = commands.add_parser("run", help="run the benchmarks, print the table, write results")
    mode = go.add_mutually_exclusive_group()
    for name, text in (
        ("smoke", "seconds: tiny sizes, one run each, no peers, no profile (CI)"),
        ("quick", "the default: 2k/10k jobs, 3 runs each, ~12 min"),
        ("full", "10k/100k jobs, 1M/10M events, 3 runs each, ~50 min; updates BENCHMARKS.md"),
    ):
        mode.add_argument(f"--{name}", dest="mode", action="store_const", const=name, help=text)
    go.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("JOBLOG_BOOTSTRAP_SERVERS"),
        help="use this cluster (default: a local broker in a temporary directory)",
    )
    go.add_argument(
        "--peer",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the peers, Celery and Temporal (default: on, except in --smoke)",
    )
    go.add_argument(
        "--peers",
        type=_peers,
        default=None,
        help=f"which peers, comma-separated, of {','.join(PEERS)} (default: all; implies --peer)",
    )
    go.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="profile the services with py-spy (default: on, except in --smoke)",
    )
    go.add_argument(
        "--out", type=Path, help="results file (default benchmarks/results/<mode>.json)"
    )
    go.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="write the figures into this file (default: BENCHMARKS.md in --full)",
    )
    commands.add_parser(
        "failover",
        help="SIGKILL a broker, then a scheduler, mid-run on three brokers (see --help there)",
        add_help=False,
    )
    show = commands.add_parser("report", help="print (and write) the figures of a results file")
    show.add_argument("results", type=Path, nargs="?", default=RESULTS / "full.json")
    show.add_argument("--markdown", type=Path, help="write the figures into this file")
    args = parser.parse_args(argv)
    if args.command == "report":
        results = json.loads(args.results.read_text())
        print(report.table(results))
        if args.markdown is not None:
            report.write_markdown(args.markdown, results)
        return 0
    plan = PLANS[args.mode or "quick"]
    smoke = plan.name == "smoke"
    out = args.out or RESULTS / f"{plan.name}.json"
    markdown = args.markdown or (ROOT / "BENCHMARKS.md" if plan.name == "full" else None)
    command = "python -m benchmarks run" + ("" if plan.name == "quick" else f" --{plan.name}")
    if argv is None:
        command = "python -m benchmarks " + shlex.join(sys.argv[1:])
    results = run(
        plan,
        bootstrap_servers=args.bootstrap_servers,
        peer_enabled=args.peer if args.peer is not None else (args.peers is not None or not smoke),
        peers=args.peers or PEERS,
        profile=args.profile if args.profile is not None else not smoke,
        results_path=out,
        command=command,
    )
    print(report.table(results))
    if markdown is not None:
        report.write_markdown(markdown, results)
        print(f"figures written to {markdown}", file=sys.stderr)
    print(f"results in {out}", file=sys.stderr)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
