"""Write the published JSON Schema of the health-data message, or check it is current.

    python -m schemas.export          # rewrite schemas/health-data.v1.schema.json
    python -m schemas.export --check  # exit 1 when the file differs from the models

The file is generated, never edited: the pydantic models in `schemas.reading` are the
contract, and CI fails when someone changes them without re-exporting.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from schemas import SCHEMA_VERSION
from schemas.reading import HealthDataMessage

SCHEMA_PATH = Path(__file__).with_name("health-data.v1.schema.json")
SCHEMA_ID = "urn:healthstream:schema:health-data:v1"


def build_schema() -> dict[str, Any]:
    schema = HealthDataMessage.model_json_schema(mode="validation")
    # An object with "data" is always read as an envelope, never as a bare reading
    # (schemas.decode._split); pydantic cannot say so on a RootModel's union.
    schema["anyOf"] = [
        {"allOf": [choice], "not": {"required": ["data"]}}
        if choice.get("$ref") == "#/$defs/Reading"
        else choice
        for choice in schema["anyOf"]
    ]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
        "x-schema-version": SCHEMA_VERSION,
    }


def render() -> str:
    """The file's exact text: stable key order and a trailing newline for clean diffs."""
    return json.dumps(build_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.export", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--path", type=Path, default=SCHEMA_PATH, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    text = render()
    path: Path = args.path
    current = path.read_text(encoding="utf-8") if path.exists() else None
    if args.check:
        if current != text:
            print(
                f"{path} is out of date with schemas/reading.py; "
                "run `python -m schemas.export` and commit the result",
                file=sys.stderr,
            )
            return 1
        return 0
    if current != text:
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
