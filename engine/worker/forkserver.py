"""The fork server: a clean template process that forks one child per Python attempt.

The worker forks the template once, when it starts and before it opens its Kafka clients, so
the template holds the task registry (registered callables, imported modules) but no
librdkafka threads, sockets or buffers. Each attempt is then one ``fork()`` of that small,
single-threaded process: cheap (see docs/workers.md for the measured cost), nothing shared
with other attempts, and a crash, a leak or a kill ends only that child.

The worker and the template talk over a ``SOCK_SEQPACKET`` socket pair:

===========================================  ================================================
worker -> template                           template -> worker
===========================================  ================================================
``("spawn", request)`` + the child's socket  ``("spawned", request, pid)`` or
                                             ``("spawn_failed", request, error)``
``("signal", pid, signum)``                  ``("exited", pid, wait status)`` once reaped
``("quit",)`` (or the socket closing)        the template SIGKILLs its children and exits
===========================================  ================================================

No orphans: the template and each child ask the kernel for SIGKILL when their parent dies
(``PR_SET_PDEATHSIG``), and the template exits when the worker's end of the socket closes; a
child also exits when its attempt socket reaches EOF (:mod:`engine.worker.child`). The
template has a process group of its own, so a Ctrl-C meant for the worker's terminal does not
reach running tasks: the worker decides how they stop.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import ctypes.util
import functools
import gc
import itertools
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.worker.errors import WorkerError

log = logging.getLogger("joblog.worker")

_PR_SET_PDEATHSIG = 1
_MESSAGE_BYTES = 64 * 1024

# File descriptors only the worker may hold: its ends of attempt sockets, of fork-server
# sockets and of command guard pipes. A template forked later closes them, so that a worker's
# death still shows as EOF to whatever watches the other end.
_worker_only: set[int] = set()
_worker_only_lock = threading.Lock()


def keep_from_children(fd: int) -> None:
    """Marks ``fd`` as the worker's alone: fork-server templates close it after forking."""
    with _worker_only_lock:
        _worker_only.add(fd)


def release_fd(fd: int) -> None:
    """Forgets a descriptor given to :func:`keep_from_children` (call before closing it)."""
    with _worker_only_lock:
        _worker_only.discard(fd)


def die_with_parent(parent_pid: int) -> None:
    """Asks the kernel to SIGKILL this process when its parent dies (Linux).

    The kernel watches the parent *thread* that forked this process. If the parent is already
    gone (this process was re-parented before the call), exits at once.
    """
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


@functools.cache
def _prctl() -> Callable[..., int] | None:
    # Looked up once, in the template: find_library may run a program, too slow per child.
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return function


def describe_wait_status(status: int) -> str:
    """``exit code 3`` or ``exit signal SIGSEGV`` for a ``waitpid`` status."""
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = str(-code)
    return f"exit signal {name}"


class ForkServerError(WorkerError):
    """The fork server is not running, or it could not fork a child."""


@dataclass
class ChildProcess:
    """A child forked by the template for one attempt.

    Attributes:
        pid: its process id.
        status: its ``waitpid`` status once the template reaped it.
    """

    pid: int
    status: int | None = None
    exited: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float | None) -> int | None:
        """The wait status, or ``None`` if it has not exited within ``timeout`` seconds."""
        self.exited.wait(timeout)
        return self.status


@dataclass
class _Request:
    done: threading.Event = field(default_factory=threading.Event)
    child: ChildProcess | None = None
    error: str = ""


#: What a forked child runs: given its end of the attempt socket and the template's pid; it
#: must never return (it ends with ``os._exit``).
ChildMain = Callable[[socket.socket, int], None]


