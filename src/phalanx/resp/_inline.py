"""Splitting an inline command line into arguments, exactly as Redis's `sdssplitargs` does.

Rules of this file:
- One public function, `split_inline_arguments(line) -> list[bytes] | None`; `None` means
  unbalanced quotes (the caller turns it into the protocol error).
- Behaviour matches `sdssplitargs` (Redis `src/sds.c`) byte for byte: blanks are C `isspace`
  (space, \\t, \\n, \\v, \\f, \\r) between arguments, but an unquoted argument ends only at space,
  \\t, \\n, \\r; double quotes understand \\n \\r \\t \\b \\a \\xHH and \\<any>; single quotes only
  \\'; a closing quote must be followed by a blank or the end; a NUL byte ends the line (C string).
- The common case (no quotes, \\v, \\f or NUL) is one `bytes.split()` in C; only lines with quotes
  take the per-byte path, and inline lines are bounded by the inline limit.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["split_inline_arguments"]

_NEEDS_SLOW_PATH: Final = re.compile(rb"[\"'\x0b\x0c]")
_BLANKS: Final = frozenset(b" \t\n\x0b\x0c\r")
_UNQUOTED_TERMINATORS: Final = frozenset(b" \t\n\r")
_HEX_DIGITS: Final = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES: Final = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
_DOUBLE_QUOTE: Final = 0x22
_SINGLE_QUOTE: Final = 0x27
_BACKSLASH: Final = 0x5C


def split_inline_arguments(line: bytes) -> list[bytes] | None:
    """Split one inline command line (without its line ending) into arguments, or None on
    unbalanced quotes."""
    nul = line.find(b"\0")
    if nul >= 0:
        line = line[:nul]
    if _NEEDS_SLOW_PATH.search(line) is None:
        return line.split()
    return _split_quoted(line)


def _split_quoted(line: bytes) -> list[bytes] | None:
    """The faithful per-byte port of `sdssplitargs`, for lines with quotes, \\v or \\f."""
    arguments: list[bytes] = []
    length = len(line)
    position = 0
    while True:
        while position < length and line[position] in _BLANKS:
            position += 1
        if position >= length:
            return arguments
        current = bytearray()
        in_double_quotes = False
        in_single_quotes = False
        while True:
            byte = line[position] if position < length else 0
            following = line[position + 1] if position + 1 < length else 0
            if in_double_quotes:
                if (
                    byte == _BACKSLASH
                    and following == ord("x")
                    and position + 3 < length
                    and line[position + 2] in _HEX_DIGITS
                    and line[position + 3] in _HEX_DIGITS
                ):
                    current.append(int(line[position + 2 : position + 4], 16))
                    position += 3
                elif byte == _BACKSLASH and following:
                    position += 1
                    current.append(_ESCAPES.get(following, following))
                elif byte == _DOUBLE_QUOTE:
                    if following and following not in _BLANKS:
                        return None  # a closing quote must be followed by a blank
                    position += 1
                    break
                elif not byte:
                    return None  # unterminated quotes
                else:
                    current.append(byte)
            elif in_single_quotes:
                if byte == _BACKSLASH and following == _SINGLE_QUOTE:
                    position += 1
                    current.append(_SINGLE_QUOTE)
                elif byte == _SINGLE_QUOTE:
                    if following and following not in _BLANKS:
                        return None
                    position += 1
                    break
                elif not byte:
                    return None
                else:
                    current.append(byte)
            elif not byte or byte in _UNQUOTED_TERMINATORS:
                if byte:
                    position += 1
                break
            elif byte == _DOUBLE_QUOTE:
                in_double_quotes = True
            elif byte == _SINGLE_QUOTE:
                in_single_quotes = True
            else:
                current.append(byte)
            position += 1
        arguments.append(bytes(current))
