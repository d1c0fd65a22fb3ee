"""The published JSON Schema is generated from the models and must be committed current."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas.export import SCHEMA_PATH, build_schema, main, render
from schemas.jsonschema import TIMESTAMP_SCHEMA_PATTERN
from schemas.reading import ALIASES, HealthDataMessage
from tests.unit.payloads import (
    SAMPLE_UPLOAD,
    camel_reading,
    encode,
    envelope,
    legacy_reading,
    relay,
    watch_reading,
)


def test_committed_schema_is_current() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render(), (
        "schemas/health-data.v1.schema.json is stale: run `python -m schemas.export` "
        "and commit the result"
    )


def test_check_mode_fails_on_a_stale_file_and_passes_after_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "schema.json"
    path.write_text("{}\n", encoding="utf-8")
    assert main(["--check", "--path", str(path)]) == 1
    assert "python -m schemas.export" in capsys.readouterr().err
    assert main(["--path", str(path)]) == 0
    assert main(["--check", "--path", str(path)]) == 0
    assert path.read_text(encoding="utf-8") == render()


def test_check_mode_fails_when_the_file_is_missing(tmp_path: Path) -> None:
    assert main(["--check", "--path", str(tmp_path / "absent.json")]) == 1


def test_schema_is_a_draft_2020_12_document_with_descriptions() -> None:
    schema = json.loads(render())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "HealthDataMessage"
    assert schema["description"]
    envelope, bare = schema["anyOf"]
    assert envelope == {"$ref": "#/$defs/Envelope"}
    # A bare reading has no "data": with one, the decoder reads the message as an envelope.
    assert bare == {"allOf": [{"$ref": "#/$defs/Reading"}], "not": {"required": ["data"]}}
    for name, definition in schema["$defs"].items():
        assert definition["description"], name
        for prop, spec in definition["properties"].items():
            assert spec.get("description"), f"{name}.{prop}"


def test_every_alias_is_a_documented_property() -> None:
    reading = build_schema()["$defs"]["Reading"]
    assert set(reading["properties"]) == set(ALIASES)
    for name, primary in ALIASES.items():
        if name != primary:
            assert reading["properties"][name]["description"] == f"Alias of `{primary}`."


def test_required_fields_accept_any_of_their_names() -> None:
    reading = build_schema()["$defs"]["Reading"]
    assert "required" not in reading
    assert reading["allOf"] == [
        {"anyOf": [{"required": ["deviceSn"]}, {"required": ["id"]}]},
        {"anyOf": [{"required": ["timestamp"]}, {"required": ["cjsj"]}]},
    ]


def test_ranges_and_formats_are_published() -> None:
    props: dict[str, Any] = build_schema()["$defs"]["Reading"]["properties"]
    assert {"type": "integer", "minimum": 0, "maximum": 300} in props["heart_rate"]["anyOf"]
    timestamp = props["timestamp"]
    assert (timestamp["minLength"], timestamp["maxLength"]) == (19, 19)
    assert timestamp["pattern"] == TIMESTAMP_SCHEMA_PATTERN
    device_sn = props["deviceSn"]["anyOf"][0]
    assert device_sn["pattern"] == r"^\s*[!#-&(-~]{1,64}\s*$"  # blanks around are stripped


@pytest.mark.parametrize(
    "message",
    [
        SAMPLE_UPLOAD,
        encode(envelope(watch_reading(), customerId=1001)),
        encode(relay([legacy_reading(), camel_reading()], orgId="2001")),
        encode(watch_reading()),
    ],
    ids=["sample", "single", "relay-array", "bare"],
)
def test_real_messages_validate_against_the_exported_model(message: bytes) -> None:
    HealthDataMessage.model_validate_json(message)
