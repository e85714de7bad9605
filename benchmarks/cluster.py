"""joblog's services as separate processes: 1 scheduler (or a few sharing the partitions),
N workers, 1 projector.

Each service is the same command an operator runs (``python -m engine.scheduler``,
``python -m engine.worker``, ``joblog projector``), so the figures include process start-up
choices, logging and the query endpoint, and the services use every core of the machine.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from confluent_kafka.admin import AdminClient

from engine.admin import ensure_topics
from engine.config import Settings
from projections.errors import ProjectionError
from projections.reader import ProjectionReader

ROOT = Path(__file__).resolve().parent.parent


class ClusterError(RuntimeError):
    """A service died or did not become ready."""


@dataclass
class Service:
    """One running service process and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    profiler: subprocess.Popen[bytes] | None = None


@dataclass
class JoblogCluster:
    """Starts and stops joblog's services on a fresh topic prefix of ``bootstrap_servers``.

    Args:
        bootstrap_servers: the broker.
        workdir: where the DuckDB file and the service logs go.
        workers: worker processes.
        concurrency: attempts each worker runs at once.
        isolation: the workers' ``--isolation``; ``pool`` (the worker's default: warm task
            processes reused across attempts) unless a run compares the modes.
        schedulers: scheduler instances of the group (``scheduler``, ``scheduler-2``, ...).
        partitions: partitions of the co-partitioned topics (``None``: the settings' default).
        replication_factor: replication factor of the topics (``None``: the default, 1).
        scheduler_options: extra command-line options of every scheduler.
    """

    bootstrap_servers: str
    workdir: Path
    workers: int = 2
    concurrency: int = 16
    isolation: str = "pool"
    schedulers: int = 1
    partitions: int | None = None
    replication_factor: int | None = None
    scheduler_options: tuple[str, ...] = ()
    settings: Settings = field(init=False)
    db_path: Path = field(init=False)
    services: list[Service] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.settings = Settings.from_env(
            bootstrap_servers=self.bootstrap_servers,
            topic_prefix=f"b{uuid.uuid4().hex[:8]}.",
            partitions=self.partitions,
            replication_factor=self.replication_factor,
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.workdir / f"{self.settings.topic_prefix}duckdb"

    # ------------------------------------------------------------------ start and stop

    def start(self, timeout: float = 120.0) -> None:
        """Creates the topics, starts every service and waits until all have joined."""
        ensure_topics(self.settings)
        self._spawn_scheduler_and_workers()
        self._spawn(
            "projector",
            [
                sys.executable,
                "-c",
                "import sys; from engine.cli import main; sys.exit(main(sys.argv[1:]))",
                "projector",
                "--db",
                str(self.db_path),
                "--no-workers",
            ],
        )
        self.wait_ready(timeout)

    def _spawn_scheduler_and_workers(self) -> None:
        python = sys.executable
        for index in range(1, self.schedulers + 1):
            suffix = "" if index == 1 else f"-{index}"
            self._spawn(
                f"scheduler{suffix}",
                [
                    python,
                    "-m",
                    "engine.scheduler",
                    "--instance-id",
                    self.instance_id(index),
                    *self.scheduler_options,
                ],
            )
        print(
            f"[{time.strftime('%H:%M:%S')}] joblog cluster: {self.workers} workers "
            f"(python -m engine.worker --isolation {self.isolation} --concurrency "
            f"{self.concurrency})",
            file=sys.stderr,
            flush=True,
        )
        for index in range(self.workers):
            self._spawn(
                f"worker-{index + 1}",
                [
                    python,
                    "-m",
                    "engine.worker",
                    "--tasks",
                    "benchmarks.tasks",
                    "--concurrency",
                    str(self.concurrency),
                    "--isolation",
                    self.isolation,
                    "--worker-id",
                    f"bench-worker-{index + 1}",
                    "--drain-timeout",
                    "5",
                    "--log-level",
                    "WARNING",
                ],
            )

    def instance_id(self, index: int) -> str:
        """The instance id of scheduler number ``index`` (from 1)."""
        suffix = "" if index == 1 else f"-{index}"
        return f"{self.settings.topic_prefix}bench{suffix}"

    def _spawn(self, name: str, argv: list[str]) -> None:
        env = {
            **os.environ,
            "JOBLOG_BOOTSTRAP_SERVERS": self.settings.bootstrap_servers,
            "JOBLOG_TOPIC_PREFIX": self.settings.topic_prefix,
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
        log_path = self.workdir / f"{self.settings.topic_prefix}{name}.log"
        log = log_path.open("wb")
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.services.append(Service(name, process, log_path, log))

    def wait_ready(self, timeout: float) -> None:
        """Waits until the scheduler, every worker and the projector hold partitions."""
        prefix = self.settings.topic_prefix
        wanted = {
            f"{prefix}scheduler": self.schedulers,
            f"{prefix}workers.default": self.workers,
            f"{prefix}projector": 1,
        }
        admin = AdminClient(
            cast("dict[str, str | int | float | bool]", self.settings.client_config())
        )
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            members = _assigned_members(admin, list(wanted))
            if all(members.get(group, 0) >= count for group, count in wanted.items()):
                break
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"services not ready after {timeout:.0f}s: members {members}, want {wanted}"
                    f"; logs in {self.workdir}"
                )
            time.sleep(0.2)
        while True:
            try:
                ProjectionReader(self.db_path, timeout=5).query("SELECT 1")
                break
            except ProjectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def check_alive(self) -> None:
        """Raises :class:`ClusterError` when a service has exited."""
        for service in self.services:
            code = service.process.poll()
            if code is not None:
                tail = service.log_path.read_text(errors="replace")[-2000:]
                raise ClusterError(f"{service.name} exited with {code}:\n{tail}")

    def kill(self, name: str) -> None:
        """SIGKILLs one service (a crash); it is no longer watched or stopped."""
        service = next(s for s in self.services if s.name == name)
        service.process.send_signal(signal.SIGKILL)
        service.process.wait(10)
        service.log.close()
        self.services.remove(service)

    def pids(self) -> dict[str, int]:
        """The pid of each service."""
        return {service.name: service.process.pid for service in self.services}

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds each service has used so far, its descendants included
        (a worker's template and task processes)."""
        return {name: tree_cpu_seconds(pid) for name, pid in self.pids().items()}

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to every service, then SIGKILL to what is still running after ``timeout``."""
        for service in self.services:
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for service in self.services:
            try:
                service.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait(10)
            service.log.close()
        self.services.clear()

    def __enter__(self) -> JoblogCluster:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ reading

    def query(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """One read-only query on the projection (through the projector's endpoint)."""
        return ProjectionReader(self.db_path, timeout=30).query(sql, params)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (and its waited-for children), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = os.sysconf("SC_CLK_TCK")
    # fields[11:15]: utime, stime, cutime, cstime (the fields after the command name)
    return sum(int(value) for value in fields[11:15]) / ticks


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and of all its live descendants.

    A worker's task processes are its grandchildren (forked by its template process), a
    prefork pool's are its children; both count. A descendant that exited and was waited
    for is already in its parent's own figure (``process_cpu_seconds``).
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        member = todo.pop()
        seconds = process_cpu_seconds(member)
        if not math.isnan(seconds):  # NaN: it exited meanwhile
            total += seconds
        todo.extend(children.get(member, []))
    return total


def _assigned_members(admin: AdminClient, groups: list[str]) -> dict[str, int]:
    """Members of each group that hold at least one partition."""
    out: dict[str, int] = {}
    for group, future in admin.describe_consumer_groups(groups, request_timeout=10).items():
        try:
            description = future.result()
        except Exception:  # a group that does not exist yet reads as an error
            out[group] = 0
            continue
        out[group] = sum(
            1
            for member in description.members
            if member.assignment is not None and member.assignment.topic_partitions
        )
    return out
