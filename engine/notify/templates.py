"""Template variables of notifications, as in Tapis: ``${JOB_ID}``, ``${EVENT}``, ...

A URL, a header, an email subject or a body may contain ``${NAME}``; it is replaced by the
value for the event being notified. In URLs the values are percent-encoded; elsewhere they are
inserted as they are (a structured body is rendered leaf by leaf and then encoded as JSON, so
values never break it). A variable without a value (``${JOB_END_TIME}`` of a running job,
``${JOB_ERROR}`` of a job that did not fail) becomes the empty string.

==================  ==========================================================================
variable            value
==================  ==========================================================================
UUID                the event's id (unique, stable across redeliveries)
EVENT               the event's name, e.g. ``JobCompleted``
EVENT_TIME          when the event happened (ISO 8601, UTC)
EVENT_DESCRIPTION   the event's history line, e.g. ``Job completed with exit code 0``
SUBMISSION_ID       the submission's id
JOB_ID              the job's id within its submission
JOB_REF             ``<submission id>/<job id>``, how the CLI names a job
JOB_UUID            a UUID of the job (the same for each of its events; one URL-safe token)
JOB_NAME            the job's name (or its task, or its command's first word)
JOB_TASK            the job's task name (empty for a command)
JOB_QUEUE           the job's queue
JOB_SYSTEM          where it runs: its worker's host, or its queue before a worker took it
JOB_WORKER          the worker of its current attempt
JOB_STATUS          the job's status after the event (a submission event: its outcome)
JOB_ATTEMPT         the current attempt number
JOB_PROGRESS        the last progress value
JOB_STATUS_LINE     the last status line
JOB_SUBMIT_TIME     when the job was submitted (ISO 8601, UTC)
JOB_START_TIME      when its current attempt started running
JOB_END_TIME        when it reached its terminal status
JOB_URL             the job in the REST API (``<api url>/api/v1/jobs/<sid>/<job>``) when the
                    notifier knows the API's URL (``--api-url``, ``JOBLOG_API_URL``); else empty
JOB_ARCHIVE_PATH    the job's ``archive_path`` label, rendered (where its outputs go)
JOB_ARCHIVE_URL     its ``archive_url`` label, rendered; else its archive path when that is a
                    URL (``s3://...``); else empty
JOB_ERROR           ``type: note`` of its error; empty unless it failed, was canceled or abandoned
NOTIFICATION_ID     the id of a notification the submission declared (empty for the file's)
==================  ==========================================================================
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from engine.lifecycle.describe import describe
from engine.lifecycle.notifications import TEMPLATE_VARIABLES
from engine.lifecycle.records import Event, SubmissionCompleted
from engine.lifecycle.views import JobView, to_datetime

VARIABLES: tuple[str, ...] = TEMPLATE_VARIABLES
#: The labels of a job that say where its outputs go (Tapis's archive path and URL).
ARCHIVE_PATH_LABEL = "archive_path"
ARCHIVE_URL_LABEL = "archive_url"
#: The namespace of ``${JOB_UUID}``: uuid5 of ``<submission id>/<job id>`` in it.
JOB_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://joblog/jobs")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def iso(moment: datetime | None) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``, or ``""``."""
    if moment is None:
        return ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def describe_event(event: Event) -> str:
    """The event's history line (:func:`engine.lifecycle.describe.describe`)."""
    try:
        return describe(event)
    except TypeError:
        return event.name


def job_uuid(submission_id: str, job_id: str) -> str:
    """``${JOB_UUID}``: a UUID of the job, the same for each of its events."""
    return str(uuid.uuid5(JOB_UUID_NAMESPACE, f"{submission_id}/{job_id}"))


def job_url(api_url: str, submission_id: str, job_id: str) -> str:
    """``${JOB_URL}``: the job in the REST API (``joblog ui``), or ``""`` without its URL."""
    if not api_url or not job_id:
        return ""
    return (
        f"{api_url.rstrip('/')}/api/v1/jobs/{quote(submission_id, safe='')}/"
        f"{quote(job_id, safe='')}"
    )


