"""One attempt of one job on this worker: run it, report it, say how it ended.

:class:`AttemptRun` is the part of the worker that knows nothing of Kafka: it gets a
:class:`Dispatch`, sends its reports to a sink, and returns the :class:`Finished` report.
A Python task runs in a child process of the worker's pool (:mod:`engine.worker.pool`: warm
children forked from the template, or a fresh fork per attempt) when the run has a pool, else
in the calling thread (thread mode); a command runs as a child process either way. How an
attempt ends:

=================================================  ==========================================
what happened                                      reports
=================================================  ==========================================
task returned                                      Finished(COMPLETED, result=JSON)
its JSON result is above ``max_result_bytes``      Finished(FAILED, ResultTooLarge)
task raised ``FatalException`` / fatal             ExceptionReported(severity 0), then
``raise_exception``                                Finished(FAILED, error_type=type)
task raised anything else                          Finished(FAILED, error_type=class name,
                                                   error_note=str(exc), traceback)
the task's process died (signal, ``os._exit``)     Finished(FAILED, WorkerChildDied)
its process went above the memory limit            Finished(FAILED, MemoryLimitExceeded)
a kill arrived (whatever the task did then)        Finished(CANCELED)
the run timeout expired (a kill for ``timeout``)   Finished(FAILED, Timeout)
command exited 0 / non-zero                        Finished(COMPLETED / FAILED, exit_code)
=================================================  ==========================================

A kill of a task in a child process is three steps: the cancelled flag at once (and SIGTERM
for the commands it runs), SIGTERM to the child after ``cooperative_ms`` (at most half the
grace period), SIGKILL once the grace period is over. The whole sequence fits the grace
period, which is also the scheduler's deadline for the kill. A child whose attempt was killed
is never given another one: the pool replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.errors import ResultTooLarge
from engine.lifecycle.records import (
    TIMEOUT_ERROR_TYPE,
    AttemptRef,
    AttemptReport,
    Dispatch,
    ExceptionReported,
    Finished,
    Outcome,
    ProgressReported,
    Started,
)
from engine.limits import DEFAULT_LIMITS, Limits, describe_bytes
from engine.worker.channel import ChannelClosed
from engine.worker.command import CommandProcess
from engine.worker.context import (
    DEFAULT_KILL_GRACE_MS,
    DEFAULT_PROGRESS_INTERVAL_MS,
    AttemptReportSink,
    JobContext,
    Progress,
    wall_ms,
)
from engine.worker.errors import (
    BadArgumentsError,
    FatalException,
    JobCancelled,
    UnknownTaskError,
)
from engine.worker.fitting import (
    UnserializableResult,
    encode_result,
    fit_finished,
    fit_report,
)
from engine.worker.forkserver import ForkServerError, describe_wait_status
from engine.worker.output import OutputLimits
from engine.worker.pool import DIED, EXITED, KILLED, ChildPool, PooledChild, resident_bytes
from engine.worker.tasks import TaskRegistry, bind_arguments, decode_args

log = logging.getLogger("joblog.worker")

UNKNOWN_TASK = "UnknownTask"
BAD_ARGUMENTS = "BadArguments"
UNSERIALIZABLE_RESULT = "UnserializableResult"
NO_WORK = "NoWork"
CHILD_DIED = "WorkerChildDied"
MEMORY_LIMIT = "MemoryLimitExceeded"
TIMEOUT = TIMEOUT_ERROR_TYPE
#: The reason of the scheduler's kill when the run timeout expired (``FailureReason.TIMEOUT``).
TIMEOUT_REASON = "timeout"

_TICK_S = 0.05
_RSS_EVERY_S = 0.1
# A child that sent its Finished exits at once; one that does not is killed after this.
_EXIT_AFTER_FINISHED_S = 2.0
_EXIT_STATUS_WAIT_S = 5.0


@dataclass(frozen=True)
class AttemptOptions:
    """How attempts run on a worker.

    Attributes:
        progress_interval_ms: shortest time between two progress reports of one attempt.
        output_limits: chunk size, cap and flush interval of captured output.
        default_grace_ms: SIGTERM-to-SIGKILL time when a kill does not say.
        cooperative_ms: how long a killed task in a child process has to stop by itself (the
            cancelled flag) before SIGTERM; at most half the kill's grace period.
        memory_limit_bytes: the most resident memory (RSS) a task's child process may use;
            above it the child is killed and the attempt fails (0: no limit).
        timeout_margin_ms: the worker ends an attempt this long after its run timeout
            (``JobSpec.timeout_ms``) if the scheduler's kill has not come by then; ``None``
            leaves the run timeout to the scheduler alone.
        run_dir: the root of the attempts' running directories
            (:attr:`JobContext.running_dir`); empty: ``$JOBLOG_RUN_DIR`` or the default.
    """

    progress_interval_ms: int = DEFAULT_PROGRESS_INTERVAL_MS
    output_limits: OutputLimits = field(default_factory=OutputLimits)
    default_grace_ms: int = DEFAULT_KILL_GRACE_MS
    cooperative_ms: int = 1_000
    memory_limit_bytes: int = 0
    timeout_margin_ms: int | None = 2_000
    run_dir: str = ""


@dataclass(frozen=True)
class AttemptStart:
    """The message that starts an attempt in a child process: what to run, and how.

    Attributes:
        last: the child exits after this attempt (process-per-attempt, or the child ran its
            ``max_attempts_per_child``); else it sends :class:`ChildReady` and waits for the
            next one.
    """

    dispatch: Dispatch
    worker_id: str
    options: AttemptOptions
    limits: Limits
    last: bool = True


@dataclass(frozen=True)
class ChildReady:
    """A pool child's message after an attempt's ``Finished``: it is clean and waits."""

    pid: int


@dataclass
class _Kill:
    reason: str
    term_at: float
    kill_at: float


class AttemptRun:
    """Runs one dispatch: a task in a child process (or the calling thread), or a command.

    Args:
        dispatch: what to run.
        worker_id: this worker's id (part of every report's :class:`AttemptRef`).
        registry: the tasks this worker has.
        sink: receives the attempt's reports in order (already fitted to ``limits``).
        options: progress interval, output limits, kill steps, memory limit.
        limits: the designed sizes results and reports must fit.
        pool: the child processes Python tasks run in; without one, tasks run in the thread
            that calls :meth:`execute` (thread mode).
        clock: monotonic seconds (for tests).
    """

    def __init__(
        self,
        dispatch: Dispatch,
        worker_id: str,
        registry: TaskRegistry,
        sink: AttemptReportSink,
        options: AttemptOptions | None = None,
        *,
        limits: Limits = DEFAULT_LIMITS,
        pool: ChildPool | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.dispatch = dispatch
        self.options = options or AttemptOptions()
        self.limits = limits
        self.ref = AttemptRef(
            submission_id=dispatch.submission_id,
            job_id=dispatch.job_id,
            attempt=dispatch.attempt,
            dispatch_id=dispatch.dispatch_id,
            worker_id=worker_id,
        )
        self._registry = registry
        self._raw_sink = sink
        self._pool = pool
        self._clock = clock or time.monotonic
        self.context = JobContext(
            self.ref,
            dispatch.spec,
            self._sink,
            progress_interval_ms=self.options.progress_interval_ms,
            output_limits=self.options.output_limits,
            clock=self._clock,
            run_root=Path(self.options.run_dir) if self.options.run_dir else None,
        )
        self.finished: Finished | None = None
        self.child: PooledChild | None = None
        self._kill: _Kill | None = None
        self._kill_lock = threading.Lock()
        self._started_at: float | None = None
        self._relayed_progress: Progress | None = None

    @property
    def kind(self) -> str:
        """``"command"``, ``"task"`` (in a child process) or ``"task-thread"``."""
        if self.dispatch.spec.command:
            return "command"
        return "task" if self._pool is not None else "task-thread"

    def cancel(self, reason: str, grace_ms: int | None = None) -> None:
        """Asks the attempt to stop: cooperative flag, then SIGTERM and SIGKILL (see the module
        docstring). A second call keeps the first reason and can only shorten the grace."""
        grace = self.options.default_grace_ms if grace_ms is None or grace_ms <= 0 else grace_ms
        now = self._clock()
        with self._kill_lock:
            kill_at = now + grace / 1000
            if self._kill is None:
                cooperative = min(self.options.cooperative_ms, grace // 2) / 1000
                self._kill = _Kill(reason, term_at=now + cooperative, kill_at=kill_at)
            else:
                self._kill.kill_at = min(self._kill.kill_at, kill_at)
                self._kill.term_at = min(self._kill.term_at, kill_at)
        self.context.request_cancel(reason, grace)

    @property
    def kill_reason(self) -> str | None:
        """The reason of the first kill, ``None`` while there was none."""
        kill = self._kill
        return None if kill is None else kill.reason

    def pump(self) -> None:
        """Sends held-back progress that is due and enforces the run-timeout backstop; the
        worker calls it every loop."""
        self.context.flush_progress()
        margin = self.options.timeout_margin_ms
        timeout_ms = self.dispatch.spec.timeout_ms
        started = self._started_at
        if margin is None or timeout_ms <= 0 or started is None or self._kill is not None:
            return
        if self.finished is None and self._clock() - started >= (timeout_ms + margin) / 1000:
            log.warning(
                "attempt ran past its timeout timeout_ms=%s job=%s attempt=%s",
                timeout_ms,
                self.ref.job_id,
                self.ref.attempt,
            )
            self.cancel(TIMEOUT_REASON)

    def execute(self) -> Finished:
        """Runs the attempt to its end and sends its reports, ``Finished`` last.

        Never raises for anything the job does; the outcome is in the returned report.
        """
        spec = self.dispatch.spec
        if spec.command:
            finished = self._run_command(spec.command)
        elif spec.task and self._pool is not None:
            finished = self._run_task_in_child(spec.task, self._pool)
        elif spec.task:
            finished = self._run_task(spec.task)
        else:
            finished = self._failed(NO_WORK, "the job has neither a task nor a command")
        finished = fit_finished(self._after_kill(finished), self.limits)
        self.finished = finished
        self._raw_sink(finished)
        return finished

    def _sink(self, report: AttemptReport) -> None:
        if isinstance(report, Started):
            self._started_at = self._clock()
        for fitted in fit_report(report, self.limits):
            self._raw_sink(fitted)

    def _after_kill(self, finished: Finished) -> Finished:
        """After a kill the attempt ends CANCELED (FAILED ``Timeout`` for the run timeout)."""
        kill = self._kill
        if kill is None:
            return finished
        if kill.reason == TIMEOUT_REASON:
            if finished.outcome is Outcome.FAILED and finished.error_type == TIMEOUT:
                return finished
            return replace(
                finished,
                outcome=Outcome.FAILED,
                result=None,
                error_type=TIMEOUT,
                error_note=f"ran longer than {self.dispatch.spec.timeout_ms} ms",
            )
        if finished.outcome is Outcome.CANCELED:
            return finished
        return replace(
            finished,
            outcome=Outcome.CANCELED,
            result=None,
            error_type=JobCancelled.__name__,
            error_note=self.context.cancel_reason or kill.reason,
        )

    # ------------------------------------------------------------------ commands

    def _run_command(self, argv: tuple[str, ...]) -> Finished:
        spec = self.dispatch.spec
        env = dict(spec.env)
        env.update(
            JOBLOG_SUBMISSION_ID=self.ref.submission_id,
            JOBLOG_JOB_ID=self.ref.job_id,
            JOBLOG_ATTEMPT=str(self.ref.attempt),
            JOBLOG_DISPATCH_ID=self.ref.dispatch_id,
        )
        context = self.context
        process = CommandProcess(argv, context.output, env=env, cwd=spec.cwd)
        if context.cancelled:
            return self._canceled()
        with context.supervising(process):
            try:
                pid = process.start()
            except OSError as exc:
                return self._failed(type(exc).__name__, f"cannot run {argv[0]!r}: {exc}")
            self._sink(Started(ref=self.ref, pid=pid, sent_at=wall_ms()))
            result = process.wait()
        if result.terminated:
            return self._canceled(exit_code=result.returncode)
        if result.returncode == 0:
            return self._finished(Outcome.COMPLETED, exit_code=0)
        return self._finished(
            Outcome.FAILED,
            exit_code=result.returncode,
            error_type="ExitCode",
            error_note=f"{argv[0]} ended with {result.description}",
        )

    # ------------------------------------------------------------------ tasks, thread mode

    def _run_task(self, name: str) -> Finished:
        context = self.context
        try:
            item = self._registry.get(name)
        except UnknownTaskError as exc:
            return self._failed(UNKNOWN_TASK, str(exc))
        try:
            args, kwargs = decode_args(self.dispatch.spec.args)
            context.args = tuple(args)
            context.kwargs = kwargs
            call_args, call_kwargs = bind_arguments(item, context, args, kwargs)
        except BadArgumentsError as exc:
            return self._failed(BAD_ARGUMENTS, str(exc))
        if context.cancelled:
            return self._canceled()
        self._sink(Started(ref=self.ref, pid=os.getpid(), sent_at=wall_ms()))
        try:
            value = item.fn(*call_args, **call_kwargs)
            if inspect.isawaitable(value):
                value = asyncio.run(_awaited(value))
        except JobCancelled:
            return self._canceled()
        except FatalException as exc:
            if context.cancelled:
                return self._canceled()
            context.output.close()
            self._sink(
                ExceptionReported(
                    ref=self.ref,
                    type=exc.type,
                    note=exc.note,
                    severity=0,
                    traceback=traceback.format_exc(),
                    sent_at=wall_ms(),
                )
            )
            return self._failed(exc.type, exc.note, traceback.format_exc())
        except BaseException as exc:  # SystemExit and KeyboardInterrupt end the attempt too
            if context.cancelled:
                return self._canceled()
            note = str(exc)
            if isinstance(exc, SystemExit):
                note = f"the task called sys.exit({exc.code!r})"
            return self._failed(type(exc).__name__, note, traceback.format_exc())
        try:
            result = encode_result(value, self.limits)
        except UnserializableResult as exc:
            return self._failed(UNSERIALIZABLE_RESULT, str(exc))
        except ResultTooLarge as exc:
            return self._failed(type(exc).__name__, str(exc))
        return self._finished(Outcome.COMPLETED, result=result)

    # ------------------------------------------------------------------ tasks, child process

    def _run_task_in_child(self, name: str, pool: ChildPool) -> Finished:
        if name not in self._registry:
            try:
                self._registry.get(name)
            except UnknownTaskError as exc:
                return self._failed(UNKNOWN_TASK, str(exc))
        if self.context.cancelled:
            return self._canceled()
        try:
            child = pool.acquire()
        except ForkServerError as exc:
            return self._failed(CHILD_DIED, f"the task's process could not start: {exc}")
        self.child = child
        retire: str | None = DIED
        try:
            start = AttemptStart(
                dispatch=self.dispatch,
                worker_id=self.ref.worker_id,
                options=replace(self.options, timeout_margin_ms=None),
                limits=self.limits,
                last=pool.is_last(child),
            )
            with contextlib.suppress(ChannelClosed):  # it died at once: its status says how
                child.channel.send(start)
            finished, retire = self._supervise(pool, child)
            return finished
        finally:
            # A killed attempt's child is never reused, also when the kill came at the end.
            pool.release(child, KILLED if self._kill is not None else retire)

    def _supervise(self, pool: ChildPool, child: PooledChild) -> tuple[Finished, str | None]:
        """Relays the child's reports until it is ready for the next attempt or exits;
        carries out kills and the memory limit.

        Returns:
            The attempt's ``Finished``, and why the child must not run another attempt
            (``None``: it may).
        """
        channel, process = child.channel, child.process
        finished: Finished | None = None
        finished_at = 0.0
        cancel_sent = terminated = killed = False
        rss_over: int | None = None
        next_rss = 0.0
        limit = self.options.memory_limit_bytes
        while True:
            try:
                message = channel.recv(timeout=_TICK_S)
            except ChannelClosed:
                break
            now = self._clock()
            if message is not None and getattr(message, "ref", self.ref) != self.ref:
                pass  # a progress report the child's pump sent as the previous attempt ended
            elif isinstance(message, Finished):
                if finished is None:
                    finished, finished_at = message, now
            elif isinstance(message, ChildReady):
                if finished is not None and self._kill is None and rss_over is None:
                    return finished, None
                # Killed (or over the limit) after all: the child goes, and the attempt
                # ends once it has exited.
                killed = True
                pool.signal(child, signal.SIGKILL)
            elif message is not None and finished is None:
                if isinstance(message, ProgressReported):
                    self._relayed_progress = _merge(self._relayed_progress, message)
                self._sink(message)
            kill = self._kill
            if kill is not None:
                if not cancel_sent:
                    cancel_sent = True
                    grace_ms = max(0, int((kill.kill_at - now) * 1000))
                    with contextlib.suppress(ChannelClosed):
                        channel.send(
                            ("cancel", self.ref.dispatch_id, self.context.cancel_reason, grace_ms)
                        )
                if not terminated and now >= kill.term_at:
                    terminated = True
                    pool.signal(child, signal.SIGTERM)
                if not killed and now >= kill.kill_at:
                    killed = True
                    pool.signal(child, signal.SIGKILL)
            if finished is not None and not killed and now - finished_at >= _EXIT_AFTER_FINISHED_S:
                killed = True
                pool.signal(child, signal.SIGKILL)
            if limit > 0 and rss_over is None and now >= next_rss:
                next_rss = now + _RSS_EVERY_S
                rss = resident_bytes(process.pid)
                if rss is not None and rss > limit:
                    rss_over = rss
                    killed = True
                    pool.signal(child, signal.SIGKILL)
        status = process.wait(_EXIT_STATUS_WAIT_S)
        if status is None and pool.alive:
            pool.signal(child, signal.SIGKILL)
            status = process.wait(_EXIT_STATUS_WAIT_S)
        if finished is not None:
            # It exited after its attempt (its last one, or it left threads behind), or was
            # killed after it.
            return finished, EXITED if rss_over is None and not killed else DIED
        how = "its template process ended" if status is None else describe_wait_status(status)
        if rss_over is not None:
            return self._failed(
                MEMORY_LIMIT,
                f"the task's process used {describe_bytes(rss_over)} of memory (RSS), the limit "
                f"is {describe_bytes(limit)} (--task-memory-limit); it was killed",
            ), DIED
        if self._kill is not None:
            return self._canceled(), KILLED
        return self._failed(CHILD_DIED, f"the task's process died: {how}"), DIED

    # ------------------------------------------------------------------ outcomes

    def _failed(self, error_type: str, note: str, trace: str = "") -> Finished:
        return self._finished(Outcome.FAILED, error_type=error_type, error_note=note, trace=trace)

    def _canceled(self, exit_code: int | None = None) -> Finished:
        return self._finished(
            Outcome.CANCELED,
            exit_code=exit_code,
            error_type=JobCancelled.__name__,
            error_note=self.context.cancel_reason or "cancelled",
        )

    def _finished(
        self,
        outcome: Outcome,
        *,
        result: str | None = None,
        exit_code: int | None = None,
        error_type: str = "",
        error_note: str = "",
        trace: str = "",
    ) -> Finished:
        self.context.output.close()
        progress = self._relayed_progress or self.context.progress
        return Finished(
            ref=self.ref,
            outcome=outcome,
            result=result,
            exit_code=exit_code,
            error_type=error_type,
            error_note=error_note,
            traceback=trace,
            progress=progress.value,
            total=progress.total,
            status_line=progress.status_line,
            sent_at=wall_ms(),
        )


def _merge(previous: Progress | None, report: ProgressReported) -> Progress:
    previous = previous or Progress()
    return Progress(
        value=previous.value if report.value is None else report.value,
        total=previous.total if report.total is None else report.total,
        status_line=previous.status_line if report.status_line is None else report.status_line,
    )


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
