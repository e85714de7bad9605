"""The Confluent framing, the registry settings, subjects and the compatibility rules, with
no registry and no broker (the schema source is a dictionary; the registry's HTTP client is a
stand-in that keeps subjects in memory).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from engine import codec
from engine.codec import framing
from engine.codec.schemas import REGISTRY, SCHEMA_DIR
from engine.config import RegistrySettings, Settings
from engine.errors import (
    ConfigurationError,
    CorruptRecordError,
    IncompatibleSchemaError,
    SchemaLookupError,
    SchemaRegistryError,
    SchemaRegistryUnreachable,
    UnknownSchemaIdError,
)
from engine.lifecycle.records import Event, JobCompleted
from engine.registry import Registry, subject_for
from engine.registry.compatibility import SchemaParseError, can_read, check
from engine.topics import Topics

EVENT = Event("sub-1:3", "sub-1", "a", 3, 1_767_225_600_000, JobCompleted(1, "42"))
EVENT_SCHEMA = REGISTRY.current("Event").schema


class Source:
    """A schema source over a dictionary; ``error`` makes every lookup fail."""

    def __init__(self, schemas: dict[int, dict[str, Any]]) -> None:
        self.schemas = schemas
        self.asked: list[int] = []
        self.error: Exception | None = None

    def schema(self, schema_id: int) -> dict[str, Any] | None:
        self.asked.append(schema_id)
        if self.error is not None:
            raise self.error
        return self.schemas.get(schema_id)


@pytest.fixture
def source() -> Iterator[Source]:
    found = Source({7: EVENT_SCHEMA, 8: REGISTRY.current("Command").schema})
    framing.use_schema_source(found)
    yield found
    framing.use_schema_source(None)


def confluent(schema_id: int, raw: bytes) -> bytes:
    return framing.reframe(raw, framing.confluent_header(schema_id))


# --------------------------------------------------------------------------- the framing


def test_the_confluent_header_is_magic_zero_and_a_big_endian_id() -> None:
    assert framing.confluent_header(1) == b"\x00\x00\x00\x00\x01"
    assert framing.confluent_header(0x01020304) == b"\x00\x01\x02\x03\x04"


def test_reframing_keeps_the_avro_body() -> None:
    raw = codec.encode_event(EVENT)
    framed = confluent(7, raw)
    assert framed[:5] == b"\x00\x00\x00\x00\x07"
    assert framed[5:] == raw[10:]


def test_a_confluent_record_decodes_with_the_writer_schema_of_its_id(source: Source) -> None:
    framed = confluent(7, codec.encode_event(EVENT))
    assert codec.decode_event(framed) == EVENT
    assert codec.decode_event(framed) == EVENT
    assert source.asked == [7]  # fetched once, then cached


def test_both_framings_decode_side_by_side(source: Source) -> None:
    raw = codec.encode_event(EVENT)
    assert [codec.decode_event(r) for r in (raw, confluent(7, raw), raw)] == [EVENT] * 3


def test_without_a_registry_a_confluent_record_names_the_setting() -> None:
    framed = confluent(7, codec.encode_event(EVENT))
    with pytest.raises(UnknownSchemaIdError, match="JOBLOG_SCHEMA_REGISTRY_URL") as caught:
        codec.decode_event(framed)
    assert (caught.value.raw, caught.value.schema_id) == (framed, 7)


def test_an_id_the_registry_does_not_know_is_an_unknown_schema_id(source: Source) -> None:
    framed = confluent(99, codec.encode_event(EVENT))
    with pytest.raises(UnknownSchemaIdError, match="no schema id 99") as caught:
        codec.decode_event(framed)
    assert caught.value.raw == framed


def test_an_unreachable_registry_is_a_lookup_error_with_the_record(source: Source) -> None:
    source.error = SchemaRegistryUnreachable("no answer in 5 s", url="http://registry")
    framed = confluent(7, codec.encode_event(EVENT))
    with pytest.raises(SchemaLookupError, match="no answer in 5 s") as caught:
        codec.decode_event(framed)
    assert caught.value.raw == framed
    source.error = None
    assert codec.decode_event(framed) == EVENT  # a failed lookup is not remembered


def test_the_schema_of_another_topic_is_the_wrong_kind(source: Source) -> None:
    framed = confluent(8, codec.encode_event(EVENT))
    with pytest.raises(codec.WrongKindError, match="is a joblog Command, not a Event"):
        codec.decode_event(framed)


def test_a_schema_that_is_not_joblogs_is_named(source: Source) -> None:
    source.schemas[9] = {"type": "record", "name": "Payment", "namespace": "shop", "fields": []}
    with pytest.raises(UnknownSchemaIdError, match=r"shop\.Payment, not a joblog topic schema"):
        codec.decode_event(confluent(9, codec.encode_event(EVENT)))


def test_a_newer_version_from_the_registry_resolves_to_the_current_one(source: Source) -> None:
    newer = copy.deepcopy(EVENT_SCHEMA)
    newer["fields"].append({"name": "region", "type": "string", "default": "eu"})
    source.schemas[10] = newer
    # a writer with the extra field: its body is the current body plus the string "eu"
    body = codec.encode_event(EVENT)[10:] + b"\x04eu"
    assert codec.decode_event(framing.confluent_header(10) + body) == EVENT


def test_a_damaged_body_is_corrupt_and_names_the_id(source: Source) -> None:
    framed = confluent(7, codec.encode_event(EVENT))[:-3]
    with pytest.raises(CorruptRecordError, match="schema id 7") as caught:
        codec.decode_event(framed)
    assert caught.value.raw == framed


def test_a_new_source_forgets_the_ids_of_the_old_one(source: Source) -> None:
    framed = confluent(7, codec.encode_event(EVENT))
    codec.decode_event(framed)
    other = Source({7: REGISTRY.current("Command").schema})
    framing.use_schema_source(other)
    with pytest.raises(codec.WrongKindError):
        codec.decode_event(framed)


# --------------------------------------------------------------------------- settings


def test_no_url_means_no_registry() -> None:
    assert Settings.from_env({}).schema_registry is None
    assert RegistrySettings.from_env({"JOBLOG_SCHEMA_REGISTRY_URL": " "}) is None


def test_the_registry_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "JOBLOG_SCHEMA_REGISTRY_URL": "https://registry:8081/apis/ccompat/v7/",
            "JOBLOG_SCHEMA_REGISTRY_BASIC_AUTH": "joblog:s3cret",
            "JOBLOG_SCHEMA_REGISTRY_TIMEOUT": "2.5",
            "JOBLOG_SCHEMA_REGISTRY_COMPATIBILITY": "full_transitive",
        }
    )
    assert settings.schema_registry == RegistrySettings(
        "https://registry:8081/apis/ccompat/v7", "joblog:s3cret", None, 2.5, "FULL_TRANSITIVE"
    )
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"JOBLOG_SCHEMA_REGISTRY_URL": "registry:8081"}, "JOBLOG_SCHEMA_REGISTRY_URL"),
        ({"JOBLOG_SCHEMA_REGISTRY_BASIC_AUTH": "nocolon"}, "JOBLOG_SCHEMA_REGISTRY_BASIC_AUTH"),
        (
            {"JOBLOG_SCHEMA_REGISTRY_BASIC_AUTH": "a:b", "JOBLOG_SCHEMA_REGISTRY_TOKEN": "t"},
            "not both",
        ),
        ({"JOBLOG_SCHEMA_REGISTRY_TIMEOUT": "soon"}, "JOBLOG_SCHEMA_REGISTRY_TIMEOUT"),
        ({"JOBLOG_SCHEMA_REGISTRY_TIMEOUT": "0"}, "JOBLOG_SCHEMA_REGISTRY_TIMEOUT"),
        ({"JOBLOG_SCHEMA_REGISTRY_COMPATIBILITY": "LAX"}, "JOBLOG_SCHEMA_REGISTRY_COMPATIBILITY"),
    ],
)
def test_malformed_registry_settings_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        RegistrySettings.from_env({"JOBLOG_SCHEMA_REGISTRY_URL": "http://registry", **env})


# --------------------------------------------------------------------------- subjects


def test_each_topic_has_its_schema_and_its_subject() -> None:
    topics = Topics("joblog.")
    assert {t: topics.value_schema(t) for t in (*topics.copartitioned, topics.control)} == {
        "joblog.commands": "Command",
        "joblog.reports": "Report",
        "joblog.events": "Event",
        "joblog.state": "Snapshot",
        "joblog.control": "Control",
    }
    assert topics.value_schema(topics.dispatch("gpu")) == "Dispatch"
    assert topics.value_schema(topics.deadletter) == "DeadLetter"
    assert topics.value_schema("other.events") is None
    assert subject_for(topics.dispatch("gpu")) == "joblog.dispatch.gpu-value"


class Client:
    """The registry's HTTP client, in memory: subjects, levels, and a compatibility verdict."""

    url = "http://registry"

    def __init__(self) -> None:
        self.subjects: dict[str, list[dict[str, Any]]] = {}
        self.levels: dict[str, str] = {}
        self.compatible = True
        self.calls: list[str] = []

    def registered_id(self, subject: str, schema: dict[str, Any]) -> int | None:
        self.calls.append(f"lookup {subject}")
        versions = self.subjects.get(subject, [])
        return 100 + versions.index(schema) if schema in versions else None

    def subject_level(self, subject: str) -> str | None:
        return self.levels.get(subject)

    def set_subject_level(self, subject: str, level: str) -> None:
        self.calls.append(f"level {subject} {level}")
        self.levels[subject] = level

    def default_level(self) -> str | None:
        return "BACKWARD"

    def compatibility(self, subject: str, schema: dict[str, Any]) -> tuple[bool, tuple[str, ...]]:
        return self.compatible, () if self.compatible else ("field x has no default",)

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        self.calls.append(f"register {subject}")
        self.subjects.setdefault(subject, []).append(schema)
        return 100 + len(self.subjects[subject]) - 1


