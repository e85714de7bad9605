"""What a running task sees of joblog: :class:`JobContext`.

The context reports on the task's behalf (progress, status line, exceptions, output) and tells
it when a cancel arrived. Progress and the status line are coalesced: at most one report per
interval (200 ms by default) leaves the worker, the last value wins, and the final values
always reach the log in the attempt's ``Finished`` report.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.clock import now_ms
from engine.lifecycle.records import (
    AttemptRef,
    AttemptReport,
    ExceptionReported,
    JobSpec,
    OutputReported,
    ProgressReported,
)
from engine.worker.command import CommandProcess
from engine.worker.errors import FatalException, JobCancelled
from engine.worker.output import STDOUT, OutputCapture, OutputLimits

#: Receives the reports of one attempt, in order; the worker sends them to ``reports``.
AttemptReportSink = Callable[[AttemptReport], None]

DEFAULT_PROGRESS_INTERVAL_MS = 200
DEFAULT_KILL_GRACE_MS = 10_000
#: Where the running directories of attempts go when ``JOBLOG_RUN_DIR`` is not set.
DEFAULT_RUN_DIR = Path(tempfile.gettempdir()) / "joblog-runs"
_UNSAFE_PATH_CHARS = re.compile(r"[^A-Za-z0-9._:@+=-]")


def running_root() -> Path:
    """The directory under which attempts get their running directories:
    ``$JOBLOG_RUN_DIR``, else :data:`DEFAULT_RUN_DIR`."""
    configured = os.environ.get("JOBLOG_RUN_DIR", "")
    return Path(configured) if configured else DEFAULT_RUN_DIR


def running_dir_of(root: Path, ref: AttemptRef) -> Path:
    """``root/<submission>/<job>/<attempt>``, each id made safe as one path component."""

    def component(text: str) -> str:
        safe = _UNSAFE_PATH_CHARS.sub("_", text)
        return "_" if safe in ("", ".", "..") else safe

    return root / component(ref.submission_id) / component(ref.job_id) / str(ref.attempt)


#: Milliseconds since the Unix epoch (the ``sent_at`` of reports).
wall_ms = now_ms


@dataclass(frozen=True)
class Progress:
    """A progress value, its total and the status line, as last set."""

    value: float | None = None
    total: float | None = None
    status_line: str | None = None


class ProgressThrottle:
    """Coalesces progress updates: at most one per ``interval_ms``, the last value wins.

    :meth:`update` returns the value to send now when the interval since the last send has
    passed; otherwise it keeps the value, and :meth:`due` hands it out once the interval is
    over. Thread-safe.

    Args:
        interval_ms: the shortest time between two sends.
        clock: monotonic seconds (for tests).
    """

    def __init__(
        self,
        interval_ms: int = DEFAULT_PROGRESS_INTERVAL_MS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval_ms / 1000
        self._clock = clock
        self._lock = threading.Lock()
        self._current = Progress()
        self._last_sent_at: float | None = None
        self._pending = False

    @property
    def current(self) -> Progress:
        """The latest values, sent or not."""
        return self._current

    def update(
        self,
        *,
        value: float | None = None,
        total: float | None = None,
        status_line: str | None = None,
    ) -> Progress | None:
        """Records new values (``None`` keeps the previous one).

        Returns:
            The values to send now, or ``None`` when they must wait for the interval.
        """
        with self._lock:
            current = self._current
            self._current = Progress(
                value=current.value if value is None else value,
                total=current.total if total is None else total,
                status_line=current.status_line if status_line is None else status_line,
            )
            self._pending = True
            return self._take_if_due()

    def due(self) -> Progress | None:
        """The kept values, once the interval since the last send has passed."""
        with self._lock:
            return self._take_if_due() if self._pending else None

    def _take_if_due(self) -> Progress | None:
        now = self._clock()
        if self._last_sent_at is not None and now - self._last_sent_at < self._interval:
            return None
        self._last_sent_at = now
        self._pending = False
        return self._current


class JobContext:
    """The running attempt, as its task sees it.

    The worker builds one per attempt and passes it as the task's first argument when the
    task asks for it (see :mod:`engine.worker.tasks`). All methods may be called from any
    thread of the task.

    Attributes:
        ref: the attempt (submission, job, attempt number, dispatch, worker).
        spec: the job's spec.
        args: the job's positional arguments.
        kwargs: the job's keyword arguments.
    """

    def __init__(
        self,
        ref: AttemptRef,
        spec: JobSpec,
        sink: AttemptReportSink,
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        progress_interval_ms: int = DEFAULT_PROGRESS_INTERVAL_MS,
        output_limits: OutputLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        run_root: Path | None = None,
    ) -> None:
        self.ref = ref
        self.spec = spec
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self._sink = sink
        self._progress = ProgressThrottle(progress_interval_ms, clock)
        self._send_lock = threading.Lock()
        self.output_limits = output_limits or OutputLimits()
        self.output = OutputCapture(self._send_output, self.output_limits, clock=clock)
        self._cancel = threading.Event()
        self._cancel_reason = ""
        self._grace_ms = DEFAULT_KILL_GRACE_MS
        self._processes: set[CommandProcess] = set()
        self._processes_lock = threading.Lock()
        self._run_root = run_root
        self._running_dir: Path | None = None
        #: Whether the attempt has a process of its own (a child of the worker's pool), so
        #: the task may change process-wide state such as the working directory.
        self.own_process = False

    # ------------------------------------------------------------------ identity

    @property
    def submission_id(self) -> str:
        """The submission the job belongs to."""
        return self.ref.submission_id

    @property
    def job_id(self) -> str:
        """The job's id within its submission."""
        return self.ref.job_id

    @property
    def attempt(self) -> int:
        """The attempt number: 1 for the first run, 2 for the first retry, ..."""
        return self.ref.attempt

    @property
    def dispatch_id(self) -> str:
        """The id of the dispatch record this attempt runs."""
        return self.ref.dispatch_id

    @property
    def worker_id(self) -> str:
        """The worker running the attempt."""
        return self.ref.worker_id

    @property
    def running_dir(self) -> Path:
        """This attempt's own working directory (cgkit's ``runningDir``), made on first use.

        It is ``<root>/<submission>/<job>/<attempt>`` on the worker's host, where the root is
        the worker's ``--run-dir`` (``$JOBLOG_RUN_DIR``, by default ``joblog-runs`` in the
        temporary directory). A retry gets a fresh one; the directory is left in place after
        the attempt, for inspection, and cleaning it up is the host's business.

        Raises:
            OSError: the directory cannot be made.
        """
        if self._running_dir is None:
            path = running_dir_of(self._run_root or running_root(), self.ref)
            path.mkdir(parents=True, exist_ok=True)
            self._running_dir = path
        return self._running_dir

    # ------------------------------------------------------------------ progress

    def set_progress(self, value: float, total: float | None = None) -> None:
        """Reports a progress value, in any unit the task likes (e.g. 20 of 2500 frames).

        Updates are coalesced: at most one report per 200 ms, the last value wins, and the
        final value is always recorded.

        Args:
            value: the progress so far.
            total: what ``value`` reaches when done; ``None`` keeps the total set before.
        """
        self._send_progress(self._progress.update(value=float(value), total=_float(total)))

    def set_status_line(self, text: str) -> None:
        """Sets a one-line message about what the task is doing (coalesced like progress)."""
        self._send_progress(self._progress.update(status_line=str(text)))

    @property
    def progress(self) -> Progress:
        """The latest progress and status line set by the task."""
        return self._progress.current

    def flush_progress(self) -> None:
        """Sends held-back progress whose interval has passed (the worker calls it often)."""
        self._send_progress(self._progress.due())

    # ------------------------------------------------------------------ exceptions

    def raise_exception(self, type: str, note: str = "", severity: int = 0) -> None:
        """Raises a job exception (Flux).

        Args:
            type: a short machine-readable name, e.g. ``"LowMemory"``.
            note: what happened, for a person.
            severity: 0 is fatal: the attempt ends FAILED with ``type`` and ``note`` (this
                call raises :class:`FatalException` to unwind the task). Above 0 the exception is
                recorded and the job goes on.

        Raises:
            FatalException: when ``severity`` is 0.
            ValueError: ``severity`` is negative.
        """
        if severity < 0:
            raise ValueError(f"severity={severity} must be 0 (fatal) or more")
        if severity == 0:
            raise FatalException(type, note)
        self._send(
            ExceptionReported(
                ref=self.ref,
                type=type,
                note=note,
                severity=severity,
                traceback="".join(traceback.format_stack(limit=8)[:-1]),
                sent_at=wall_ms(),
            )
        )

    # ------------------------------------------------------------------ cancel

    @property
    def cancelled(self) -> bool:
        """Whether a cancel (or a kill by the scheduler) arrived for this attempt."""
        return self._cancel.is_set()

    @property
    def cancel_reason(self) -> str:
        """Why the attempt is being cancelled (``""`` while it is not)."""
        return self._cancel_reason

    def check_cancelled(self) -> None:
        """Raises :class:`JobCancelled` if a cancel arrived; call it where stopping is safe.

        Raises:
            JobCancelled: the attempt was cancelled.
        """
        if self._cancel.is_set():
            raise JobCancelled(self._cancel_reason or "cancelled")

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Sleeps up to ``timeout`` seconds, waking early on a cancel.

        Returns:
            Whether the attempt was cancelled.
        """
        return self._cancel.wait(timeout)

    def request_cancel(self, reason: str, grace_ms: int) -> None:
        """Sets the cancel flag and terminates the commands the task runs (used by the worker).

        Args:
            reason: why, as the scheduler said.
            grace_ms: time between SIGTERM and SIGKILL for its commands.
        """
        if not self._cancel.is_set():
            self._cancel_reason = reason
            self._grace_ms = grace_ms
            self._cancel.set()
        with self._processes_lock:
            processes = list(self._processes)
        for process in processes:
            process.terminate(grace_ms)

    # ------------------------------------------------------------------ output and commands

    def write_output(self, text: str, stream: str = STDOUT) -> None:
        """Records text as the job's output (``stdout`` or ``stderr``), within the output cap."""
        self.output.write(stream, text)

    def run_command(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        *,
        on_stdout: Callable[[str], None] | None = None,
        on_stderr: Callable[[str], None] | None = None,
    ) -> int:
        """Runs a program and waits for it, streaming its output into the job's output.

        cgkit's ``execCmd``: the output is captured (chunked and capped like a command job's)
        and also given to ``on_stdout``/``on_stderr`` as it arrives, e.g. to parse progress.
        A cancel terminates the program (SIGTERM, then SIGKILL after the grace period).

        Args:
            argv: the program and its arguments (no shell).
            env: variables added to the worker's environment.
            cwd: the working directory.
            on_stdout: called with each decoded chunk of stdout.
            on_stderr: called with each decoded chunk of stderr.

        Returns:
            The exit code (``-N`` if killed by signal ``N``).

        Raises:
            JobCancelled: the attempt was cancelled (before or while the program ran).
            OSError: the program cannot be started.
        """
        self.check_cancelled()
        callbacks = {"stdout": on_stdout, "stderr": on_stderr}

        def forward(stream: str, text: str) -> None:
            self.output.write(stream, text)
            callback = callbacks.get(stream)
            if callback is not None:
                callback(text)

        # Its own capture cuts and times the chunks; the attempt's capture keeps the cap.
        capture = OutputCapture(
            lambda stream, text, _offset, _truncated: forward(stream, text),
            OutputLimits(
                chunk_bytes=self.output_limits.chunk_bytes,
                max_bytes=2**62,
                flush_interval_ms=self.output_limits.flush_interval_ms,
            ),
        )
        process = CommandProcess(argv, capture, env=env, cwd=cwd)
        with self.supervising(process):
            process.start()
            result = process.wait()
        self.check_cancelled()
        return result.returncode

    @contextlib.contextmanager
    def supervising(self, process: CommandProcess) -> Iterator[None]:
        """Makes a cancel terminate ``process`` while the block runs (also if it came first)."""
        with self._processes_lock:
            self._processes.add(process)
        try:
            if self._cancel.is_set():
                process.terminate(self._grace_ms)
            yield
        finally:
            with self._processes_lock:
                self._processes.discard(process)

    # ------------------------------------------------------------------ sending

    def _send_progress(self, progress: Progress | None) -> None:
        if progress is None:
            return
        self._send(
            ProgressReported(
                ref=self.ref,
                value=progress.value,
                total=progress.total,
                status_line=progress.status_line,
                sent_at=wall_ms(),
            )
        )

    def _send_output(self, stream: str, chunk: str, offset: int, truncated: bool) -> None:
        self._send(
            OutputReported(
                ref=self.ref,
                stream=stream,
                chunk=chunk,
                offset=offset,
                truncated=truncated,
                sent_at=wall_ms(),
            )
        )

    def _send(self, report: AttemptReport) -> None:
        with self._send_lock:
            self._sink(report)


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)
