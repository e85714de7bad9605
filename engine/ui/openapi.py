"""The OpenAPI 3.1 document of joblog's REST API, made from the route table itself.

Every :class:`~engine.ui.http.Route` becomes one operation (its path parameters, its query
parameters, its body and its answers), so the document cannot drift from what the server
answers; the bodies' schemas are written out here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.ui.http import Route

_ERROR = {"$ref": "#/components/schemas/Error"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "code"],
        "properties": {
            "error": {"type": "string", "description": "what went wrong and what to do"},
            "code": {
                "type": "string",
                "description": "bad_request, not_found, unauthorized, "
                "limit_exceeded, query_error, busy, projection_unavailable, ...",
            },
        },
    },
    "Decision": {
        "type": "object",
        "description": "the scheduler's decision on a command",
        "properties": {
            "command": {"type": "string"},
            "command_id": {"type": "string"},
            "submission_id": {"type": "string"},
            "job_id": {"type": ["string", "null"]},
            "decided": {"type": "boolean"},
            "accepted": {"type": ["boolean", "null"]},
            "event": {"type": "object", "description": "the event that shows it took effect"},
            "code": {"type": "string", "description": "why it was rejected (or throttled)"},
            "reason": {"type": "string"},
            "throttled": {
                "type": "boolean",
                "description": "a submission the engine was too busy to take now",
            },
            "retry_after_ms": {"type": "integer", "description": "when to send it again"},
        },
    },
    "SubmitBody": {
        "type": "object",
        "description": "a submission file's content as JSON: jobs (each: id, task or "
        "command, args, kwargs, depends_on, children, queue, retries, retry_backoff, "
        "retry_on, timeout, queue_timeout, idempotency_key, priority, labels, env, cwd), "
        "labels, and optionally the submission_id",
        "required": ["jobs"],
        "properties": {
            "jobs": {"type": "array", "items": {"type": "object"}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "submission_id": {"type": "string"},
        },
    },
    "CancelBody": {
        "type": "object",
        "properties": {
            "mode": {
                "enum": ["kill", "finish"],
                "description": "what happens to a RUNNING "
                "job: killed (default) or left to finish while its dependents are "
                "abandoned",
            },
            "reason": {"type": "string", "maxLength": 1000},
        },
    },
    "SqlBody": {
        "type": "object",
        "required": ["sql"],
        "properties": {
            "sql": {"type": "string", "maxLength": 16384},
            "params": {"type": "array"},
        },
    },
}


def openapi(routes: Sequence[Route], *, version: str) -> dict[str, Any]:
    """The OpenAPI document of ``routes``."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in route.path_params
        ]
        for param in route.query:
            schema: dict[str, Any] = {"type": param.type}
            if param.enum:
                schema["enum"] = list(param.enum)
            if param.repeat:
                schema = {"type": "array", "items": schema}
            parameters.append(
                {
                    "name": param.name,
                    "in": "query",
                    "description": param.description,
                    "schema": schema,
                    **({"explode": True} if param.repeat else {}),
                }
            )
        operation: dict[str, Any] = {
            "summary": route.summary,
            "tags": [route.tag],
            "operationId": f"{route.method.lower()}_{route.handler.__name__}",
            "parameters": parameters,
            "responses": _responses(route),
        }
        if route.public:
            operation["security"] = []
        if route.body:
            operation["requestBody"] = {
                "required": route.body != "CancelBody",
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{route.body}"}}
                },
            }
        paths.setdefault(route.pattern, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "joblog",
            "version": version,
            "description": "joblog's REST API: jobs and submissions from the DuckDB "
            "projection, commands answered with the scheduler's decision, live events from "
            "the events topic as server-sent events. docs/ui.md describes it.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "JOBLOG_UI_TOKEN (printed by `joblog ui` when generated); "
                    "event streams also take ?access_token=",
                }
            },
        },
    }


def _responses(route: Route) -> dict[str, Any]:
    errors = {
        "400": {"description": "bad input", "content": _json(_ERROR)},
        "401": {"description": "missing or wrong token", "content": _json(_ERROR)},
        "404": {"description": "not found", "content": _json(_ERROR)},
        "503": {
            "description": "Kafka or the projection cannot answer now",
            "content": _json(_ERROR),
        },
    }
    if route.stream:
        ok = {
            "200": {
                "description": "server-sent events (event: event | live | end | change | "
                "resync | error)",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            "429": {"description": "too many open streams", "content": _json(_ERROR)},
        }
    elif route.method in ("POST", "DELETE") and route.body != "SqlBody":
        decision = _json({"$ref": "#/components/schemas/Decision"})
        ok = {
            "200": {"description": "accepted by the scheduler", "content": decision},
            "201": {"description": "submission accepted", "content": decision},
            "202": {"description": "sent; no decision yet", "content": decision},
            "409": {"description": "rejected by the scheduler (code, reason)", "content": decision},
            "503": {
                "description": "a submission the engine is too busy to take now (throttled, "
                "code = cause, retry_after_ms; a Retry-After header): send it again later",
                "content": decision,
            },
        }
    else:
        ok = {"200": {"description": "OK", "content": _json({"type": "object"})}}
    return {**ok, **errors}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}
