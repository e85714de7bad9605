"""cgkit's jobqueue on joblog: class-based job procedures and a queue of job trees.

A user of ``cgkit.jobqueue`` finds its vocabulary here, on joblog's engine (commands and
events on Kafka, the DuckDB projection) instead of a shared directory::

    from engine.jobqueue import JobProc, JobQueue

    class renderFrame(JobProc):
        def __init__(self, scene: str, frame: int) -> None:
            super().__init__(label=f"{scene} frame {frame}")
            self.scene, self.frame = scene, frame

        def run(self) -> None:
            self.setStatusLine(f"rendering frame {self.frame}")
            if self.execCmd(f"render {self.scene} -f {self.frame}") != 0:
                self.setError("the renderer failed")
            self.setProgress(100)

    jq = JobQueue("render", procs=[renderFrame, encodeMovie])
    root = jq.createJobRoot("encodeMovie", scene="shot1")
    for frame in range(1, 4):
        root.createJob("renderFrame", scene="shot1", frame=frame)
    root.activate()                  # one submission: the sub-jobs run first
    jq.runNextAvailableJob()         # on a batch node: run one job, then return

The rules, in one place (``docs/seeds.md`` says where and why joblog differs from cgkit):

* **A job type names a JobProc class**: its ``jobType`` attribute, else its class name
  (cgkit's ``procs/renderrib.py`` defines class ``renderrib``). It is the job's task name: a
  worker started with ``--tasks mymodule`` runs every ``JobProc`` subclass found at the top
  level of ``mymodule``, as it runs ``@task`` functions. A client resolves a job type through
  the classes and modules given to :class:`JobQueue`, or an import path
  (``package.module.ClassName``).
* **The job parameters are the job's arguments**: ``createJob("renderFrame", frame=3)``
  runs ``renderFrame(frame=3).run()`` on a worker. They are checked when the job is created
  (the class is instantiated, as cgkit does, and they must be JSON), so bad input fails there.
* **Sub-jobs first**: a job runs only once all of its sub-jobs completed; jobs on the same
  level are independent and may run at once on several workers. A job that depends on a job
  already under another parent waits for it (a dependency, cgkit's shared sub-job).
* **A job is done** when ``run()`` returned and ``setError()`` was not called. An exception
  from ``run()`` or ``setError()`` fails the attempt (``setError`` with error type
  ``JobProcError`` and its message), and the jobs above it are abandoned: they never run.
* **Running directory**: ``runningDir`` is the attempt's own directory on the worker (the
  job's ``.running`` directory in cgkit); when the attempt has a process of its own (the
  worker's default isolation) ``run()`` starts in it.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from engine.api import Job as _TreeJob
from engine.api import Joblog, job_key
from engine.config import Settings
from engine.errors import CommandRejectedError, JoblogError
from engine.lifecycle.records import TERMINAL, JobStatus, RejectionCode, RetryPolicy
from engine.lifecycle.views import JobView
from engine.worker.context import JobContext
from engine.worker.errors import FatalException
from engine.worker.output import STDERR, STDOUT
from engine.worker.tasks import Task, TaskOptions, TaskRegistry

if TYPE_CHECKING:
    from engine.worker.worker import WorkerOptions

#: The label every job of a :class:`JobQueue` carries, with the queue's name as its value.
QUEUE_LABEL = "jobqueue"
#: The error type of an attempt whose procedure called :meth:`JobProc.setError`.
JOB_PROC_ERROR = "JobProcError"
#: The most jobs one job tree may hold (joblog's submission limit applies too).
MAX_TREE_JOBS = 100_000

_WAITING = frozenset({JobStatus.SUBMITTED, JobStatus.BLOCKED, JobStatus.PENDING})
_RUNNING = frozenset({JobStatus.ASSIGNED, JobStatus.RUNNING})
_GONE = frozenset(
    {RejectionCode.UNKNOWN_SUBMISSION, RejectionCode.UNKNOWN_JOB, RejectionCode.DELETED}
)
_tasks: dict[type[JobProc], Task] = {}
_tasks_lock = threading.Lock()


class JobQueueError(JoblogError):
    """A job queue call cannot be done; the message says why and what to do."""


# --------------------------------------------------------------------------- procedures


class JobOutputStream:
    """A procedure's ``stdout``/``stderr``: what is written becomes the job's output."""

    def __init__(self, context: JobContext, stream: str) -> None:
        self._context = context
        self.stream = stream

    def write(self, text: str) -> int:
        """Records ``text`` as job output (within the attempt's output cap)."""
        self._context.write_output(str(text), self.stream)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        """Writes each of ``lines``."""
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Nothing to do: output is sent in chunks by the worker."""

    def writable(self) -> bool:
        return True


class _Lines:
    """Cuts streamed text into numbered lines for a line callback; a callback that raises
    is reported on the job's stderr and not called again (as cgkit does)."""

    def __init__(self, callback: Callable[[int, str], object], errors: JobOutputStream) -> None:
        self._callback: Callable[[int, str], object] | None = callback
        self._errors = errors
        self._partial = ""
        self.count = 0

    def feed(self, text: str) -> None:
        pending = self._partial + text
        *complete, self._partial = pending.split("\n")
        for line in complete:
            self._emit(line + "\n")

    def close(self) -> None:
        if self._partial:
            self._emit(self._partial)
            self._partial = ""

    def _emit(self, line: str) -> None:
        self.count += 1
        if self._callback is None:
            return
        try:
            self._callback(self.count, line)
        except Exception:
            self._errors.write(traceback.format_exc())
            self._callback = None


class JobProc:
    """The base class of job procedures (cgkit's ``JobProc``).

    A subclass implements :meth:`run` and takes the job's parameters as constructor
    arguments. An object may be made several times per job (once when the job is created, to
    check the parameters and read the label, and once per attempt on a worker), so the
    constructor must not do work that must happen once: :meth:`postCreate` is for that.

    Args:
        label: a short message about what the procedure is going to do (the job's name).

    Attributes:
        jobType: the job type naming the class (default: the class name).
        retries: retries after a failed attempt (cgkit has none: 0).
        timeout: run timeout of one attempt, in seconds (0: none).
        label: the label.
        stdout / stderr: while :meth:`run` runs, streams into the job's output.
    """

    jobType: ClassVar[str | None] = None
    retries: ClassVar[int] = 0
    timeout: ClassVar[float] = 0.0

    def __init__(self, label: str | None = None) -> None:
        self.label = None if label is None else str(label)
        self.stdout: JobOutputStream | None = None
        self.stderr: JobOutputStream | None = None
        self._context: JobContext | None = None
        self._error: str | None = None

    # ------------------------------------------------------------------ to implement

    def run(self) -> None:
        """Does whatever this job has to do. The base method does nothing.

        It may call :meth:`execCmd` to run programs, :meth:`setProgress` and
        :meth:`setStatusLine` to tell how it goes, and :meth:`setError` when the job failed.
        """

    def postCreate(self, jobDir: str | None) -> None:
        """Called once per job, on the submitting machine, when the job is created.

        joblog has no job directory before an attempt runs (the running directory is per
        attempt, on the worker), so ``jobDir`` is ``None``. The base method does nothing.
        """

    def stdoutCallback(self, lineNr: int, line: str) -> None:
        """Called for every line a program run by :meth:`execCmd` writes to stdout.

        Args:
            lineNr: the line's number, from 1.
            line: the line, with its newline (the last one may have none).
        """

    def stderrCallback(self, lineNr: int, line: str) -> None:
        """Called for every line a program run by :meth:`execCmd` writes to stderr.

        Args:
            lineNr: the line's number, from 1.
            line: the line, with its newline (the last one may have none).
        """

    # ------------------------------------------------------------------ to call from run()

    @property
    def context(self) -> JobContext:
        """joblog's context of the running attempt (exceptions, cancel flag, ids, ...).

        Raises:
            JobQueueError: the procedure is not running (outside :meth:`run`).
        """
        if self._context is None:
            raise JobQueueError(
                f"{type(self).__name__} is not running: the job's context, running "
                "directory, progress and error exist only inside run() on a worker"
            )
        return self._context

    @property
    def runningDir(self) -> str:
        """The directory this attempt runs in (see :attr:`JobContext.running_dir`)."""
        return str(self.context.running_dir)

    def setProgress(self, value: float) -> None:
        """Sets the progress percentage: ``value`` is clamped to 0..100 (an int, as in
        cgkit) and sent as joblog progress of a total of 100 (coalesced, last value wins)."""
        self.context.set_progress(max(0, min(int(value), 100)), total=100)

    def setStatusLine(self, s: object) -> None:
        """Sets a short message about what the job is doing now."""
        self.context.set_status_line(str(s))

    def setError(self, message: str = "") -> None:
        """Marks the job failed without raising: :meth:`run` goes on, and the attempt ends
        FAILED (error type ``JobProcError``) once it returns.

        Args:
            message: why (joblog's addition; the error note names the job when empty).
        """
        context = self.context
        if self._error is None or message:
            self._error = message or f"{type(self).task_name()} called setError()"
        context.set_status_line(f"error: {self._error}"[:200])

    @property
    def hasError(self) -> bool:
        """Whether :meth:`setError` was called in this attempt."""
        return self._error is not None

    def execCmd(self, cmd: str | Sequence[str], env: Mapping[str, str] | None = None) -> int:
        """Runs a command in the running directory and waits for it.

        Its stdout/stderr become the job's output, streamed as a command job's are, and each
        line goes to :meth:`stdoutCallback` / :meth:`stderrCallback`. A cancel of the job
        terminates it.

        Args:
            cmd: a command line run by ``/bin/sh -c`` (as cgkit's ``shell=True``), or an argv
                run as is.
            env: variables added to the worker's environment.

        Returns:
            The command's return code (``-N`` if killed by signal ``N``).

        Raises:
            JobCancelled: the job was cancelled.
            OSError: the program cannot be started.
        """
        context = self.context
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else [str(part) for part in cmd]
        errors = self.stderr or JobOutputStream(context, STDERR)
        out = _Lines(self.stdoutCallback, errors)
        err = _Lines(self.stderrCallback, errors)
        try:
            return context.run_command(
                argv, env=env, cwd=self.runningDir, on_stdout=out.feed, on_stderr=err.feed
            )
        finally:
            out.close()
            err.close()

    # ------------------------------------------------------------------ joblog's side

    @classmethod
    def task_name(cls) -> str:
        """The job type, which is the task name: ``jobType`` or the class name."""
        return cls.jobType or cls.__name__

    @classmethod
    def as_task(cls) -> Task | None:
        """The task that runs this procedure on a worker (``None`` for the base class)."""
        if cls is JobProc:
            return None
        return proc_task(cls)

    def _begin(self, context: JobContext) -> None:
        self._context = context
        self._error = None
        self.stdout = JobOutputStream(context, STDOUT)
        self.stderr = JobOutputStream(context, STDERR)

    def _end(self) -> None:
        self.stdout = self.stderr = None


def proc_task(cls: type[JobProc]) -> Task:
    """The :class:`Task` that runs ``cls`` (one per class, so registering it twice is fine).

    The task makes ``cls(**params)`` from the job's arguments, runs it in the running
    directory when the attempt has a process of its own, and fails the attempt with
    ``JobProcError`` when the procedure called ``setError``.

    Raises:
        TypeError: ``cls`` is not a ``JobProc`` subclass.
    """
    if not (inspect.isclass(cls) and issubclass(cls, JobProc)) or cls is JobProc:
        raise TypeError(f"{cls!r} is not a subclass of engine.jobqueue.JobProc")
    with _tasks_lock:
        made = _tasks.get(cls)
        if made is None:
            made = _tasks[cls] = _make_task(cls)
        return made


def _make_task(cls: type[JobProc]) -> Task:
    def run_job_proc(ctx: JobContext, *args: Any, **params: Any) -> None:
        proc = cls(*args, **params)
        proc._begin(ctx)
        with _in_running_dir(ctx):
            try:
                proc.run()
            finally:
                proc._end()
        if proc._error is not None:
            raise FatalException(JOB_PROC_ERROR, proc._error)

    # The arguments are checked against the procedure's constructor (BadArguments).
    parameters = list(inspect.signature(cls).parameters.values())
    context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_ONLY, annotation=JobContext)
    run_job_proc.__signature__ = inspect.Signature([context, *parameters])  # type: ignore[attr-defined]
    run_job_proc.__name__ = run_job_proc.__qualname__ = cls.task_name()
    run_job_proc.__module__ = cls.__module__
    run_job_proc.__doc__ = cls.__doc__
    options = TaskOptions(retry=_retry(cls.retries), timeout_ms=max(0, round(cls.timeout * 1000)))
    return Task(run_job_proc, cls.task_name(), options)