def registry(client: Client) -> Registry:
    return Registry(RegistrySettings("http://registry"), client)  # type: ignore[arg-type]


def test_a_record_is_framed_with_the_id_of_its_subject_registered_once() -> None:
    client = Client()
    reg = registry(client)
    raw = codec.encode_event(EVENT)
    framed = reg.frame("joblog.events", raw)
    assert framed == framing.confluent_header(100) + raw[10:]
    assert reg.frame("joblog.events", raw) == framed
    assert client.calls == [
        "lookup joblog.events-value",
        "level joblog.events-value BACKWARD",
        "register joblog.events-value",
    ]


def test_a_subject_with_a_level_of_its_own_keeps_it() -> None:
    client = Client()
    client.levels["joblog.events-value"] = "FULL"
    registry(client).register_topics([("joblog.events", "Event")])
    assert client.levels == {"joblog.events-value": "FULL"}


def test_a_schema_already_there_is_not_registered_again() -> None:
    client = Client()
    client.subjects["joblog.events-value"] = [{"old": 1}, EVENT_SCHEMA]
    assert registry(client).register("joblog.events", REGISTRY.current("Event")) == 101
    assert client.calls == ["lookup joblog.events-value"]


def test_an_incompatible_schema_is_refused_naming_the_subject() -> None:
    client = Client()
    client.compatible = False
    with pytest.raises(IncompatibleSchemaError, match=r"joblog\.events-value") as caught:
        registry(client).register_topics([("joblog.events", "Event")])
    assert caught.value.subject == "joblog.events-value"
    assert caught.value.level == "BACKWARD"
    assert caught.value.messages == ("field x has no default",)


