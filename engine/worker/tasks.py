"""Task definitions: the ``@task`` decorator, the :class:`Task` it makes, and the registry.

A task is a Python function a worker runs for a job whose ``JobSpec.task`` names it::

    from engine.worker import JobContext, task

    @task(queue="render", retries=2, timeout=600)
    def render(ctx: JobContext, scene: str, frame: int) -> str:
        ctx.set_progress(0, total=100)
        ...
        return f"{scene}-{frame}.exr"

The rules, in one place:

* **Name**: ``name=`` or else the function's ``__name__``. Names are unique within a worker.
* **Context**: the function receives the :class:`~engine.worker.context.JobContext` as its
  first argument when its first parameter is named ``ctx`` or annotated ``JobContext``;
  otherwise it receives only the job's arguments.
* **Arguments**: the job's ``args`` field is JSON ``{"args": [...], "kwargs": {...}}``; they
  are passed as ``fn(ctx?, *args, **kwargs)``. A call that does not fit the signature fails the
  attempt with error type ``BadArguments``.
* **Result**: the return value is JSON-encoded into the attempt's ``Finished`` report; a value
  JSON cannot encode fails the attempt with error type ``UnserializableResult``.
* **Loading**: a worker started with ``--tasks a.b,c`` imports those modules and registers every
  :class:`Task` found at their top level (defined there or imported into them), and every
  class-based job procedure (a subclass of :class:`engine.jobqueue.JobProc`, cgkit's), under
  its ``jobType``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, overload

from engine.lifecycle.records import JobSpec, RetryPolicy
from engine.worker.errors import (
    BadArgumentsError,
    DuplicateTaskError,
    TaskLoadError,
    UnknownTaskError,
)

#: What a task function looks like to the registry: any callable.
TaskFunction = Callable[..., Any]

_CONTEXT_PARAMETER = "ctx"
_CONTEXT_TYPE = "JobContext"


@dataclass(frozen=True)
class TaskOptions:
    """The defaults a task gives the jobs built from it.

    Attributes:
        queue: the worker queue its jobs are dispatched to.
        retry: the retry policy of its jobs.
        timeout_ms: run timeout of one attempt (0: none).
        queue_timeout_ms: longest wait for a worker (0: none).
        priority: higher runs first among the runnable jobs of a submission.
        labels: free-form tags copied into each job.
    """

    queue: str = "default"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_ms: int = 0
    queue_timeout_ms: int = 0
    priority: int = 0
    labels: tuple[tuple[str, str], ...] = ()


class Task:
    """A registered Python function and the defaults of the jobs that run it.

    Calling the task calls the function directly (handy in tests); :meth:`spec` builds the
    :class:`JobSpec` a client submits to run it on a worker.

    Attributes:
        name: the name jobs use to refer to it (``JobSpec.task``).
        fn: the function.
        options: queue, retry policy, timeouts of its jobs.
        wants_context: whether ``fn`` takes the :class:`JobContext` as its first argument.
    """

    def __init__(self, fn: TaskFunction, name: str, options: TaskOptions) -> None:
        if not name:
            raise TaskLoadError(f"task {fn!r} has an empty name; give it one with @task(name=...)")
        self.fn = fn
        self.name = name
        self.options = options
        self.wants_context = takes_context(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Task({self.name!r}, queue={self.options.queue!r})"

    @property
    def origin(self) -> str:
        """Where the function is defined, as ``module.qualname``."""
        return f"{self.fn.__module__}.{self.fn.__qualname__}"

    def spec(self, job_id: str, *args: Any, **kwargs: Any) -> JobSpec:
        """Builds the spec of a job that runs this task with ``args`` and ``kwargs``.

        Args:
            job_id: the job's id, unique within its submission.
            *args: positional arguments of the task (JSON-encodable).
            **kwargs: keyword arguments of the task (JSON-encodable).

        Raises:
            BadArgumentsError: an argument cannot be encoded as JSON.
        """
        return self.spec_with(job_id, args=args, kwargs=kwargs)

    def spec_with(
        self,
        job_id: str,
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        name: str = "",
        depends_on: Sequence[str] = (),
        parent: str | None = None,
        queue: str | None = None,
        retry: RetryPolicy | None = None,
        timeout_ms: int | None = None,
        queue_timeout_ms: int | None = None,
        idempotency_key: str | None = None,
        priority: int | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> JobSpec:
        """Builds a job spec, overriding the task's defaults where given.

        Args:
            job_id: the job's id, unique within its submission.
            args: positional arguments of the task.
            kwargs: keyword arguments of the task.
            name: a human name for the job.
            depends_on: job ids of the submission that must complete first.
            parent: the job this one is a sub-job of.
            queue: the queue, instead of the task's.
            retry: the retry policy, instead of the task's.
            timeout_ms: the run timeout, instead of the task's.
            queue_timeout_ms: the queue timeout, instead of the task's.
            idempotency_key: a key that skips the job when it already completed.
            priority: the priority, instead of the task's.
            labels: tags added to the task's labels.

        Raises:
            BadArgumentsError: an argument cannot be encoded as JSON.
        """
        options = self.options
        merged_labels = dict(options.labels)
        merged_labels.update(labels or {})
        return JobSpec(
            job_id=job_id,
            name=name,
            task=self.name,
            args=encode_args(args, kwargs or {}),
            queue=options.queue if queue is None else queue,
            depends_on=tuple(depends_on),
            parent=parent,
            retry=options.retry if retry is None else retry,
            timeout_ms=options.timeout_ms if timeout_ms is None else timeout_ms,
            queue_timeout_ms=(
                options.queue_timeout_ms if queue_timeout_ms is None else queue_timeout_ms
            ),
            idempotency_key=idempotency_key,
            priority=options.priority if priority is None else priority,
            labels=tuple(sorted(merged_labels.items())),
        )


@overload
def task(fn: TaskFunction, /) -> Task: ...


@overload
def task(
    *,
    name: str | None = None,
    queue: str = "default",
    retries: int = 0,
    timeout: float | None = None,
    retry_backoff: float = 1.0,
    retry_on: Iterable[str | type[BaseException]] = (),
    queue_timeout: float | None = None,
    priority: int = 0,
    labels: Mapping[str, str] | None = None,
) -> Callable[[TaskFunction], Task]: ...


def task(
    fn: TaskFunction | None = None,
    /,
    *,
    name: str | None = None,
    queue: str = "default",
    retries: int = 0,
    timeout: float | None = None,
    retry_backoff: float = 1.0,
    retry_on: Iterable[str | type[BaseException]] = (),
    queue_timeout: float | None = None,
    priority: int = 0,
    labels: Mapping[str, str] | None = None,
) -> Task | Callable[[TaskFunction], Task]:
    """Makes a function a joblog task; use as ``@task`` or ``@task(...)``.

    Args:
        fn: the function, when used without parentheses.
        name: the task's name (default: the function's ``__name__``).
        queue: the queue its jobs go to.
        retries: how many times a failed attempt is retried (0: never).
        timeout: run timeout of one attempt, in seconds (``None``: none).
        retry_backoff: delay before the first retry, in seconds (doubled for each further one).
        retry_on: exception types (classes or names) or failure reasons that are retried;
            empty means every failure is retried.
        queue_timeout: longest wait for a worker, in seconds (``None``: none).
        priority: higher runs first among the runnable jobs of a submission.
        labels: tags copied into each job.

    Returns:
        The :class:`Task`, or a decorator that makes one.

    Raises:
        TaskLoadError: an option is out of range.
    """
    if retries < 0:
        raise TaskLoadError(f"retries={retries} must be 0 or more")
    options = TaskOptions(
        queue=queue,
        retry=RetryPolicy(
            max_attempts=retries + 1,
            backoff_ms=_milliseconds("retry_backoff", retry_backoff),
            retry_on=tuple(item if isinstance(item, str) else item.__name__ for item in retry_on),
        ),
        timeout_ms=0 if timeout is None else _milliseconds("timeout", timeout),
        queue_timeout_ms=0
        if queue_timeout is None
        else _milliseconds("queue_timeout", queue_timeout),
        priority=priority,
        labels=tuple(sorted((labels or {}).items())),
    )

    def make(function: TaskFunction) -> Task:
        return Task(function, name or function.__name__, options)

    return make if fn is None else make(fn)


def _milliseconds(option: str, seconds: float) -> int:
    if seconds < 0:
        raise TaskLoadError(f"{option}={seconds} must not be negative")
    return round(seconds * 1000)


def takes_context(fn: TaskFunction) -> bool:
    """Whether ``fn``'s first parameter is the job context (named ``ctx`` or annotated so)."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if not parameters:
        return False
    first = parameters[0]
    if first.kind not in (first.POSITIONAL_ONLY, first.POSITIONAL_OR_KEYWORD):
        return False
    if first.name == _CONTEXT_PARAMETER:
        return True
    annotation = first.annotation
    if isinstance(annotation, str):
        return annotation.rsplit(".", 1)[-1].strip("'\"") == _CONTEXT_TYPE
    return isinstance(annotation, type) and any(
        klass.__name__ == _CONTEXT_TYPE and klass.__module__.startswith("engine.worker")
        for klass in annotation.__mro__
    )


