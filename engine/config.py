"""Settings shared by every joblog process, read from the environment or given explicitly.

Environment variables:
    JOBLOG_BOOTSTRAP_SERVERS: Kafka bootstrap servers (``host:port,...``).
    JOBLOG_TOPIC_PREFIX: prefix of every topic name (default ``joblog.``).
    JOBLOG_PARTITIONS: partitions of the co-partitioned topics when joblog creates them.
    JOBLOG_DISPATCH_PARTITIONS: partitions of a queue's ``dispatch.<queue>`` topic when
        joblog creates it (default: JOBLOG_PARTITIONS); a queue's group takes work with at
        most that many workers at once (``joblog queues grow`` adds partitions later).
    JOBLOG_REPLICATION_FACTOR: replication factor of the topics joblog creates.
    JOBLOG_KAFKA_<SETTING>: any librdkafka setting passed through to every client, with
        ``_`` standing for ``.``; e.g. ``JOBLOG_KAFKA_SECURITY_PROTOCOL=SASL_SSL``,
        ``JOBLOG_KAFKA_SASL_MECHANISMS=PLAIN``.
    JOBLOG_MAX_*: the designed size limits (:mod:`engine.limits`).
    JOBLOG_SCHEMA_REGISTRY_URL: a schema registry speaking the Confluent API; when set,
        records are written in the Confluent wire format (docs/operations.md, "Schema
        registry"). With it: ``JOBLOG_SCHEMA_REGISTRY_BASIC_AUTH`` (``user:password``),
        ``JOBLOG_SCHEMA_REGISTRY_TOKEN`` (a bearer token), ``JOBLOG_SCHEMA_REGISTRY_TIMEOUT``
        (seconds per HTTP call, default 5) and ``JOBLOG_SCHEMA_REGISTRY_COMPATIBILITY`` (the
        level set on a subject that has none, default ``BACKWARD``).

``joblog ui`` reads its own (``JOBLOG_UI_HOST``, ``JOBLOG_UI_PORT``, ``JOBLOG_UI_TOKEN``) in
:mod:`engine.ui.config`, the notifier its webhook allow-list (``JOBLOG_WEBHOOK_ALLOW``) in
:mod:`engine.notify.egress`. The ACLs each service's principal needs: :mod:`engine.acls`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from engine.errors import ConfigurationError
from engine.limits import Limits
from engine.logs import kafka_log_settings

DEFAULT_PREFIX = "joblog."
_PASSTHROUGH = "JOBLOG_KAFKA_"
#: The compatibility levels of the Confluent schema registry API.
COMPATIBILITY_LEVELS = (
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
)


@dataclass(frozen=True)
class RegistrySettings:
    """Where the schema registry is, and how joblog talks to it.

    Attributes:
        url: the registry's base URL (for Apicurio, its ``/apis/ccompat/v7``).
        basic_auth: ``user:password`` for HTTP basic authentication.
        token: a bearer token (instead of ``basic_auth``).
        timeout_s: the deadline of each HTTP call, in seconds.
        compatibility: the level joblog sets on a subject that has none of its own.
    """

    url: str
    basic_auth: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    timeout_s: float = 5.0
    compatibility: str = "BACKWARD"

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"JOBLOG_SCHEMA_REGISTRY_URL={self.url!r} must be an http:// or https:// URL"
            )
        if self.basic_auth is not None and ":" not in self.basic_auth:
            raise ConfigurationError("JOBLOG_SCHEMA_REGISTRY_BASIC_AUTH must be user:password")
        if self.basic_auth is not None and self.token is not None:
            raise ConfigurationError(
                "set JOBLOG_SCHEMA_REGISTRY_BASIC_AUTH or JOBLOG_SCHEMA_REGISTRY_TOKEN, not both"
            )
        if not self.timeout_s > 0:
            raise ConfigurationError(
                f"JOBLOG_SCHEMA_REGISTRY_TIMEOUT={self.timeout_s!r} must be a positive number"
            )
        if self.compatibility not in COMPATIBILITY_LEVELS:
            raise ConfigurationError(
                f"JOBLOG_SCHEMA_REGISTRY_COMPATIBILITY={self.compatibility!r} is not one of "
                f"{', '.join(COMPATIBILITY_LEVELS)}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RegistrySettings | None:
        """The registry settings of ``JOBLOG_SCHEMA_REGISTRY_*``, ``None`` without a URL.

        Raises:
            ConfigurationError: a variable is malformed.
        """
        url = env.get("JOBLOG_SCHEMA_REGISTRY_URL", "").strip()
        if not url:
            return None
        raw_timeout = env.get("JOBLOG_SCHEMA_REGISTRY_TIMEOUT", "5")
        try:
            timeout = float(raw_timeout)
        except ValueError:
            raise ConfigurationError(
                f"JOBLOG_SCHEMA_REGISTRY_TIMEOUT={raw_timeout!r} is not a number"
            ) from None
        return cls(
            url=url.rstrip("/"),
            basic_auth=env.get("JOBLOG_SCHEMA_REGISTRY_BASIC_AUTH") or None,
            token=env.get("JOBLOG_SCHEMA_REGISTRY_TOKEN") or None,
            timeout_s=timeout,
            compatibility=env.get("JOBLOG_SCHEMA_REGISTRY_COMPATIBILITY", "BACKWARD").upper(),
        )


@dataclass(frozen=True)
class Settings:
    """Where the cluster is and how joblog names and sizes its topics.

    Attributes:
        bootstrap_servers: Kafka bootstrap servers.
        topic_prefix: prefix of every topic name.
        partitions: partition count of commands, reports, events and state.
        dispatch_partitions: partition count of a new ``dispatch.<queue>`` topic (``None``:
            ``partitions``).
        replication_factor: replication factor of the topics joblog creates.
        kafka: extra librdkafka settings given to every producer, consumer and admin client.
        limits: the designed size limits (records, submissions, arguments, results, ...).
        schema_registry: the schema registry records are framed for, ``None`` for the
            single-object encoding.
    """

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = DEFAULT_PREFIX
    partitions: int = 6
    dispatch_partitions: int | None = None
    replication_factor: int = 1
    kafka: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    schema_registry: RegistrySettings | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Builds settings from ``JOBLOG_*`` environment variables.

        Args:
            env: the environment to read (``os.environ`` when omitted).
            **overrides: fields that win over the environment (``None`` values are ignored).

        Raises:
            ConfigurationError: a numeric variable is not a positive integer, or a
                ``JOBLOG_SCHEMA_REGISTRY_*`` variable is malformed.
        """
        env = os.environ if env is None else env
        passthrough = {
            key[len(_PASSTHROUGH) :].lower().replace("_", "."): value
            for key, value in env.items()
            if key.startswith(_PASSTHROUGH)
        }
        settings = cls(
            bootstrap_servers=env.get("JOBLOG_BOOTSTRAP_SERVERS", cls.bootstrap_servers),
            topic_prefix=env.get("JOBLOG_TOPIC_PREFIX", DEFAULT_PREFIX),
            partitions=_positive_int(env, "JOBLOG_PARTITIONS", cls.partitions),
            dispatch_partitions=(
                _positive_int(env, "JOBLOG_DISPATCH_PARTITIONS", 1)
                if "JOBLOG_DISPATCH_PARTITIONS" in env
                else None
            ),
            replication_factor=_positive_int(
                env, "JOBLOG_REPLICATION_FACTOR", cls.replication_factor
            ),
            kafka=passthrough,
            limits=Limits.from_env(env),
            schema_registry=RegistrySettings.from_env(env),
        )
        given = {key: value for key, value in overrides.items() if value is not None}
        return replace(settings, **given)  # type: ignore[arg-type]

    def producer_config(self, **extra: object) -> dict[str, object]:
        """The configuration of a producer of keyed joblog records.

        Records are partitioned with murmur2, the Java client's default, so that a command
        produced by any Kafka client and the reports of its jobs land in the same partition
        of the co-partitioned topics as the scheduler expects.
        """
        return self.client_config(
            **{
                "partitioner": "murmur2_random",
                "message.max.bytes": self.limits.producer_message_max_bytes(),
                **extra,
            }
        )

    def client_config(self, **extra: object) -> dict[str, object]:
        """The librdkafka configuration for a client: bootstrap, passthrough, then ``extra``.

        librdkafka's log lines and client errors go to Python logging (``joblog.kafka``),
        similar ones held back with backoff, instead of to stderr.
        """
        config: dict[str, object] = {"bootstrap.servers": self.bootstrap_servers}
        config.update(kafka_log_settings())
        config.update(self.kafka)
        config.update(extra)
        return config


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not an integer") from None
    if value < 1:
        raise ConfigurationError(f"{name}={raw!r} must be at least 1")
    return value