def test_tombstones_and_foreign_bytes_pass_unframed() -> None:
    reg = registry(Client())
    assert reg.frame("joblog.state", None) is None
    assert (
        reg.frame("joblog.events", b"\x00\x00\x00\x00\x05already") == b"\x00\x00\x00\x00\x05already"
    )
    assert reg.frame("joblog.events", b"plain") == b"plain"


# --------------------------------------------------------------------------- compatibility


def record(*fields: dict[str, Any], name: str = "R") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "t", "fields": list(fields)}


OLD = record({"name": "a", "type": "int"})


def test_a_new_field_with_a_default_is_backward_compatible() -> None:
    new = record({"name": "a", "type": "int"}, {"name": "b", "type": "string", "default": ""})
    assert check("BACKWARD", new, [OLD]) == []


def test_a_new_field_without_a_default_is_not_backward_compatible() -> None:
    new = record({"name": "a", "type": "int"}, {"name": "b", "type": "string"})
    assert check("BACKWARD", new, [OLD]) == [
        "reading old data: t.R.b: a new field without a default"
    ]
    assert check("FORWARD", new, [OLD]) == []  # old readers skip it
    assert check("NONE", new, [OLD]) == []


def test_removing_a_field_without_a_default_breaks_old_readers() -> None:
    new = record({"name": "c", "type": "long", "default": 0})
    assert check("BACKWARD", new, [OLD]) == []
    assert check("FULL", new, [OLD]) == ["old readers: t.R.a: a new field without a default"]