def tasks_in(values: Iterable[object]) -> list[Task]:
    """The tasks among ``values``: :class:`Task` objects, and the task of each class that
    makes one (a classmethod ``as_task()`` returning a :class:`Task`, as a ``JobProc``
    subclass has)."""
    found: list[Task] = []
    for value in values:
        if isinstance(value, Task):
            found.append(value)
        elif inspect.isclass(value):
            as_task = inspect.getattr_static(value, "as_task", None)
            made = as_task.__func__(value) if isinstance(as_task, classmethod) else None
            if isinstance(made, Task):
                found.append(made)
    return found


class TaskRegistry:
    """The tasks a worker can run, by name."""

    def __init__(self, tasks: Iterable[Task] = ()) -> None:
        self._tasks: dict[str, Task] = {}
        for item in tasks:
            self.register(item)

    @classmethod
    def from_modules(cls, modules: Iterable[str]) -> TaskRegistry:
        """Imports each module and registers the tasks found at its top level.

        Args:
            modules: dotted module paths, e.g. ``["myproject.tasks"]``.

        Raises:
            TaskLoadError: a module cannot be imported, or defines no task.
            DuplicateTaskError: two different functions share a task name.
        """
        registry = cls()
        for module in modules:
            registry.load_module(module)
        return registry

    def load_module(self, module: str | ModuleType) -> list[Task]:
        """Registers every :class:`Task` at the top level of ``module`` (imported if a name).

        Returns:
            The tasks found, in definition order.

        Raises:
            TaskLoadError: the module cannot be imported, or defines no task.
            DuplicateTaskError: two different functions share a task name.
        """
        if isinstance(module, str):
            try:
                module = importlib.import_module(module)
            except Exception as exc:
                raise TaskLoadError(
                    f"cannot import task module {module!r}: {type(exc).__name__}: {exc}; "
                    "check that it is importable from the worker's working directory "
                    "(PYTHONPATH)"
                ) from exc
        found = tasks_in(vars(module).values())
        if not found:
            raise TaskLoadError(
                f"module {module.__name__!r} defines no task; decorate functions with @task "
                "or subclass engine.jobqueue.JobProc"
            )
        for item in found:
            self.register(item)
        return found

    def register(self, item: Task) -> Task:
        """Adds a task. Registering the same task twice is harmless.

        Raises:
            DuplicateTaskError: another function is registered under the same name.
        """
        existing = self._tasks.get(item.name)
        if existing is not None and existing.fn is not item.fn:
            raise DuplicateTaskError(
                f"task name {item.name!r} is used by {existing.origin} and {item.origin}; "
                "rename one with @task(name=...)"
            )
        self._tasks[item.name] = item
        return item

    def get(self, name: str) -> Task:
        """The task called ``name``.

        Raises:
            UnknownTaskError: no task of that name is registered.
        """
        try:
            return self._tasks[name]
        except KeyError:
            known = ", ".join(sorted(self._tasks)) or "none"
            raise UnknownTaskError(
                f"no task named {name!r} on this worker (it has: {known})"
            ) from None

    def names(self) -> list[str]:
        """The registered task names, sorted."""
        return sorted(self._tasks)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[Task]:
        return iter(list(self._tasks.values()))

    def __len__(self) -> int:
        return len(self._tasks)


