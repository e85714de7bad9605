"""The second peer: Temporal, a dev server and two Python workers, on the same machine, same run.

Temporal is what a Python user who wants durable, event-sourced jobs picks instead of joblog.
It is installed on demand and is never a dependency of joblog:

* the Temporal CLI, whose ``temporal server start-dev`` runs a complete server (frontend,
  history, matching and internal workers) in one process: found on ``PATH`` or in
  ``~/.cache/joblog/temporal-bin/``, else built from the Go module proxy with
  ``GOBIN=~/.cache/joblog/temporal-bin go install github.com/temporalio/cli/cmd/temporal@v1.5.1``
  (minutes: about 7 on 2 cores the first time; the binary is kept);
* the Python SDK ``temporalio==1.35.0`` from PyPI, into the running environment
  (``pip install -e '.[bench]'`` does the same).

Two variants, each a fresh server per run: ``sqlite`` keeps the server's state in a SQLite file
(``--db-filename``; durable, as Kafka's log is) and ``memory`` keeps it in memory (lost when the
server stops; faster, and not what a durable job engine is compared with, but the best case).

The job is a workflow that runs one no-op activity (:mod:`benchmarks.temporal_app`); two worker
processes of 16 activity slots each; the client is the harness process, which starts workflows
with ``start_workflow`` (at most :data:`IN_FLIGHT_STARTS` calls in flight) and waits for every
result. The clock runs from the first start to the last result in.
"""

from __future__ import annotations

import asyncio
import fcntl
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from benchmarks.cluster import ROOT
from benchmarks.peer import free_port, pip_install
from benchmarks.stats import latency_summary

CLI_MODULE = "github.com/temporalio/cli/cmd/temporal"
CLI_VERSION = "v1.5.1"
SDK_REQUIREMENT = "temporalio==1.35.0"
BIN_DIR = Path.home() / ".cache" / "joblog" / "temporal-bin"
VARIANTS = ("memory", "sqlite")
T = TypeVar("T")
IN_FLIGHT_STARTS = 64
"""Bound on concurrent ``start_workflow`` calls of a throughput run (results are awaited apart)."""


def find_binary(bin_dir: Path = BIN_DIR) -> Path | None:
    """The ``temporal`` CLI: on ``PATH``, else the one built into ``bin_dir``; None if neither."""
    found = shutil.which("temporal")
    if found is not None:
        return Path(found)
    cached = bin_dir / "temporal"
    return cached if os.access(cached, os.X_OK) else None


