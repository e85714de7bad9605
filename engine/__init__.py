"""joblog: an event-sourced job engine on Apache Kafka.

The public Python API::

    from engine import Job, Joblog, task

    jl = Joblog()
    submission = jl.submit(task="double", args=[21])
    submission.wait_until_done(progress=lambda view: print(view.counts()))

Names are loaded on first use, so ``import engine`` (and the ``joblog`` command) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.api import (
        InvalidJob,
        Job,
        Joblog,
        JobNotFound,
        Submission,
        load_jobs,
    )
    from engine.client import CommandHandle
    from engine.config import Settings
    from engine.errors import (
        ArgumentsTooLarge,
        CommandRejectedError,
        DecisionTimeout,
        EngineBusy,
        JoblogError,
        JobNotCanceled,
        JobNotDeleted,
        JobNotDeletedException,
        JobNotRetried,
        KafkaUnreachable,
        LimitExceeded,
        NotificationNotChanged,
        ResultTooLarge,
        ScheduleNotChanged,
        SubmissionTooLarge,
        TooManyJobs,
        UnknownSubmission,
    )
    from engine.jobqueue import JobProc, JobQueue, JobQueueError, createJobQueue
    from engine.lifecycle.records import (
        CancelMode,
        Event,
        JobSpec,
        JobStatus,
        Notification,
        RetryPolicy,
        SubmissionStatus,
    )
    from engine.lifecycle.views import JobView, SubmissionView
    from engine.monitoring import Backoff, InvalidNotification, PollTimeout
    from engine.schedules import InvalidSchedule
    from engine.watch import (
        LIVE,
        EventNotFound,
        JobEventWatchFuture,
        JobException,
        SubmissionRejected,
        Watcher,
        WatchTimeout,
        event_wait,
        event_watch,
        event_watch_async,
        wait_until_done,
    )
    from engine.worker import JobContext, task

_EXPORTS: dict[str, str] = {
    "Joblog": "engine.api",
    "Job": "engine.api",
    "Submission": "engine.api",
    "JobNotFound": "engine.api",
    "InvalidJob": "engine.api",
    "load_jobs": "engine.api",
    "Settings": "engine.config",
    "JobProc": "engine.jobqueue",
    "JobQueue": "engine.jobqueue",
    "JobQueueError": "engine.jobqueue",
    "createJobQueue": "engine.jobqueue",
    "JoblogError": "engine.errors",
    "ArgumentsTooLarge": "engine.errors",
    "CommandRejectedError": "engine.errors",
    "DecisionTimeout": "engine.errors",
    "EngineBusy": "engine.errors",
    "JobNotCanceled": "engine.errors",
    "JobNotDeleted": "engine.errors",
    "NotificationNotChanged": "engine.errors",
    "ScheduleNotChanged": "engine.errors",
    "InvalidSchedule": "engine.schedules",
    "Notification": "engine.lifecycle.records",
    "Backoff": "engine.monitoring",
    "InvalidNotification": "engine.monitoring",
    "PollTimeout": "engine.monitoring",
    "JobNotDeletedException": "engine.errors",
    "JobNotRetried": "engine.errors",
    "KafkaUnreachable": "engine.errors",
    "LimitExceeded": "engine.errors",
    "ResultTooLarge": "engine.errors",
    "SubmissionTooLarge": "engine.errors",
    "TooManyJobs": "engine.errors",
    "UnknownSubmission": "engine.errors",
    "CommandHandle": "engine.client",
    "CancelMode": "engine.lifecycle.records",
    "Event": "engine.lifecycle.records",
    "JobSpec": "engine.lifecycle.records",
    "JobStatus": "engine.lifecycle.records",
    "RetryPolicy": "engine.lifecycle.records",
    "SubmissionStatus": "engine.lifecycle.records",
    "LIVE": "engine.watch",
    "EventNotFound": "engine.watch",
    "JobException": "engine.watch",
    "JobEventWatchFuture": "engine.watch",
    "JobView": "engine.lifecycle.views",
    "SubmissionRejected": "engine.watch",
    "SubmissionView": "engine.lifecycle.views",
    "Watcher": "engine.watch",
    "WatchTimeout": "engine.watch",
    "event_wait": "engine.watch",
    "event_watch": "engine.watch",
    "event_watch_async": "engine.watch",
    "wait_until_done": "engine.watch",
    "JobContext": "engine.worker",
    "task": "engine.worker",
}

__all__ = [
    "LIVE",
    "ArgumentsTooLarge",
    "Backoff",
    "CancelMode",
    "CommandHandle",
    "CommandRejectedError",
    "DecisionTimeout",
    "EngineBusy",
    "Event",
    "EventNotFound",
    "InvalidJob",
    "InvalidNotification",
    "InvalidSchedule",
    "Job",
    "JobContext",
    "JobEventWatchFuture",
    "JobException",
    "JobNotCanceled",
    "JobNotDeleted",
    "JobNotDeletedException",
    "JobNotFound",
    "JobNotRetried",
    "JobProc",
    "JobQueue",
    "JobQueueError",
    "JobSpec",
    "JobStatus",
    "JobView",
    "Joblog",
    "JoblogError",
    "KafkaUnreachable",
    "LimitExceeded",
    "Notification",
    "NotificationNotChanged",
    "PollTimeout",
    "ResultTooLarge",
    "RetryPolicy",
    "ScheduleNotChanged",
    "Settings",
    "Submission",
    "SubmissionRejected",
    "SubmissionStatus",
    "SubmissionTooLarge",
    "SubmissionView",
    "TooManyJobs",
    "UnknownSubmission",
    "WatchTimeout",
    "Watcher",
    "createJobQueue",
    "event_wait",
    "event_watch",
    "event_watch_async",
    "load_jobs",
    "task",
    "wait_until_done",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