# --------------------------------------------------------------------------- arguments


def encode_args(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """Encodes a task's arguments as the ``JobSpec.args`` JSON.

    Raises:
        BadArgumentsError: a value cannot be encoded as JSON.
    """
    try:
        return json.dumps(
            {"args": list(args), "kwargs": dict(kwargs)}, separators=(",", ":"), allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise BadArgumentsError(f"task arguments are not JSON-encodable: {exc}") from exc


def decode_args(raw: str) -> tuple[list[Any], dict[str, Any]]:
    """Decodes ``JobSpec.args`` into positional and keyword arguments.

    An empty string or ``{}`` means no arguments.

    Raises:
        BadArgumentsError: the JSON is malformed or not of the ``{"args", "kwargs"}`` shape.
    """
    if not raw.strip():
        return [], {}
    try:
        decoded = json.loads(raw)
    except ValueError as exc:
        raise BadArgumentsError(f"job arguments are not valid JSON: {exc}") from exc
    if not isinstance(decoded, dict):
        raise BadArgumentsError('job arguments must be a JSON object {"args": [], "kwargs": {}}')
    unknown = set(decoded) - {"args", "kwargs"}
    if unknown:
        raise BadArgumentsError(
            f"job arguments have unknown fields {sorted(unknown)}; only args and kwargs"
        )
    args = decoded.get("args", [])
    kwargs = decoded.get("kwargs", {})
    if not isinstance(args, list):
        raise BadArgumentsError('"args" of the job arguments must be a JSON array')
    if not isinstance(kwargs, dict):
        raise BadArgumentsError('"kwargs" of the job arguments must be a JSON object')
    return args, kwargs


def bind_arguments(
    item: Task, context: object, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword arguments to call ``item.fn`` with.

    Raises:
        BadArgumentsError: the arguments do not fit the function's signature.
    """
    positional = (context, *args) if item.wants_context else tuple(args)
    try:
        signature = inspect.signature(item.fn)
    except (TypeError, ValueError):
        return positional, dict(kwargs)
    try:
        signature.bind(*positional, **kwargs)
    except TypeError as exc:
        raise BadArgumentsError(f"arguments do not fit task {item.name!r}: {exc}") from exc
    return positional, dict(kwargs)
