"""Schema evolution: records written with an older schema decode with the current one.

The fixtures in ``fixtures/codec/evolution`` are an older ("v1") Event schema whose JobAssigned
lacks ``previous_worker_id`` and an older Control schema without ``reason``, each with bytes
written with it. The current schemas added those fields with a default, so by Avro's resolution
rules the old bytes decode with the default filled in, once the registry knows the old schema
(as it does for every file in ``schemas/history/``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_writer

from engine import codec
from engine.codec import SCHEMA_DIR, SchemaRegistry, framing
from engine.errors import CodecError, CorruptRecordError, UnknownSchemaError
from engine.lifecycle.records import Control, Event, JobAssigned

EVOLUTION = Path(__file__).parent / "fixtures" / "codec" / "evolution"
T = 1_767_225_600_000


def _fixture_bytes(name: str) -> bytes:
    return bytes.fromhex((EVOLUTION / name).read_text())


def _fixture_schema(prefix: str) -> tuple[Path, dict[str, Any]]:
    (path,) = EVOLUTION.glob(f"{prefix}-*.avsc")
    return path, json.loads(path.read_text())


@pytest.fixture
def schema_dir_with_history(tmp_path: Path) -> Path:
    """A copy of the schema directory whose history holds the v1 fixtures."""
    directory = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, directory)
    (directory / "history").mkdir(exist_ok=True)
    for path in EVOLUTION.glob("*.avsc"):
        shutil.copy(path, directory / "history" / path.name)
    return directory


@pytest.fixture
def registry(
    schema_dir_with_history: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SchemaRegistry]:
    """The codec reading with a registry that knows the v1 schemas."""
    loaded = SchemaRegistry.load(schema_dir_with_history)
    monkeypatch.setattr(framing, "REGISTRY", loaded)
    yield loaded


def test_v1_bytes_are_an_unknown_schema_until_the_old_version_is_known() -> None:
    raw = _fixture_bytes("event-v1-job-assigned.hex")
    with pytest.raises(UnknownSchemaError) as caught:
        codec.decode_event(raw)
    assert caught.value.raw == raw
    assert raw[2:10].hex() in str(caught.value)


@pytest.mark.usefixtures("registry")
def test_a_v1_event_decodes_with_the_added_field_defaulted() -> None:
    event = codec.decode_event(_fixture_bytes("event-v1-job-assigned.hex"))
    assert event == Event(
        "sub-1:7",
        "sub-1",
        "load",
        7,
        T + 1_600,
        JobAssigned(2, "sub-1/load/2", "worker-7", 30_000, "node-3", previous_worker_id=""),
    )


@pytest.mark.usefixtures("registry")
def test_a_v1_control_decodes_with_the_added_field_defaulted() -> None:
    control = codec.decode_control(_fixture_bytes("control-v1.hex"))
    assert control == Control(
        "worker-7", "kill", "sub-1", "load", 2, "sub-1/load/2", "", 5_000, T + 20
    )


@pytest.mark.usefixtures("registry")
def test_a_decoded_v1_record_is_written_again_with_the_current_schema() -> None:
    event = codec.decode_event(_fixture_bytes("event-v1-job-assigned.hex"))
    raw = codec.encode_event(event)
    assert raw[2:10] == codec.fingerprint("Event")
    assert codec.decode_event(raw) == event


def test_the_registry_lists_old_versions_after_the_current_ones(
    registry: SchemaRegistry,
) -> None:
    versions = list(registry)
    old = [v for v in versions if not v.current]
    history = {path.stem.split("-")[0] for path in (SCHEMA_DIR / "history").glob("*.avsc")}
    assert {v.name for v in old} == {"Event", "Control"} | history
    assert versions[-len(old) :] == old
    path, _ = _fixture_schema("Event")
    assert path.stem.split("-")[1] in {v.fingerprint.hex() for v in old if v.name == "Event"}


def test_register_makes_an_old_version_known_at_run_time() -> None:
    registry = SchemaRegistry.load(SCHEMA_DIR)
    _, schema = _fixture_schema("Control")
    fp = registry.register("Control", schema)
    entry = registry.get(fp)
    assert entry is not None and entry.name == "Control" and not entry.current
    assert registry.register("Control", schema) == fp
    assert registry.register("Control", registry.current("Control").schema) == codec.fingerprint(
        "Control"
    )


def test_an_old_version_must_be_registered_under_its_own_name() -> None:
    registry = SchemaRegistry.load(SCHEMA_DIR)
    _, schema = _fixture_schema("Control")
    with pytest.raises(CodecError, match=r"joblog\.v1\.Event"):
        registry.register("Event", schema)
    with pytest.raises(UnknownSchemaError):
        registry.register("Nope", schema)
    registry.register("Control", schema)
    with pytest.raises(CodecError, match="version of Control"):
        registry.register("Event", schema)


def test_a_history_file_named_after_another_fingerprint_is_refused(
    schema_dir_with_history: Path,
) -> None:
    history = schema_dir_with_history / "history"
    (path,) = history.glob("Control-*.avsc")
    path.rename(history / "Control-0000000000000000.avsc")
    with pytest.raises(CodecError, match="rename it to Control-"):
        SchemaRegistry.load(schema_dir_with_history)


def test_an_old_version_that_does_not_resolve_is_a_corrupt_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # attempt was a string in this made-up version: Avro cannot promote string to int
    registry = SchemaRegistry.load(SCHEMA_DIR)
    _, schema = _fixture_schema("Control")
    for field in schema["fields"]:
        if field["name"] == "attempt":
            field["type"] = "string"
    fp = registry.register("Control", schema)
    monkeypatch.setattr(framing, "REGISTRY", registry)
    writer = registry.get(fp)
    assert writer is not None
    buffer = BytesIO()
    buffer.write(writer.header)
    record = dict.fromkeys(("worker_id", "action", "submission_id", "job_id", "dispatch_id"), "x")
    schemaless_writer(
        buffer, writer.parsed, {**record, "attempt": "2", "grace_ms": 1, "sent_at": 2}
    )
    with pytest.raises(CorruptRecordError) as caught:
        codec.decode_control(buffer.getvalue())
    assert caught.value.raw == buffer.getvalue()
