"""Running one shell-command process: live output capture and a two-step kill.

The process starts in a session (and process group) of its own, so a kill reaches whatever it
spawned: :meth:`CommandProcess.terminate` sends SIGTERM to the group and, if the group is still
there after the grace period, SIGKILL.

No orphans: ``/bin/sh`` starts the command (``exec``, so its pid, exit code and signals are the
command's own) after leaving a guard in its process group: a background shell that ignores
SIGTERM and waits on a pipe whose other end only the starting process holds. When the command
ends normally the guard is told so and exits; when the starting process dies (a worker or task
process SIGKILLed), the pipe reaches EOF and the guard SIGKILLs the whole group.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine.worker.forkserver import keep_from_children, release_fd
from engine.worker.output import STDERR, STDOUT, OutputCapture

_READ_BYTES = 64 * 1024
_TICK_S = 0.05
# After the process exits, its pipes may still be held open by children it left behind; read
# them this long, then stop (the attempt must not hang on a daemon the command started).
_DRAIN_AFTER_EXIT_S = 0.5
_SHELL = "/bin/sh"
# stdin is the guard pipe: keep it as fd 3, start the guard (a background list gets /dev/null
# as stdin, so it reads fd 3), then run the command with stdin /dev/null and fd 3 closed. The
# guard exits quietly on a line, and kills the group on EOF.
_GUARDED = (
    "exec 3<&0; "
    "( trap '' TERM INT HUP; if read _ <&3; then exit 0; fi; kill -9 0 ) "
    ">/dev/null 2>&1 & "
    'exec "$@" </dev/null 3<&-'
)


@dataclass(frozen=True)
class CommandResult:
    """How a command process ended.

    Attributes:
        returncode: the exit code, or ``-N`` when killed by signal ``N`` (as in ``subprocess``).
        terminated: whether :meth:`CommandProcess.terminate` was called (a cancel or a kill).
        killed: whether SIGKILL had to be sent because the grace period ran out.
        pid: the process id.
    """

    returncode: int
    terminated: bool
    killed: bool
    pid: int

    @property
    def description(self) -> str:
        """``exit code N`` or ``killed by SIGNAME``, for error notes."""
        if self.returncode >= 0:
            return f"exit code {self.returncode}"
        try:
            name = signal.Signals(-self.returncode).name
        except ValueError:
            name = f"signal {-self.returncode}"
        return f"killed by {name}"


class CommandProcess:
    """One command run as a child process whose output goes to an :class:`OutputCapture`.

    Use from one thread: :meth:`start`, then :meth:`wait`; :meth:`terminate` may be called from
    any thread, before or during :meth:`wait`.

    Args:
        argv: the program and its arguments (no shell is involved).
        capture: where stdout and stderr go.
        env: variables added to (or overriding) the worker's environment.
        cwd: the working directory (the worker's when ``None``).
    """

    def __init__(
        self,
        argv: Sequence[str],
        capture: OutputCapture,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        if not argv:
            raise ValueError("a command needs at least a program name")
        self.argv = list(argv)
        self.capture = capture
        self.env = dict(env or {})
        self.cwd = cwd
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._terminate_requested = False
        self._kill_at: float | None = None
        self._killed = False
        self._guard: int | None = None

    @property
    def pid(self) -> int | None:
        """The child's pid once started."""
        return None if self._process is None else self._process.pid

    def start(self) -> int:
        """Starts the process.

        Returns:
            Its pid.

        Raises:
            OSError: the program cannot be run (not found, not executable, bad ``cwd``).
        """
        environment = dict(os.environ)
        environment.update(self.env)
        _check_runnable(self.argv[0], environment.get("PATH", os.defpath), self.cwd)
        guard_read, guard_write = os.pipe()
        keep_from_children(guard_write)
        try:
            with self._lock:
                self._process = subprocess.Popen(
                    [_SHELL, "-c", _GUARDED, "joblog-command", *self.argv],
                    stdin=guard_read,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=environment,
                    cwd=self.cwd,
                    start_new_session=True,
                )
                self._guard = guard_write
                if self._terminate_requested:
                    self._signal(signal.SIGTERM)
                return self._process.pid
        except BaseException:
            release_fd(guard_write)
            os.close(guard_write)
            raise
        finally:
            os.close(guard_read)

    def terminate(self, grace_ms: int) -> None:
        """Asks the process group to stop: SIGTERM now, SIGKILL after ``grace_ms``.

        A second call can only shorten the grace period.
        """
        with self._lock:
            deadline = time.monotonic() + max(grace_ms, 0) / 1000
            first = not self._terminate_requested
            self._terminate_requested = True
            if self._kill_at is None or deadline < self._kill_at:
                self._kill_at = deadline
            if first and self._process is not None:
                self._signal(signal.SIGTERM)

    def wait(self) -> CommandResult:
        """Pumps the output into the capture until the process ended; closes the capture.

        Returns:
            How it ended.
        """
        process = self._process
        if process is None:
            raise RuntimeError("CommandProcess.wait() called before start()")
        assert process.stdout is not None and process.stderr is not None
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ, STDOUT)
        selector.register(process.stderr, selectors.EVENT_READ, STDERR)
        exited_at: float | None = None
        try:
            while True:
                if selector.get_map():
                    for key, _ in selector.select(_TICK_S):
                        data = os.read(key.fd, _READ_BYTES)
                        if data:
                            self.capture.feed(key.data, data)
                        else:
                            selector.unregister(key.fileobj)
                else:
                    time.sleep(_TICK_S)
                self.capture.flush_due()
                self._kill_if_due()
                if _has_exited(process.pid):
                    now = time.monotonic()
                    exited_at = exited_at or now
                    if not selector.get_map() or now - exited_at >= _DRAIN_AFTER_EXIT_S:
                        break
        finally:
            selector.close()
            process.stdout.close()
            process.stderr.close()
            with self._lock:
                if self._terminate_requested or not _has_exited(process.pid):
                    # A killed command takes whatever it left in its group along; and a failed
                    # read must never leave the process behind. The leader is not reaped yet,
                    # so its group id cannot have been reused.
                    self._signal(signal.SIGKILL)
                self._release_guard()
            returncode = process.wait()
            self.capture.close()
        return CommandResult(
            returncode=returncode,
            terminated=self._terminate_requested,
            killed=self._killed,
            pid=process.pid,
        )

    def _release_guard(self) -> None:
        """Tells the guard the command ended here (it exits without touching the group)."""
        guard, self._guard = self._guard, None
        if guard is None:
            return
        with contextlib.suppress(OSError):
            os.write(guard, b"\n")
        release_fd(guard)
        os.close(guard)

    def _kill_if_due(self) -> None:
        with self._lock:
            if self._kill_at is not None and not self._killed and time.monotonic() >= self._kill_at:
                self._killed = True
                self._signal(signal.SIGKILL)

    def _signal(self, signum: signal.Signals) -> None:
        process = self._process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)


def _check_runnable(program: str, path: str, cwd: str | None) -> None:
    """Raises what ``exec`` would, before the shell is started (its own failure would only
    be exit code 127)."""
    if os.sep in program:
        target = program if os.path.isabs(program) or cwd is None else os.path.join(cwd, program)
        if not os.path.exists(target):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if os.path.isdir(target) or not os.access(target, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
        return
    if shutil.which(program, path=path) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def _has_exited(pid: int) -> bool:
    """Whether the child exited, without reaping it (its pid stays its group's id)."""
    try:
        status = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return status is not None
