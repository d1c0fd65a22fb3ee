"""Hostile messages for the decoder tests: JSON that json.dumps cannot write (nesting past
Python's recursion limit, integers of 5,000 digits, invalid UTF-8, escaped lone
surrogates) is `Raw` text that `encode` splices into the message as is.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Raw:
    """JSON text (bytes: it may be invalid UTF-8) placed in the message verbatim."""

    text: bytes


def encode(message: Any) -> bytes:
    """json.dumps (which, unlike orjson, writes integers beyond 64 bits and escapes lone
    surrogates) with every `Raw` value replaced by its text."""
    raws: list[bytes] = []
    token = uuid.uuid4().hex

    def placeholder(value: Any) -> str:
        if not isinstance(value, Raw):
            raise TypeError(f"cannot encode {type(value).__name__}")
        raws.append(value.text)
        return f"{token}-{len(raws) - 1}"

    out = json.dumps(message, default=placeholder).encode()
    for i, text in enumerate(raws):
        out = out.replace(f'"{token}-{i}"'.encode(), text, 1)
    return out


@contextmanager
def default_recursion_limit() -> Iterator[None]:
    """Hypothesis raises the recursion limit by some 2000 frames while a test runs, which
    hides the RecursionError a value nested 1000 deep causes at the interpreter's default
    (F2). The frames pytest and hypothesis add make this stricter than the consumer."""
    saved = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        yield
    finally:
        sys.setrecursionlimit(saved)


def nested(depth: int, leaf: bytes = b"1", kind: str = "array") -> bytes:
    """`depth` arrays (or objects) around `leaf`, as JSON text."""
    if kind == "array":
        return b"[" * depth + leaf + b"]" * depth
    return b'{"a":' * depth + leaf + b"}" * depth


# The envelope, its data array and the reading hold a field 3 levels down; orjson refuses
# documents nested deeper than 1024, so 1021 is the deepest a field value can be.
FIELD_DEPTH_MAX = 1021
