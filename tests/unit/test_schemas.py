"""The Avro schemas: where they are found, and that they match the records they carry."""

from __future__ import annotations

import dataclasses
import enum
import json
import shutil
from pathlib import Path
from typing import Any, get_args

import pytest
from fastavro import parse_schema
from fastavro.schema import load_schema

from engine import codec
from engine.codec import REGISTRY, SCHEMA_DIR, TOPIC_SCHEMAS, bundle, find_schema_dir
from engine.codec.__main__ import main
from engine.codec.schemas import canonical_form, schema_fingerprint
from engine.errors import CodecError, UnknownSchemaError
from engine.lifecycle import records, state
from engine.lifecycle.records import AnyCommand, EventBody, Report

REPO = Path(__file__).resolve().parents[2]

#: Avro records that are not a dataclass of their own.
_NO_DATACLASS = {"Command", "Report", "KeyValue", "StatusCount", "JobLinks"}
_DATACLASS_NAMED = {"Snapshot": state.SubmissionState, "DeadLetter": codec.DeadLetter}


def named_types(node: Any, found: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Every named type defined in a self-contained schema, by short name."""
    found = {} if found is None else found
    if isinstance(node, list):
        for branch in node:
            named_types(branch, found)
    elif isinstance(node, dict):
        if node.get("type") in ("record", "enum"):
            found[node["name"]] = node
        for field in node.get("fields", ()):
            named_types(field["type"], found)
        for key in ("type", "items", "values"):
            if isinstance(node.get(key), dict | list):
                named_types(node[key], found)
    return found


ALL_TYPES: dict[str, dict[str, Any]] = {}
for _name in TOPIC_SCHEMAS:
    named_types(bundle(_name), ALL_TYPES)
RECORDS = {name: t for name, t in ALL_TYPES.items() if t["type"] == "record"}
ENUMS = {name: t for name, t in ALL_TYPES.items() if t["type"] == "enum"}


def dataclass_of(name: str) -> type:
    if name in _DATACLASS_NAMED:
        return _DATACLASS_NAMED[name]
    found = getattr(records, name, None) or getattr(state, name)
    assert isinstance(found, type)
    return found


# --------------------------------------------------------------------------- where they are


def test_a_source_checkout_finds_the_repository_schemas() -> None:
    assert SCHEMA_DIR == REPO / "schemas"
    assert find_schema_dir(REPO / "engine") == REPO / "schemas"


def test_an_installed_wheel_finds_the_schemas_inside_the_package(tmp_path: Path) -> None:
    package = tmp_path / "site-packages" / "engine"
    shutil.copytree(SCHEMA_DIR, package / "_schemas")
    assert find_schema_dir(package) == package / "_schemas"


def test_the_packaged_schemas_win_over_a_schemas_directory_beside_the_package(
    tmp_path: Path,
) -> None:
    package = tmp_path / "engine"
    shutil.copytree(SCHEMA_DIR, package / "_schemas")
    shutil.copytree(SCHEMA_DIR, tmp_path / "schemas")
    assert find_schema_dir(package) == package / "_schemas"


def test_missing_schemas_are_a_codec_error_naming_both_places(tmp_path: Path) -> None:
    (tmp_path / "engine").mkdir()
    with pytest.raises(CodecError, match=r"_schemas.*schemas"):
        find_schema_dir(tmp_path / "engine")


def test_the_wheel_ships_the_schemas_directory_as_engine_schemas() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"schemas" = "engine/_schemas"' in pyproject


# --------------------------------------------------------------------------- how they resolve


@pytest.mark.parametrize("name", TOPIC_SCHEMAS)
def test_fastavros_own_loader_resolves_each_file_to_the_same_fingerprint(name: str) -> None:
    # the layout (shared types in <full name>.avsc) is what fastavro.schema.load_schema and
    # most Avro libraries' multi-file parsers expect
    loaded = load_schema(str(SCHEMA_DIR / f"{name}.avsc"))
    assert canonical_form(loaded) == canonical_form(bundle(name))
    assert codec.fingerprint(name) == schema_fingerprint(loaded)


@pytest.mark.parametrize("name", TOPIC_SCHEMAS)
def test_the_shared_files_in_the_readmes_order_define_each_type_before_its_use(
    name: str,
) -> None:
    # what a multi-file parser in another language does with the order schemas/README.md gives
    shared = [
        "KeyValue",
        "RetryPolicy",
        "JobSpec",
        "JobStatus",
        "CancelMode",
        "SubmissionStatus",
        "Notification",
        "ScheduleSpec",
        "ScheduleAction",
    ]
    readme = " ".join((SCHEMA_DIR / "README.md").read_text().split())
    assert "`, `".join(shared) in readme
    named: dict[str, Any] = {}
    for type_name in shared:
        parse_schema(json.loads((SCHEMA_DIR / f"joblog.v1.{type_name}.avsc").read_text()), named)
    parse_schema(json.loads((SCHEMA_DIR / f"{name}.avsc").read_text()), named)


def test_the_fingerprint_is_the_avro_specifications_crc_64_avro() -> None:
    # reference value of the Java implementation for the schema "null"
    expected = 7195948357588979594
    assert schema_fingerprint("null") == expected.to_bytes(8, "little")


def test_each_topic_schema_has_its_own_fingerprint() -> None:
    fingerprints = {codec.fingerprint(name) for name in TOPIC_SCHEMAS}
    assert len(fingerprints) == len(TOPIC_SCHEMAS)


def test_each_named_type_is_defined_in_exactly_one_file() -> None:
    definitions: dict[str, list[str]] = {}
    for path in sorted(SCHEMA_DIR.glob("*.avsc")):
        for name in named_types(json.loads(path.read_text())):
            definitions.setdefault(name, []).append(path.name)
    assert {name: files for name, files in definitions.items() if len(files) > 1} == {}
    for path in SCHEMA_DIR.glob("joblog.v1.*.avsc"):
        assert json.loads(path.read_text())["name"] == path.stem.removeprefix("joblog.v1.")


def test_an_unknown_topic_schema_is_an_unknown_schema_error() -> None:
    with pytest.raises(UnknownSchemaError, match="Nope"):
        codec.fingerprint("Nope")


def test_an_undefined_reference_names_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / "Control.avsc").write_text(
        json.dumps(
            {
                "type": "record",
                "name": "Control",
                "namespace": "joblog.v1",
                "fields": [{"name": "x", "type": "joblog.v1.Missing"}],
            }
        )
    )
    with pytest.raises(CodecError, match=r"joblog\.v1\.Missing\.avsc"):
        bundle("Control", tmp_path)


# --------------------------------------------------------------------------- the contract


def test_every_record_and_enum_is_documented() -> None:
    assert [name for name, t in ALL_TYPES.items() if not t.get("doc")] == []


def test_every_optional_field_is_null_first_with_a_null_default() -> None:
    for record in RECORDS.values():
        for field in record["fields"]:
            if isinstance(field["type"], list) and "null" in field["type"]:
                where = f"{record['name']}.{field['name']}"
                assert field["type"][0] == "null", where
                assert "default" in field and field["default"] is None, where


@pytest.mark.parametrize("name", sorted(set(RECORDS) - _NO_DATACLASS))
def test_each_record_has_exactly_the_fields_of_its_dataclass(name: str) -> None:
    # the codec relies on it: vars(record) is the Avro record and back
    cls = dataclass_of(name)
    avro_fields = [field["name"] for field in RECORDS[name]["fields"]]
    # a snapshot's layout fields (per-job records of a large submission) are the codec's own
    layout = ["job_ids", "per_job"] if name == "Snapshot" else []
    # derived fields (recounted from the jobs on decode) are not carried
    names = [field.name for field in dataclasses.fields(cls) if not field.metadata.get("derived")]
    assert avro_fields == names + layout


@pytest.mark.parametrize("name", sorted(set(RECORDS) - _NO_DATACLASS))
def test_each_dataclass_is_plain_enough_to_be_restored_from_its_dict(name: str) -> None:
    cls = dataclass_of(name)
    assert not hasattr(cls, "__post_init__"), f"{name} validates in __post_init__"
    assert "__slots__" not in vars(cls), f"{name} has slots: it has no instance dict"


def _avro_default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | dict | frozenset):
        return [_avro_default(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _avro_default(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


@pytest.mark.parametrize("name", sorted(set(RECORDS) - _NO_DATACLASS))
def test_each_schema_default_is_the_dataclass_default(name: str) -> None:
    # a reader fills in a field an older writer lacked with the schema default; it must be
    # the value the record would have had if it was built without that field
    avro_fields = {field["name"]: field for field in RECORDS[name]["fields"]}
    for field in dataclasses.fields(dataclass_of(name)):
        if field.metadata.get("derived"):
            continue  # recomputed on decode, not carried
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            continue
        assert avro_fields[field.name].get("default", "<none>") == _avro_default(default), (
            f"{name}.{field.name}"
        )


@pytest.mark.parametrize(
    "name", ["JobStatus", "CancelMode", "FailureReason", "Outcome", "SubmissionStatus"]
)
def test_enum_symbols_are_the_python_enum_values_in_order(name: str) -> None:
    assert ENUMS[name]["symbols"] == [member.value for member in getattr(records, name)]


@pytest.mark.parametrize(
    ("schema", "union"), [("Command", AnyCommand), ("Report", Report), ("Event", EventBody)]
)
def test_body_unions_list_the_python_classes_in_order(schema: str, union: Any) -> None:
    body = next(f for f in bundle(schema)["fields"] if f["name"] == "body")
    branches = [b if isinstance(b, str) else b["name"] for b in body["type"]]
    assert branches == [cls.__name__ for cls in get_args(union)]


def test_the_registry_knows_each_current_schema_by_fingerprint() -> None:
    for name in TOPIC_SCHEMAS:
        current = REGISTRY.current(name)
        assert current.current
        assert REGISTRY.get(current.fingerprint) is current
        assert current.header == b"\xc3\x01" + current.fingerprint


# --------------------------------------------------------------------------- the command line


def test_the_command_line_lists_fingerprints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert codec.fingerprint("Event").hex() in out


def test_the_command_line_prints_a_self_contained_schema(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["Dispatch"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert schema_fingerprint(printed) == codec.fingerprint("Dispatch")
    assert main(["Nope"]) == 2
