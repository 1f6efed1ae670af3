"""Encoding replies (RESP2 and RESP3) and requests (multibulk) to bytes.

Rules of this file:
- Pure functions: `encode(reply, protocol)` and `encode_command(*arguments)`; no state, no IO.
- One Python type per RESP type (see `_types`): dispatch is on the exact type, so a `bool` is a
  boolean, never an integer, and a `str` is a bulk string in UTF-8 (`SimpleString` is `+`).
- RESP2 has no map, set, double, boolean, big number, verbatim string, push or single null, so
  they degrade the way Redis degrades them: map -> flat array, set -> array, double -> bulk
  string, boolean -> integer 0/1, big number and verbatim string -> bulk string, push -> array,
  `None` -> `$-1`, `NULL_ARRAY` -> `*-1`. RESP3 uses `%`, `~`, `,`, `#`, `(`, `=`, `>`, `_`.
- Doubles are written like Redis: shortest round-trip digits, integral values without ".0",
  and `inf`, `-inf`, `nan`.
- Nesting is walked with an explicit stack, so deep replies cannot hit the recursion limit.
- `SimpleString` and `ErrorReply` text is encoded as UTF-8 with `surrogateescape`, the decoding
  of the reply parser, so any reply it returns re-encodes byte for byte (a proxy relays them).
- Constants for the hottest replies are pre-encoded here; send them as they are.
"""

from __future__ import annotations

import math
from typing import Final

from phalanx.errors import require
from phalanx.resp._types import (
    NULL_ARRAY,
    BigNumber,
    ErrorReply,
    OrderedSet,
    Push,
    Reply,
    SimpleString,
    VerbatimString,
)

__all__ = [
    "EMPTY_ARRAY",
    "EMPTY_BULK",
    "NULL_ARRAY_RESP2",
    "NULL_BULK",
    "NULL_RESP3",
    "OK",
    "ONE",
    "PONG",
    "QUEUED",
    "ZERO",
    "encode",
    "encode_command",
]

OK: Final = b"+OK\r\n"
PONG: Final = b"+PONG\r\n"
QUEUED: Final = b"+QUEUED\r\n"
ZERO: Final = b":0\r\n"
ONE: Final = b":1\r\n"
NULL_BULK: Final = b"$-1\r\n"
NULL_ARRAY_RESP2: Final = b"*-1\r\n"
NULL_RESP3: Final = b"_\r\n"
EMPTY_ARRAY: Final = b"*0\r\n"
EMPTY_BULK: Final = b"$0\r\n\r\n"

_INTEGERS: Final = tuple(b":%d\r\n" % number for number in range(1024))


def _format_double(value: float) -> bytes:
    """Format a double as Redis does: shortest round-trip digits, no trailing ".0"."""
    if math.isinf(value):
        return b"inf" if value > 0 else b"-inf"
    if math.isnan(value):
        return b"nan"
    text = repr(value)
    if text.endswith(".0"):
        text = text[:-2]
    return text.encode("ascii")


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(data), data)


def _bytes_key(member: Reply) -> bytes:
    return member if isinstance(member, bytes) else b""


def encode(reply: Reply, protocol: int = 2) -> bytes:
    """Encode one reply for a connection speaking RESP `protocol` (2 or 3)."""
    require(protocol in (2, 3), f"protocol must be 2 or 3, not {protocol!r}")
    # Fast paths for the commonest flat replies.
    if type(reply) is bytes:
        return _bulk(reply)
    if type(reply) is SimpleString:
        return b"+%b\r\n" % reply.text.encode("utf-8", "surrogateescape")
    if type(reply) is int and 0 <= reply < 1024:
        return _INTEGERS[reply]
    if reply is None:
        return NULL_RESP3 if protocol == 3 else NULL_BULK
    parts: list[bytes] = []
    _encode_into(parts, reply, protocol == 3)
    return b"".join(parts)


def _encode_into(parts: list[bytes], reply: Reply, resp3: bool) -> None:
    """Append the encoding of `reply` to `parts`, depth-first, with an explicit stack."""
    stack: list[Reply] = [reply]
    append = parts.append
    while stack:
        item = stack.pop()
        if type(item) is bytes:
            append(_bulk(item))
        elif type(item) is int:
            append(b":%d\r\n" % item)
        elif type(item) is SimpleString:
            append(b"+%b\r\n" % item.text.encode("utf-8", "surrogateescape"))
        elif item is None:
            append(NULL_RESP3 if resp3 else NULL_BULK)
        elif type(item) is list or type(item) is tuple:
            append(b"*%d\r\n" % len(item))
            stack.extend(reversed(item))
        elif type(item) is str:
            append(_bulk(item.encode()))
        elif type(item) is ErrorReply:
            text = item.text.replace("\r", " ").replace("\n", " ")
            append(b"-%b\r\n" % text.encode("utf-8", "surrogateescape"))
        elif item is NULL_ARRAY:
            append(NULL_RESP3 if resp3 else NULL_ARRAY_RESP2)
        elif type(item) is dict:
            append(b"%%%d\r\n" % len(item) if resp3 else b"*%d\r\n" % (2 * len(item)))
            flat: list[Reply] = []
            for key, value in item.items():
                flat.append(key)
                flat.append(value)
            stack.extend(reversed(flat))
        elif type(item) is set or type(item) is frozenset:
            append(b"~%d\r\n" % len(item) if resp3 else b"*%d\r\n" % len(item))
            members: list[Reply] = list(item)
            if all(type(member) is bytes for member in members):
                members.sort(key=_bytes_key)  # deterministic order, as SMEMBERS is
            stack.extend(reversed(members))
        elif type(item) is OrderedSet:
            append(b"~%d\r\n" % len(item.items) if resp3 else b"*%d\r\n" % len(item.items))
            stack.extend(reversed(item.items))
        elif type(item) is float:
            digits = _format_double(item)
            append(b",%b\r\n" % digits if resp3 else _bulk(digits))
        elif type(item) is bool:
            if resp3:
                append(b"#t\r\n" if item else b"#f\r\n")
            else:
                append(ONE if item else ZERO)
        elif type(item) is BigNumber:
            digits = b"%d" % item.value
            append(b"(%b\r\n" % digits if resp3 else _bulk(digits))
        elif type(item) is VerbatimString:
            if resp3:
                body = item.format.encode() + b":" + item.text
                append(b"=%d\r\n%b\r\n" % (len(body), body))
            else:
                append(_bulk(item.text))
        elif type(item) is Push:
            append(b">%d\r\n" % len(item.items) if resp3 else b"*%d\r\n" % len(item.items))
            stack.extend(reversed(item.items))
        elif isinstance(item, (bytearray, memoryview)):
            append(_bulk(bytes(item)))
        else:
            require(False, f"cannot encode a {type(item).__name__} as a RESP reply: {item!r}")


def encode_command(*arguments: bytes | str | int | float) -> bytes:
    """Encode a request as a multibulk array of bulk strings, as clients send it.

    `str` is encoded as UTF-8, `int` and `float` as their decimal text (floats like Redis).
    """
    parts = [b"*%d\r\n" % len(arguments)]
    for argument in arguments:
        if type(argument) is bytes:
            data = argument
        elif isinstance(argument, str):
            data = argument.encode()
        elif isinstance(argument, bool):
            data = b"1" if argument else b"0"
        elif isinstance(argument, int):
            data = b"%d" % argument
        elif isinstance(argument, float):
            data = _format_double(argument)
        else:
            data = bytes(argument)
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)
