"""One attempt of one job on this worker: run it, report it, say how it ended.

:class:`AttemptRun` is the part of the worker that knows nothing of Kafka: it gets a
:class:`Dispatch`, sends its reports to a sink, and returns the :class:`Finished` report.
How an attempt ends:

=================================================  ==========================================
what happened                                      reports
=================================================  ==========================================
task returned                                      Finished(COMPLETED, result=JSON)
task raised ``JobException`` / fatal               ExceptionReported(severity 0), then
``raise_exception``                                Finished(FAILED, error_type=type)
task raised anything else                          Finished(FAILED, error_type=class name,
                                                   error_note=str(exc), traceback)
cancel arrived and the task raised (any exception  Finished(CANCELED)
or ``JobCancelled``) or the command was signalled
command exited 0 / non-zero                        Finished(COMPLETED / FAILED, exit_code)
=================================================  ==========================================

A task that finishes normally in spite of a cancel ends COMPLETED: the report says how it
ended, and the scheduler decides what that means for a cancelled job.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.lifecycle.records import (
    AttemptRef,
    Dispatch,
    ExceptionReported,
    Finished,
    Outcome,
    Started,
)
from engine.worker.command import CommandProcess
from engine.worker.context import (
    DEFAULT_KILL_GRACE_MS,
    DEFAULT_PROGRESS_INTERVAL_MS,
    AttemptReportSink,
    JobContext,
    wall_ms,
)
from engine.worker.errors import (
    BadArgumentsError,
    JobCancelled,
    JobException,
    UnknownTaskError,
)
from engine.worker.output import OutputLimits
from engine.worker.tasks import TaskRegistry, bind_arguments, decode_args

UNKNOWN_TASK = "UnknownTask"
BAD_ARGUMENTS = "BadArguments"
UNSERIALIZABLE_RESULT = "UnserializableResult"
NO_WORK = "NoWork"


@dataclass(frozen=True)
class AttemptOptions:
    """How attempts run on a worker.

    Attributes:
        progress_interval_ms: shortest time between two progress reports of one attempt.
        output_limits: chunk size, cap and flush interval of captured output.
        default_grace_ms: SIGTERM-to-SIGKILL time when a kill does not say.
    """

    progress_interval_ms: int = DEFAULT_PROGRESS_INTERVAL_MS
    output_limits: OutputLimits = field(default_factory=OutputLimits)
    default_grace_ms: int = DEFAULT_KILL_GRACE_MS


class AttemptRun:
    """Runs one dispatch: a registered task in the calling thread, or a command process.

    Args:
        dispatch: what to run.
        worker_id: this worker's id (part of every report's :class:`AttemptRef`).
        registry: the tasks this worker has.
        sink: receives the attempt's reports in order.
        options: progress interval, output limits, kill grace.
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
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.dispatch = dispatch
        self.options = options or AttemptOptions()
        self.ref = AttemptRef(
            submission_id=dispatch.submission_id,
            job_id=dispatch.job_id,
            attempt=dispatch.attempt,
            dispatch_id=dispatch.dispatch_id,
            worker_id=worker_id,
        )
        self._registry = registry
        self._sink = sink
        self.context = JobContext(
            self.ref,
            dispatch.spec,
            sink,
            progress_interval_ms=self.options.progress_interval_ms,
            output_limits=self.options.output_limits,
            clock=clock or time.monotonic,
        )
        self.finished: Finished | None = None

    @property
    def kind(self) -> str:
        """``"command"`` or ``"task"``."""
        return "command" if self.dispatch.spec.command else "task"

    def cancel(self, reason: str, grace_ms: int | None = None) -> None:
        """Asks the attempt to stop: cooperative flag, and SIGTERM/SIGKILL for processes."""
        grace = self.options.default_grace_ms if grace_ms is None or grace_ms <= 0 else grace_ms
        self.context.request_cancel(reason, grace)

    def pump(self) -> None:
        """Sends held-back progress that is due; the worker calls it every loop."""
        self.context.flush_progress()

    def execute(self) -> Finished:
        """Runs the attempt to its end and sends its reports, ``Finished`` last.

        Never raises for anything the job does; the outcome is in the returned report.
        """
        spec = self.dispatch.spec
        if spec.command:
            finished = self._run_command(spec.command)
        elif spec.task:
            finished = self._run_task(spec.task)
        else:
            finished = self._failed(NO_WORK, "the job has neither a task nor a command")
        self.finished = finished
        self._sink(finished)
        return finished

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

    # ------------------------------------------------------------------ tasks

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
        except JobException as exc:
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
        except Exception as exc:
            if context.cancelled:
                return self._canceled()
            return self._failed(type(exc).__name__, str(exc), traceback.format_exc())
        try:
            result = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            return self._failed(
                UNSERIALIZABLE_RESULT, f"the task's return value is not JSON-encodable: {exc}"
            )
        return self._finished(Outcome.COMPLETED, result=result)

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
        progress = self.context.progress
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


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
