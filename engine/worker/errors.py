"""Exceptions of the worker: loading tasks, running them, and the signals task code raises."""

from __future__ import annotations

from engine.errors import JoblogError


class WorkerError(JoblogError):
    """Root of the worker's own errors."""


class TaskLoadError(WorkerError):
    """A task module could not be imported, or it defines a task badly."""


class DuplicateTaskError(TaskLoadError):
    """Two different functions were registered under one task name."""


class UnknownTaskError(WorkerError):
    """A dispatch names a task this worker does not have.

    The worker fails the attempt with error type ``UnknownTask``; start the worker with the
    module that defines the task (``--tasks``), or dispatch the job to a queue whose workers
    have it.
    """


class BadArgumentsError(WorkerError):
    """A job's JSON arguments are malformed or do not fit the task's signature."""


class FatalException(JoblogError):
    """Raised by task code to end its attempt with a fatal exception (Flux's severity 0).

    The attempt fails with ``type`` as its error type and ``note`` as its message; the retry
    policy of the job decides whether another attempt runs. Use
    :meth:`engine.worker.JobContext.raise_exception` with a severity above 0 for an exception
    that is recorded while the job goes on.

    Attributes:
        type: a short machine-readable name, e.g. ``"InputMissing"``.
        note: what happened, for a person.
    """

    def __init__(self, type: str, note: str = "") -> None:
        super().__init__(f"{type}: {note}" if note else type)
        self.type = type
        self.note = note


#: The former name of :class:`FatalException`, kept for task code that imports it from
#: :mod:`engine.worker`. Not :class:`engine.JobException` (:mod:`engine.watch`), which a
#: watch raises when a job's fatal exception *event* arrives.
JobException = FatalException


class JobCancelled(JoblogError):
    """Raised inside a task by :meth:`JobContext.check_cancelled` once a cancel arrived.

    Let it propagate: the attempt then ends CANCELED. Any exception that ends a task whose
    cancel was requested also ends it CANCELED.
    """