def _retry(retries: int) -> RetryPolicy:
    if retries < 0:
        raise JobQueueError(f"retries={retries} must be 0 or more")
    return RetryPolicy(max_attempts=retries + 1)


@contextlib.contextmanager
def _in_running_dir(context: JobContext) -> Iterator[None]:
    # cgkit runs run() in the job's .running directory. The working directory belongs to the
    # whole process: changed only when the attempt has a process of its own.
    if not context.own_process:
        yield
        return
    home = os.getcwd()
    os.chdir(context.running_dir)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.chdir(home)


# --------------------------------------------------------------------------- building jobs


class Job:
    """A job being created (cgkit's ``Job``): a procedure, its parameters, its sub-jobs.

    Made by :meth:`JobQueue.createJobRoot` and :meth:`createJob`; nothing is sent before
    :meth:`JobRoot.activate`.

    Attributes:
        jobType: the job type (the task name).
        params: the job's parameters (its arguments).
        label: the procedure's label (the job's name).
        key: the job's id in its submission.
    """

    def __init__(self, root: JobRoot, proc: type[JobProc], params: Mapping[str, Any]) -> None:
        self._root = root
        self.jobType = proc.task_name()
        self.params = dict(params)
        self.proc = proc
        self.key = root._next_key(self.jobType)
        self.label = root._queue._created(proc, self.params)
        self._dependencies: list[Job] = []

    def __repr__(self) -> str:
        return f"Job({self.key!r}, {self.jobType!r})"

    @property
    def dependencies(self) -> tuple[Job, ...]:
        """The jobs this one waits for, in the order they were added."""
        return tuple(self._dependencies)

    def createJob(self, jobType: str | type[JobProc], **params: Any) -> Job:
        """Creates a sub-job: this job runs only after it completed.

        Args:
            jobType: the job type (or the ``JobProc`` class).
            **params: its parameters.

        Returns:
            The new :class:`Job`.

        Raises:
            JobQueueError: the job type is unknown, the parameters do not fit it, or the tree
                is activated or full.
        """
        job = Job(self._root, self._root._queue._proc(jobType), params)
        self.addDependency(job)
        return job

    def addDependency(self, job: Job) -> None:
        """Makes this job wait for ``job`` (of the same tree) to complete.

        Raises:
            JobQueueError: ``job`` is this job, the root, or of another tree.
        """
        if job is self:
            raise JobQueueError("a job cannot depend on itself")
        if job._root is not self._root:
            raise JobQueueError("a job cannot depend on a job of another job tree")
        if isinstance(job, JobRoot):
            raise JobQueueError("a job cannot depend on the job root")
        self._root._check_open()
        if job not in self._dependencies:
            self._dependencies.append(job)


