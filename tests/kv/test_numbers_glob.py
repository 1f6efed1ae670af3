"""Redis integer/float rules and the Redis glob matcher."""

from __future__ import annotations

from fractions import Fraction

import pytest

from phalanx.kv.glob import glob_match
from phalanx.kv.numbers import (
    add_long_double,
    format_long_double,
    parse_int,
    parse_long_double,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [(b"0", 0), (b"-1", -1), (b"9223372036854775807", 2**63 - 1),
     (b"-9223372036854775808", -(2**63)), (b"123", 123)],
)
def test_parse_int_accepts(text: bytes, value: int) -> None:
    assert parse_int(text) == value


@pytest.mark.parametrize(
    "text",
    [b"", b"-", b"+1", b" 1", b"1 ", b"01", b"-0", b"1.0", b"9223372036854775808",
     b"-9223372036854775809", b"1e3", b"0x10", b"\xd9\xa1"],
)
def test_parse_int_rejects(text: bytes) -> None:
    assert parse_int(text) is None


def incr(old: bytes, increment: bytes) -> bytes | None:
    left, right = parse_long_double(old), parse_long_double(increment)
    if left is None or right is None:
        return None
    result = add_long_double(left, right)
    return None if result is None else format_long_double(result)


@pytest.mark.parametrize(
    ("old", "increment", "expected"),
    [
        (b"10.5", b"0.1", b"10.6"),
        (b"0.1", b"0.2", b"0.3"),  # long double, not double: no 0.30000000000000004
        (b"0", b"3.0e3", b"3000"),
        (b"5.0e3", b"2.0e2", b"5200"),
        (b"1", b"-1", b"0"),
        (b"0", b"-0.00000000000000000001", b"0"),  # "-0" is shown as "0"
        (b"0", b"1e-17", b"0.00000000000000001"),
        (b"0", b"0x10", b"16"),
        (b"0", b".5", b"0.5"),
        (b"0", b"5.", b"5"),
        (b"1", b"1e4933", None),  # overflow at parse time
        (b"inf", b"1", None),  # infinity refused by INCRBYFLOAT
        (b"nan", b"1", None),
        (b"1", b" 1", None),
        (b"1", b"1x", None),
        (b"1", b"", None),
    ],
)
def test_long_double_arithmetic_matches_redis(
    old: bytes, increment: bytes, expected: bytes | None
) -> None:
    assert incr(old, increment) == expected


def test_long_double_rounds_to_64_bit_significand() -> None:
    value = parse_long_double(b"1")
    tiny = parse_long_double(b"1e-30")
    assert value is not None and tiny is not None
    assert add_long_double(value, tiny) == Fraction(1)
    assert format_long_double(Fraction(1, 3)) == b"0.33333333333333333"


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        (b"*", b"anything", True),
        (b"*", b"", False),  # stringmatchlen; KEYS special-cases "*"
        (b"h?llo", b"hello", True),
        (b"h?llo", b"hllo", False),
        (b"h*llo", b"heeeello", True),
        (b"h[ae]llo", b"hallo", True),
        (b"h[ae]llo", b"hillo", False),
        (b"h[^e]llo", b"hallo", True),
        (b"h[^e]llo", b"hello", False),
        (b"h[a-b]llo", b"hbllo", True),
        (b"h[b-a]llo", b"hbllo", True),  # reversed range
        (b"h[a-b]llo", b"hcllo", False),
        (b"h\\*llo", b"h*llo", True),
        (b"h\\*llo", b"hello", False),
        (b"[\\]]", b"]", True),
        (b"a[bc", b"ab", True),  # unterminated class runs to the end
        (b"a\\", b"a\\", True),  # trailing backslash is literal
        (b"user:*", b"user:", True),
        (b"user:*", b"use", False),
        (b"*a*b*c*", b"xaybzc", True),
        (b"*a*b*c*", b"xaybz", False),
        (b"a*", b"a", True),
        (b"**", b"", False),
        (b"[a-]", b"]", True),  # Redis quirk: "a-]" is the range between "]" and "a"
        (b"plain", b"plain", True),
        (b"plain", b"plai", False),
    ],
)
def test_glob(pattern: bytes, subject: bytes, matches: bool) -> None:
    assert glob_match(pattern, subject) is matches


def test_glob_pathological_pattern_is_fast() -> None:
    assert glob_match(b"a*" * 30 + b"b", b"a" * 60) is False
    assert glob_match(b"*" * 5000 + b"x", b"y" * 10) is False
