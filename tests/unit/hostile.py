"""Hostile values for the decoder: what a broken or malicious producer can put in a message.

Shared by the hostile-input and contract tests. Some of these cannot be written by
json.dumps (nesting past Python's recursion limit, integers of 5,000 digits, invalid
UTF-8, escaped lone surrogates), so they are `Raw` JSON text that `encode` splices into
the message as is.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from schemas.reading import ALIASES


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
# The depths that matter first: hypothesis favours the start of a sampled list.
DEPTHS = [FIELD_DEPTH_MAX, 989, 255, 1000, 500, 256, 254, 988, 65, 64, 63, 1022, 1]

DEEP = st.builds(
    lambda depth, leaf, kind: Raw(nested(depth, leaf, kind)),
    st.one_of(st.sampled_from(DEPTHS), st.integers(1, 1030)),
    st.sampled_from([b"1", b'"x"', b"{}", b"[]", b"null", b'"%s"']),
    st.sampled_from(["array", "object"]),
)
DEEP_TEXT = st.builds(  # the same, as a JSON string (the slow fields' usual form)
    lambda depth, kind: nested(depth, b"1", kind).decode(),
    st.one_of(st.sampled_from([*DEPTHS, 1023, 1024, 1025]), st.integers(1, 1100)),
    st.sampled_from(["array", "object"]),
)

_HUGE_DIGITS = [5000, 34, 4301, 29, 20_000, 20, 4300, 28, 19]
HUGE_NUMBERS = st.one_of(
    st.builds(lambda n, sign, zeros: sign + "0" * zeros + "1" * n,
              st.sampled_from(_HUGE_DIGITS), st.sampled_from(["", "-", " ", "+"]),
              st.sampled_from([0, 5000, 1])),
    st.builds(lambda n: Raw(b"1" * n), st.sampled_from(_HUGE_DIGITS)),
    st.sampled_from(
        [
            Raw(b"18446744073709551615"),  # orjson's largest int: u64
            Raw(b"18446744073709551616"),  # read as a float
            Raw(b"-9223372036854775808"),
            Raw(b"-9223372036854775809"),
            Raw(b"1e308"),
            Raw(b"-1e308"),
            Raw(b"1e309"),  # infinity: not valid JSON for orjson
            Raw(b"1" + b"0" * 400 + b".5"),
            Raw(b"0." + b"0" * 5000 + b"1"),
            Raw(b"-0"),
            Raw(b"-0.0"),
            Raw(b"5e-324"),
        ]
    ),
    st.sampled_from(
        [
            "1e999999999",
            "-1e999999999",
            "1e-999999999",
            "1E+99999999999999999999",  # beyond Decimal's exponent range
            "1e-99999999999999999999",
            "0E+99999999999999999999",
            "NaN",
            "-NaN",
            "sNaN",
            "Infinity",
            "-inf",
            "1_000",
            "\u0663\u0666.\u0665",  # Arabic-Indic digits: Python's int() reads them
            "0x10",
            "1" * 5000 + ".5",
            "0." + "0" * 5000 + "1",
            "9" * 4300,
        ]
    ),
    st.integers(-(2**70), 2**70),
)  # fmt: skip

# Characters that break naive SQL, logging or format strings, plus NUL and controls.
NASTY_CHARS = "%s%d%n{}{0}'\"\\\x00\x01\x1b\n\r\t\x7f\u2028\u00e9\u202e\U0001f600"
TEXT = st.one_of(  # what a UTF-8 producer can send
    st.text(st.sampled_from(NASTY_CHARS), max_size=20),
    st.text(max_size=20),  # any code point but surrogates
    st.sampled_from(["%s", "%(x)s", "{0}", "'; DROP TABLE t; --", "\\", '\\"', "\x00", " "]),
)


def has_lone_surrogate(text: str) -> bool:
    """Whether `text` keeps a surrogate once JSON has joined the valid pairs."""
    return any("\ud800" <= c <= "\udfff" for c in json.loads(json.dumps(text)))


# Lone surrogates amid the rest: json.dumps escapes them ("\ud800"), which orjson refuses.
SURROGATE_TEXT = st.text(
    st.one_of(st.characters(categories=["Cs"]), st.sampled_from(NASTY_CHARS)), min_size=1
).filter(has_lone_surrogate)
NASTY_TEXT = st.one_of(TEXT, SURROGATE_TEXT)
BAD_BYTES = st.sampled_from(
    [
        Raw(b'"\xff\xfe"'),  # not UTF-8
        Raw(b'"\xc3"'),  # truncated sequence
        Raw(b'"\xc0\xaf"'),  # overlong
        Raw(b'"\xed\xa0\x80"'),  # a surrogate encoded as UTF-8
        Raw(b'"\\ud800"'),  # escaped lone surrogates
        Raw(b'"\\udfff x"'),
        Raw(b'"\\ud83d\\ude00"'),  # a valid pair: fine
        Raw(b'"a\\u0000b"'),
        Raw(b'"\x00"'),  # raw control character: invalid JSON
    ]
)
BIG_VALUES = st.sampled_from(
    [
        "x" * 65,
        "x" * 100_000,
        "1" * 100_000,
        list(range(10_000)),
        [{}] * 5_000,
        {f"k{i}": i for i in range(5_000)},
        ["%s"] * 2_000,
        Raw(b"[" + b",".join([b"[]"] * 20_000) + b"]"),
    ]
)
# Without the 100 kB values: cheap enough to mix into every contract test (test_contract).
SMALL_HOSTILE = st.one_of(DEEP, DEEP_TEXT, HUGE_NUMBERS, NASTY_TEXT, BAD_BYTES)
HOSTILE = st.one_of(SMALL_HOSTILE, BIG_VALUES)

# Sleep intervals whose arithmetic used to crash (F3, F4).
TIMESTAMP_MS = st.one_of(
    st.sampled_from(_HUGE_DIGITS).map(lambda n: "1" * n),
    HUGE_NUMBERS,
    st.integers(-(2**64), 2**64),
    st.integers(-(2**64), 2**64).map(str),
    st.sampled_from([0, 1757815560000, "1757815560000", 9223372036854775807, True, 1.5e12]),
)
SLEEP = st.builds(
    lambda pairs, as_text: (lambda v: encode(v).decode() if as_text else v)(
        {"code": 0, "data": [{"startTimeStamp": s, "endTimeStamp": e} for s, e in pairs]}
    ),
    st.lists(
        st.one_of(
            st.tuples(st.sampled_from([0, "0", 1757815560000]), TIMESTAMP_MS),
            st.tuples(TIMESTAMP_MS, TIMESTAMP_MS),
        ),
        min_size=1,
        max_size=4,
    ),
    st.booleans(),
)

READING_FIELDS = sorted(ALIASES)
ENVELOPE_FIELDS = ["customerId", "customer_id", "orgId", "org_id", "userId", "user_id"]