class ForkServer:
    """The worker's handle on its template process.

    Args:
        child_main: what each child runs (the template calls it right after ``fork``).
        name: for logs.

    Thread-safe: attempts spawn and signal children from their own threads.
    """

    def __init__(self, child_main: ChildMain, name: str = "joblog-fork-server") -> None:
        self._child_main = child_main
        self.name = name
        self.pid: int | None = None
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._requests: dict[int, _Request] = {}
        self._children: dict[int, ChildProcess] = {}
        self._early_exits: dict[int, int] = {}
        self._ids = itertools.count(1)
        self._reader: threading.Thread | None = None
        self._alive = False

    @property
    def alive(self) -> bool:
        """Whether the template runs and answers."""
        return self._alive

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Forks the template. Call it from the thread that will outlive every attempt (the
        template gets SIGKILL when that thread ends).

        Raises:
            ForkServerError: ``fork`` failed.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        worker_pid = os.getpid()
        # The collector must not run in the template before everything it inherited is frozen:
        # a Kafka client in an uncollected reference cycle of the worker would be destroyed
        # there, and librdkafka aborts the process when it destroys a client whose threads did
        # not survive the fork. Held across the fork, the lock keeps the descriptor list whole.
        collecting = gc.isenabled()
        gc.disable()
        try:
            with _worker_only_lock:
                inherited = list(_worker_only)
                pid = os.fork()
        except OSError as exc:
            if collecting:
                gc.enable()
            ours.close()
            theirs.close()
            raise ForkServerError(f"cannot fork the task template: {exc}") from exc
        if pid == 0:  # the template
            try:
                gc.freeze()
                if collecting:
                    gc.enable()
                ours.close()
                _serve(theirs, worker_pid, self._child_main, inherited)
            finally:
                os._exit(0)
        if collecting:
            gc.enable()
        theirs.close()
        keep_from_children(ours.fileno())
        self.pid = pid
        self._sock = ours
        self._alive = True
        self._reader = threading.Thread(target=self._read, name=f"{self.name}-reader", daemon=True)
        self._reader.start()

    def close(self, timeout: float = 2.0) -> None:
        """Stops the template (its remaining children are SIGKILLed) and reaps it."""
        sock, pid = self._sock, self.pid
        if sock is None or pid is None:
            return
        with contextlib.suppress(OSError):
            self._send(("quit",))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done == 0:
                    time.sleep(0.01)
                    continue
            break
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        release_fd(sock.fileno())
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        if self._reader is not None:
            self._reader.join(timeout)
        self._sock = None
        self.pid = None

    # ------------------------------------------------------------------ requests

    def spawn(self, child_end: socket.socket, timeout: float = 10.0) -> ChildProcess:
        """Forks a child that gets ``child_end`` (closed here once handed over).

        Raises:
            ForkServerError: the template is gone, did not answer, or could not fork.
        """
        request_id = next(self._ids)
        request = _Request()
        with self._lock:
            self._requests[request_id] = request
        try:
            try:
                with self._send_lock:
                    sock = self._sock
                    if sock is None or not self._alive:
                        raise ForkServerError("the task template process is not running")
                    socket.send_fds(sock, [_encode(("spawn", request_id))], [child_end.fileno()])
            except OSError as exc:
                raise ForkServerError(f"the task template process is gone: {exc}") from exc
            finally:
                child_end.close()
            if not request.done.wait(timeout):
                raise ForkServerError(f"the task template did not fork within {timeout:.0f} s")
            if request.child is None:
                raise ForkServerError(request.error or "the task template process is gone")
            return request.child
        finally:
            with self._lock:
                self._requests.pop(request_id, None)

    def signal(self, child: ChildProcess, signum: int) -> None:
        """Sends ``signum`` to a child (through the template, so a reused pid is never hit)."""
        if child.exited.is_set():
            return
        with contextlib.suppress(OSError, ForkServerError):
            self._send(("signal", child.pid, int(signum)))

    def _send(self, message: tuple[object, ...]) -> None:
        with self._send_lock:
            sock = self._sock
            if sock is None:
                raise ForkServerError("the task template process is not running")
            sock.send(_encode(message))

    # ------------------------------------------------------------------ answers

    def _read(self) -> None:
        sock = self._sock
        assert sock is not None
        try:
            while True:
                try:
                    data = sock.recv(_MESSAGE_BYTES)
                except OSError:
                    data = b""
                if not data:
                    break
                self._on_message(_decode(data))
        finally:
            self._alive = False
            with self._lock:
                requests = list(self._requests.values())
                children = list(self._children.values())
                self._children.clear()
            for request in requests:
                request.error = "the task template process ended"
                request.done.set()
            for child in children:  # they got SIGKILL with their parent
                child.exited.set()

    def _on_message(self, message: tuple[object, ...]) -> None:
        kind = message[0]
        if kind == "spawned":
            request_id, pid = int(message[1]), int(message[2])  # type: ignore[call-overload]
            child = ChildProcess(pid)
            with self._lock:
                request = self._requests.get(request_id)
                early = self._early_exits.pop(pid, None)
                if early is None:
                    self._children[pid] = child
            if early is not None:
                child.status = early
                child.exited.set()
            if request is not None:
                request.child = child
                request.done.set()
        elif kind == "spawn_failed":
            with self._lock:
                request = self._requests.get(int(message[1]))  # type: ignore[call-overload]
            if request is not None:
                request.error = str(message[2])
                request.done.set()
        elif kind == "exited":
            pid, status = int(message[1]), int(message[2])  # type: ignore[call-overload]
            with self._lock:
                found = self._children.pop(pid, None)
                if found is None:
                    self._early_exits[pid] = status
            if found is not None:
                found.status = status
                found.exited.set()


