"""The Python client of joblog: submit, watch, cancel, retry, delete and query jobs.

::

    from engine import Job, Joblog

    jl = Joblog()                                   # Settings.from_env()
    submission = jl.submit(task="double", args=[21])
    view = submission.wait_until_done(timeout=60)
    print(view.outcome, view.jobs["double"].result)

    graph = jl.submit(
        Job("extract", task="extract", args=["s3://bucket/in"], retries=2),
        Job("report", task="report", depends_on=["extract"], timeout=300),
    )
    jl.cancel(graph, "report")                      # the job, and what depends on it
    jl.get_jobs(status="COMPLETED")                 # from the DuckDB projections

Writes go to Kafka as commands (:class:`~engine.client.CommandProducer`); watching reads the
``events`` topic (:mod:`engine.watch`); ``get_jobs``/``get_job``/``get_latest_job`` read the
projections through :class:`projections.reader.ProjectionReader`, which asks a running
projector or opens the file read-only.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.clock import now_ms
from engine.config import Settings
from engine.errors import EngineBusy, JoblogError
from engine.errors import JobNotFound as JobNotFound  # re-exported, as it always was
from engine.lifecycle.records import (
    CancelMode,
    Command,
    Event,
    JobSpec,
    JobStatus,
    Notification,
    RetryPolicy,
    ScheduleAction,
    ScheduleFired,
    SubmissionStatus,
    SubmitJobs,
)
from engine.monitoring import (
    Backoff,
    NotificationLike,
    poll_status,
    to_notification,
    to_notifications,
)
from engine.watch import (
    LIVE,
    JobCallback,
    JobEventWatchFuture,
    JobView,
    Live,
    ProgressCallback,
    StateCallback,
    SubmissionCallback,
    SubmissionView,
    Watcher,
    event_wait,
    event_watch,
    event_watch_async,
    wait_until_done,
)

if TYPE_CHECKING:
    from engine.client import CommandHandle, CommandProducer
    from engine.schedules import Duration
    from engine.worker.tasks import Task
    from projections.jobs import JobQueries

log = logging.getLogger("joblog.client")

DEFAULT_DB = "joblog.duckdb"
#: Default wait for the scheduler's decision on a command (``engine.client`` has the same).
DECISION_TIMEOUT_S = 15.0
#: Default time a throttled submission is submitted again before the client gives up.
THROTTLE_WAIT_S = 300.0
#: Longest wait between two tries of a throttled submission.
MAX_THROTTLE_DELAY_S = 60.0
#: Told ``(busy, delay)`` before a throttled submission is submitted again.
ThrottledCallback = Callable[["EngineBusy", float], None]
_ID_CHARS = re.compile(r"[^A-Za-z0-9._:@+=-]+")


def throttle_delay(retry_after: float, tries: int, rng: random.Random | None = None) -> float:
    """The wait before the ``tries``-th new try of a throttled submission: the engine's
    ``retry_after``, grown by half for each try in a row, at most
    :data:`MAX_THROTTLE_DELAY_S`, with up to 50 % jitter so that throttled clients do not
    come back together."""
    base = min(MAX_THROTTLE_DELAY_S, retry_after * 1.5 ** max(0, tries - 1))
    return base * (1 + 0.5 * (rng or random).random())


class InvalidJob(JoblogError, ValueError):
    """A job description is incomplete or contradicts itself; the message says how."""


def default_db_path() -> Path:
    """The projection file: ``$JOBLOG_PROJECTION_DB`` or ``joblog.duckdb``."""
    return Path(os.environ.get("JOBLOG_PROJECTION_DB", DEFAULT_DB))


# --------------------------------------------------------------------------- describing jobs


@dataclass(frozen=True)
class Job:
    """A job to submit, in friendly terms; :meth:`specs` turns it into :class:`JobSpec`\\ s.

    Exactly one of ``task`` and ``command`` is given. A job with ``children`` is the parent of
    a tree (cgkit's job hierarchy): it runs only once all of its sub-jobs completed.

    Attributes:
        key: the job's id, unique within its submission (letters, digits, ``._:@+=-``).
        task: a registered task name, or the :class:`~engine.worker.Task` itself (its queue,
            retries and timeout become the defaults).
        args / kwargs: the task's arguments (JSON-encodable).
        command: argv of a shell command, or one string split like a shell would.
        name: a human name (defaults to the task or the command's first word).
        depends_on: keys of jobs of the same submission that must complete first.
        children: sub-jobs.
        queue: the worker queue (default: the task's, else ``default``).
        retries: retries after a failed attempt (``None``: the task's, else 0).
        retry_backoff: seconds before the first retry (doubled for each further one).
        retry_on: exception type names (or failure reasons such as ``timeout``) that are
            retried; empty retries every failure.
        timeout: run timeout of one attempt, in seconds.
        queue_timeout: longest wait for a worker, in seconds.
        idempotency_key: runs at most once per key across the cluster: a job whose key
            another job completed is SKIPPED; one submitted while that job runs waits for
            its outcome (docs/lifecycle.md, *Idempotency keys*).
        force: run even where the job would be skipped (Taipy's ``force``): a job whose
            idempotency key another job completed runs all the same.
        priority: higher runs first: among the runnable jobs of a submission, and among
            the jobs waiting for a slot of a concurrency limit, cluster-wide.
        labels: free-form tags.
        env / cwd: environment additions and working directory of a command.
        not_before: do not start before this time (an aware ``datetime``, or seconds since
            the epoch).
        concurrency_key: jobs sharing a key (``"customer-42"``) share its limits,
            cluster-wide: ``max_running`` at once, ``rate_limit`` starts per period.
        max_running: the key's limit of jobs holding a slot (dispatched or running) at once.
        rate_limit: the key's limit of starts, as ``"N/period"``: ``"10/s"``, ``"100/m"``,
            ``"5/30s"``, ``"1000/h"``, ``"20/d"``.
    """

    key: str
    task: str | Task | None = None
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    command: Sequence[str] | str | None = None
    name: str = ""
    depends_on: Sequence[str] = ()
    children: Sequence[Job] = ()
    queue: str | None = None
    retries: int | None = None
    retry_backoff: float | None = None
    retry_on: Sequence[str] = ()
    timeout: float | None = None
    queue_timeout: float | None = None
    idempotency_key: str | None = None
    priority: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    force: bool = False
    not_before: datetime | float | None = None
    concurrency_key: str | None = None
    max_running: int = 0
    rate_limit: str | None = None

    def specs(self, parent: str | None = None) -> list[JobSpec]:
        """This job and its sub-jobs (depth first, children before their parent) as specs.

        Raises:
            InvalidJob: neither or both of task and command, or an argument is not JSON.
        """
        out: list[JobSpec] = []
        for child in self.children:
            out.extend(child.specs(parent=self.key))
        out.append(self._spec(parent))
        return out

    def _spec(self, parent: str | None) -> JobSpec:
        if (self.task is None) == (self.command is None):
            raise InvalidJob(f"job {self.key!r} needs exactly one of task= and command=")
        task_name: str | None = None
        defaults = None
        if self.task is not None:
            if isinstance(self.task, str):
                task_name = self.task
            else:
                task_name = self.task.name
                defaults = self.task.options
        command: tuple[str, ...] | None = None
        if self.command is not None:
            command = (
                tuple(shlex.split(self.command))
                if isinstance(self.command, str)
                else tuple(str(part) for part in self.command)
            )
            if not command:
                raise InvalidJob(f"job {self.key!r} has an empty command")
        try:
            args = json.dumps(
                {"args": list(self.args), "kwargs": dict(self.kwargs)},
                separators=(",", ":"),
                allow_nan=False,
            )
        except (TypeError, ValueError) as exc:
            raise InvalidJob(
                f"arguments of job {self.key!r} are not JSON-encodable: {exc}"
            ) from exc
        base_retry = defaults.retry if defaults is not None else RetryPolicy()
        retry = base_retry
        if self.retries is not None or self.retry_backoff is not None or self.retry_on:
            retry = RetryPolicy(
                max_attempts=(
                    base_retry.max_attempts if self.retries is None else self.retries + 1
                ),
                backoff_ms=(
                    base_retry.backoff_ms
                    if self.retry_backoff is None
                    else round(self.retry_backoff * 1000)
                ),
                backoff_multiplier=base_retry.backoff_multiplier,
                max_backoff_ms=base_retry.max_backoff_ms,
                jitter=base_retry.jitter,
                retry_on=tuple(self.retry_on) or base_retry.retry_on,
            )
        labels = dict(defaults.labels) if defaults is not None else {}
        labels.update(self.labels)
        rate, period = parse_rate(self.rate_limit) if self.rate_limit else (0, 0)
        return JobSpec(
            job_id=self.key,
            name=self.name,
            task=task_name,
            command=command,
            args="{}" if command is not None else args,
            env=tuple(sorted((str(k), str(v)) for k, v in self.env.items())),
            cwd=self.cwd,
            queue=self.queue or (defaults.queue if defaults is not None else "default"),
            depends_on=tuple(self.depends_on),
            parent=parent,
            retry=retry,
            timeout_ms=_ms(self.timeout, defaults.timeout_ms if defaults is not None else 0),
            queue_timeout_ms=_ms(
                self.queue_timeout, defaults.queue_timeout_ms if defaults is not None else 0
            ),
            idempotency_key=self.idempotency_key,
            priority=(
                self.priority
                if self.priority is not None
                else (defaults.priority if defaults is not None else 0)
            ),
            labels=tuple(sorted(labels.items())),
            force=self.force,
            not_before=epoch_ms(self.not_before),
            concurrency_key=self.concurrency_key,
            max_running=self.max_running,
            rate_limit=rate,
            rate_period_ms=period,
        )


_RATE_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_rate(text: str) -> tuple[int, int]:
    """``"N/period"`` (``10/s``, ``100/m``, ``5/30s``, ``3/500ms``) as (N, period in ms).

    Raises:
        InvalidJob: not of that form.
    """
    match = _RATE.match(text)
    if match is None:
        raise InvalidJob(f"rate limit {text!r} is not N/period, e.g. 10/s, 100/m, 5/30s, 1000/h")
    count, size, unit = match.groups()
    period = round(float(size or 1) * _RATE_UNITS[unit])
    if period <= 0:
        raise InvalidJob(f"rate limit {text!r} has an empty period")
    return int(count), period


def epoch_ms(when: datetime | float | str | None) -> int:
    """A time as ms since the epoch (0 for none): an aware datetime, an ISO 8601 text
    (UTC when it names no zone) or seconds since the epoch.

    Raises:
        InvalidJob: a naive or unreadable time.
    """
    if when is None:
        return 0
    if isinstance(when, str):
        try:
            parsed = datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidJob(f"not_before {when!r} is not an ISO 8601 time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        when = parsed
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise InvalidJob("not_before must be an aware datetime (give it a time zone)")
        return round(when.timestamp() * 1000)
    return round(float(when) * 1000)


def _ms(seconds: float | None, default: int) -> int:
    if seconds is None:
        return default
    if seconds < 0:
        raise InvalidJob(f"a timeout of {seconds} s is negative")
    return round(seconds * 1000)


def job_key(text: str) -> str:
    """A valid job id made from ``text`` (illegal characters become ``-``)."""
    key = _ID_CHARS.sub("-", text).strip("-._:@+=") or "job"
    return key[:200]


_JOB_FIELDS = {
    "not_before",
    "concurrency_key",
    "max_running",
    "rate_limit",
    "key",
    "id",
    "task",
    "args",
    "kwargs",
    "command",
    "name",
    "depends_on",
    "after",
    "children",
    "queue",
    "retries",
    "retry_backoff",
    "retry_on",
    "timeout",
    "queue_timeout",
    "idempotency_key",
    "priority",
    "labels",
    "env",
    "cwd",
    "force",
}


def job_from_mapping(data: Mapping[str, Any], *, where: str = "job") -> Job:
    """A :class:`Job` from a YAML/JSON mapping (``id`` or ``key``; ``after`` = ``depends_on``).

    Raises:
        InvalidJob: a field is unknown or has the wrong type.
    """
    unknown = set(data) - _JOB_FIELDS
    if unknown:
        raise InvalidJob(f"{where}: unknown fields {sorted(unknown)}")
    key = data.get("key", data.get("id"))
    what = data.get("task") or data.get("command")
    if key is None:
        if what is None:
            raise InvalidJob(f"{where}: needs an id (or a task or command to name it after)")
        key = job_key(str(what if isinstance(what, str) else what[0]))
    children = data.get("children") or []
    if not isinstance(children, list):
        raise InvalidJob(f"{where}: children must be a list")
    args = data.get("args") or []
    if not isinstance(args, list):
        args = [args]
    kwargs = data.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise InvalidJob(f"{where}: kwargs must be a mapping")
    depends = data.get("depends_on", data.get("after")) or []
    if isinstance(depends, str):
        depends = [depends]
    return Job(
        key=str(key),
        task=None if data.get("task") is None else str(data["task"]),
        args=list(args),
        kwargs=dict(kwargs),
        command=data.get("command"),
        name=str(data.get("name") or ""),
        depends_on=[str(item) for item in depends],
        children=[
            job_from_mapping(child, where=f"{where}.children[{index}]")
            for index, child in enumerate(children)
        ],
        queue=data.get("queue"),
        retries=data.get("retries"),
        retry_backoff=data.get("retry_backoff"),
        retry_on=list(data.get("retry_on") or []),
        timeout=data.get("timeout"),
        queue_timeout=data.get("queue_timeout"),
        idempotency_key=data.get("idempotency_key"),
        priority=data.get("priority"),
        labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
        env={str(k): str(v) for k, v in (data.get("env") or {}).items()},
        cwd=data.get("cwd"),
        force=bool(data.get("force", False)),
        not_before=epoch_ms(data.get("not_before")) / 1000 if data.get("not_before") else None,
        concurrency_key=data.get("concurrency_key"),
        max_running=int(data.get("max_running") or 0),
        rate_limit=data.get("rate_limit"),
    )


def jobs_from_data(data: Any) -> tuple[list[Job], dict[str, str]]:
    """The jobs and submission labels of a submission file's content.

    Accepts ``{"jobs": [...], "labels": {...}}``, a bare list of jobs, or one job mapping.

    Raises:
        InvalidJob: the content is not of one of those shapes.
    """
    labels: dict[str, str] = {}
    if isinstance(data, Mapping) and "jobs" in data:
        extra = set(data) - {"jobs", "labels", "notifications"}
        if extra:
            raise InvalidJob(
                f"unknown top-level fields {sorted(extra)}; expected jobs, labels, notifications"
            )
        labels = {str(k): str(v) for k, v in (data.get("labels") or {}).items()}
        data = data["jobs"]
    if isinstance(data, Mapping):
        data = [data]
    if not isinstance(data, list) or not data:
        raise InvalidJob("a submission file holds a non-empty list of jobs")
    jobs = []
    for index, item in enumerate(data):
        if not isinstance(item, Mapping):
            raise InvalidJob(f"jobs[{index}] must be a mapping")
        jobs.append(job_from_mapping(item, where=f"jobs[{index}]"))
    return jobs, labels


def load_jobs(path: str | Path) -> tuple[list[Job], dict[str, str]]:
    """Reads a YAML or JSON submission file (see :func:`jobs_from_data`).

    Raises:
        InvalidJob: the file cannot be read or parsed, or describes no valid jobs.
    """
    import yaml

    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise InvalidJob(f"cannot read submission file {file}: {exc}") from exc
    return jobs_from_data(data)


JobLike = Job | JobSpec | Mapping[str, Any]


def to_specs(jobs: Iterable[JobLike]) -> tuple[JobSpec, ...]:
    """Flattens jobs, specs and mappings (with their sub-jobs) into the specs of a submission.

    Raises:
        InvalidJob: a job is malformed or two jobs share a key.
    """
    specs: list[JobSpec] = []
    for item in jobs:
        if isinstance(item, JobSpec):
            specs.append(item)
        elif isinstance(item, Job):
            specs.extend(item.specs())
        elif isinstance(item, Mapping):
            specs.extend(job_from_mapping(item).specs())
        else:
            raise InvalidJob(f"cannot submit {item!r}: give a Job, a JobSpec or a mapping")
    seen: set[str] = set()
    for spec in specs:
        if spec.job_id in seen:
            raise InvalidJob(f"two jobs have the key {spec.job_id!r}")
        seen.add(spec.job_id)
    if not specs:
        raise InvalidJob("nothing to submit: give at least one job")
    return tuple(specs)


# --------------------------------------------------------------------------- the handle


class Submission:
    """A submitted set of jobs (Taipy's ``Submission``): its id, its jobs, and what to do next.

    The scheduler decides a submission once it reads the submit command: it accepts it or
    rejects it (a cycle, an unknown dependency, a duplicate id, ...). :meth:`accepted` and
    :meth:`result` wait for that decision; the watching methods read the submission's events
    from where its decision will be, so they never scan the log from offset 0.

    Attributes:
        id: the submission id (the Kafka key of its commands and events).
        specs: the specs of its jobs, in submission order (:attr:`jobs` are the jobs
            themselves, with their status).
        command_id: the id of the submit command.
        command: the handle on the submit command's decision (``None`` for a handle made
            from an existing id by :meth:`Joblog.submission`).
    """

    def __init__(
        self, client: Joblog, command: SubmitJobs, handle: CommandHandle | None = None
    ) -> None:
        self._client = client
        self.id = command.submission_id
        self.specs: tuple[JobSpec, ...] = command.jobs
        self.command_id = command.command_id
        self.command = handle
        # A handle of a submit this client sent waits for its first event; one made from an
        # existing id knows it exists.
        self._appear: float | None = None
        self._start: int | None = None if handle is None else handle.start_offset

    def __repr__(self) -> str:
        return f"Submission({self.id!r}, jobs={list(self.job_ids)!r})"

    @property
    def job_ids(self) -> tuple[str, ...]:
        return tuple(spec.job_id for spec in self.specs)

    @property
    def jobs(self) -> list[JobView]:
        """Its jobs as they are now, with their status (Taipy's ``submission.jobs``), in
        submission order, folded from the submission's events.

        Reading them waits for the scheduler's decision on a submit this client sent (up to
        15 s) and reads the submission's partition of ``events``.

        Raises:
            SubmissionRejected: the scheduler rejected the submission (it has no jobs).
            DecisionTimeout: no decision yet.
        """
        if self.command is not None:
            self.result()
        view = self.view()
        return [view.jobs[job_id] for job_id in self.job_ids if job_id in view.jobs]

    def result(self, timeout: float = DECISION_TIMEOUT_S) -> Event:
        """Waits for the scheduler's decision on the submission (not for its jobs; see
        :meth:`wait_until_done`).

        A submission the engine was too busy to take (``SubmissionThrottled``) is submitted
        again, with a new command id, after the wait the engine asked for with jitter,
        until the client's ``throttle_wait`` is spent; each try is told to ``on_throttled``
        (or logged). ``timeout`` bounds each wait for a decision.

        Returns:
            The ``SubmissionAccepted`` event.

        Raises:
            SubmissionRejected: it was rejected (``code``, ``reason``).
            EngineBusy: still throttled when ``throttle_wait`` was spent.
            DecisionTimeout: no decision within ``timeout`` seconds (the command stays in
                Kafka; call again to keep waiting).
        """
        if self.command is None:
            from engine.errors import DecisionTimeout
            from engine.watch import WatchTimeout

            try:
                return self._client.event_wait(self, None, "SubmissionAccepted", timeout=timeout)
            except WatchTimeout:
                raise DecisionTimeout(
                    f"no decision on submission {self.id} within {timeout:g} s",
                    command_id=self.command_id,
                    submission_id=self.id,
                    timeout=timeout,
                ) from None
        return self._admitted(self.command, timeout)

    def _admitted(self, handle: CommandHandle, timeout: float) -> Event:
        """The decision on ``handle``, submitting again while the engine throttles it."""
        from engine.client import new_id

        tries = 0
        give_up: float | None = None
        while True:
            try:
                return handle.result(timeout)
            except EngineBusy as busy:
                tries += 1
                now = time.monotonic()
                if give_up is None:
                    give_up = now + self._client.throttle_wait
                delay = throttle_delay(busy.retry_after, tries)
                if now + delay > give_up:
                    raise
                self._client.throttled(busy, delay)
                time.sleep(delay)
                command = replace(handle.command, command_id=new_id("c-"), issued_at=now_ms())
                handle = self._client.producer.send_tracked(command)
                self.command, self.command_id = handle, command.command_id

    def settle(self, timeout: float = DECISION_TIMEOUT_S) -> bool:
        """Waits up to ``timeout`` for the decision on a submit this client sent, submitting
        again while the engine throttles it; ``True`` when accepted, ``False`` when no
        decision came in time (or the handle was made from an id).

        Raises:
            SubmissionRejected: it was rejected.
            EngineBusy: throttled for longer than the client's ``throttle_wait``.
        """
        from engine.errors import DecisionTimeout

        if self.command is None:
            return False
        try:
            self.result(timeout)
        except DecisionTimeout:
            return False
        return True

    def accepted(self, timeout: float = DECISION_TIMEOUT_S) -> bool:
        """Waits for the decision: ``True`` accepted, ``False`` rejected.

        Raises:
            EngineBusy: throttled for longer than the client's ``throttle_wait``
                (``throttle_wait=0`` asks once: a throttle is not retried).
            DecisionTimeout: no decision within ``timeout`` seconds.
        """
        from engine.errors import CommandRejectedError

        try:
            self.result(timeout)
        except CommandRejectedError:
            return False
        return True

    def wait_until_done(
        self,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
        *,
        interval: float = 1.0,
    ) -> SubmissionView:
        """Blocks until every job is terminal; see :func:`engine.watch.wait_until_done`.

        A submit of this client is decided first (:meth:`result`: a throttled one is
        submitted again); without a decision in 15 s the wait goes on for its jobs.

        Raises:
            SubmissionRejected: the scheduler rejected the submission.
            EngineBusy: the engine throttled it for longer than the client's
                ``throttle_wait``.
            WatchTimeout: it was not done within ``timeout`` seconds.
        """
        started = time.monotonic()
        self.settle(DECISION_TIMEOUT_S if timeout is None else min(timeout, DECISION_TIMEOUT_S))
        if timeout is not None:
            timeout = max(0.0, timeout - (time.monotonic() - started))
        return wait_until_done(
            self.id,
            progress=progress,
            timeout=timeout,
            interval=interval,
            settings=self._client.settings,
            appear_timeout=self._appear,
            start_offset=self._start,
        )

    def events(
        self, job_id: str | None = None, *, from_start: bool = True, timeout: float | None = None
    ) -> Iterator[Event | Live]:
        """Its events (or one job's): history, :data:`~engine.watch.LIVE`, then live."""
        return event_watch(
            self.id,
            job_id,
            from_start=from_start,
            timeout=timeout,
            settings=self._client.settings,
            appear_timeout=self._appear,
            start_offset=self._start,
        )

    def event_wait(self, job_id: str | None, name: str, timeout: float | None = None) -> Event:
        """Waits for a job's event; see :func:`engine.watch.event_wait`."""
        return event_wait(
            self.id,
            job_id,
            name,
            timeout,
            settings=self._client.settings,
            appear_timeout=self._appear,
            start_offset=self._start,
        )

    def watch(
        self,
        *,
        on_state_changed: StateCallback | None = None,
        on_job_completed: JobCallback | None = None,
        on_submission_completed: SubmissionCallback | None = None,
        on_progress: JobCallback | None = None,
        from_start: bool = True,
        on_completed: Mapping[str, JobCallback] | None = None,
        task_state_changed: StateCallback | None = None,
        task_completed: JobCallback | None = None,
        job_completed: SubmissionCallback | None = None,
        task_progress_updated: JobCallback | None = None,
    ) -> Watcher:
        """A started :class:`~engine.watch.Watcher` running the callbacks on a thread (under
        joblog's names or an HPC scheduler's; ``on_completed`` maps job ids to their own)."""
        return Watcher(
            self.id,
            settings=self._client.settings,
            from_start=from_start,
            on_state_changed=on_state_changed,
            on_job_completed=on_job_completed,
            on_submission_completed=on_submission_completed,
            on_progress=on_progress,
            on_completed=on_completed,
            task_state_changed=task_state_changed,
            task_completed=task_completed,
            job_completed=job_completed,
            task_progress_updated=task_progress_updated,
            appear_timeout=self._appear,
            start_offset=self._start,
        ).start()

    def view(self, timeout: float = 30.0) -> SubmissionView:
        """Its current state, folded from its events up to now (no projection needed)."""
        return self._client.view(self.id, timeout=timeout, start_offset=self._start)

    def cancel(
        self,
        job_id: str | None = None,
        *,
        mode: CancelMode | str = CancelMode.KILL,
        reason: str = "",
        wait: bool = False,
        timeout: float = DECISION_TIMEOUT_S,
    ) -> CommandHandle:
        """Cancels one job (and its sub-jobs) or every unfinished job; see :meth:`Joblog.cancel`."""
        return self._client.cancel(
            self.id, job_id, mode=mode, reason=reason, wait=wait, timeout=timeout
        )

    def retry(
        self, job_id: str, *, wait: bool = False, timeout: float = DECISION_TIMEOUT_S
    ) -> CommandHandle:
        """Runs a job waiting for its retry backoff now; see :meth:`Joblog.retry`."""
        return self._client.retry(self.id, job_id, wait=wait, timeout=timeout)

    def delete(
        self,
        job_id: str | None = None,
        *,
        force: bool = False,
        wait: bool = True,
        timeout: float = DECISION_TIMEOUT_S,
    ) -> CommandHandle:
        """Deletes a finished job or the whole submission; see :meth:`Joblog.delete` (it
        waits for the decision and raises ``JobNotDeletedException`` unless ``wait=False``)."""
        return self._client.delete(self.id, job_id, force=force, wait=wait, timeout=timeout)

    def get_jobs(self) -> list[JobView]:
        """Its jobs as the projections know them."""
        return self._client.get_jobs(submission_id=self.id)


# --------------------------------------------------------------------------- the client

Target = str | Submission | JobView | tuple[str, str]


def _outcome_of(jobs: Sequence[JobView]) -> SubmissionStatus:
    """A finished submission's outcome from its jobs' statuses (as the scheduler decides it)."""
    statuses = {job.status for job in jobs}
    if JobStatus.FAILED in statuses:
        return SubmissionStatus.FAILED
    if JobStatus.CANCELED in statuses or JobStatus.ABANDONED in statuses:
        return SubmissionStatus.CANCELED
    return SubmissionStatus.COMPLETED


def _single_name(task: str | Task | None, command: Sequence[str] | str | None) -> str:
    """What names the one job a ``task`` or ``command`` keyword describes."""
    if task is not None:
        return task if isinstance(task, str) else task.name
    assert command is not None
    first = shlex.split(command)[0] if isinstance(command, str) else command[0]
    return os.path.basename(str(first))


def resolve(target: Target, job_id: str | None = None) -> tuple[str, str | None]:
    """``(submission_id, job_id)`` from a submission, a job view, ``"sid/job"`` or ``"sid"``."""
    if isinstance(target, Submission):
        return target.id, job_id
    if isinstance(target, JobView):
        return target.submission_id, job_id or target.job_id
    if isinstance(target, tuple):
        return target[0], target[1]
    submission_id, slash, rest = target.partition("/")
    if slash and job_id is not None and rest != job_id:
        raise InvalidJob(f"{target!r} already names job {rest!r}, not {job_id!r}")
    return submission_id, (rest or None) if slash else job_id


class Joblog:
    """A client of one joblog cluster.

    Args:
        settings: cluster and topic settings (``Settings.from_env()`` when omitted).
        db_path: the projection file read by the ``get_*`` methods (default
            ``$JOBLOG_PROJECTION_DB`` or ``joblog.duckdb``).
        submitted_by: recorded on every submission and command.
        throttle_wait: how long, in seconds, a submission the engine is too busy to take
            (``SubmissionThrottled``, see docs/operations.md) is submitted again before
            :meth:`Submission.result` gives up with :class:`~engine.errors.EngineBusy`.
        on_throttled: told ``(busy, delay)`` before each new try, ``delay`` the seconds it
            waits first; by default a warning is logged on ``joblog.client``.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        db_path: str | Path | None = None,
        submitted_by: str = "",
        throttle_wait: float = THROTTLE_WAIT_S,
        on_throttled: ThrottledCallback | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.db_path = Path(db_path) if db_path is not None else default_db_path()
        self.throttle_wait = throttle_wait
        self.on_throttled = on_throttled
        self.submitted_by = submitted_by or os.environ.get("USER", "")
        self._producer: CommandProducer | None = None
        self._lock = threading.Lock()

    @property
    def producer(self) -> CommandProducer:
        """The command producer, created on first use."""
        with self._lock:
            if self._producer is None:
                from engine.client import CommandProducer

                self._producer = CommandProducer(self.settings)
            return self._producer

    def throttled(self, busy: EngineBusy, delay: float) -> None:
        """Tells ``on_throttled`` (or the log) that a submission is submitted again soon."""
        if self.on_throttled is not None:
            self.on_throttled(busy, delay)
            return
        log.warning(
            "engine busy (%s): %s; submitting %s again in %.1f s",
            busy.cause,
            busy.detail,
            busy.submission_id,
            delay,
        )

    def close(self) -> None:
        """Flushes commands still queued and lets go of the producer and decision reader."""
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close()

    def __enter__(self) -> Joblog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ commands

    def submit(
        self,
        *jobs: JobLike,
        task: str | Task | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        command: Sequence[str] | str | None = None,
        job_id: str | None = None,
        name: str = "",
        queue: str | None = None,
        retries: int | None = None,
        retry_backoff: float | None = None,
        retry_on: Sequence[str] = (),
        timeout: float | None = None,
        queue_timeout: float | None = None,
        idempotency_key: str | None = None,
        priority: int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        force: bool = False,
        not_before: datetime | float | None = None,
        concurrency_key: str | None = None,
        max_running: int = 0,
        rate_limit: str | None = None,
        labels: Mapping[str, str] | None = None,
        submission_id: str | None = None,
        notifications: Sequence[NotificationLike] | None = None,
        wait: bool = False,
        decision_timeout: float = DECISION_TIMEOUT_S,
    ) -> Submission:
        """Submits one job, a graph or a tree as one submission.

        Either give jobs (:class:`Job`, :class:`JobSpec` or mappings as in a submission file)
        positionally, or describe one job with the keywords::

            jl.submit(task="double", args=[21], retries=2, timeout=60)
            jl.submit(command=["ffmpeg", "-i", "in.mov", "out.mp4"], queue="video")
            jl.submit(Job("a", task="extract"), Job("b", task="load", depends_on=["a"]))
            jl.submit(Job("shot", task="assemble", children=[Job("f1", task="render")]))

        Args:
            *jobs: the jobs of a graph or tree.
            task / args / kwargs / command / job_id / name / queue / retries / retry_backoff /
                retry_on / timeout / queue_timeout / idempotency_key / priority / env / cwd /
                force / not_before / concurrency_key / max_running / rate_limit:
                one job, as the fields of :class:`Job` (``job_id`` is its key, by default
                made from the task name or the command).
            labels: tags of the submission.
            submission_id: the id to use (default: a new time-ordered random one).
                Submitting an id twice is rejected, which makes retrying a submit safe.
            notifications: webhooks and emails, as in Tapis: ``{"url": ..., "event": "*",
                "persistent": False}`` mappings (an email address as ``url`` sends an email;
                ``job`` names the job to watch, ``id`` the notification), bare URLs, or
                :class:`~engine.lifecycle.records.Notification` values.
            wait: also wait for the scheduler's decision (as :meth:`Submission.result`
                does), raising on a rejection; by default the call returns once Kafka has
                the command and :meth:`Submission.accepted` tells the decision later.
            decision_timeout: with ``wait``, the longest wait for the decision, in seconds.

        Returns:
            The :class:`Submission` handle.

        Raises:
            InvalidJob: the jobs are malformed (checked before anything is sent).
            InvalidNotification: a notification is malformed (a bad URL or event name).
            TooManyJobs / ArgumentsTooLarge / SubmissionTooLarge: a designed limit is
                exceeded (:mod:`engine.limits`; checked before anything is sent).
            KafkaUnreachable: the cluster did not answer.
            CommandNotSent: Kafka did not take the command.
            SubmissionRejected / DecisionTimeout: with ``wait``, see :meth:`Submission.result`.
        """
        single = task is not None or command is not None
        if single and jobs:
            raise InvalidJob("give either jobs positionally or one job by keywords, not both")
        if single:
            what = _single_name(task, command)
            jobs = (
                Job(
                    key=job_id or job_key(what),
                    task=task,
                    args=args,
                    kwargs=kwargs or {},
                    command=command,
                    name=name,
                    queue=queue,
                    retries=retries,
                    retry_backoff=retry_backoff,
                    retry_on=retry_on,
                    timeout=timeout,
                    queue_timeout=queue_timeout,
                    idempotency_key=idempotency_key,
                    priority=priority,
                    env=env or {},
                    cwd=cwd,
                    force=force,
                    not_before=not_before,
                    concurrency_key=concurrency_key,
                    max_running=max_running,
                    rate_limit=rate_limit,
                ),
            )
        from engine.client import submit_command

        declared = to_notifications(notifications)
        command_record = submit_command(
            to_specs(jobs),
            submission_id=submission_id,
            submitted_by=self.submitted_by,
            labels=sorted((labels or {}).items()),
            notifications=declared,
        )
        submission = Submission(self, command_record, self.producer.send_tracked(command_record))
        if wait:
            submission.result(decision_timeout)
        return submission

    def cancel(
        self,
        target: Target,
        job_id: str | None = None,
        *,
        mode: CancelMode | str = CancelMode.KILL,
        reason: str = "",
        wait: bool = False,
        timeout: float = DECISION_TIMEOUT_S,
    ) -> CommandHandle:
        """Cancels a job (and its sub-jobs) or every unfinished job of a submission.

        Dependents that can no longer run become ABANDONED. A RUNNING job is killed
        (``mode="kill"``, the default) or, with ``mode="finish"`` (Taipy's rule), left to
        finish while its dependents are abandoned.

        Args:
            target: a :class:`Submission`, a :class:`~engine.watch.JobView`,
                ``"submission_id/job_id"`` or a submission id.
            job_id: the job, when ``target`` names only the submission.
            mode: ``kill`` or ``finish``.
            reason: recorded on the canceled jobs.
            wait: wait for the decision now (``handle.result(timeout)``), raising on a
                rejection; by default the handle is returned once Kafka has the command.
            timeout: with ``wait``, the longest wait for the decision, in seconds.

        Returns:
            A :class:`~engine.client.CommandHandle`: ``result()`` raises
            :class:`~engine.errors.JobNotCanceled` for a job that already ended, an unknown
            job or submission.

        Raises:
            JobNotCanceled / DecisionTimeout: with ``wait``.
        """
        from engine.client import cancel_command

        submission_id, job = resolve(target, job_id)
        command = cancel_command(
            submission_id,
            job,
            mode=CancelMode(str(mode).upper()),
            reason=reason,
            requested_by=self.submitted_by,
        )
        return self._send(command, wait, timeout)

    def retry(
        self,
        target: Target,
        job_id: str | None = None,
        *,
        wait: bool = False,
        timeout: float = DECISION_TIMEOUT_S,
    ) -> CommandHandle:
        """Runs a job that waits for its retry backoff now.

        Returns:
            A :class:`~engine.client.CommandHandle`: ``result()`` raises
            :class:`~engine.errors.JobNotRetried` for a job not waiting for a retry.

        Raises:
            InvalidJob: no job is named.
            JobNotRetried / DecisionTimeout: with ``wait``.
        """
        from engine.client import retry_command

        submission_id, job = resolve(target, job_id)
        if job is None:
            raise InvalidJob("retry needs a job: give 'submission_id/job_id'")
        command = retry_command(submission_id, job, requested_by=self.submitted_by)
        return self._send(command, wait, timeout)

    def delete(
        self,
        target: Target,
        job_id: str | None = None,
        *,
        force: bool = False,
        wait: bool = True,
        timeout: float = DECISION_TIMEOUT_S,
    ) -> CommandHandle:
        """Deletes a finished job or submission; ``force`` deletes unfinished ones too.

        A job that ended (COMPLETED, SKIPPED, FAILED, CANCELED or ABANDONED) is deleted as it
        is. With ``force``, an unfinished one is first CANCELED at once, a running attempt
        included (its worker gets a kill; what it reports later is ignored), what waits on
        it is ABANDONED, and then it is deleted. Deletion is an event: history is never
        rewritten, the projections mark the jobs deleted.

        Args:
            target / job_id: as for :meth:`cancel`; a submission id alone deletes every job.
            force: delete unfinished jobs too (see above).
            wait: wait for the scheduler's decision (the default) and raise on a rejection;
                ``wait=False`` returns once Kafka has the command.
            timeout: the longest wait for the decision, in seconds.

        Returns:
            A :class:`~engine.client.CommandHandle` (decided, with ``wait``).

        Raises:
            JobNotDeletedException: (:class:`~engine.errors.JobNotDeleted`) the scheduler
                rejected it: unfinished jobs without ``force`` (``not_terminal``), jobs
                already deleted (``deleted``), an unknown job or submission. Raised by the
                call with ``wait``, else by ``handle.result()``.
            DecisionTimeout: with ``wait``, no decision within ``timeout``.
        """
        from engine.client import delete_command

        submission_id, job = resolve(target, job_id)
        command = delete_command(submission_id, job, force=force, requested_by=self.submitted_by)
        return self._send(command, wait, timeout)

    def rerun(
        self,
        target: Target,
        job_id: str | None = None,
        *,
        wait: bool = True,
        timeout: float = DECISION_TIMEOUT_S,
    ) -> CommandHandle:
        """Runs a FAILED, CANCELED or ABANDONED job again, in the same submission and history.

        The job gets the next attempt number and a fresh retry budget; the jobs it abandoned
        run again with it, and an ABANDONED job reruns with what abandoned it. A submission
        id alone reruns every such job of the submission: its failed part.

        Raises:
            JobNotRerun: (with ``wait``) the job did not fail, was deleted, or is unknown.
            DecisionTimeout: with ``wait``, no decision within ``timeout``.
        """
        from engine.client import rerun_command

        submission_id, job = resolve(target, job_id)
        command = rerun_command(submission_id, job, requested_by=self.submitted_by)
        return self._send(command, wait, timeout)

    def pause_queue(self, queue: str, *, timeout: float = DECISION_TIMEOUT_S) -> None:
        """Holds the dispatch of a queue's jobs (each partition's scheduler decides it, as an
        event; what was dispatched before runs on). Returns once every partition decided."""
        self.configure_queue(queue, paused=True, timeout=timeout)

    def resume_queue(self, queue: str, *, timeout: float = DECISION_TIMEOUT_S) -> None:
        """Dispatches a paused queue's held jobs again."""
        self.configure_queue(queue, paused=False, timeout=timeout)

    def set_queue_limits(
        self,
        queue: str,
        *,
        max_running: int | None = None,
        rate_limit: str | None = None,
        timeout: float = DECISION_TIMEOUT_S,
    ) -> None:
        """Sets a queue's cluster-wide limits: at most ``max_running`` of its jobs hold a
        slot at once, at most ``rate_limit`` (``"N/period"``) start per period. ``0`` or
        ``"0/s"`` removes a limit; ``None`` leaves it. Among the jobs waiting for a slot,
        higher priority goes first."""
        rate, period = (None, None) if rate_limit is None else parse_rate(rate_limit)
        if rate == 0:
            period = 0
        self.configure_queue(
            queue, max_running=max_running, rate_limit=rate, rate_period_ms=period, timeout=timeout
        )

    def configure_queue(
        self,
        queue: str,
        *,
        paused: bool | None = None,
        max_running: int | None = None,
        rate_limit: int | None = None,
        rate_period_ms: int | None = None,
        timeout: float = DECISION_TIMEOUT_S,
    ) -> None:
        """Sets a queue's settings in every partition and waits for each decision.

        Raises:
            QueueNotConfigured: a partition's scheduler rejected the settings.
            DecisionTimeout: a partition did not decide within ``timeout``.
        """
        handles = self.producer.configure_queue(
            queue,
            paused=paused,
            max_running=max_running,
            rate_limit=rate_limit,
            rate_period_ms=rate_period_ms,
            requested_by=self.submitted_by,
        )
        for handle in handles:
            handle.result(timeout)

    def queues(self) -> list[dict[str, Any]]:
        """Every queue the projections know: its settings, jobs by status, workers alive
        (the ``queues`` view)."""
        return self.query("SELECT * FROM queues ORDER BY queue")

    def pending_reasons(
        self, target: Target | None = None, job_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Why jobs wait, from the ``pending_reasons`` view: the reason, its detail, the
        position in a limit's line, when the wait ends if a time ends it, and an estimated
        start from the queue's recent throughput. ``target`` narrows it to a submission or
        a job."""
        if target is None:
            return self.query("SELECT * FROM pending_reasons ORDER BY submitted_at")
        submission_id, job = resolve(target, job_id)
        if job is None:
            return self.query(
                "SELECT * FROM pending_reasons WHERE submission_id = ? ORDER BY submitted_at",
                [submission_id],
            )
        return self.query(
            "SELECT * FROM pending_reasons WHERE submission_id = ? AND job_id = ?",
            [submission_id, job],
        )

    # ------------------------------------------------------------------ schedules

    def schedule(
        self,
        schedule_id: str,
        *jobs: JobLike,
        cron: str | None = None,
        every: Duration | None = None,
        timezone: str = "UTC",
        offset: Duration | None = None,
        overlap: str = "skip",
        catchup_window: Duration = 60,
        start_at: datetime | float | str | None = None,
        end_at: datetime | float | str | None = None,
        paused: bool = False,
        labels: Mapping[str, str] | None = None,
        task: str | Task | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        command: Sequence[str] | str | None = None,
        job_id: str | None = None,
        queue: str | None = None,
        retries: int | None = None,
        timeout: float | None = None,
        wait: bool = True,
        decision_timeout: float = DECISION_TIMEOUT_S,
    ) -> CommandHandle:
        """Creates a schedule: at each slot, its jobs are submitted as a new submission
        ``<schedule id>-<slot in UTC, 20261203T020000Z>``, labelled ``joblog.schedule`` and
        ``joblog.slot``. The scheduler decides each slot once, as an event, however often it
        restarts::

            jl.schedule("nightly-etl", Job("extract", task="extract"), Job("load", ...),
                        cron="30 2 * * *", timezone="Europe/Berlin", overlap="buffer_one")
            jl.schedule("heartbeat", task="ping", every="5m", catchup_window=0)

        Args:
            schedule_id: the schedule's id (never reused, even after a delete).
            *jobs: the jobs each run submits (a graph or tree, as :meth:`submit` takes), or
                one job by ``task``/``args``/``kwargs``/``command``/``job_id``/``queue``/
                ``retries``/``timeout``.
            cron / every / timezone / offset / overlap / catchup_window / start_at /
                end_at: when it fires and what it does with overlaps and missed slots (see
                :func:`engine.schedules.schedule_spec`).
            paused: created paused (it fires once resumed, or when triggered).
            labels: labels of every run's submission.
            wait: wait for the scheduler's decision and raise on a rejection.

        Raises:
            InvalidSchedule / InvalidJob: malformed (checked before anything is sent).
            ScheduleNotChanged: (with ``wait``) rejected: the id is taken or was deleted, a
                job is invalid.
        """
        from engine.schedules import create_schedule_command, schedule_spec

        spec = schedule_spec(
            cron=cron,
            every=every,
            timezone=timezone,
            offset=offset,
            overlap=overlap,
            catchup_window=catchup_window,
            start_at=start_at,
            end_at=end_at,
        )
        if task is not None or command is not None:
            if jobs:
                raise InvalidJob("give either jobs positionally or one job by keywords, not both")
            what = _single_name(task, command)
            jobs = (
                Job(
                    key=job_id or job_key(what),
                    task=task,
                    args=args,
                    kwargs=kwargs or {},
                    command=command,
                    queue=queue,
                    retries=retries,
                    timeout=timeout,
                ),
            )
        record = create_schedule_command(
            schedule_id,
            spec,
            to_specs(jobs),
            labels=sorted((labels or {}).items()),
            paused=paused,
            requested_by=self.submitted_by,
        )
        return self._send(record, wait, decision_timeout)

    def pause_schedule(self, schedule_id: str, *, timeout: float = DECISION_TIMEOUT_S) -> None:
        """Stops a schedule from firing until it is resumed (its runs go on)."""
        self._change_schedule(schedule_id, ScheduleAction.PAUSE, timeout)

    def resume_schedule(self, schedule_id: str, *, timeout: float = DECISION_TIMEOUT_S) -> None:
        """Starts a paused schedule again from its next slot (missed slots are not run)."""
        self._change_schedule(schedule_id, ScheduleAction.RESUME, timeout)

    def trigger_schedule(self, schedule_id: str, *, timeout: float = DECISION_TIMEOUT_S) -> str:
        """Fires a schedule once now, whatever its spec, pause or overlap policy says;
        returns the id of the run's submission (``<schedule id>-manual-<n>``)."""
        event = self._change_schedule(schedule_id, ScheduleAction.TRIGGER, timeout)
        assert isinstance(event.body, ScheduleFired)
        return event.body.run_submission_id

    def delete_schedule(self, schedule_id: str, *, timeout: float = DECISION_TIMEOUT_S) -> None:
        """Deletes a schedule: it never fires again (its runs go on) and its id is not
        reused; its history stays."""
        self._change_schedule(schedule_id, ScheduleAction.DELETE, timeout)

    def _change_schedule(self, schedule_id: str, action: ScheduleAction, timeout: float) -> Event:
        from engine.schedules import change_schedule_command

        record = change_schedule_command(schedule_id, action, requested_by=self.submitted_by)
        return self._send(record, True, timeout).result(timeout)

    def schedules(self) -> list[dict[str, Any]]:
        """Every schedule the projections know (the ``schedules`` view): spec, status, next
        slot, runs fired and slots skipped."""
        return self.query("SELECT * FROM schedules ORDER BY schedule_id")

    def schedule_firings(self, schedule_id: str) -> list[dict[str, Any]]:
        """A schedule's decided slots, oldest first (the ``schedule_firings`` view): fired
        (with the run and its outcome) or skipped (with why)."""
        return self.query(
            "SELECT * FROM schedule_firings WHERE schedule_id = ? ORDER BY seq", [schedule_id]
        )

    # ------------------------------------------------------------------ Taipy's names

    def cancel_job(
        self,
        job: Target,
        *,
        mode: CancelMode | str = CancelMode.KILL,
        reason: str = "",
        wait: bool = False,
        timeout: float = DECISION_TIMEOUT_S,
    ) -> CommandHandle:
        """Taipy's ``cancel_job(job)``: cancels one job; see :meth:`cancel`.

        An unfinished job is CANCELED (a running one is killed; ``mode="finish"`` lets it
        finish, Taipy's rule for RUNNING) and what follows it is ABANDONED. A COMPLETED or
        SKIPPED job keeps its status and what follows it that has not finished is
        abandoned. A FAILED, CANCELED or ABANDONED job cannot be canceled
        (``already_terminal``).

        Raises:
            InvalidJob: ``job`` names no job (only a submission).
            JobNotCanceled / DecisionTimeout: with ``wait``.
        """
        submission_id, job_id = resolve(job)
        if job_id is None:
            raise InvalidJob("cancel_job needs a job: give a JobView or 'submission_id/job_id'")
        return self.cancel(
            submission_id, job_id, mode=mode, reason=reason, wait=wait, timeout=timeout
        )

    def delete_job(
        self,
        job: Target,
        force: bool = False,
        *,
        wait: bool = True,
        timeout: float = DECISION_TIMEOUT_S,
    ) -> CommandHandle:
        """Taipy's ``delete_job(job, force=False)``: deletes one job; see :meth:`delete`.

        Raises:
            InvalidJob: ``job`` names no job (only a submission).
            JobNotDeletedException: the job has not finished and ``force`` is not set, or
                it was deleted before.
            DecisionTimeout: with ``wait``, no decision within ``timeout``.
        """
        submission_id, job_id = resolve(job)
        if job_id is None:
            raise InvalidJob("delete_job needs a job: give a JobView or 'submission_id/job_id'")
        return self.delete(submission_id, job_id, force=force, wait=wait, timeout=timeout)

    def delete_jobs(
        self,
        jobs: Iterable[Target] | None = None,
        *,
        force: bool = False,
        wait: bool = True,
        timeout: float = DECISION_TIMEOUT_S,
    ) -> list[CommandHandle]:
        """Taipy's ``delete_jobs()``: deletes the given jobs, or every job the projections
        know that is not deleted yet.

        Every delete is sent before any is waited for. Without ``jobs``, each submission is
        deleted as a whole (one command each), which the scheduler refuses if one of its
        jobs has not finished and ``force`` is not set; the other submissions are deleted
        all the same.

        Returns:
            The handles, one per job (or per submission), in the order they were sent.

        Raises:
            JobNotDeletedException: with ``wait``, after every decision was read: the first
                delete the scheduler refused (the others took effect).
            DecisionTimeout: with ``wait``, a decision did not come within ``timeout``.
        """
        targets: list[tuple[str, str | None]]
        if jobs is None:
            seen: dict[str, None] = {}
            for job in self.get_jobs():
                seen.setdefault(job.submission_id, None)
            targets = [(submission_id, None) for submission_id in seen]
        else:
            targets = [resolve(job) for job in jobs]
        handles = [
            self.delete(submission_id, job_id, force=force, wait=False)
            for submission_id, job_id in targets
        ]
        if wait:
            from engine.errors import JobNotDeleted

            refused: JobNotDeleted | None = None
            for handle in handles:
                try:
                    handle.result(timeout)
                except JobNotDeleted as exc:
                    refused = refused or exc
            if refused is not None:
                raise refused
        return handles

    def add_notification(
        self,
        target: Target,
        url: str | NotificationLike,
        event: str = "*",
        *,
        persistent: bool = False,
        notification_id: str = "",
        wait: bool = False,
        timeout: float = DECISION_TIMEOUT_S,
    ) -> CommandHandle:
        """Adds a webhook or an email to a live submission, or to one of its jobs.

        As Tapis's notifications: ``event`` is ``*``, an event name (``completed``), a job
        status (``COMPLETED``) or a Tapis status (``FINISHED``); ``persistent=False``
        (Tapis's default) removes it after the first event it fires for.

        Args:
            target: a :class:`Submission`, a job view, ``"submission_id/job_id"`` (the job it
                watches) or a submission id (every job and the submission's own events).
            url: an http(s) URL template (``${JOB_ID}``, ...) or an email address; or a whole
                notification (a mapping or a :class:`~engine.lifecycle.records.Notification`).
            event: what it fires on.
            persistent: keep it after it fired.
            notification_id: its id (default: the scheduler names it ``n<seq>``; the
                ``NotificationAdded`` event of ``handle.result()`` has it).
            wait: wait for the decision now, raising on a rejection.
            timeout: with ``wait``, the longest wait for the decision, in seconds.

        Returns:
            A :class:`~engine.client.CommandHandle`: ``result()`` returns the
            ``NotificationAdded`` event or raises
            :class:`~engine.errors.NotificationNotChanged` (a bad URL or event, an unknown
            job, a finished submission, a duplicate id, too many notifications).

        Raises:
            InvalidNotification: malformed (checked before anything is sent).
            NotificationNotChanged / DecisionTimeout: with ``wait``.
        """
        from engine.client import add_notification_command

        submission_id, job = resolve(target, None)
        if isinstance(url, str):
            notification = to_notification(
                Notification(notification_id, url, event, persistent, job or "")
            )
        else:
            notification = to_notification(url, job_id=job or "")
        command = add_notification_command(
            submission_id, notification, requested_by=self.submitted_by
        )
        return self._send(command, wait, timeout)

    def remove_notification(
        self,
        target: Target,
        notification_id: str,
        *,
        wait: bool = False,
        timeout: float = DECISION_TIMEOUT_S,
    ) -> CommandHandle:
        """Removes a notification of a submission by its id.

        Returns:
            A :class:`~engine.client.CommandHandle`: ``result()`` returns the
            ``NotificationRemoved`` event or raises
            :class:`~engine.errors.NotificationNotChanged` for an id the submission has not
            (or no longer: one that is not persistent is removed once it fired).

        Raises:
            NotificationNotChanged / DecisionTimeout: with ``wait``.
        """
        from engine.client import remove_notification_command

        submission_id, _ = resolve(target, None)
        command = remove_notification_command(
            submission_id, notification_id, requested_by=self.submitted_by
        )
        return self._send(command, wait, timeout)

    def notifications(self, target: Target, *, timeout: float = 30.0) -> list[Notification]:
        """The notifications in place on a submission (a job's: those that watch it), from
        its events.

        Raises:
            UnknownSubmission: the submission has no events (a :class:`JobNotFound`).
        """
        submission_id, job = resolve(target, None)
        view = self.view(submission_id, timeout=timeout)
        return [n for n in view.notifications.values() if job is None or n.job_id in ("", job)]

    def poll_status(
        self,
        target: Target,
        job_id: str | None = None,
        *,
        initial: float = 1.0,
        factor: float = 2.0,
        max_interval: float = 60.0,
        timeout: float | None = None,
        source: str = "events",
        on_status: Callable[[JobView | SubmissionView], None] | None = None,
    ) -> JobView | SubmissionView:
        """Polls a job's (or submission's) status with exponential backoff until it ends.

        For clients without a webhook endpoint (Tapis's polling): each poll that finds the
        status unchanged waits ``factor`` times longer, up to ``max_interval``; a change
        polls soon again. Watching (:meth:`event_watch`, :meth:`wait_until_done`) costs less;
        this is the loop for scripts that must poll.

        Args:
            target / job_id: the job, or a submission (every job).
            initial / factor / max_interval: the backoff, in seconds.
            timeout: seconds in all (``None``: no limit).
            source: ``events`` (the submission's events, always current) or ``projections``
                (the DuckDB file: cheaper per poll, as current as the projector).
            on_status: called with the first answer and each change of status.

        Returns:
            The job's view (or the submission's) once it has ended.

        Raises:
            PollTimeout: it had not ended within ``timeout``.
            UnknownSubmission / JobNotFound: no such submission or job.
        """
        submission_id, job = resolve(target, job_id)
        if source not in ("events", "projections"):
            raise ValueError("source must be 'events' or 'projections'")

        def read() -> JobView | SubmissionView:
            if source == "projections":
                if job is not None:
                    return self.get_job(submission_id, job)
                jobs = self.get_jobs(submission_id=submission_id, include_deleted=True)
                view = SubmissionView(submission_id, jobs={j.job_id: j for j in jobs})
                if jobs and all(j.is_terminal for j in jobs):
                    view.outcome = _outcome_of(jobs)
                return view
            view = self.view(submission_id)
            if job is None:
                return view
            if job not in view.jobs:
                raise JobNotFound(f"submission {submission_id} has no job {job!r}")
            return view.jobs[job]

        backoff = Backoff(initial=initial, factor=factor, max_interval=max_interval)
        return poll_status(read, backoff=backoff, timeout=timeout, on_status=on_status)

    def _send(self, command: Command, wait: bool, timeout: float) -> CommandHandle:
        handle = self.producer.send_tracked(command)
        if wait:
            handle.result(timeout)
        return handle

    def submission(self, submission_id: str) -> Submission:
        """A handle on an existing submission (its jobs are read from its events)."""
        view = self.view(submission_id)
        command = SubmitJobs(
            command_id="",
            submission_id=submission_id,
            jobs=tuple(
                JobSpec(
                    job_id=job.job_id,
                    name=job.name,
                    task=job.task,
                    command=job.command,
                    queue=job.queue,
                    depends_on=job.depends_on,
                    parent=job.parent,
                )
                for job in view.jobs.values()
            ),
        )
        return Submission(self, command)

    # ------------------------------------------------------------------ the event stream

    def view(
        self, submission_id: str, *, timeout: float = 30.0, start_offset: int | None = None
    ) -> SubmissionView:
        """A submission's state now, folded from its history on the ``events`` topic.

        Args:
            submission_id: the submission.
            timeout: longest time for reading the history, in seconds.
            start_offset: see :func:`engine.watch.event_watch`.

        Raises:
            UnknownSubmission: the submission has no events (a :class:`JobNotFound`).
            WatchTimeout: the history could not be read within ``timeout``.
        """
        view = SubmissionView(submission_id)
        for item in event_watch(
            submission_id, timeout=timeout, settings=self.settings, start_offset=start_offset
        ):
            if item is LIVE:
                break
            if isinstance(item, Event):
                view.apply(item)
        if view.last_event is None:
            raise JobNotFound(
                f"no submission {submission_id!r} in {self.settings.topic_prefix}events"
            )
        return view

    def history(
        self, target: Target, job_id: str | None = None, *, timeout: float = 30.0
    ) -> list[Event]:
        """The events of a job (or submission) so far, from the ``events`` topic.

        Raises:
            UnknownSubmission: the submission has no events (a :class:`JobNotFound`).
            WatchTimeout: the history could not be read within ``timeout``.
        """
        submission_id, job = resolve(target, job_id)
        out = []
        for item in event_watch(submission_id, job, timeout=timeout, settings=self.settings):
            if item is LIVE:
                break
            if isinstance(item, Event):
                out.append(item)
        return out

    def event_watch(
        self,
        target: Target,
        job_id: str | None = None,
        *,
        from_start: bool = True,
        timeout: float | None = None,
        eventlog: str | None = None,
    ) -> Iterator[Event | Live]:
        """See :func:`engine.watch.event_watch`."""
        submission_id, job = resolve(target, job_id)
        return event_watch(
            submission_id,
            job,
            from_start=from_start,
            timeout=timeout,
            settings=self.settings,
            eventlog=eventlog,
        )

    def event_watch_async(
        self,
        target: Target,
        job_id: str | None = None,
        *,
        from_start: bool = True,
        timeout: float | None = None,
        eventlog: str | None = None,
    ) -> JobEventWatchFuture[Event]:
        """See :func:`engine.watch.event_watch_async` (Flux's future: ``get_event()``,
        ``then()``, ``cancel()``)."""
        submission_id, job = resolve(target, job_id)
        return event_watch_async(
            submission_id,
            job,
            from_start=from_start,
            timeout=timeout,
            settings=self.settings,
            eventlog=eventlog,
        )

    def event_wait(
        self,
        target: Target,
        job_id: str | None,
        name: str,
        timeout: float | None = None,
        *,
        raise_job_exception: bool = True,
        eventlog: str | None = None,
    ) -> Event:
        """See :func:`engine.watch.event_wait` (joblog's and Flux's event names)."""
        submission_id, job = resolve(target, job_id)
        return event_wait(
            submission_id,
            job,
            name,
            timeout,
            raise_job_exception=raise_job_exception,
            settings=self.settings,
            eventlog=eventlog,
        )

    def wait_until_done(
        self,
        target: Target,
        *,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> SubmissionView:
        """See :func:`engine.watch.wait_until_done`."""
        submission_id, _ = resolve(target)
        return wait_until_done(
            submission_id, progress=progress, timeout=timeout, settings=self.settings
        )

    # ------------------------------------------------------------------ projections

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Runs read-only SQL on the projections (see ``docs/projections.md`` for the views).

        Raises:
            JoblogError: no projector answers and the file cannot be opened, or the query
                failed.
        """
        return self._jobs().query(sql, list(params or []))

    def get_jobs(
        self,
        *,
        status: JobStatus | str | Sequence[JobStatus | str] | None = None,
        task: str | None = None,
        submission_id: str | None = None,
        include_deleted: bool = False,
        limit: int | None = None,
    ) -> list[JobView]:
        """Jobs from the projections, oldest submission first (Taipy's ``get_jobs``).

        Args:
            status: one status or several.
            task: only jobs of this task (or, for commands, this name).
            submission_id: only jobs of this submission.
            include_deleted: include deleted jobs.
            limit: at most this many (the most recent ones).
        """
        statuses = None if status is None else [status] if isinstance(status, str) else status
        return self._jobs().jobs(
            statuses=None if statuses is None else [str(s) for s in statuses],
            task=task,
            submission_id=submission_id,
            include_deleted=include_deleted,
            limit=limit,
        )

    def get_job(self, target: Target, job_id: str | None = None) -> JobView:
        """One job from the projections.

        Raises:
            JobNotFound: the projections hold no such job (yet).
        """
        submission_id, job = resolve(target, job_id)
        if job is None:
            raise InvalidJob("get_job needs a job: give 'submission_id/job_id'")
        found = self._jobs().job(submission_id, job)
        if found is None:
            raise JobNotFound(f"no job {submission_id}/{job} in {self.db_path}")
        return found

    def get_latest_job(self, task: str | Task) -> JobView | None:
        """The most recently submitted job of a task, or ``None`` (Taipy's ``get_latest_job``)."""
        return self._jobs().latest(task if isinstance(task, str) else task.name)

    def _jobs(self) -> JobQueries:
        # imported here: the read side (DuckDB, Arrow) loads only when it is asked
        from projections.jobs import JobQueries

        return JobQueries(self.db_path)
