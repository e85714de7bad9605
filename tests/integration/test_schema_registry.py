"""joblog with a schema registry, against the real broker and a registry speaking the
Confluent API (engine.registry.LocalRegistry: Apicurio Registry cannot be assembled from
Maven Central here, see docs/operations.md).

The whole path (submit, run, watch, project) writes the Confluent wire format with the ids
registered under ``<topic>-value``; a topic holding both framings (a migration to the
registry) reads as one; a record whose schema id is unknown, or cannot be looked up while the
registry is down, is dead-lettered with its reason by every consumer; a schema the registry
refuses stops a service at start with an error naming the subject.
"""

from __future__ import annotations

import copy
import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from engine import JobStatus, SubmissionStatus, codec
from engine.admin import ensure_topics
from engine.codec import framing
from engine.codec.schemas import REGISTRY
from engine.config import RegistrySettings, Settings
from engine.errors import IncompatibleSchemaError, SchemaRegistryError, SchemaRegistryUnreachable
from engine.lifecycle.records import Event, JobSpec, SubmitJobs
from engine.registry import Registry, RegistryClient, subject_for
from engine.registry.local import LocalRegistry
from engine.scheduler.service import Scheduler, SchedulerConfig
from engine.topics import Topics
from tests.integration.conftest import KafkaUnderTest
from tests.integration.kafka_io import events_by_submission, read_all, wait_for
from tests.integration.test_client import engine_running, eventually


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    with LocalRegistry() as running:
        yield running
    framing.use_schema_source(None)


def registry_settings(kafka_cluster: KafkaUnderTest, registry: LocalRegistry) -> Settings:
    settings = Settings.from_env(
        bootstrap_servers=kafka_cluster.bootstrap_servers,
        topic_prefix=f"sr{uuid.uuid4().hex[:8]}.",
        partitions=3,
        schema_registry=RegistrySettings(registry.url),
    )
    ensure_topics(settings)
    return settings


def get(registry: LocalRegistry, path: str) -> Any:
    with urllib.request.urlopen(registry.url + path, timeout=5) as response:
        return json.loads(response.read())


