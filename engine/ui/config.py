"""Settings and designed limits of ``joblog ui``.

Environment variables:
    JOBLOG_UI_HOST: the address to bind (default ``127.0.0.1``).
    JOBLOG_UI_PORT: the port (default ``8765``; ``0`` picks a free one).
    JOBLOG_UI_TOKEN: the bearer token every API request must carry; when unset, a random
        one is generated at start and printed with the dashboard's URL.
    JOBLOG_PROJECTION_DB: the projection the read side asks (the projector's endpoint
        next to it, else the file read-only).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine.api import default_db_path
from engine.errors import ConfigurationError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


@dataclass(frozen=True)
class UiLimits:
    """The designed limits of the API; each one is named in the error that enforces it.

    Attributes:
        page_size: rows of a list page when the request names none.
        max_page_size: the most rows one list page returns (``limit`` above it is a 400).
        max_body_bytes: the largest request body (a submission included; the client's own
            limits of :mod:`engine.limits` are checked after it).
        sql_max_rows: rows the SQL box returns at most (the result says ``truncated``).
        sql_max_chars: the longest SQL text the SQL box takes.
        sql_timeout_s: how long the SQL box waits for the projection's answer.
        sql_concurrency: SQL box queries running at once; one more is a 429.
        output_max_bytes: characters of command output one request returns at most.
        history_max_rows: history lines one request returns at most.
        streams: event streams open at once; one more is a 429.
        keepalive_s: seconds between comment lines on a quiet event stream.
        asof_max_events: the most events of a submission the time-travel fold reads.
        decision_timeout_s: the longest a command request waits for the scheduler.
    """

    page_size: int = 50
    max_page_size: int = 500
    max_body_bytes: int = 1 << 20
    sql_max_rows: int = 1_000
    sql_max_chars: int = 16_384
    sql_timeout_s: float = 10.0
    sql_concurrency: int = 2
    output_max_bytes: int = 1 << 20
    history_max_rows: int = 5_000
    streams: int = 64
    keepalive_s: float = 15.0
    asof_max_events: int = 200_000
    decision_timeout_s: float = 60.0


@dataclass(frozen=True)
class UiConfig:
    """Where ``joblog ui`` listens, what it reads, and the token it wants.

    Attributes:
        host / port: the address to bind.
        token: the bearer token of every API request.
        token_generated: the token was made at start (not configured), so it is printed.
        db_path: the projection file (or the projector serving it).
        limits: the designed limits of the API.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    token_generated: bool = True
    db_path: Path = field(default_factory=default_db_path)
    limits: UiLimits = field(default_factory=UiLimits)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> UiConfig:
        """Reads ``JOBLOG_UI_*`` and ``JOBLOG_PROJECTION_DB``; ``overrides`` win (``None`` is
        ignored).

        Raises:
            ConfigurationError: the port is not an integer in 0..65535, or the token is
                shorter than 16 characters.
        """
        env = os.environ if env is None else env
        raw_port = env.get("JOBLOG_UI_PORT", str(DEFAULT_PORT))
        try:
            port = int(raw_port)
        except ValueError:
            raise ConfigurationError(f"JOBLOG_UI_PORT={raw_port!r} is not an integer") from None
        token = env.get("JOBLOG_UI_TOKEN", "")
        values: dict[str, object] = {
            "host": env.get("JOBLOG_UI_HOST", DEFAULT_HOST),
            "port": port,
            "db_path": Path(env.get("JOBLOG_PROJECTION_DB", str(default_db_path()))),
        }
        if token:
            values["token"] = token
            values["token_generated"] = False
        values.update({key: value for key, value in overrides.items() if value is not None})
        if "token" in overrides and overrides["token"] is not None:
            values["token_generated"] = False
        config = cls(**values)  # type: ignore[arg-type]
        if not 0 <= config.port <= 65535:
            raise ConfigurationError(f"JOBLOG_UI_PORT={config.port} is not a port (0..65535)")
        if len(config.token) < 16:
            raise ConfigurationError(
                "JOBLOG_UI_TOKEN must be at least 16 characters; leave it unset to have one "
                "generated"
            )
        return config
