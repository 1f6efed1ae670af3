"""`split_inline_arguments` against the behaviour of Redis's `sdssplitargs`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phalanx.resp import split_inline_arguments


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"", []),
        (b"   ", []),
        (b"PING", [b"PING"]),
        (b"set a b", [b"set", b"a", b"b"]),
        (b"\x0b\x0c set\ta\rb", [b"set", b"a", b"b"]),
        (b"a\x0bb", [b"a\x0bb"]),  # \v separates only between arguments, as in sdssplitargs
        (b'"a b"', [b"a b"]),
        (b'"\\x41\\x4a\\x4"', [b"AJx4"]),  # a broken \\x escape is a plain x
        (b'"\\n\\r\\t\\b\\a\\z\\\\"', [b"\n\r\t\b\az\\"]),
        (b"'a\\'b'", [b"a'b"]),
        (b"'a\\nb'", [b"a\\nb"]),
        (b'x"y z"w', None),
        (b'x"y z" w', [b"xy z", b"w"]),
        (b'""', [b""]),
        (b"''", [b""]),
        (b'"abc', None),
        (b"'abc", None),
        (b'"abc"def', None),
        (b"a\x00b c", [b"a"]),
        (b'"a\x00"', None),
        (b"\xff\xfe x", [b"\xff\xfe", b"x"]),
    ],
)
def test_split_like_sdssplitargs(line: bytes, expected: list[bytes] | None) -> None:
    assert split_inline_arguments(line) == expected


@given(st.lists(st.text("abcXYZ019:-_.!@#$%^&*", min_size=1).map(str.encode), max_size=8))
def test_plain_words_round_trip(words: list[bytes]) -> None:
    assert split_inline_arguments(b"  ".join(words)) == words


@given(st.lists(st.binary(max_size=20), max_size=6))
def test_quoted_arguments_round_trip(arguments: list[bytes]) -> None:
    quoted = b" ".join(b'"' + b"".join(b"\\x%02x" % byte for byte in argument) + b'"'
                       for argument in arguments)
    assert split_inline_arguments(quoted) == arguments


@given(st.binary(max_size=200))
def test_any_line_splits_or_reports_unbalanced_quotes(line: bytes) -> None:
    result = split_inline_arguments(line)
    assert result is None or all(isinstance(argument, bytes) for argument in result)