def _encode(message: tuple[object, ...]) -> bytes:
    return repr(message).encode()


def _decode(data: bytes) -> tuple[object, ...]:
    value = ast.literal_eval(data.decode())
    assert isinstance(value, tuple)
    return value


# --------------------------------------------------------------------------- the template


def _serve(
    sock: socket.socket, worker_pid: int, child_main: ChildMain, inherited: list[int]
) -> None:
    """The template's loop: fork on request, signal on request, report exits.

    ``inherited`` are the worker's own descriptors, closed here. Everything the template holds
    from the worker was frozen out of the collector's reach before this is called.
    """
    _worker_only.clear()
    for fd in inherited:
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    die_with_parent(worker_pid)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    template_pid = os.getpid()
    children: set[int] = set()
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "sock")
    selector.register(wake_r, selectors.EVENT_READ, "wake")

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in children:
                children.discard(pid)
                with contextlib.suppress(OSError):
                    sock.send(_encode(("exited", pid, status)))

    running = True
    while running:
        for key, _ in selector.select(1.0):
            if key.data == "wake":
                with contextlib.suppress(OSError):
                    while os.read(wake_r, 512):
                        pass
                continue
            try:
                data, fds, _flags, _addr = socket.recv_fds(sock, _MESSAGE_BYTES, 4)
            except OSError:
                data, fds = b"", []
            if not data:
                running = False
                break
            message = _decode(data)
            if message[0] == "spawn":
                request_id = message[1]
                if not fds:
                    sock.send(_encode(("spawn_failed", request_id, "no socket was passed")))
                    continue
                try:
                    pid = os.fork()
                except OSError as exc:
                    for fd in fds:
                        os.close(fd)
                    sock.send(_encode(("spawn_failed", request_id, f"fork failed: {exc}")))
                    continue
                if pid == 0:
                    code = 70
                    try:
                        selector.close()
                        sock.close()
                        signal.set_wakeup_fd(-1)
                        os.close(wake_r)
                        os.close(wake_w)
                        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                        for extra in fds[1:]:
                            os.close(extra)
                        child_main(socket.socket(fileno=fds[0]), template_pid)
                    except BaseException:  # never return into the template's loop
                        with contextlib.suppress(Exception):
                            traceback.print_exc()
                    finally:
                        os._exit(code)
                for fd in fds:
                    os.close(fd)
                children.add(pid)
                sock.send(_encode(("spawned", request_id, pid)))
            elif message[0] == "signal":
                pid, signum = int(message[1]), int(message[2])  # type: ignore[call-overload]
                if pid in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signum)
            elif message[0] == "quit":
                running = False
                break
        reap()
    for pid in list(children):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while children and time.monotonic() < deadline:
        reap()
        time.sleep(0.01)
