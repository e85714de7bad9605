"""``joblog demo``: the whole engine on one machine, on a small realistic workload.

What it does, in order:

1. starts a local Apache Kafka broker (KRaft) with its data in ``<dir>/kafka`` (the first
   run downloads the Kafka jars), unless ``--bootstrap-servers`` names a cluster;
2. creates joblog's topics, then runs a scheduler, two workers, the projector (DuckDB file
   ``<dir>/joblog.duckdb``) and the notifier (webhooks to a receiver on 127.0.0.1) in threads;
3. submits four submissions: a render of a shot as a tree of frame sub-jobs with progress, a
   shell command, a download that fails once and succeeds on retry, and a model pipeline
   whose training is canceled while it runs, so its dependents are abandoned;
4. shows their progress live, then SQL analytics from the projection, while ``joblog ui``
   serves the dashboard and the REST API (its URL is printed; in a terminal everything stays
   up for it until Enter);
5. stops everything and leaves the DuckDB file for ``joblog sql --db <dir>/joblog.duckdb``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.rule import Rule
from rich.table import Table

from engine import demo_tasks as tasks
from engine.admin import ensure_topics, wait_for_cluster
from engine.api import Job, Joblog, Submission
from engine.cli import render_submission, styled_status, summary_table
from engine.config import Settings
from engine.errors import JoblogError
from engine.lifecycle.decide import Policy
from engine.lifecycle.records import SubmissionStatus
from engine.notify.delivery import DeliveryRetry
from engine.notify.errors import SignatureError
from engine.notify.service import Notifier, NotifierOptions
from engine.notify.signing import generate_secret, verify
from engine.notify.subscriptions import parse_subscriptions
from engine.scheduler.service import Scheduler, SchedulerConfig
from engine.ui.config import UiConfig
from engine.ui.server import UiServer
from engine.watch import SubmissionView, wait_until_done
from engine.worker import TaskRegistry, Worker, WorkerOptions
from projections.projector import Projector

log = logging.getLogger("joblog.demo")

SHOT = "shot-010"
EXPECTED = {
    "render": SubmissionStatus.COMPLETED,
    "checksum": SubmissionStatus.COMPLETED,
    "assets": SubmissionStatus.COMPLETED,
    "pipeline": SubmissionStatus.CANCELED,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``joblog demo``."""
    parser = argparse.ArgumentParser(
        prog="joblog demo",
        description="Run a broker, scheduler, two workers, projector and notifier locally "
        "on a sample workload, show it live, print SQL analytics, stop cleanly.",
    )
    parser.add_argument(
        "--dir", default=".joblog", help="where the broker data and the DuckDB file go"
    )
    parser.add_argument(
        "--bootstrap-servers", help="use this Kafka cluster instead of starting a local broker"
    )
    parser.add_argument("--topic-prefix", default="joblog.", help="topic prefix (joblog.)")
    parser.add_argument("--frames", type=int, default=12, help="frames of the rendered shot")
    parser.add_argument(
        "--keep-broker", action="store_true", help="leave the local broker running at the end"
    )
    parser.add_argument(
        "--ui-port",
        type=int,
        help="port of the dashboard and REST API ($JOBLOG_UI_PORT or 8765; a free one if taken)",
    )
    parser.add_argument("--no-ui", action="store_true", help="do not serve the dashboard")
    parser.add_argument(
        "--hold",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep everything running for the dashboard until Enter or Ctrl-C at the end "
        "(default: when run in a terminal)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the demo; returns 0 when every submission ended as expected."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    if args.frames < 1:
        print("joblog demo: --frames must be at least 1", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    console = Console(highlight=False)
    try:
        return Demo(console, Path(args.dir), args).run()
    except (JoblogError, OSError) as exc:
        console.print(f"[bold red]joblog demo failed:[/] {exc}")
        return 1
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130


class WebhookCounter:
    """A webhook endpoint on 127.0.0.1 that checks signatures and counts deliveries."""

    def __init__(self, secret: str) -> None:

        self.received: list[str] = []
        self.bad_signatures = 0
        counter = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    verify(secret, dict(self.headers.items()), body)
                    counter.received.append(self.path)
                except SignatureError:
                    counter.bad_signatures += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> WebhookCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def _service(
    console: Console, name: str, run: Callable[[threading.Event], Any]
) -> Iterator[threading.Event]:
    """Runs ``run(stop)`` on a thread; on exit sets ``stop`` and joins it."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run(stop)
        except BaseException as exc:
            errors.append(exc)
            log.exception("%s stopped with an error", name)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(60)
        if thread.is_alive():
            console.print(f"[yellow]{name} did not stop within 60 s[/]")
        elif errors:
            console.print(f"[red]{name} failed: {errors[0]}[/]")


class Demo:
    """One run of the demo."""

    def __init__(self, console: Console, directory: Path, args: argparse.Namespace) -> None:
        self.console = console
        self.dir = directory
        self.args = args
        self.db_path = directory / "joblog.duckdb"
        self.deliveries = directory / "deliveries.jsonl"

    def step(self, text: str) -> None:
        self.console.print(f"[bold cyan]»[/] {text}")

    def run(self) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with ExitStack() as stack:
            settings = self._cluster(stack)
            self._services(stack, settings)
            client = Joblog(settings, db_path=self.db_path, submitted_by="demo")
            stack.callback(client.close)
            webhooks = self._webhooks
            submissions = self._submit(client)
            views = self._show_live(client, submissions)
            self._analytics(client, submissions)
            self._hold()
            self.console.print(Rule("stopping"))
            self.step("stopping the notifier, projector, workers and scheduler")
        ok = all(
            views[key].outcome is expected and views[key].rejection is None
            for key, expected in EXPECTED.items()
        )
        self.console.print(
            f"webhooks received: {len(webhooks.received)}, "
            f"all signatures valid: {webhooks.bad_signatures == 0}; "
            f"every attempt is in {self.deliveries}"
        )
        self.console.print(
            f"\nThe projection stays in [bold]{self.db_path}[/]. Query it with:\n"
            f'  joblog sql --db {self.db_path} "SELECT * FROM status_counts"\n'
            f'  joblog sql --db {self.db_path} "SELECT * FROM task_durations"\n'
            f"  joblog jobs --db {self.db_path} --status FAILED\n"
            f"  joblog projections views   # every view and what it answers"
        )
        verdict = "[green]as expected[/]" if ok else "[bold red]NOT as expected[/]"
        self.console.print(
            f"demo finished in {time.monotonic() - started:.0f} s; outcomes {verdict}"
        )
        return 0 if ok and webhooks.bad_signatures == 0 else 1

    # ------------------------------------------------------------------ start-up

    def _cluster(self, stack: ExitStack) -> Settings:

        if self.args.bootstrap_servers:
            settings = Settings.from_env(
                bootstrap_servers=self.args.bootstrap_servers,
                topic_prefix=self.args.topic_prefix,
            )
            self.step(f"using the Kafka cluster at {settings.bootstrap_servers}")
        else:
            from engine.broker import LocalBroker

            broker = LocalBroker(self.dir / "kafka")
            if broker.is_running():
                self.step(f"reusing the local broker running from {broker.data_dir}")
            else:
                self.step(
                    f"starting a local Kafka broker in {broker.data_dir} "
                    "(the first run downloads the Kafka jars)"
                )
                broker.start()
                if not self.args.keep_broker:
                    stack.callback(self._stop_broker, broker)
            settings = Settings.from_env(
                bootstrap_servers=broker.bootstrap_servers, topic_prefix=self.args.topic_prefix
            )
            self.step(f"broker ready at {settings.bootstrap_servers}")
        # librdkafka's own warnings (coordinator still loading, ...) are noise on a screen
        # that shows progress bars; errors still come through.
        settings = replace(settings, kafka={"log_level": "3", **settings.kafka})
        wait_for_cluster(settings, timeout=60)
        ensure_topics(settings, ["default"])
        self.step(f"topics ready under the prefix {settings.topic_prefix!r}")
        return settings

    def _stop_broker(self, broker: Any) -> None:
        self.step("stopping the local broker")
        broker.stop()

    def _services(self, stack: ExitStack, settings: Settings) -> None:

        scheduler = Scheduler(
            settings,
            policy=Policy(lease_ms=10_000, kill_grace_ms=5_000),
            config=SchedulerConfig(instance_id="demo-scheduler"),
        )
        stack.enter_context(_service(self.console, "scheduler", scheduler.run))
        registry = TaskRegistry.from_modules(["engine.demo_tasks"])
        workers = []
        for n in (1, 2):
            worker = Worker(
                settings,
                "default",
                4,
                registry,
                f"demo-worker-{n}",
                options=WorkerOptions(drain_timeout_s=5.0, session_timeout_ms=6_000),
            )
            stack.enter_context(_service(self.console, f"worker {n}", worker.run))
            workers.append(worker)
        projector = Projector(settings, self.db_path, poll_timeout=0.2)
        stack.enter_context(_service(self.console, "projector", projector.run))
        secret = generate_secret()
        self._webhooks = stack.enter_context(WebhookCounter(secret))
        subscriptions = parse_subscriptions(
            [
                {
                    "id": "demo-finished",
                    "url": self._webhooks.url + "/jobs/${JOB_ID}?status=${JOB_STATUS}",
                    "secret": secret,
                    "events": ["JobCompleted", "JobFailed", "JobCanceled", "JobAbandoned"],
                },
            ]
        )
        notifier = Notifier(
            settings,
            subscriptions,
            deliveries=self.deliveries,
            options=NotifierOptions(
                group_id=f"{settings.topic_prefix}demo-notifier",
                retry=DeliveryRetry(max_attempts=3, backoff_s=0.5),
            ),
        )
        stack.enter_context(_service(self.console, "notifier", notifier.run))
        waits = [
            ("scheduler", scheduler.ready),
            *((f"worker {n}", w.ready) for n, w in enumerate(workers, 1)),
            ("projector", projector.ready),
            ("notifier", notifier.ready),
        ]
        for name, ready in waits:
            if not ready.wait(90):
                raise JoblogError(f"the {name} did not get its partitions within 90 s")
        self.step("scheduler, 2 workers, projector and notifier running")
        self._ui(stack, settings)

    def _ui(self, stack: ExitStack, settings: Settings) -> None:
        """Serves the dashboard and the REST API (``joblog ui``) and prints its URL."""
        self.ui: UiServer | None = None
        if self.args.no_ui:
            return
        config = UiConfig.from_env(port=self.args.ui_port, db_path=self.db_path)
        try:
            server = UiServer(config, settings)
        except OSError:  # the port is taken (another dashboard): any free one
            server = UiServer(replace(config, port=0), settings)
        self.ui = stack.enter_context(server)
        self.step(f"dashboard at {server.dashboard_url}")
        self.step(f"REST API at {server.url}/api/v1 (OpenAPI: {server.url}/api/v1/openapi.json)")

    def _hold(self) -> None:
        hold = self.args.hold
        if hold is None:
            hold = sys.stdin.isatty() and sys.stdout.isatty()
        if not hold or self.ui is None:
            return
        self.console.print(
            f"\nThe dashboard stays up at [bold]{self.ui.dashboard_url}[/]; "
            "press Enter (or Ctrl-C) to stop everything."
        )
        with suppress(EOFError, KeyboardInterrupt):
            input()

    # ------------------------------------------------------------------ the workload

    def _submit(self, client: Joblog) -> dict[str, Submission]:

        frames = self.args.frames
        render = client.submit(
            Job(
                SHOT,
                task=tasks.assemble_shot,
                kwargs={"shot": SHOT, "frames": frames},
                children=[
                    Job(f"frame-{n:03d}", task=tasks.render_frame, args=[SHOT, n])
                    for n in range(1, frames + 1)
                ],
            ),
            labels={"project": "demo", "kind": "render"},
        )
        checksum = client.submit(
            command=[
                "sh",
                "-c",
                'for f in plates/a.exr plates/b.exr plates/c.exr; do echo "sha256 $f"; '
                "sleep 0.3; done",
            ],
            job_id="checksum",
            name="checksum plates",
            labels={"project": "demo", "kind": "command"},
        )
        assets = client.submit(
            task=tasks.fetch_assets,
            args=[f"https://assets.example.com/{SHOT}.tar"],
            labels={"project": "demo", "kind": "retry"},
        )
        pipeline = client.submit(
            Job("train", task=tasks.train_model, kwargs={"epochs": 200}),
            Job("evaluate", task=tasks.evaluate_model, depends_on=["train"]),
            Job("publish", task=tasks.publish_report, depends_on=["evaluate"]),
            labels={"project": "demo", "kind": "cancel"},
        )
        submissions = {
            "render": render,
            "checksum": checksum,
            "assets": assets,
            "pipeline": pipeline,
        }
        for key, submission in submissions.items():
            self.step(f"submitted {key:<9} {submission.id}  ({len(submission.job_ids)} job(s))")
        return submissions

    def _cancel_training(self, client: Joblog, pipeline: Submission) -> None:
        pipeline.event_wait("train", "JobStarted", timeout=120)
        time.sleep(1.5)
        client.cancel(pipeline, "train", reason="budget exceeded")

    def _show_live(
        self, client: Joblog, submissions: dict[str, Submission]
    ) -> dict[str, SubmissionView]:
        views = {key: SubmissionView(s.id) for key, s in submissions.items()}
        errors: list[BaseException] = []

        def follow(key: str, submission: Submission) -> None:
            def update(view: SubmissionView) -> None:
                views[key] = view

            try:
                views[key] = wait_until_done(
                    submission.id, progress=update, timeout=180, settings=client.settings
                )
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=follow, args=(key, s), daemon=True)
            for key, s in submissions.items()
        ]
        canceller = threading.Thread(
            target=self._cancel_training, args=(client, submissions["pipeline"]), daemon=True
        )
        for thread in [*threads, canceller]:
            thread.start()
        self.console.print(Rule("live"))

        def screen() -> Group:
            return Group(
                *(render_submission(views[key], limit=8) for key in submissions),
            )

        with Live(screen(), console=self.console, refresh_per_second=8, transient=True) as live:
            while any(thread.is_alive() for thread in threads):
                live.update(screen())
                time.sleep(0.125)
        canceller.join(5)
        if errors:
            raise JoblogError(f"watching failed: {errors[0]}")
        for key, submission in submissions.items():
            self.console.print(summary_table(views[key], title=f"{key}: {submission.id}"))
        return views

    # ------------------------------------------------------------------ analytics

    def _analytics(self, client: Joblog, submissions: dict[str, Submission]) -> None:
        ids = [s.id for s in submissions.values()]
        marks = ", ".join("?" for _ in ids)
        self.console.print(Rule("SQL on the projection"))
        deadline = time.monotonic() + 60
        while True:
            rows = client.query(
                f"SELECT count(*) AS n FROM submissions WHERE done AND submission_id IN ({marks})",
                ids,
            )
            if rows and rows[0]["n"] == len(ids):
                break
            if time.monotonic() > deadline:
                raise JoblogError("the projection did not catch up within 60 s")
            time.sleep(0.2)
        assets = submissions["assets"]
        queries = [
            (
                "Jobs of this run by status",
                f"SELECT status, count(*) AS jobs FROM jobs WHERE submission_id IN ({marks}) "
                "GROUP BY status ORDER BY jobs DESC, status",
                ids,
            ),
            (
                "Durations per task (seconds)",
                "SELECT coalesce(task, name) AS task, count(*) AS jobs, "
                "round(avg(execution_duration), 2) AS mean_run, "
                "round(quantile_cont(execution_duration, 0.9), 2) AS p90_run, "
                "round(max(execution_duration), 2) AS max_run, "
                "round(avg(pending_duration), 2) AS mean_wait, sum(attempts) AS attempts "
                f"FROM jobs WHERE submission_id IN ({marks}) AND execution_duration IS NOT NULL "
                "GROUP BY ALL ORDER BY task",
                ids,
            ),
            (
                f"History of {assets.id}/fetch_assets (the view job_history)",
                "SELECT strftime(created, '%H:%M:%S.%g') AS created, status, description "
                "FROM job_history WHERE submission_id = ? AND job_id = 'fetch_assets' "
                "AND event NOT IN ('JobProgressed', 'JobOutput') ORDER BY seq",
                [assets.id],
            ),
            (
                "Load per worker (the view worker_load)",
                "SELECT worker_id, attempts, completed, failed, canceled, "
                "round(busy_seconds, 1) AS busy_seconds FROM worker_load ORDER BY worker_id",
                [],
            ),
        ]
        for title, sql, params in queries:
            self.console.print(f"[bold]{title}[/]")
            self.console.print(_table(client.query(sql, params)))
            self.console.print(f"[dim]{sql}[/]\n")


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table()
    columns = list(rows[0]) if rows else ["(no rows)"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        cells = []
        for column in columns:
            value = row[column]
            text = "-" if value is None else str(value)
            cells.append(styled_status(text) if column == "status" else text)
        table.add_row(*cells)
    return table


if __name__ == "__main__":
    sys.exit(main())