class JobRoot(Job):
    """The root of a job tree (cgkit's ``JobRoot``): :meth:`activate` submits the tree."""

    def __init__(self, queue: JobQueue, proc: type[JobProc], params: Mapping[str, Any]) -> None:
        self._queue = queue
        self._count = 0
        self._handle: JobHandle | None = None
        super().__init__(self, proc, params)

    def _next_key(self, job_type: str) -> str:
        self._check_open()
        if self._count >= MAX_TREE_JOBS:
            raise JobQueueError(
                f"a job tree holds at most {MAX_TREE_JOBS} jobs (MAX_TREE_JOBS); "
                "split the work into several trees"
            )
        key = job_key(f"{job_type.replace(':', '.').rsplit('.', 1)[-1]}.{self._count}")
        self._count += 1
        return key

    def _check_open(self) -> None:
        if self._handle is not None:
            raise JobQueueError(
                "the job tree is activated: it cannot change anymore; create a new job root"
            )

    def tree(self) -> _TreeJob:
        """The tree as the joblog :class:`engine.api.Job` that :meth:`activate` submits.

        Raises:
            JobQueueError: the tree has a cycle.
        """
        return _tree(self, self._queue.location or "default")

    def activate(self, *, timeout: float = 30.0) -> JobHandle:
        """Submits the tree as one submission and waits for the scheduler to accept it.

        Each job goes under the first job that depends on it (its parent); later jobs that
        depend on it wait for it as a dependency.

        Args:
            timeout: longest wait for the scheduler's decision, in seconds.

        Returns:
            The handle of the root job (cgkit returns nothing).

        Raises:
            JobQueueError: the tree has a cycle, or is activated already.
            SubmissionRejected / DecisionTimeout: the scheduler rejected it, or did not
                decide in time.
        """
        self._check_open()
        tree = self.tree()
        submission = self._queue.client.submit(tree, wait=True, decision_timeout=timeout)
        view = JobView(
            submission_id=submission.id,
            job_id=self.key,
            name=self.label or "",
            task=self.jobType,
            queue=self._queue.location or "default",
        )
        self._handle = JobHandle(self._queue, view)
        self._queue.logger.info(
            "job tree %s submitted as %s (%d jobs)", self.key, submission.id, self._count
        )
        return self._handle