def post(registry: LocalRegistry, path: str, schema: dict[str, Any]) -> Any:
    body = json.dumps({"schema": json.dumps(schema)}).encode()
    request = urllib.request.Request(registry.url + path, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def ids_under(registry: LocalRegistry, subject: str) -> set[int]:
    versions = get(registry, f"/subjects/{subject}/versions")
    return {get(registry, f"/subjects/{subject}/versions/{v}")["id"] for v in versions}


def raw_values(settings: Settings, topic: str) -> list[bytes]:
    return [v for _, v in read_all(settings, topic, lambda raw: raw) if v is not None]


def schema_id(value: bytes) -> int:
    return int.from_bytes(value[1:5], "big")


# --------------------------------------------------------------------------- the whole path


def test_the_whole_path_writes_the_confluent_format_under_each_topics_subject(
    registry: LocalRegistry, kafka_cluster: KafkaUnderTest, tmp_path: Path
) -> None:
    settings = registry_settings(kafka_cluster, registry)
    topics = Topics(settings.topic_prefix)
    with engine_running(settings, db_path=tmp_path / "joblog.duckdb") as engine:
        jl = engine.client()
        try:
            submission = jl.submit(task="double", args=[21])
            view = submission.wait_until_done(timeout=60)
            assert view.outcome is SubmissionStatus.COMPLETED
            assert view.jobs["double"].result == "42"
            seen = [e.name for e in submission.events(timeout=30) if isinstance(e, Event)]
            assert seen[0] == "SubmissionAccepted" and seen[-1] == "SubmissionCompleted"
            eventually(
                lambda: (
                    [j.status for j in jl.get_jobs(submission_id=submission.id)]
                    == [JobStatus.COMPLETED]
                ),
                30,
                "the projection",
            )
        finally:
            jl.close()

    written = (topics.commands, topics.reports, topics.events, topics.state)
    for topic in (*written, topics.dispatch("default")):
        values = raw_values(settings, topic)
        assert values, f"nothing on {topic}"
        assert {v[0] for v in values} == {0}, f"{topic} holds records without the magic byte 0"
        subject = subject_for(topic)
        assert {schema_id(v) for v in values} <= ids_under(registry, subject)
        assert get(registry, f"/config/{subject}") == {"compatibilityLevel": "BACKWARD"}
        name = topics.value_schema(topic)
        assert name is not None
        latest = get(registry, f"/subjects/{subject}/versions/latest")
        assert json.loads(latest["schema"]) == REGISTRY.current(name).schema


def test_a_topic_holding_both_framings_reads_as_one(
    registry: LocalRegistry, kafka_cluster: KafkaUnderTest, tmp_path: Path
) -> None:
    """A migration: an engine without the registry, then the same topics with it."""
    framed = registry_settings(kafka_cluster, registry)
    plain = replace(framed, schema_registry=None)
    with engine_running(plain) as engine:
        jl = engine.client()
        try:
            before = jl.submit(task="double", args=[1]).wait_until_done(timeout=60)
        finally:
            jl.close()
    with engine_running(framed, db_path=tmp_path / "joblog.duckdb") as engine:
        jl = engine.client()
        try:
            after = jl.submit(task="double", args=[2]).wait_until_done(timeout=60)
            assert (before.outcome, after.outcome) == (SubmissionStatus.COMPLETED,) * 2
            # the projector, a watcher and the scheduler's rebuild read both framings
            eventually(
                lambda: all(
                    [j.status for j in jl.get_jobs(submission_id=s)] == [JobStatus.COMPLETED]
                    for s in (before.submission_id, after.submission_id)
                ),
                30,
                "both submissions projected",
            )
            history = [e.name for e in jl.history(before.submission_id, "double")]
            assert history[-1] == "JobCompleted"
        finally:
            jl.close()
    events = raw_values(framed, Topics(framed.topic_prefix).events)
    assert {v[:1] for v in events} == {b"\xc3", b"\x00"}


# --------------------------------------------------------------------------- dead letters


def test_an_unknown_schema_id_is_dead_lettered_by_every_consumer(
    registry: LocalRegistry, kafka_cluster: KafkaUnderTest, tmp_path: Path
) -> None:
    settings = registry_settings(kafka_cluster, registry)
    topics = Topics(settings.topic_prefix)
    unknown = framing.confluent_header(999_999)
    command = SubmitJobs("c-x", "x", (JobSpec("j", task="double", args='{"args": [1]}'),))
    values = {
        topics.commands: unknown + codec.encode_command(command)[10:],
        topics.events: unknown + b"\x02any body",
        topics.dispatch("default"): unknown + b"\x02any body",
    }
    with engine_running(settings, db_path=tmp_path / "joblog.duckdb") as engine:
        producer = Producer(settings.producer_config())
        for topic, value in values.items():
            producer.produce(topic, key=b"x", value=value)
        assert producer.flush(10) == 0
        wait_for(
            lambda: len(raw_values(settings, topics.deadletter)) >= 3, 60, "three dead letters"
        )
        jl = engine.client()
        try:  # the consumers go on
            assert jl.submit(task="double", args=[3]).wait_until_done(timeout=60).outcome is (
                SubmissionStatus.COMPLETED
            )
        finally:
            jl.close()
    letters = [
        letter for _, letter in read_all(settings, topics.deadletter, codec.decode_deadletter)
    ]
    assert {letter.topic: letter.value for letter in letters} == values
    for letter in letters:
        assert letter.error_type == "UnknownSchemaIdError"
        assert "no schema id 999999" in letter.error_message
    assert len({letter.consumer for letter in letters}) == 3  # scheduler, projector, worker
    assert {v[0] for v in raw_values(settings, topics.deadletter)} == {0}


def test_a_schema_id_that_cannot_be_looked_up_is_dead_lettered_while_the_registry_is_down(
    registry: LocalRegistry, kafka_cluster: KafkaUnderTest
) -> None:
    settings = registry_settings(kafka_cluster, registry)
    topics = Topics(settings.topic_prefix)
    # the same Command schema in other words: an id the scheduler has not seen
    variant = {**REGISTRY.current("Command").schema, "doc": "registered by another client"}
    other_id = post(registry, f"/subjects/{subject_for(topics.commands)}/versions", variant)["id"]

    def command(n: int) -> bytes:
        submit = SubmitJobs(
            f"c-{n}", f"down-{n}", (JobSpec("j", task="double", args='{"args": [1]}'),)
        )
        return framing.confluent_header(other_id) + codec.encode_command(submit)[10:]

    with engine_running(settings) as _engine:
        producer = Producer(settings.producer_config())
        with registry.unavailable():
            producer.produce(topics.commands, key=b"down-1", value=command(1))
            assert producer.flush(10) == 0
            wait_for(lambda: bool(raw_values(settings, topics.deadletter)), 60, "a dead letter")
        producer.produce(topics.commands, key=b"down-2", value=command(2))
        assert producer.flush(10) == 0
        wait_for(lambda: "down-2" in events_by_submission(settings), 60, "down-2 decided")
    [(_, letter)] = read_all(settings, topics.deadletter, codec.decode_deadletter)
    assert letter.error_type == "SchemaLookupError"
    assert f"schema id {other_id}" in letter.error_message and "503" in letter.error_message
    assert letter.value == command(1)
    assert "down-1" not in events_by_submission(settings)


# --------------------------------------------------------------------------- compatibility


def test_an_incompatible_schema_stops_the_scheduler_at_start_naming_the_subject(
    registry: LocalRegistry, kafka_cluster: KafkaUnderTest
) -> None:
    settings = registry_settings(kafka_cluster, registry)
    subject = subject_for(Topics(settings.topic_prefix).events)
    # records written without ``timestamp``: the current Event (no default for it) cannot
    # read them, so BACKWARD refuses it
    older = copy.deepcopy(REGISTRY.current("Event").schema)
    older["fields"] = [f for f in older["fields"] if f["name"] != "timestamp"]
    post(registry, f"/subjects/{subject}/versions", older)
    scheduler = Scheduler(settings, config=SchedulerConfig(instance_id=uuid.uuid4().hex))
    with pytest.raises(IncompatibleSchemaError, match=subject.replace(".", r"\.")) as caught:
        scheduler.run(threading.Event())
    assert caught.value.subject == subject
    assert caught.value.level == "BACKWARD"
    assert any("timestamp" in message for message in caught.value.messages)
    assert len(ids_under(registry, subject)) == 1, "nothing was registered"


# --------------------------------------------------------------------------- the client


def test_credentials_are_sent_and_a_refusal_names_its_status() -> None:
    with LocalRegistry(basic_auth="joblog:s3cret") as secured:
        good = Registry(RegistrySettings(secured.url, basic_auth="joblog:s3cret"))
        assert good.register("a.events", REGISTRY.current("Event")) == 1
        bad = RegistryClient(RegistrySettings(secured.url, basic_auth="joblog:wrong"))
        with pytest.raises(SchemaRegistryError, match="401") as caught:
            bad.schema_by_id(1)
        assert caught.value.status == 401
    with LocalRegistry(token="t0ken") as secured:
        bearer = RegistryClient(RegistrySettings(secured.url, token="t0ken"))
        assert bearer.schema_by_id(1) is None


def test_a_registry_that_does_not_answer_is_unreachable_within_the_timeout() -> None:
    with LocalRegistry() as gone:
        url = gone.url
    client = RegistryClient(RegistrySettings(url, timeout_s=2))
    with pytest.raises(SchemaRegistryUnreachable, match="did not answer"):
        client.schema_by_id(1)
