"""Workers: run the jobs of a queue (DESIGN.md §5).

Define tasks with :func:`task`, give their modules to a worker (``joblog worker --tasks
mod``), and report from inside a task through its :class:`JobContext`::

    from engine.worker import JobContext, task

    @task(retries=2)
    def resize(ctx: JobContext, path: str, width: int) -> str:
        ctx.set_status_line(f"resizing {path}")
        ...

See ``docs/workers.md`` for the whole story.
"""

from typing import TYPE_CHECKING, Any

from engine.worker.context import JobContext, Progress
from engine.worker.errors import (
    BadArgumentsError,
    DuplicateTaskError,
    FatalException,
    JobCancelled,
    JobException,
    TaskLoadError,
    UnknownTaskError,
    WorkerError,
)
from engine.worker.tasks import Task, TaskRegistry, task

if TYPE_CHECKING:
    from engine.worker.worker import Worker, WorkerOptions


def __getattr__(name: str) -> Any:
    # Task modules import this package for @task; the Kafka loop loads only when asked for.
    if name in ("Worker", "WorkerOptions"):
        from engine.worker import worker

        return getattr(worker, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BadArgumentsError",
    "DuplicateTaskError",
    "FatalException",
    "JobCancelled",
    "JobContext",
    "JobException",
    "Progress",
    "Task",
    "TaskLoadError",
    "TaskRegistry",
    "UnknownTaskError",
    "Worker",
    "WorkerError",
    "WorkerOptions",
    "task",
]