def _tree(root: JobRoot, queue: str) -> _TreeJob:
    """The tree as joblog jobs: a job is the child of the first job that depends on it."""
    _check_acyclic(root)
    placed: set[int] = {id(root)}

    def build(job: Job) -> _TreeJob:
        children = []
        after = []
        for dependency in job.dependencies:
            if id(dependency) in placed:
                after.append(dependency.key)
            else:
                placed.add(id(dependency))
                children.append(build(dependency))
        return _TreeJob(
            key=job.key,
            task=proc_task(job.proc),  # its retries and timeout are the job's defaults
            kwargs=job.params,
            name=job.label or "",
            depends_on=after,
            children=children,
            queue=queue,
            labels={QUEUE_LABEL: queue},
        )

    return build(root)


def _check_acyclic(root: JobRoot) -> None:
    """Raises :class:`JobQueueError` naming a job on a cycle of dependencies."""
    done: set[int] = set()
    on_path: set[int] = set()
    # Iterative depth-first search: a deep tree must not hit Python's recursion limit.
    stack: list[tuple[Job, int]] = [(root, 0)]
    on_path.add(id(root))
    while stack:
        job, index = stack.pop()
        if index < len(job.dependencies):
            stack.append((job, index + 1))
            dependency = job.dependencies[index]
            if id(dependency) in on_path:
                raise JobQueueError(
                    f"the job tree cannot be processed: it has a cycle through {dependency.key!r}"
                )
            if id(dependency) not in done:
                on_path.add(id(dependency))
                stack.append((dependency, 0))
        else:
            on_path.discard(id(job))
            done.add(id(job))


