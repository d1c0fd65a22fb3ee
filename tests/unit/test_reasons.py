"""One list of dead-letter reasons: what decode, intake and flush produce is in the enum,
and the metrics and the README name every member."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from consumer.observe.prometheus import DEAD_LETTER_REASONS
from consumer.pipeline.reasons import DeadLetterReason
from consumer.sinks.normalized import json_schema

ROOT = Path(__file__).resolve().parents[2]
SNAKE = re.compile(r"^[a-z]+(_[a-z]+)+$")


def decode_reasons() -> set[str]:
    """Reason literals of schemas/decode.py: first arguments of MessageError/ReadingError/
    DroppedField, `reason = "..."` and module constants in upper case."""
    tree = ast.parse((ROOT / "schemas" / "decode.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        called = isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        if called and node.func.id in ("MessageError", "ReadingError", "DroppedField"):  # type: ignore[attr-defined]
            found |= {
                a.value
                for a in node.args
                if isinstance(a, ast.Constant) and isinstance(a.value, str) and SNAKE.match(a.value)
            }
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            value = node.value.value
            named = "reason" in names or any(n.isupper() and n.startswith("INVALID") for n in names)
            if named and isinstance(value, str) and SNAKE.match(value):
                found.add(value)
    return found


def test_every_reason_decode_raises_is_a_member() -> None:
    found = decode_reasons()
    assert {"invalid_json", "schema_violation", "invalid_slow_field"} <= found  # the scan works
    assert found <= set(DeadLetterReason)


def test_an_unknown_reason_never_crashes_intake() -> None:
    assert DeadLetterReason.of("schema_violation") is DeadLetterReason.SCHEMA_VIOLATION
    assert DeadLetterReason.of("made_up") is DeadLetterReason.UNDECODABLE


def test_metrics_and_readme_name_every_reason() -> None:
    assert set(DEAD_LETTER_REASONS) == set(DeadLetterReason)
    readme = (ROOT / "README.md").read_text()
    assert [r for r in DeadLetterReason if f"`{r}`" not in readme] == []


def test_the_published_normalized_schema_is_current() -> None:
    path = ROOT / "schemas" / "health-data.normalized.v1.schema.json"
    assert json.loads(path.read_text()) == json_schema(), (
        f"{path.name} is stale: regenerate it from consumer.sinks.normalized.json_schema()"
    )
