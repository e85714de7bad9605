"""The routes of joblog's REST API (``/api/v1``): reads, commands, streams, OpenAPI.

What Tapis users do with their jobs, on joblog's words:

* reads come from the DuckDB projection (:class:`~engine.ui.reads.ReadModel`): lists of jobs
  and submissions (filters, sort, key-paged), one job or submission, its status, its history
  (the ``describe`` lines), its output, workers and queues, the analytics views, the SQL box;
* commands go through the Python client (:class:`engine.api.Joblog`) and answer with the
  scheduler's decision (the :class:`~engine.client.CommandHandle`'s ``result``): ``200``
  (``201`` for a submission) when it took effect, ``409`` with ``code`` and ``reason`` when
  it was rejected, ``202`` when no decision came within ``wait_timeout`` (the command stays
  in Kafka and will be decided);
* streams are server-sent events from the ``events`` topic (:mod:`engine.ui.streams`).

Job URLs are stable: ``/api/v1/jobs/{submission_id}/{job_id}``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from engine.api import InvalidJob, Joblog, jobs_from_data
from engine.client import CommandHandle
from engine.errors import CommandRejectedError, DecisionTimeout, EngineBusy
from engine.lifecycle.records import CancelMode
from engine.ui.config import UiConfig
from engine.ui.http import (
    ApiError,
    EventStream,
    Param,
    Request,
    Response,
    Route,
    bad_request,
)
from engine.ui.reads import (
    ANALYTICS,
    JOB_SORTS,
    SUBMISSION_SORTS,
    JobFilter,
    ReadModel,
    parse_labels,
    parse_statuses,
    parse_time,
)
from engine.ui.streams import AsOf, EventTail, event_json, watch_messages

_MAX_ID = 256
_PAGING = (
    Param("limit", "rows per page (default 50, at most 500)", "integer"),
    Param("cursor", "the `next` of the previous page"),
    Param("order", "asc or desc (default desc)", enum=("asc", "desc")),
)
_WAIT = (
    Param("wait", "wait for the scheduler's decision (default true)", "boolean"),
    Param("wait_timeout", "seconds to wait for it (default 15, at most 60)", "number"),
)


class Api:
    """The API's handlers, on one client, one read model and one events tail.

    Args:
        config: the ui's settings and limits.
        client: the joblog client that sends commands (its settings name the cluster).
        stopping: set when the server stops (ends open streams).
    """

    def __init__(self, config: UiConfig, client: Joblog, stopping: threading.Event) -> None:
        self.config = config
        self.limits = config.limits
        self.client = client
        self.stopping = stopping
        self.reads = ReadModel(config.db_path, config.limits)
        self.tail = EventTail(client.settings, stopping)
        self.as_of = AsOf(client.settings, max_events=config.limits.asof_max_events)
        self._streams = threading.BoundedSemaphore(config.limits.streams)
        self._open = 0
        self._open_lock = threading.Lock()
        self._sql = threading.BoundedSemaphore(config.limits.sql_concurrency)

    @property
    def open_streams(self) -> int:
        """Event streams open now."""
        with self._open_lock:
            return self._open

    # ------------------------------------------------------------------ the route table

    def routes(self) -> list[Route]:
        """Every route of ``/api/v1`` (the OpenAPI document is made from this list)."""
        job = "/api/v1/jobs/{submission_id}/{job_id}"
        sub = "/api/v1/submissions/{submission_id}"
        job_filters = (
            Param("status", "job statuses (repeat or comma-separate)", repeat=True),
            Param("task", "task name (or a command's name)"),
            Param("queue", "worker queue"),
            Param("submission_id", "only this submission's jobs"),
            Param("label", "key=value the job's labels hold (repeatable)", repeat=True),
            Param("submitted_after", "ISO 8601 time or epoch ms (inclusive)"),
            Param("submitted_before", "ISO 8601 time or epoch ms (exclusive)"),
            Param("q", "substring of the job id, name or task"),
            Param("include_deleted", "list deleted jobs too", "boolean"),
        )
        r = Route
        return [
            r("GET", "/api/v1/health", self.health, "liveness of the ui", "meta", public=True),
            r(
                "GET",
                "/api/v1/jobs",
                self.list_jobs,
                "list jobs (filtered, sorted, key-paged)",
                query=(*job_filters, Param("sort", "sort column", enum=tuple(JOB_SORTS)), *_PAGING),
            ),
            r(
                "GET",
                "/api/v1/jobs/counts",
                self.job_counts,
                "jobs per status under the filters",
                query=job_filters,
            ),
            r("GET", job, self.show_job, "a job: its row, attempts and exceptions"),
            r("GET", f"{job}/status", self.job_status, "a job's status and progress"),
            r(
                "GET",
                f"{job}/history",
                self.job_history,
                "a job's history lines",
                query=(Param("limit", "most lines (default and limit 5000)", "integer"),),
            ),
            r(
                "GET",
                f"{job}/output",
                self.job_output,
                "a job's command output",
                query=(Param("stream", "stdout or stderr", enum=("stdout", "stderr")),),
            ),
            r(
                "GET",
                f"{job}/events",
                self.job_events,
                "a job's events, live (SSE)",
                query=(Param("from_start", "send the history first (default true)", "boolean"),),
                stream=True,
            ),
            r(
                "POST",
                f"{job}/cancel",
                self.cancel_job,
                "cancel a job (and what depends on it)",
                query=_WAIT,
                body="CancelBody",
            ),
            r(
                "POST",
                f"{job}/retry",
                self.retry_job,
                "run a job waiting for its retry now",
                query=_WAIT,
            ),
            r(
                "DELETE",
                job,
                self.delete_job,
                "delete a finished job (force: any)",
                query=(Param("force", "delete an unfinished job too", "boolean"), *_WAIT),
            ),
            r(
                "GET",
                "/api/v1/submissions",
                self.list_submissions,
                "list submissions",
                "submissions",
                query=(
                    Param("done", "only finished (true) or unfinished (false)", "boolean"),
                    Param("outcome", "COMPLETED, FAILED, CANCELED, ..."),
                    Param("submitted_after", "ISO 8601 time or epoch ms"),
                    Param("submitted_before", "ISO 8601 time or epoch ms"),
                    Param("sort", "sort column", enum=tuple(SUBMISSION_SORTS)),
                    *_PAGING,
                ),
            ),
            r(
                "POST",
                "/api/v1/submissions",
                self.submit,
                "submit jobs (a graph and/or tree)",
                "submissions",
                query=_WAIT,
                body="SubmitBody",
            ),
            r(
                "GET",
                sub,
                self.show_submission,
                "a submission, its jobs and attempts",
                "submissions",
            ),
            r(
                "GET",
                f"{sub}/status",
                self.submission_status,
                "a submission's counts",
                "submissions",
            ),
            r(
                "GET",
                f"{sub}/history",
                self.submission_history,
                "a submission's history lines",
                "submissions",
                query=(Param("limit", "most lines", "integer"),),
            ),
            r(
                "GET",
                f"{sub}/output",
                self.submission_output,
                "its jobs' command output",
                "submissions",
                query=(Param("stream", "stdout or stderr"),),
            ),
            r(
                "GET",
                f"{sub}/events",
                self.submission_events,
                "its events, live (SSE)",
                "submissions",
                query=(Param("from_start", "history first", "boolean"),),
                stream=True,
            ),
            r(
                "GET",
                f"{sub}/as-of",
                self.submission_as_of,
                "the submission as it was after an event (time travel)",
                "submissions",
                query=(
                    Param("seq", "the last event to fold in", "integer"),
                    Param("at", "or: a time (ISO 8601 or epoch ms)"),
                ),
            ),
            r(
                "POST",
                f"{sub}/cancel",
                self.cancel_submission,
                "cancel every unfinished job",
                "submissions",
                query=_WAIT,
                body="CancelBody",
            ),
            r(
                "DELETE",
                sub,
                self.delete_submission,
                "delete a finished submission",
                "submissions",
                query=(Param("force", "delete unfinished jobs too", "boolean"), *_WAIT),
            ),
            r(
                "GET",
                "/api/v1/events",
                self.all_events,
                "status changes of every job, live from the events topic (SSE)",
                "streams",
                stream=True,
            ),
            r(
                "GET",
                "/api/v1/workers",
                self.workers,
                "workers (alive, load) and queues",
                "workers",
            ),
            r("GET", "/api/v1/analytics", self.analytics_index, "the analytics views", "analytics"),
            r(
                "GET",
                "/api/v1/analytics/{view}",
                self.analytics,
                "the rows of one view",
                "analytics",
            ),
            r(
                "POST",
                "/api/v1/sql",
                self.sql,
                "read-only SQL on the projection (limited)",
                "analytics",
                body="SqlBody",
            ),
        ]

    # ------------------------------------------------------------------ meta

    def health(self, request: Request) -> Response:
        return Response({"ok": True, "db": str(self.config.db_path)})

    # ------------------------------------------------------------------ reads: jobs

    def _filters(self, request: Request) -> JobFilter:
        return JobFilter(
            statuses=parse_statuses(request.args("status")),
            task=request.arg("task") or None,
            queue=request.arg("queue") or None,
            submission_id=request.arg("submission_id") or None,
            labels=parse_labels(request.query.get("label", [])),
            submitted_after=parse_time("submitted_after", request.arg("submitted_after")),
            submitted_before=parse_time("submitted_before", request.arg("submitted_before")),
            include_deleted=request.bool_arg("include_deleted"),
            search=request.arg("q") or None,
        )

    def _limit(self, request: Request) -> int:
        return request.int_arg(
            "limit", self.limits.page_size, low=1, high=self.limits.max_page_size
        )

    def _descending(self, request: Request) -> bool:
        order = (request.arg("order") or "desc").lower()
        if order not in ("asc", "desc"):
            raise bad_request(f"order={order!r}: asc or desc")
        return order == "desc"

    def list_jobs(self, request: Request) -> Response:
        page = self.reads.jobs(
            self._filters(request),
            sort=request.arg("sort") or "submitted_at",
            descending=self._descending(request),
            limit=self._limit(request),
            cursor=request.arg("cursor") or None,
        )
        return Response(page.json("jobs"))

    def job_counts(self, request: Request) -> Response:
        return Response({"counts": self.reads.status_counts(self._filters(request))})

    def show_job(self, request: Request) -> Response:
        sid, jid = _ids(request)
        return Response(self.reads.job(sid, jid))

    def job_status(self, request: Request) -> Response:
        sid, jid = _ids(request)
        return Response(self.reads.job_status(sid, jid))

    def job_history(self, request: Request) -> Response:
        sid, jid = _ids(request)
        limit = request.int_arg(
            "limit", self.limits.history_max_rows, low=1, high=self.limits.history_max_rows
        )
        return Response(self.reads.history(sid, jid, limit=limit))

    def job_output(self, request: Request) -> Response:
        sid, jid = _ids(request)
        return Response(self.reads.output(sid, jid, _stream_name(request)))

    # ------------------------------------------------------------------ reads: submissions

    def list_submissions(self, request: Request) -> Response:
        done = request.arg("done")
        page = self.reads.submissions(
            done=None if done in (None, "") else request.bool_arg("done"),
            outcome=request.arg("outcome") or None,
            submitted_after=parse_time("submitted_after", request.arg("submitted_after")),
            submitted_before=parse_time("submitted_before", request.arg("submitted_before")),
            sort=request.arg("sort") or "submitted_at",
            descending=self._descending(request),
            limit=self._limit(request),
            cursor=request.arg("cursor") or None,
        )
        return Response(page.json("submissions"))

    def show_submission(self, request: Request) -> Response:
        return Response(self.reads.submission(_sid(request)))

    def submission_status(self, request: Request) -> Response:
        return Response(self.reads.submission_status(_sid(request)))

    def submission_history(self, request: Request) -> Response:
        limit = request.int_arg(
            "limit", self.limits.history_max_rows, low=1, high=self.limits.history_max_rows
        )
        return Response(self.reads.history(_sid(request), None, limit=limit))

    def submission_output(self, request: Request) -> Response:
        return Response(self.reads.output(_sid(request), None, _stream_name(request)))

    def submission_as_of(self, request: Request) -> Response:
        seq_raw = request.arg("seq")
        at = parse_time("at", request.arg("at"))
        if seq_raw in (None, "") and at is None:
            raise bad_request("give seq (an event's sequence number) or at (a time)")
        seq = None if seq_raw in (None, "") else request.int_arg("seq", 0, low=0, high=2**62)
        return Response(self.as_of.at(_sid(request), seq=seq, at=at))

    # ------------------------------------------------------------------ reads: the rest

    def workers(self, request: Request) -> Response:
        return Response(self.reads.workers())

    def analytics_index(self, request: Request) -> Response:
        return Response(
            {"views": [{"view": name, "description": d} for name, (d, _) in ANALYTICS.items()]}
        )

    def analytics(self, request: Request) -> Response:
        return Response(self.reads.analytics(request.params["view"]))

    def sql(self, request: Request) -> Response:
        body = request.json()
        text = body.get("sql")
        params = body.get("params") or []
        if not isinstance(text, str) or not isinstance(params, list):
            raise bad_request('send {"sql": "SELECT ...", "params": [...]}')
        if not self._sql.acquire(blocking=False):
            raise ApiError(
                429,
                "busy",
                f"{self.limits.sql_concurrency} SQL box queries are running; try again",
            )
        try:
            return Response(self.reads.sql(text, params))
        finally:
            self._sql.release()

    # ------------------------------------------------------------------ commands

    def _decision(self, request: Request, handle: CommandHandle, created: bool = False) -> Response:
        wait = request.bool_arg("wait", True)
        timeout = _seconds(request, "wait_timeout", 15.0, self.limits.decision_timeout_s)
        command = handle.command
        out: dict[str, Any] = {
            "command": type(command).__name__,
            "command_id": handle.command_id,
            "submission_id": handle.submission_id,
            "job_id": handle.job_id,
            "decided": False,
            "accepted": None,
        }
        if not wait:
            return Response(out, status=202)
        try:
            event = handle.result(timeout)
        except CommandRejectedError as exc:
            out.update(decided=True, accepted=False, code=exc.code, reason=exc.reason)
            return Response(out, status=409)
        except EngineBusy as exc:
            # admission control: not taken now, nothing kept; the id stays free to send again
            out.update(
                decided=True,
                accepted=False,
                throttled=True,
                code=exc.cause,
                reason=exc.detail,
                retry_after_ms=int(exc.retry_after * 1000),
            )
            retry = str(max(1, math.ceil(exc.retry_after)))
            return Response(out, status=503, headers={"Retry-After": retry})
        except DecisionTimeout:
            out["reason"] = (
                f"no decision within {timeout:g} s: the command is in Kafka and will be "
                "decided once a scheduler reads it"
            )
            return Response(out, status=202)
        out.update(decided=True, accepted=True, event=event_json(event))
        return Response(out, status=201 if created else 200)

    def submit(self, request: Request) -> Response:
        body = request.json()
        submission_id = body.pop("submission_id", None)
        if submission_id is not None and (
            not isinstance(submission_id, str) or not 0 < len(submission_id) <= _MAX_ID
        ):
            raise bad_request(f"submission_id must be a string of 1..{_MAX_ID} characters")
        try:
            jobs, labels = jobs_from_data(body)
        except InvalidJob as exc:
            raise bad_request(str(exc), "invalid_job") from None
        try:
            submission = self.client.submit(*jobs, labels=labels, submission_id=submission_id)
        except InvalidJob as exc:
            raise bad_request(str(exc), "invalid_job") from None
        except (TypeError, ValueError) as exc:  # a field of the wrong type in a job
            raise bad_request(f"invalid job: {exc}", "invalid_job") from None
        assert submission.command is not None
        response = self._decision(request, submission.command, created=True)
        response.body["jobs"] = list(submission.job_ids)
        response.body["url"] = f"/api/v1/submissions/{submission.id}"
        return response

    def _cancel(self, request: Request, sid: str, jid: str | None) -> Response:
        body = request.json()
        mode = str(body.get("mode", "kill"))
        try:
            cancel_mode = CancelMode(mode.upper())
        except ValueError:
            modes = ", ".join(m.value.lower() for m in CancelMode)
            raise bad_request(f"mode={mode!r}: one of {modes}") from None
        reason = body.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 1000:
            raise bad_request("reason must be a string of at most 1000 characters")
        return self._decision(
            request, self.client.cancel(sid, jid, mode=cancel_mode, reason=reason, wait=False)
        )

    def cancel_job(self, request: Request) -> Response:
        sid, jid = _ids(request)
        return self._cancel(request, sid, jid)

    def cancel_submission(self, request: Request) -> Response:
        return self._cancel(request, _sid(request), None)

    def retry_job(self, request: Request) -> Response:
        sid, jid = _ids(request)
        return self._decision(request, self.client.retry(sid, jid, wait=False))

    def delete_job(self, request: Request) -> Response:
        sid, jid = _ids(request)
        force = request.bool_arg("force")
        return self._decision(request, self.client.delete(sid, jid, force=force, wait=False))

    def delete_submission(self, request: Request) -> Response:
        force = request.bool_arg("force")
        return self._decision(
            request, self.client.delete(_sid(request), None, force=force, wait=False)
        )

    # ------------------------------------------------------------------ streams

    def _stream(self, open_stream: Callable[[], EventStream]) -> EventStream:
        if not self._streams.acquire(blocking=False):
            raise ApiError(
                429, "busy", f"{self.limits.streams} event streams are open, the limit; close one"
            )
        try:
            stream = open_stream()
        except BaseException:
            self._streams.release()
            raise
        inner = stream.close
        with self._open_lock:
            self._open += 1

        def close() -> None:
            try:
                inner()
            finally:
                with self._open_lock:
                    self._open -= 1
                self._streams.release()

        return EventStream(stream.messages, close)

    def _watch(self, request: Request, sid: str, jid: str | None) -> EventStream:
        from_start = request.bool_arg("from_start", True)

        def open_stream() -> EventStream:
            messages, stop = watch_messages(
                self.client.settings,
                sid,
                jid,
                stopping=self.stopping,
                keepalive_s=self.limits.keepalive_s,
                from_start=from_start,
            )
            return EventStream(messages, stop.set)

        return self._stream(open_stream)

    def job_events(self, request: Request) -> EventStream:
        sid, jid = _ids(request)
        return self._watch(request, sid, jid)

    def submission_events(self, request: Request) -> EventStream:
        return self._watch(request, _sid(request), None)

    def all_events(self, request: Request) -> EventStream:
        def open_stream() -> EventStream:
            messages, subscriber = self.tail.messages(self.limits.keepalive_s)
            return EventStream(messages, lambda: self.tail.unsubscribe(subscriber))

        return self._stream(open_stream)


def _sid(request: Request) -> str:
    sid = request.params["submission_id"]
    if len(sid) > _MAX_ID:
        raise bad_request(f"a submission id has at most {_MAX_ID} characters")
    return sid


def _ids(request: Request) -> tuple[str, str]:
    jid = request.params["job_id"]
    if len(jid) > _MAX_ID:
        raise bad_request(f"a job id has at most {_MAX_ID} characters")
    return _sid(request), jid


def _stream_name(request: Request) -> str | None:
    stream = request.arg("stream") or None
    if stream not in (None, "stdout", "stderr"):
        raise bad_request(f"stream={stream!r}: stdout or stderr")
    return stream


def _seconds(request: Request, name: str, default: float, high: float) -> float:
    raw = request.arg(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise bad_request(f"{name}={raw!r} is not a number of seconds") from None
    if not 0 < value <= high:
        raise bad_request(f"{name}={value:g} is out of range: more than 0, at most {high:g}")
    return value