# --------------------------------------------------------------------------- queued jobs


class JobHandle:
    """A queued job (cgkit's ``JobHandle``), as last read from the projection or the events.

    The properties answer from the last read; :meth:`refresh` reads again.

    Attributes:
        view: the job as last read.
    """

    def __init__(self, queue: JobQueue, view: JobView) -> None:
        self._queue = queue
        self.view = view

    def __repr__(self) -> str:
        return f"JobHandle({self.location!r}, {self.view.status})"

    def __str__(self) -> str:
        state = "finished" if self.isFinished() else "running" if self.isRunning() else "waiting"
        return f"{self.location} ({state})"

    def refresh(self) -> JobHandle:
        """Reads the job again: from the projection, else from the submission's events."""
        client = self._queue.client
        view = self.view
        try:
            self.view = client.get_job(view.submission_id, view.job_id)
        except JoblogError:
            # Not projected yet, or no projection here: the submission's events know.
            events = client.view(view.submission_id)
            if view.job_id in events.jobs:
                self.view = events.jobs[view.job_id]
        return self

    @property
    def location(self) -> str:
        """``submission_id/job_id``: where joblog keeps the job."""
        return self.view.ref

    @property
    def submission_id(self) -> str:
        return self.view.submission_id

    @property
    def job_id(self) -> str:
        return self.view.job_id

    @property
    def label(self) -> str:
        """The procedure's label, else ``Job <id>``."""
        return self.view.name or f"Job {self.view.job_id}"

    @property
    def jobType(self) -> str | None:
        return self.view.task

    @property
    def status(self) -> JobStatus:
        """joblog's status of the job."""
        return self.view.status

    @property
    def submitTime(self) -> float | None:
        """When the job was submitted (seconds since the epoch)."""
        return _seconds(self.view.submitted_at)

    @property
    def startTime(self) -> float | None:
        """When its current attempt started running (seconds since the epoch)."""
        return _seconds(self.view.run_at)

    @property
    def endTime(self) -> float | None:
        """When it finished (seconds since the epoch)."""
        return _seconds(self.view.finished_at)

    @property
    def progress(self) -> int:
        """The progress percentage set by the procedure (0..100)."""
        value, total = self.view.progress, self.view.total
        if value is None:
            return 100 if self.view.status is JobStatus.COMPLETED else 0
        percent = value if not total else value * 100 / total
        return max(0, min(int(percent), 100))

    @property
    def statusLine(self) -> str:
        """The status line set by the procedure (empty when none)."""
        return self.view.status_line or ""

    @property
    def error(self) -> str:
        """Why the job failed (``type: note``), empty when it did not."""
        view = self.view
        if not view.error_type:
            return ""
        return f"{view.error_type}: {view.error_note}" if view.error_note else view.error_type

    def isWaiting(self) -> bool:
        """Submitted, waiting for its sub-jobs or for a worker."""
        return self.view.status in _WAITING

    def isRunning(self) -> bool:
        """Taken by a worker (ASSIGNED or RUNNING)."""
        return self.view.status in _RUNNING

    def isFinished(self) -> bool:
        """In a terminal status (also FAILED, CANCELED and ABANDONED)."""
        return self.view.status in TERMINAL

    def hasError(self, recursive: bool = False) -> bool:
        """Whether the job ended in another status than COMPLETED or SKIPPED.

        Args:
            recursive: also look at every job below it.
        """
        if self.isFinished() and self.view.status not in (JobStatus.COMPLETED, JobStatus.SKIPPED):
            return True
        return recursive and any(job.hasError(recursive=True) for job in self.listSubJobs())

    def listSubJobs(self) -> list[JobHandle]:
        """Its sub-jobs, in the order they were created (from the projection)."""
        jobs = self._queue.client.get_jobs(submission_id=self.view.submission_id)
        mine = [job for job in jobs if job.parent == self.view.job_id]
        return [JobHandle(self._queue, job) for job in sorted(mine, key=_creation_order)]


