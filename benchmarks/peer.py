"""The peer: Celery 5 with a Redis broker and result backend, on the same machine, same run.

Installed on demand and never a dependency of joblog: ``redis-server`` from the Debian
packages (``apt-get install -y redis-server``) and ``celery`` + ``redis`` from PyPI into the
running environment (``pip install 'joblog[bench]'`` does the same). The worker is one
``celery worker`` with two prefork processes (defaults otherwise: prefetch multiplier 4, acks
early); tasks are sent with ``send_task`` (what ``apply_async`` calls) and their results
stored in Redis. The clock runs from the first send to the moment Redis holds every result.
A latency run sends tasks at a fixed rate and reads, for each, when it ran and when its
result was stored.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.cluster import ROOT
from benchmarks.stats import latency_summary, paced


def ensure_installed(log: Any = print) -> str | None:
    """Installs what the peer needs if it is missing; returns why it cannot run, or None."""
    if shutil.which("redis-server") is None:
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            return "redis-server is missing (apt-get install -y redis-server)"
        log("installing redis-server from the Debian packages")
        for argv in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "redis-server"],
        ):
            result = subprocess.run(argv, capture_output=True, text=True)
            if result.returncode != 0 and argv[1] != "update":
                return f"apt-get install redis-server failed: {result.stderr[-500:]}"
    if importlib.util.find_spec("celery") is None or importlib.util.find_spec("redis") is None:
        log("installing celery and redis from PyPI into this environment")
        return pip_install("celery>=5.3", "redis>=5")
    return None


def pip_install(*requirements: str) -> str | None:
    """Installs ``requirements`` from PyPI into the running environment; why not, or None."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", *requirements],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        return f"pip install {' '.join(requirements)} failed: {result.stderr[-500:]}"
    importlib.invalidate_caches()
    return None


def versions() -> dict[str, str | None]:
    """Versions of Celery, redis-py and redis-server."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in ("celery", "redis", "kombu"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    try:
        text = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
        out["redis-server"] = next(
            (part.split("=", 1)[1] for part in text.split() if part.startswith("v=")), text
        )
    except OSError:
        out["redis-server"] = None
    return out


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CeleryPeer:
    """A Redis server and a Celery worker of two processes; :meth:`throughput` runs tasks."""

    def __init__(self, processes: int = 2) -> None:
        self.processes = processes
        self.workdir = Path(tempfile.mkdtemp(prefix="celery-bench-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self._redis: subprocess.Popen[bytes] | None = None
        self._worker: subprocess.Popen[bytes] | None = None
        self._app: Any = None

    def start(self, timeout: float = 60.0) -> None:
        import redis

        self._redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(f"{self.url}/0")
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        client.flushall()
        env = {**os.environ, "BENCH_REDIS_URL": self.url, "PYTHONPATH": str(ROOT)}
        self._log = (self.workdir / "worker.log").open("wb")
        self._worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "benchmarks.celery_app",
                "worker",
                "--concurrency",
                str(self.processes),
                "--pool",
                "prefork",
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        from benchmarks import celery_app

        self._app = celery_app.make_app(self.url)  # the harness's, on this peer's Redis
        self.throughput(20, timeout=timeout)  # warm: the worker is up and has run tasks

    def pids(self) -> dict[str, int]:
        out = {}
        if self._worker is not None:
            out["celery"] = self._worker.pid
        if self._redis is not None:
            out["redis"] = self._redis.pid
        return out

    def throughput(self, tasks: int, *, timeout: float = 600.0) -> dict[str, Any]:
        """Sends ``tasks`` no-op tasks; returns tasks/s from first send to last result stored."""
        import redis

        results = redis.Redis.from_url(f"{self.url}/1")
        results.flushdb()
        started = time.time()
        cpu = time.process_time()
        for _ in range(tasks):
            self._app.send_task("noop")
        sent = time.time()
        deadline = time.monotonic() + timeout
        while True:
            stored = int(results.dbsize())
            if stored >= tasks:
                break
            if self._worker is not None and self._worker.poll() is not None:
                raise RuntimeError(f"the Celery worker exited; see {self.workdir}/worker.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{stored}/{tasks} Celery results after {timeout}s")
            time.sleep(0.05)
        done = time.time()
        client_cpu = time.process_time() - cpu
        return {
            "tasks": tasks,
            "seconds": done - started,
            "tasks_per_s": tasks / (done - started),
            "send_seconds": sent - started,
            "send_per_s": tasks / max(sent - started, 1e-9),
            "client_cpu_seconds": client_cpu,
        }

    def latency(self, rate: float, seconds: float, *, timeout: float = 120.0) -> dict[str, Any]:
        """Sends a task every ``1/rate`` s for ``seconds``; send → started, → result stored.

        *Started* is the time the task returns (taken in the task); *stored* is the result's
        ``date_done``, which the worker stamps just before it writes the result to Redis.
        """
        import json

        import redis

        results = redis.Redis.from_url(f"{self.url}/1")
        results.flushdb()
        total = int(rate * seconds)
        sent: dict[str, float] = {}
        started = time.time()
        for _ in paced(total, rate, started):
            at = time.time()
            sent[self._app.send_task("stamp").id] = at
        sent_for = time.time() - started
        deadline = time.monotonic() + timeout
        while int(results.dbsize()) < total:
            if self._worker is not None and self._worker.poll() is not None:
                raise RuntimeError(f"the Celery worker exited; see {self.workdir}/worker.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{results.dbsize()}/{total} Celery results after {timeout}s")
            time.sleep(0.05)
        ids = list(sent)
        metas = []
        for task_id, raw in zip(
            ids, results.mget([f"celery-task-meta-{i}" for i in ids]), strict=True
        ):
            if raw is None:
                raise RuntimeError(f"no result stored for Celery task {task_id}")
            metas.append(json.loads(raw))
        ran = [meta["result"] - sent[i] for i, meta in zip(ids, metas, strict=True)]
        stored = [
            datetime.fromisoformat(meta["date_done"]).timestamp() - sent[i]
            for i, meta in zip(ids, metas, strict=True)
        ]
        return {
            "rate": rate,
            "jobs": total,
            "achieved_rate": total / sent_for,
            "running": latency_summary(ran),
            "result": latency_summary(stored),
        }

    def stop(self) -> None:
        if self._app is not None:
            self._app.close()
        for process in (self._worker, self._redis):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
        shutil.rmtree(self.workdir, ignore_errors=True)