def test_promotions_widen_only() -> None:
    assert can_read(record({"name": "a", "type": "long"}), OLD) == []
    assert can_read(OLD, record({"name": "a", "type": "long"})) == ["t.R.a: long written, int read"]
    assert can_read("bytes", "string") == []
    assert can_read("double", "float") == []
    assert can_read("int", "string") == ["the schema: string written, int read"]


def test_unions_and_enums() -> None:
    assert can_read(["null", "string"], "string") == []
    assert can_read(["null", "string"], ["null", "string", "int"]) != []
    old = {"type": "enum", "name": "E", "symbols": ["A", "B"]}
    wider = {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}
    assert can_read(wider, old) == []
    assert can_read(old, wider) == ["E: symbols C unknown to the reader"]
    assert can_read({**old, "default": "A"}, wider) == []


def test_records_are_matched_by_name_or_alias() -> None:
    renamed = record({"name": "a", "type": "int"}, name="S")
    assert can_read(renamed, OLD) == ["the schema: t.R written, t.S read"]
    assert can_read({**renamed, "aliases": ["R"]}, OLD) == []


def test_a_recursive_type_is_checked_without_end() -> None:
    node = record(
        {"name": "value", "type": "int"},
        {"name": "next", "type": ["null", "Node"], "default": None},
        name="Node",
    )
    assert can_read(node, node) == []
    grown = copy.deepcopy(node)
    grown["fields"].append({"name": "label", "type": "string"})
    assert can_read(grown, node) == ["t.Node.label: a new field without a default"]


def test_transitive_levels_check_every_version() -> None:
    middle = record({"name": "a", "type": "int"}, {"name": "b", "type": "int", "default": 0})
    new = record({"name": "b", "type": "int"})
    assert check("BACKWARD", new, [OLD, middle]) == []
    assert check("BACKWARD_TRANSITIVE", new, [OLD, middle]) == [
        "reading old data: t.R.b: a new field without a default"
    ]


def test_an_unknown_type_name_is_a_parse_error() -> None:
    with pytest.raises(SchemaParseError, match=r"unknown type t\.Missing"):
        can_read(record({"name": "a", "type": "Missing"}), OLD)


@pytest.mark.parametrize(
    "path", sorted((SCHEMA_DIR / "history").glob("*.avsc")), ids=lambda p: p.stem
)
def test_each_current_schema_reads_its_history(path: Any) -> None:
    """The checker agrees with the codec: every shipped history version is readable."""
    name = path.stem.partition("-")[0]
    old = json.loads(path.read_text())
    assert can_read(REGISTRY.current(name).schema, old) == []


def test_a_registry_error_carries_its_status() -> None:
    error = SchemaRegistryError("refused", url="http://registry", status=422, error_code=42201)
    assert (error.status, error.error_code) == (422, 42201)