def _seconds(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _creation_order(view: JobView) -> tuple[int, str]:
    _, _, number = view.job_id.rpartition(".")
    return (int(number) if number.isdigit() else 0, view.job_id)


# --------------------------------------------------------------------------- the queue


class JobQueue:
    """A job queue (cgkit's ``JobQueue``): job trees on one joblog worker queue.

    The object keeps no queue state: any number of them, in any number of processes, may
    submit to and run jobs of the same queue; the state is the event log.

    Args:
        location: the worker queue the jobs go to (``dispatch.<location>``); ``None`` is an
            empty queue that cannot take jobs.
        logger: receives log messages (default: the ``joblog.jobqueue`` logger).
        procs: the job procedures this queue knows: ``JobProc`` subclasses, modules (every
            subclass at their top level) or module names.
        settings: cluster and topic settings (default ``Settings.from_env()``).
        client: the joblog client to use (default: one made from ``settings``).
        db_path: the projection file :meth:`listJobs` reads (see :class:`Joblog`).

    Raises:
        JobQueueError: a module of ``procs`` cannot be imported or two procedures share a
            job type.
    """

    def __init__(
        self,
        location: str | None = "default",
        logger: logging.Logger | None = None,
        *,
        procs: Iterable[type[JobProc] | ModuleType | str] = (),
        settings: Settings | None = None,
        client: Joblog | None = None,
        db_path: str | Path | None = None,
    ) -> None:
        if location is not None and (not isinstance(location, str) or not location):
            raise JobQueueError(f"the queue location must be a queue name or None: {location!r}")
        self._location = location
        self.logger = logger or logging.getLogger("joblog.jobqueue")
        self._client = client
        self._settings = settings
        self._db_path = db_path
        self._procs: dict[str, type[JobProc]] = {}
        for item in procs:
            self.addProcs(item)

    @property
    def location(self) -> str | None:
        """The queue's name (``None`` for an empty queue)."""
        return self._location

    @property
    def client(self) -> Joblog:
        """The joblog client, made on first use."""
        if self._client is None:
            self._client = Joblog(self._settings, db_path=self._db_path)
        return self._client

    def close(self) -> None:
        """Lets go of the client's producer (the queue itself holds nothing)."""
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ procedures

    def addProcs(self, item: type[JobProc] | ModuleType | str) -> list[type[JobProc]]:
        """Makes procedures known: a ``JobProc`` subclass, or every one at the top level of a
        module (given or named, as a worker's ``--tasks``).

        Returns:
            The procedures added.

        Raises:
            JobQueueError: the module cannot be imported, or a job type is taken by another
                class.
        """
        if isinstance(item, str):
            try:
                item = importlib.import_module(item)
            except ImportError as exc:
                raise JobQueueError(f"cannot import procedure module {item!r}: {exc}") from exc
        if isinstance(item, ModuleType):
            found = [
                value
                for value in vars(item).values()
                if inspect.isclass(value) and issubclass(value, JobProc) and value is not JobProc
            ]
        else:
            found = [item]
        for proc in found:
            if not (inspect.isclass(proc) and issubclass(proc, JobProc)):
                raise JobQueueError(f"{proc!r} is not a subclass of engine.jobqueue.JobProc")
            name = proc.task_name()
            known = self._procs.get(name)
            if known is not None and known is not proc:
                raise JobQueueError(
                    f"job type {name!r} is both {known.__module__}.{known.__qualname__} and "
                    f"{proc.__module__}.{proc.__qualname__}; set jobType on one of them"
                )
            self._procs[name] = proc
        return found

    def procs(self) -> dict[str, type[JobProc]]:
        """The known procedures by job type."""
        return dict(self._procs)

    def registry(self) -> TaskRegistry:
        """The tasks of the known procedures, for a worker of this queue."""
        return TaskRegistry(proc_task(proc) for proc in self._procs.values())

    def _proc(self, job_type: str | type[JobProc]) -> type[JobProc]:
        if inspect.isclass(job_type):
            self.addProcs(job_type)
            return job_type
        if not isinstance(job_type, str) or not job_type:
            raise JobQueueError(f"a job type is the name of a JobProc class, not {job_type!r}")
        known = self._procs.get(job_type)
        if known is not None:
            return known
        module, _, name = job_type.replace(":", ".").rpartition(".")
        if module:
            try:
                value = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError) as exc:
                raise JobQueueError(f"cannot import job type {job_type!r}: {exc}") from exc
            if inspect.isclass(value) and issubclass(value, JobProc) and value is not JobProc:
                return value
            raise JobQueueError(f"{job_type!r} is not a JobProc subclass")
        names = ", ".join(sorted(self._procs)) or "none"
        raise JobQueueError(
            f"unknown job type {job_type!r} (this queue knows: {names}); give its class or "
            "module in JobQueue(procs=...) or name it by import path (package.module.Class)"
        )

    def _created(self, proc: type[JobProc], params: dict[str, Any]) -> str | None:
        """Checks the parameters by making the procedure, calls ``postCreate`` once, and
        returns its label."""
        try:
            instance = proc(**params)
        except Exception as exc:
            raise JobQueueError(
                f"parameters {sorted(params)} do not fit job type {proc.task_name()!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        instance.postCreate(None)
        return instance.label

    # ------------------------------------------------------------------ the queue calls

    def createJobRoot(self, jobType: str | type[JobProc] | None = None, **params: Any) -> JobRoot:
        """Creates a top-level job; sub-jobs are added with :meth:`Job.createJob`, and
        :meth:`JobRoot.activate` submits the tree.

        Args:
            jobType: the job type (or its ``JobProc`` class).
            **params: its parameters.

        Raises:
            JobQueueError: the queue has no location, the job type is unknown, or the
                parameters do not fit it.
        """
        if self._location is None:
            raise JobQueueError("this job queue has no location (None): it cannot take jobs")
        if jobType is None:
            raise JobQueueError("createJobRoot needs a job type (the name of a JobProc class)")
        return JobRoot(self, self._proc(jobType), params)

    #: cgkit's alias of :meth:`createJobRoot` (for a job without sub-jobs).
    createJob = createJobRoot

    def listJobs(self) -> list[JobHandle]:
        """The top-level jobs of this queue, in the order they were submitted (from the
        projection; deleted jobs are left out).

        Raises:
            JoblogError: no projector answers and the projection file cannot be opened.
        """
        if self._location is None:
            return []
        rows = self.client.query(
            "SELECT submission_id, job_id FROM jobs WHERE parent IS NULL AND NOT deleted "
            "AND labels[?] = ? ORDER BY submitted_at, submission_id",
            [QUEUE_LABEL, self._location],
        )
        by_submission: dict[str, list[JobView]] = {}
        handles = []
        for row in rows:
            submission_id = str(row["submission_id"])
            if submission_id not in by_submission:
                by_submission[submission_id] = self.client.get_jobs(submission_id=submission_id)
            for view in by_submission[submission_id]:
                if view.job_id == row["job_id"]:
                    handles.append(JobHandle(self, view))
        return handles

    def deleteJobs(
        self, jobs: JobHandle | Iterable[JobHandle] | None, *, timeout: float = 30.0
    ) -> None:
        """Deletes jobs: a top-level job with its whole tree, a sub-job with its sub-jobs.

        Unfinished jobs are canceled first (a running one is killed); a job that is gone
        already is not an error. Deletion is an event: the history stays.

        Args:
            jobs: a handle, handles, or ``None`` (nothing to do).
            timeout: longest wait for each decision, in seconds.

        Raises:
            CommandRejectedError / DecisionTimeout: a delete was refused for another reason,
                or not decided in time (the jobs after it are not deleted).
        """
        if jobs is None:
            return
        for handle in [jobs] if isinstance(jobs, JobHandle) else list(jobs):
            view = handle.view
            target = None if view.parent is None else view.job_id
            self.logger.info("deleting job %s", handle.location)
            try:
                self.client.delete(
                    view.submission_id, target, force=True, wait=True, timeout=timeout
                )
            except CommandRejectedError as exc:
                if exc.code not in _GONE:
                    raise

    def runNextAvailableJob(
        self,
        timeout: float = 30.0,
        *,
        registry: TaskRegistry | None = None,
        options: WorkerOptions | None = None,
        stop: threading.Event | None = None,
    ) -> bool:
        """Runs one job of this queue in a worker of this process, then returns.

        The worker joins the queue's worker group, claims one dispatched job (joblog
        dispatches a job only once its sub-jobs completed), runs it to its end and leaves.

        Args:
            timeout: how long to wait for a job once the worker has its share of the queue,
                in seconds.
            registry: the tasks it can run (default: this queue's procedures).
            options: the worker's options (``max_jobs`` and ``idle_exit_s`` are set here).
            stop: set it to stop the worker early (as SIGTERM does a worker).

        Returns:
            ``True`` if a job was run (whatever its outcome), ``False`` if none was waiting.

        Raises:
            JobQueueError: the queue has no location or no procedures.
            KafkaException: the cluster is unreachable or a consumer hit a fatal error.
        """
        from dataclasses import replace

        from engine.worker.worker import Worker, WorkerOptions

        if self._location is None:
            raise JobQueueError("this job queue has no location (None): it has no jobs")
        tasks = registry if registry is not None else self.registry()
        if not len(tasks):
            raise JobQueueError(
                "no procedures to run: give them in JobQueue(procs=...) or as registry="
            )
        if timeout <= 0:
            raise JobQueueError(f"timeout={timeout} must be above 0 seconds")
        worker = Worker(
            self.client.settings,
            self._location,
            1,
            tasks,
            options=replace(options or WorkerOptions(), max_jobs=1, idle_exit_s=timeout),
        )
        worker.run(stop or threading.Event())
        ran = worker.metrics["claimed"] > 0
        self.logger.info("runNextAvailableJob: %s", "ran a job" if ran else "no job waiting")
        return ran


def createJobQueue(location: str, *, settings: Settings | None = None, **kwargs: Any) -> JobQueue:
    """Creates a job queue: joblog's topics and the queue's dispatch topic, where missing.

    Args:
        location: the queue's name.
        settings: cluster and topic settings (default ``Settings.from_env()``).
        **kwargs: passed to :class:`JobQueue`.

    Raises:
        JobQueueError: ``location`` is not a queue name.
        KafkaUnreachable / ConfigurationError: the cluster did not answer, or its topics
            are wrong.
    """
    from engine.admin import ensure_topics

    if not isinstance(location, str) or not location:
        raise JobQueueError(f"the queue location must be a queue name: {location!r}")
    settings = settings or Settings.from_env()
    ensure_topics(settings, queues=[location])
    return JobQueue(location, settings=settings, **kwargs)


__all__ = [
    "JOB_PROC_ERROR",
    "QUEUE_LABEL",
    "Job",
    "JobHandle",
    "JobProc",
    "JobQueue",
    "JobQueueError",
    "JobRoot",
    "createJobQueue",
    "proc_task",
]
