"""Producing commands: submit, cancel, retry and delete jobs.

Any Kafka client in any language can do the same with the schemas in ``schemas/``: produce a
``Command`` record (Avro single-object encoding) to ``<prefix>commands`` keyed by the
submission id, partitioned with murmur2 (the Java client's default).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message, Producer

from engine import codec
from engine.clock import now_ms
from engine.config import Settings
from engine.errors import JoblogError
from engine.lifecycle.records import (
    CancelJobs,
    CancelMode,
    Command,
    DeleteJobs,
    JobSpec,
    RetryJob,
    SubmitJobs,
)
from engine.topics import Topics


class CommandNotSent(JoblogError):
    """The broker did not acknowledge a command."""


def new_id(prefix: str = "") -> str:
    """A fresh random id (uuid4 hex), optionally prefixed."""
    return f"{prefix}{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Sent:
    """A command the broker acknowledged."""

    command_id: str
    submission_id: str
    partition: int
    offset: int


class CommandProducer:
    """Sends commands to the ``commands`` topic with an idempotent producer.

    Args:
        settings: cluster and topic settings.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self._producer = Producer(
            settings.producer_config(**{"enable.idempotence": True, "linger.ms": 2})
        )

    def send(self, command: Command, *, wait: bool = True, timeout: float = 30.0) -> Sent | None:
        """Produces one command keyed by its submission id.

        Args:
            command: the command.
            wait: block until the broker acknowledged it.
            timeout: longest wait for the acknowledgement, in seconds.

        Returns:
            Where the command was written, or ``None`` when not waiting.

        Raises:
            CommandNotSent: the broker refused it or did not answer in time.
        """
        outcome: list[Sent | KafkaError] = []

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                outcome.append(error)
            else:
                outcome.append(
                    Sent(
                        command.command_id,
                        command.submission_id,
                        message.partition() or 0,
                        message.offset() or 0,
                    )
                )

        self._producer.produce(
            self.topics.commands,
            key=command.submission_id.encode(),
            value=codec.encode_command(command),
            on_delivery=delivered,
        )
        if not wait:
            self._producer.poll(0)
            return None
        self._producer.flush(timeout)
        if not outcome:
            raise CommandNotSent(
                f"no acknowledgement for command {command.command_id} within {timeout}s; "
                f"is Kafka reachable at {self.settings.bootstrap_servers}?"
            )
        result = outcome[0]
        if isinstance(result, KafkaError):
            raise CommandNotSent(f"command {command.command_id} was refused: {result.str()}")
        return result

    def flush(self, timeout: float = 30.0) -> int:
        """Waits for every command sent without waiting; returns how many are still queued."""
        return int(self._producer.flush(timeout))

    def submit(
        self,
        jobs: JobSpec | Sequence[JobSpec],
        *,
        submission_id: str | None = None,
        submitted_by: str = "",
        labels: Iterable[tuple[str, str]] = (),
        wait: bool = True,
    ) -> SubmitJobs:
        """Submits one job, a graph or a tree of jobs as one submission; returns the command."""
        specs = (jobs,) if isinstance(jobs, JobSpec) else tuple(jobs)
        command = SubmitJobs(
            command_id=new_id("c-"),
            submission_id=submission_id or new_id("s-"),
            jobs=specs,
            submitted_by=submitted_by,
            labels=tuple(labels),
            issued_at=now_ms(),
        )
        self.send(command, wait=wait)
        return command

    def cancel(
        self,
        submission_id: str,
        job_id: str | None = None,
        *,
        mode: CancelMode = CancelMode.KILL,
        reason: str = "",
        requested_by: str = "",
        wait: bool = True,
    ) -> CancelJobs:
        """Cancels a job (and its sub-jobs) or every unfinished job of a submission."""
        command = CancelJobs(
            command_id=new_id("c-"),
            submission_id=submission_id,
            job_id=job_id,
            mode=mode,
            reason=reason,
            requested_by=requested_by,
            issued_at=now_ms(),
        )
        self.send(command, wait=wait)
        return command

    def retry(self, submission_id: str, job_id: str, *, wait: bool = True) -> RetryJob:
        """Runs a job that waits for its retry backoff now."""
        command = RetryJob(
            command_id=new_id("c-"),
            submission_id=submission_id,
            job_id=job_id,
            issued_at=now_ms(),
        )
        self.send(command, wait=wait)
        return command

    def delete(
        self,
        submission_id: str,
        job_id: str | None = None,
        *,
        force: bool = False,
        wait: bool = True,
    ) -> DeleteJobs:
        """Deletes a finished job or submission (``force`` cancels unfinished jobs first)."""
        command = DeleteJobs(
            command_id=new_id("c-"),
            submission_id=submission_id,
            job_id=job_id,
            force=force,
            issued_at=now_ms(),
        )
        self.send(command, wait=wait)
        return command