def build_binary(bin_dir: Path = BIN_DIR, log: Callable[[str], None] = print) -> str | None:
    """Builds the CLI into ``bin_dir`` with ``go install``; returns why it failed, or None.

    A lock file in ``bin_dir`` keeps two harness runs from building at once: the second waits
    for the first and then finds the binary.
    """
    go = shutil.which("go")
    if go is None:
        return (
            "the temporal CLI is missing and go is not installed to build it "
            f"(put temporal on PATH, or GOBIN={bin_dir} go install {CLI_MODULE}@{CLI_VERSION})"
        )
    bin_dir.mkdir(parents=True, exist_ok=True)
    with (bin_dir / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if find_binary(bin_dir) is not None:
            return None
        log(
            f"building the temporal CLI ({CLI_MODULE}@{CLI_VERSION}) into {bin_dir}: "
            "this takes minutes (about 7 on 2 cores) the first time"
        )
        result = subprocess.run(
            [go, "install", f"{CLI_MODULE}@{CLI_VERSION}"],
            env={**os.environ, "GOBIN": str(bin_dir)},
            capture_output=True,
            text=True,
        )
    if result.returncode != 0 or find_binary(bin_dir) is None:
        return f"go install {CLI_MODULE}@{CLI_VERSION} failed: {result.stderr[-500:]}"
    return None


def ensure_installed(
    log: Callable[[str], None] = print, *, install: bool = True, bin_dir: Path = BIN_DIR
) -> str | None:
    """Finds (or, with ``install``, builds and pip-installs) what the peer needs.

    Returns why the peer cannot run, or None. Without ``install`` (the smoke mode) nothing is
    built or installed: the peer runs only if the CLI and the SDK are already there.
    """
    if find_binary(bin_dir) is None:
        if not install:
            return "the temporal CLI is not installed (a --quick or --full run builds it)"
        reason = build_binary(bin_dir, log)
        if reason is not None:
            return reason
    if importlib.util.find_spec("temporalio") is None:
        if not install:
            return f"temporalio is not installed (pip install {SDK_REQUIREMENT})"
        log(f"installing {SDK_REQUIREMENT} from PyPI into this environment")
        return pip_install(SDK_REQUIREMENT)
    return None


def versions(bin_dir: Path = BIN_DIR) -> dict[str, str | None]:
    """Versions of the Temporal CLI (and the server inside it) and of the Python SDK."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    binary = find_binary(bin_dir)
    try:
        if binary is None:
            raise FileNotFoundError("temporal")
        text = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
        cli, _, server = text.removeprefix("temporal version ").partition(" (Server ")
        # go install of a tagged module stamps no version: the build's own tag is the truth
        out["temporal-cli"] = f"{CLI_VERSION} (go install)" if cli == "0.0.0-DEV" else cli
        out["temporal-server"] = server.split(",")[0] or None
    except (OSError, subprocess.TimeoutExpired):
        out["temporal-cli"] = out["temporal-server"] = None
    try:
        out["temporalio"] = metadata.version("temporalio")
    except metadata.PackageNotFoundError:
        out["temporalio"] = None
    return out


def server_argv(binary: Path, port: int, http_port: int, db_file: Path | None) -> list[str]:
    """``temporal server start-dev`` on 127.0.0.1, headless, quiet; in memory without a file."""
    argv = [
        str(binary),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--http-port",
        str(http_port),
        "--headless",
        "--log-level",
        "error",
    ]
    if db_file is not None:
        argv += ["--db-filename", str(db_file)]
    return argv


class TemporalPeer:
    """A Temporal dev server and two workers; :meth:`throughput` and :meth:`latency` run jobs.

    Args:
        variant: ``memory`` (no database file) or ``sqlite`` (``--db-filename``).
        workers: worker processes.
        slots: activity slots of each worker (``max_concurrent_activities``).
        bin_dir: where to look for the CLI besides ``PATH``.
    """

    def __init__(
        self, variant: str, workers: int = 2, slots: int = 16, bin_dir: Path = BIN_DIR
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
        binary = find_binary(bin_dir)
        if binary is None:
            raise RuntimeError("the temporal CLI is not installed (see ensure_installed)")
        self.binary = binary
        self.variant = variant
        self.workers = workers
        self.slots = slots
        self.workdir = Path(tempfile.mkdtemp(prefix=f"temporal-bench-{variant}-"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.task_queue = f"bench-{uuid.uuid4().hex[:8]}"
        self._server: subprocess.Popen[bytes] | None = None
        self._workers: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    @property
    def db_file(self) -> Path | None:
        """The server's SQLite file (None in memory)."""
        return self.workdir / "temporal.db" if self.variant == "sqlite" else None

    def start(self, timeout: float = 120.0) -> None:
        """Starts the server, waits until it answers, starts the workers, runs a warm-up."""
        log = self._log("server.log")
        self._server = subprocess.Popen(
            server_argv(self.binary, self.port, free_port(), self.db_file),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        asyncio.run(self._wait_ready(timeout))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for index in range(1, self.workers + 1):
            worker_log = self._log(f"worker-{index}.log")
            self._workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.temporal_app",
                        "worker",
                        "--address",
                        self.address,
                        "--task-queue",
                        self.task_queue,
                        "--slots",
                        str(self.slots),
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=worker_log,
                    stderr=subprocess.STDOUT,
                )
            )
        self.throughput(20, timeout=timeout)  # warm: both workers up and polling

    def _log(self, name: str) -> IO[bytes]:
        log = (self.workdir / name).open("wb")
        self._logs.append(log)
        return log

    async def _wait_ready(self, timeout: float) -> None:
        from temporalio.client import Client

        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                client = await asyncio.wait_for(Client.connect(self.address), 10)
                await asyncio.wait_for(client.service_client.check_health(), 10)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    def _check_alive(self) -> None:
        if self._server is not None and self._server.poll() is not None:
            raise RuntimeError(f"the Temporal server exited; see {self.workdir}/server.log")
        for index, worker in enumerate(self._workers, 1):
            if worker.poll() is not None:
                raise RuntimeError(
                    f"Temporal worker {index} exited; see {self.workdir}/worker-{index}.log"
                )

    def pids(self) -> dict[str, int]:
        """The server's and each worker's pid (``worker-1``, ...: summed as workers)."""
        out = {"server": self._server.pid} if self._server is not None else {}
        for index, worker in enumerate(self._workers, 1):
            out[f"worker-{index}"] = worker.pid
        return out

    def throughput(self, jobs: int, *, timeout: float = 900.0) -> dict[str, Any]:
        """Starts ``jobs`` workflows as fast as it can; jobs/s from first start to last result."""
        return asyncio.run(asyncio.wait_for(self._throughput(jobs), timeout))

    async def _throughput(self, jobs: int) -> dict[str, Any]:
        from temporalio.client import Client, WorkflowHandle

        from benchmarks.temporal_app import NoopWorkflow

        client = await Client.connect(self.address)
        tag = f"t{uuid.uuid4().hex[:6]}-"
        gate = asyncio.Semaphore(IN_FLIGHT_STARTS)

        async def start(index: int) -> WorkflowHandle[Any, float]:
            async with gate:
                return await client.start_workflow(
                    NoopWorkflow.run, id=f"{tag}{index:07d}", task_queue=self.task_queue
                )

        async def one(index: int) -> float:
            return await (await start(index)).result()

        started = time.time()
        cpu = time.process_time()
        results = await self._guarded(asyncio.gather(*(one(i) for i in range(jobs))))
        done = time.time()
        client_cpu = time.process_time() - cpu
        return {
            "jobs": len(results),
            "seconds": done - started,
            "jobs_per_s": jobs / (done - started),
            "client_cpu_seconds": client_cpu,
        }

    async def _guarded(self, work: Awaitable[T]) -> T:
        """Awaits ``work``; raises as soon as the server or a worker has exited."""
        job = asyncio.ensure_future(work)
        while True:
            done, _ = await asyncio.wait({job}, timeout=0.5)
            if done:
                return job.result()
            try:
                self._check_alive()
            except RuntimeError:
                job.cancel()
                raise

    def latency(self, rate: float, seconds: float, *, timeout: float = 300.0) -> dict[str, Any]:
        """Starts a workflow every ``1/rate`` s for ``seconds``; start → activity, → result."""
        return asyncio.run(asyncio.wait_for(self._latency(rate, seconds), seconds + timeout))

    async def _latency(self, rate: float, seconds: float) -> dict[str, Any]:
        from temporalio.client import Client

        from benchmarks.temporal_app import NoopWorkflow

        client = await Client.connect(self.address)
        tag = f"l{uuid.uuid4().hex[:6]}-"
        total = int(rate * seconds)

        async def one(index: int) -> tuple[float, float, float]:
            sent = time.time()
            handle = await client.start_workflow(
                NoopWorkflow.run, id=f"{tag}{index:07d}", task_queue=self.task_queue
            )
            ran = await handle.result()
            return sent, ran, time.time()

        async def paced() -> list[asyncio.Task[tuple[float, float, float]]]:
            tasks = []
            for index in range(total):
                delay = started + index / rate - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(index)))
            return tasks

        started = time.time()
        tasks = await self._guarded(paced())
        sent_for = time.time() - started
        samples = await self._guarded(asyncio.gather(*tasks))
        return {
            "rate": rate,
            "jobs": total,
            "achieved_rate": total / sent_for,
            "running": latency_summary([ran - sent for sent, ran, _ in samples]),
            "result": latency_summary([got - sent for sent, _, got in samples]),
        }

    def stop(self) -> None:
        """Stops the workers, then the server; removes the working directory (and the file)."""
        for process in [*self._workers, self._server]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
        for log in self._logs:
            log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
