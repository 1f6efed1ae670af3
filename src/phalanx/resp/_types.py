"""RESP value types, sentinels and limits shared by the parsers and the encoder.

Rules of this file:
- Pure data: no parsing, no encoding, no IO. Everything here is immutable.
- Python values stand for RESP types where the mapping is unambiguous: `int` is an integer,
  `bytes` a bulk string, `None` the null bulk string (RESP3 `_`), `list`/`tuple` an array, `dict`
  a map, `set`/`frozenset` a set, `float` a double, `bool` a boolean. Everything else gets a
  small frozen slotted class (`SimpleString`, `ErrorReply`, `BigNumber`, `VerbatimString`,
  `Push`) or a sentinel (`NULL_ARRAY`, which RESP2 encodes as `*-1`, distinct from `$-1`).
- Sentinels are unique enum members, never `None`, so `mypy` narrows `x is NEED_DATA`.
- Limits are validated on construction; a bad value raises `ConfigError` naming the rule.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, TypeAlias

from phalanx.errors import ConfigError, require

__all__ = [
    "DEFAULT_LIMITS",
    "NEED_DATA",
    "NULL_ARRAY",
    "BigNumber",
    "Command",
    "ErrorReply",
    "NeedData",
    "NullArray",
    "OrderedSet",
    "Push",
    "Reply",
    "RespLimits",
    "SimpleString",
    "VerbatimString",
]


class NeedData(enum.Enum):
    """Type of the `NEED_DATA` sentinel: the parser needs more bytes before it can go on."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA
"""Returned by `next_command()` / `next_reply()` when the buffered bytes hold no complete item."""


class NullArray(enum.Enum):
    """Type of the `NULL_ARRAY` sentinel: RESP2 `*-1` (a null array, distinct from `$-1`)."""

    NULL_ARRAY = "NULL_ARRAY"

    def __repr__(self) -> str:
        return "NULL_ARRAY"


NULL_ARRAY: Final = NullArray.NULL_ARRAY
"""The null array: `*-1\\r\\n` under RESP2, `_\\r\\n` under RESP3 (where all nulls are one)."""


@dataclass(frozen=True, slots=True)
class SimpleString:
    """A RESP simple string (`+OK`): short, binary-unsafe, never contains CR or LF."""

    text: str

    def __post_init__(self) -> None:
        require(
            "\r" not in self.text and "\n" not in self.text,
            f"a simple string cannot contain CR or LF: {self.text!r}",
        )


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A RESP error: `text` is what follows the '-', conventionally a code then a message.

    CR and LF in the text are replaced by spaces on encoding, as Redis does, because an error
    message often quotes client input.
    """

    text: str


@dataclass(frozen=True, slots=True)
class BigNumber:
    """A RESP3 big number (`(12345...`); RESP2 sends its decimal digits as a bulk string."""

    value: int


@dataclass(frozen=True, slots=True)
class VerbatimString:
    """A RESP3 verbatim string (`=len\\r\\ntxt:...`); RESP2 sends `text` as a bulk string.

    `format` is exactly three characters, such as "txt" or "mkd".
    """

    text: bytes
    format: str = "txt"

    def __post_init__(self) -> None:
        require(
            len(self.format) == 3 and self.format.isascii(),
            f"a verbatim string format must be 3 ASCII characters: {self.format!r}",
        )


@dataclass(frozen=True, slots=True)
class Push:
    """A RESP3 push message (`>N`, out-of-band, e.g. pub/sub); RESP2 sends it as an array."""

    items: list[Reply]


@dataclass(frozen=True, slots=True)
class OrderedSet:
    """A RESP3 set sent in this order (Redis sends some sets in its own order: COMMAND
    GETKEYSANDFLAGS's key flags); RESP2 sends it as an array."""

    items: tuple[Reply, ...]


Reply: TypeAlias = (
    "SimpleString | ErrorReply | int | bytes | str | NullArray | float | bool | BigNumber"
    " | VerbatimString | Push | OrderedSet | list[Reply] | tuple[Reply, ...] | dict[Reply, Reply]"
    " | set[Reply] | frozenset[Reply] | None"
)
"""Any value `encode()` accepts and `RespReplyParser.next_reply()` returns."""

Command: TypeAlias = list[bytes]
"""A parsed client command: the command name then its arguments, as raw bytes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RespLimits:
    """Size limits on client requests, with Redis's defaults and Redis's meaning.

    - `bulk_length_bytes_max`: largest bulk argument (Redis `proto-max-bulk-len`, 512 MiB).
    - `multibulk_count_max`: most arguments in one multibulk request (1024 * 1024).
    - `inline_length_bytes_max`: longest inline command line and longest `*N` / `$N` header
      line (Redis `PROTO_INLINE_MAX_SIZE`, 64 KiB).
    """

    bulk_length_bytes_max: int = 512 * 1024 * 1024
    multibulk_count_max: int = 1024 * 1024
    inline_length_bytes_max: int = 64 * 1024

    def __post_init__(self) -> None:
        if self.bulk_length_bytes_max < 1:
            raise ConfigError("bulk_length_bytes_max must be >= 1")
        if self.multibulk_count_max < 1:
            raise ConfigError("multibulk_count_max must be >= 1")
        if self.inline_length_bytes_max < 16:
            raise ConfigError("inline_length_bytes_max must be >= 16")


DEFAULT_LIMITS: Final = RespLimits()
"""Redis's default request limits."""
