"""Reply values of the state machine: what `apply` and `read` hand back for the RESP layer.

Rules of this file:
- A reply is a plain Python value: `bytes` (bulk string), `int` (integer), `None` (null bulk or
  null array), `str` (simple status such as "OK" or "string"), `float` (RESP3 double; unused by
  the commands here), `list` of replies (array), or `Error` (an error reply).
- `Error.message` is the whole Redis error line without the leading "-", starting with its code
  ("ERR ...", "WRONGTYPE ..."), so the RESP layer writes `-` + message + CRLF.
- Standard library only; no behaviour beyond construction (the helpers below build the error
  lines several command families share).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias


@dataclass(frozen=True, slots=True)
class Error:
    """An error reply; `message` starts with the Redis error code, e.g. "ERR syntax error"."""

    message: str


Reply: TypeAlias = bytes | int | float | str | Error | list["Reply"] | None
"""Everything a command can answer."""

OK = "OK"

WRONGTYPE = Error("WRONGTYPE Operation against a key holding the wrong kind of value")
SYNTAX_ERROR = Error("ERR syntax error")
NOT_INTEGER = Error("ERR value is not an integer or out of range")
NOT_FLOAT = Error("ERR value is not a valid float")
OVERFLOW = Error("ERR increment or decrement would overflow")


def arity_error(command_name: str) -> Error:
    """Redis's error for a wrong argument count; `command_name` is lowercase."""
    return Error(f"ERR wrong number of arguments for '{command_name}' command")


def error_text(data: bytes) -> str:
    """Client bytes made safe to echo inside a one-line error reply."""
    return data.decode("utf-8", "replace").replace("\r", " ").replace("\n", " ")


def invalid_expire(command_name: str) -> Error:
    """Redis's error for an out-of-range expire time; `command_name` is lowercase."""
    return Error(f"ERR invalid expire time in '{command_name}' command")
