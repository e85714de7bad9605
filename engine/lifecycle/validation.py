"""Checking a submission before it is accepted: ids, specs, limits, dependencies, cycles.

Also the graph walk that orders a submission's jobs for its first decisions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from engine.lifecycle.gates import spec_limit_problem
from engine.lifecycle.policy import DEFAULT_POLICY, MAX_IDEMPOTENCY_KEY_BYTES, Policy
from engine.lifecycle.records import (
    JobSpec,
    RejectionCode,
    SubmitJobs,
)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,199}$")
#: What a submission id (and a job id, a schedule id) looks like.
ID_PATTERN = _ID


_QUEUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def validate_submission(
    command: SubmitJobs, policy: Policy = DEFAULT_POLICY
) -> tuple[RejectionCode, str] | None:
    """Checks a submission; returns ``(code, reason)`` of the first problem, or ``None``."""
    jobs = command.jobs
    if not _ID.match(command.submission_id):
        return RejectionCode.INVALID_JOB_ID, (
            f"submission id {command.submission_id!r} must be 1-200 characters of "
            "letters, digits and ._:@+=- (no '/')"
        )
    if not jobs:
        return RejectionCode.EMPTY_SUBMISSION, "a submission needs at least one job"
    if len(jobs) > policy.max_jobs:
        return RejectionCode.TOO_MANY_JOBS, (
            f"{len(jobs)} jobs in one submission; the limit is {policy.max_jobs}"
        )
    ids: set[str] = set()
    for spec in jobs:
        if not _ID.match(spec.job_id):
            return RejectionCode.INVALID_JOB_ID, (
                f"job id {spec.job_id!r} must be 1-200 characters of letters, digits "
                "and ._:@+=- (no '/')"
            )
        if spec.job_id in ids:
            return RejectionCode.DUPLICATE_JOB_ID, f"job id {spec.job_id!r} appears twice"
        ids.add(spec.job_id)
    for spec in jobs:
        problem = _validate_job(spec, ids, policy)
        if problem is not None:
            return problem
    cycle = _find_cycle(jobs)
    if cycle:
        return RejectionCode.CYCLE, "dependency cycle: " + " -> ".join(cycle)
    return None


def _validate_job(spec: JobSpec, ids: set[str], policy: Policy) -> tuple[RejectionCode, str] | None:
    name = spec.job_id
    if spec.task is not None and spec.command is not None:
        return RejectionCode.TASK_AND_COMMAND, f"job {name!r} has both a task and a command"
    if not spec.task and not spec.command:
        return RejectionCode.NO_TASK, f"job {name!r} needs a task name or a command"
    if spec.command is not None and not spec.command[0]:
        return RejectionCode.NO_TASK, f"job {name!r} has an empty command"
    if not _QUEUE.match(spec.queue):
        return RejectionCode.INVALID_JOB_ID, (
            f"job {name!r}: queue {spec.queue!r} must be letters, digits and ._-"
        )
    if len(spec.args.encode()) > policy.max_args_bytes:
        return RejectionCode.ARGS_TOO_LARGE, (
            f"job {name!r}: arguments are {len(spec.args.encode())} bytes; the limit is "
            f"{policy.max_args_bytes} (pass a reference to the data instead)"
        )
    try:
        args = json.loads(spec.args)
    except ValueError as exc:
        return RejectionCode.BAD_ARGS, f"job {name!r}: arguments are not JSON ({exc})"
    if not isinstance(args, dict):
        return RejectionCode.BAD_ARGS, (
            f"job {name!r}: arguments must be a JSON object with 'args' and/or 'kwargs'"
        )
    retry = spec.retry
    if retry.max_attempts < 1:
        return RejectionCode.BAD_RETRY, f"job {name!r}: max_attempts must be at least 1"
    if retry.backoff_ms < 0 or retry.max_backoff_ms < 0:
        return RejectionCode.BAD_RETRY, f"job {name!r}: backoff must not be negative"
    if retry.backoff_multiplier < 1:
        return RejectionCode.BAD_RETRY, f"job {name!r}: backoff_multiplier must be >= 1"
    if not 0 <= retry.jitter <= 1:
        return RejectionCode.BAD_RETRY, f"job {name!r}: jitter must be between 0 and 1"
    key = spec.idempotency_key
    if key is not None and len(key.encode()) > MAX_IDEMPOTENCY_KEY_BYTES:
        return RejectionCode.BAD_IDEMPOTENCY_KEY, (
            f"job {name!r}: idempotency key is {len(key.encode())} bytes; the limit is "
            f"{MAX_IDEMPOTENCY_KEY_BYTES}"
        )
    if spec.timeout_ms < 0 or spec.queue_timeout_ms < 0:
        return RejectionCode.BAD_TIMEOUT, f"job {name!r}: timeouts must not be negative"
    if spec.not_before < 0:
        return RejectionCode.BAD_TIMEOUT, f"job {name!r}: not_before must not be negative"
    concurrency_key = spec.concurrency_key
    if concurrency_key is not None and len(concurrency_key.encode()) > MAX_IDEMPOTENCY_KEY_BYTES:
        return RejectionCode.BAD_LIMIT, (
            f"job {name!r}: concurrency key is {len(concurrency_key.encode())} bytes; the limit "
            f"is {MAX_IDEMPOTENCY_KEY_BYTES}"
        )
    problem = spec_limit_problem(spec)
    if problem is not None:
        return RejectionCode.BAD_LIMIT, problem
    for upstream in spec.depends_on:
        if upstream not in ids:
            return RejectionCode.UNKNOWN_DEPENDENCY, (
                f"job {name!r} depends on {upstream!r}, which is not in the submission"
            )
        if upstream == name:
            return RejectionCode.CYCLE, f"job {name!r} depends on itself"
    if spec.parent is not None:
        if spec.parent not in ids:
            return RejectionCode.UNKNOWN_PARENT, (
                f"job {name!r} is a sub-job of {spec.parent!r}, which is not in the submission"
            )
        if spec.parent == name:
            return RejectionCode.CYCLE, f"job {name!r} is its own parent"
    return None


def _edges(jobs: Iterable[JobSpec]) -> dict[str, list[str]]:
    """job -> what must finish before it (dependencies and sub-jobs), in submission order."""
    upstream: dict[str, list[str]] = {}
    for spec in jobs:
        upstream.setdefault(spec.job_id, []).extend(spec.depends_on)
        if spec.parent is not None:
            upstream.setdefault(spec.parent, []).append(spec.job_id)
    return upstream


def _find_cycle(jobs: tuple[JobSpec, ...]) -> list[str]:
    upstream = _edges(jobs)
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(upstream, white)
    for root in upstream:
        if color[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path = [root]
        color[root] = grey
        while stack:
            node, index = stack[-1]
            edges = upstream[node]
            if index < len(edges):
                stack[-1] = (node, index + 1)
                nxt = edges[index]
                if color[nxt] == grey:
                    return [*path[path.index(nxt) :], nxt]
                if color[nxt] == white:
                    color[nxt] = grey
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                color[node] = black
                stack.pop()
                path.pop()
    return []


def depth_first(jobs: tuple[JobSpec, ...]) -> list[str]:
    """Jobs in depth-first post-order: sub-jobs and dependencies before what waits on them."""
    upstream = _edges(jobs)
    seen: set[str] = set()
    order: list[str] = []
    for spec in jobs:
        if spec.job_id in seen:
            continue
        stack: list[tuple[str, int]] = [(spec.job_id, 0)]
        seen.add(spec.job_id)
        while stack:
            node, index = stack[-1]
            edges = upstream[node]
            if index < len(edges):
                stack[-1] = (node, index + 1)
                if edges[index] not in seen:
                    seen.add(edges[index])
                    stack.append((edges[index], 0))
            else:
                order.append(node)
                stack.pop()
    return order