def variables(
    event: Event, job: JobView | None, *, api_url: str = "", notification_id: str = ""
) -> dict[str, str]:
    """The value of every template variable for ``event``.

    Args:
        event: the event being notified.
        job: the event's job after the event (``None`` for a submission event).
        api_url: the base URL of the REST API (``${JOB_URL}``; empty: unknown).
        notification_id: the declared notification the message is for.
    """
    values = dict.fromkeys(VARIABLES, "")
    values.update(
        UUID=event.event_id,
        EVENT=event.name,
        EVENT_TIME=iso(to_datetime(event.timestamp)),
        EVENT_DESCRIPTION=describe_event(event),
        SUBMISSION_ID=event.submission_id,
        JOB_ID=event.job_id,
        JOB_REF=f"{event.submission_id}/{event.job_id}" if event.job_id else "",
        JOB_UUID=job_uuid(event.submission_id, event.job_id) if event.job_id else "",
        JOB_URL=job_url(api_url, event.submission_id, event.job_id),
        NOTIFICATION_ID=notification_id,
    )
    if isinstance(event.body, SubmissionCompleted):
        values["JOB_STATUS"] = str(event.body.status)
    if job is not None:
        values.update(
            JOB_NAME=job.display_name,
            JOB_TASK=job.task or "",
            JOB_QUEUE=job.queue,
            JOB_STATUS=str(job.status),
            JOB_ATTEMPT=str(job.attempt) if job.attempt else "",
            JOB_PROGRESS="" if job.progress is None else f"{job.progress:g}",
            JOB_STATUS_LINE=job.status_line or "",
            JOB_SUBMIT_TIME=iso(job.submitted_at),
            JOB_START_TIME=iso(job.run_at),
            JOB_END_TIME=iso(job.finished_at),
            JOB_ERROR=job.error if job.status.is_terminal and not job.status.is_success else "",
            JOB_SYSTEM=job.host or job.worker_id or job.queue,
            JOB_WORKER=job.worker_id,
        )
        labels = dict(job.labels)
        path = render(labels.get(ARCHIVE_PATH_LABEL, ""), values)
        url = render(labels.get(ARCHIVE_URL_LABEL, ""), values)
        values["JOB_ARCHIVE_PATH"] = path
        values["JOB_ARCHIVE_URL"] = url or (path if "://" in path else "")
    return values


def placeholders(template: str) -> list[str]:
    """The variable names a template uses, in order."""
    return _PLACEHOLDER.findall(template)


def unknown_placeholders(template: Any) -> list[str]:
    """The names in ``template`` (a string, or a list/mapping of them) that are not variables."""
    found: list[str] = []
    if isinstance(template, str):
        found = placeholders(template)
    elif isinstance(template, Mapping):
        for key, value in template.items():
            found += unknown_placeholders(key) + unknown_placeholders(value)
    elif isinstance(template, list | tuple):
        for item in template:
            found += unknown_placeholders(item)
    return [name for name in found if name not in VARIABLES]


def render(template: str, values: Mapping[str, str], *, url: bool = False) -> str:
    """Replaces every ``${NAME}`` by its value (percent-encoded when ``url``).

    Unknown names are left as they are; :func:`unknown_placeholders` catches them at load.
    """

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)
        return quote(values[name], safe="") if url else values[name]

    return _PLACEHOLDER.sub(value, template)


def render_structure(template: Any, values: Mapping[str, str]) -> Any:
    """Renders every string of a JSON-like structure (keys and values)."""
    if isinstance(template, str):
        return render(template, values)
    if isinstance(template, Mapping):
        return {
            render_structure(key, values): render_structure(item, values)
            for key, item in template.items()
        }
    if isinstance(template, list | tuple):
        return [render_structure(item, values) for item in template]
    return template
