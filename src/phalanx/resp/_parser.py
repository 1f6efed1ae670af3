"""The pure request parser: client bytes in, commands (`list[bytes]`) out, in the h11 style.

Rules of this file:
- Sans-IO: `feed(data)` buffers bytes, `next_command()` returns one command or `NEED_DATA`.
  No sockets, no clocks, no asyncio; the caller owns all IO.
- Redis semantics, from `processInlineBuffer` / `processMultibulkBuffer` (Redis `networking.c`):
  a request starting with '*' is multibulk, anything else is an inline line split like
  `sdssplitargs`; empty commands (`*0`, `*-1`, blank lines) are skipped; a header line ends at
  the first CR and the byte after it is skipped unchecked, as are the two bytes after a bulk;
  integers must be canonical (Redis `string2ll`); error messages are Redis's, word for word.
- Limits (`RespLimits`) are checked so that the outcome never depends on how the bytes were
  chunked: an over-long line is rejected whether or not its end has arrived yet.
- The only exception `next_command()` raises is `ClientProtocolError`; any other is a bug. After
  one, the parser is in an error state and raises it again: the connection must be closed once
  the error reply is written (Redis does the same).
- Speed: this is the hot path. No per-byte Python loops on the multibulk path: `bytes.find`,
  slicing and a dict of canonical small integers. Fed chunks are joined lazily, only when the
  parser needs them, so a large bulk arriving in many chunks is copied once, not once per chunk.
- Memory: nothing is allocated from a declared length; the parser holds only bytes it was fed.
"""

from __future__ import annotations

from typing import Final

from phalanx.errors import ClientProtocolError
from phalanx.resp._inline import split_inline_arguments
from phalanx.resp._types import DEFAULT_LIMITS, NEED_DATA, Command, NeedData, RespLimits

__all__ = ["RespParser", "parse_canonical_integer"]

_ASTERISK: Final = 0x2A
_DOLLAR: Final = 0x24
_CR: Final = 0x0D
_LF: Final = 0x0A

# Canonical decimal spellings of small non-negative integers: one dict lookup both validates
# and converts the length of almost every bulk and multibulk header on the hot path.
_SMALL_INTEGERS: Final[dict[bytes, int]] = {b"%d" % number: number for number in range(4096)}
_LONG_LONG_MIN: Final = -(2**63)
_LONG_LONG_MAX: Final = 2**63 - 1


def parse_canonical_integer(digits: bytes) -> int | None:
    """Parse a signed 64-bit integer the way Redis's `string2ll` does, or return None.

    Accepted: "0", or an optional '-' then a digit 1-9 then digits, within the long long range.
    Rejected: empty, '+', leading zeros, "-0", spaces, anything else, and out-of-range values.
    """
    small = _SMALL_INTEGERS.get(digits)
    if small is not None:
        return small
    # Longer than any long long: reject before int() (which also guards CPython's digit limit).
    if not digits or len(digits) > 20:
        return None
    body = digits[1:] if digits[0] == 0x2D else digits
    if not body or not body.isdigit() or body[0] == 0x30:
        return None
    value = int(digits)
    if value < _LONG_LONG_MIN or value > _LONG_LONG_MAX:
        return None
    return value


def _printable_byte(byte: int) -> str:
    """Render one byte as Redis's `%c` does inside an error reply (CR/LF become spaces)."""
    return " " if byte in (_CR, _LF) else chr(byte)


class RespParser:
    """Parse RESP requests (multibulk and inline) from a client's byte stream.

    Feed bytes with `feed()`; call `next_command()` until it returns `NEED_DATA`.
    """

    __slots__ = (
        "_arguments",
        "_arguments_remaining",
        "_bulk_length",
        "_bulk_length_max",
        "_chunks",
        "_chunks_length",
        "_data",
        "_error",
        "_inline_length_max",
        "_multibulk_count_max",
        "_position",
    )

    def __init__(self, limits: RespLimits = DEFAULT_LIMITS) -> None:
        self._bulk_length_max = limits.bulk_length_bytes_max
        self._multibulk_count_max = limits.multibulk_count_max
        self._inline_length_max = limits.inline_length_bytes_max
        # Parsed bytes live in `_data[_position:]`; newer bytes wait in `_chunks` until needed.
        self._data = b""
        self._position = 0
        self._chunks: list[bytes] = []
        self._chunks_length = 0
        # State of a multibulk command cut short by the end of the buffer.
        self._arguments: list[bytes] = []
        self._arguments_remaining = 0
        self._bulk_length = -1
        self._error: ClientProtocolError | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes fed but not yet returned as part of a command (for query-buffer limits)."""
        consumed_arguments = sum(map(len, self._arguments))
        return len(self._data) - self._position + self._chunks_length + consumed_arguments

    @property
    def error(self) -> ClientProtocolError | None:
        """The protocol error that stopped this parser, or None while it is healthy."""
        return self._error

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the client."""
        if data:
            chunk = data if type(data) is bytes else bytes(data)
            self._chunks.append(chunk)
            self._chunks_length += len(chunk)

    def next_command(self) -> Command | NeedData:
        """Return the next complete command, or `NEED_DATA`.

        Raises `ClientProtocolError` (with Redis's message) on bytes that break the protocol;
        the parser then stays in that error state.
        """
        if self._error is not None:
            raise self._error
        if self._chunks:
            if self._bulk_length >= 0 and (
                len(self._data) - self._position + self._chunks_length < self._bulk_length + 2
            ):
                return NEED_DATA  # still waiting for a bulk body: do not copy anything yet
            self._data = b"".join([self._data[self._position :], *self._chunks])
            self._position = 0
            self._chunks.clear()
            self._chunks_length = 0
        try:
            return self._parse()
        except ClientProtocolError as error:
            self._error = error
            raise

    def _parse(self) -> Command | NeedData:
        data = self._data
        position = self._position
        end = len(data)
        remaining = self._arguments_remaining
        while not remaining:
            # At the start of a command.
            if position >= end:
                self._data = b""
                self._position = 0
                return NEED_DATA
            if data[position] != _ASTERISK:
                command = self._parse_inline(data, position, end)
                if command is NEED_DATA:
                    return NEED_DATA
                position = self._position
                if command:
                    return command
                continue  # a blank line: Redis ignores it
            line_end = data.find(b"\r", position)
            if line_end < 0 or line_end + 2 > end or line_end - position > self._inline_length_max:
                # Judge the line's length whether or not its end has arrived, so the outcome
                # does not depend on how the bytes were chunked.
                if (line_end if line_end >= 0 else end) - position > self._inline_length_max:
                    raise ClientProtocolError("Protocol error: too big mbulk count string")
                self._position = position
                return NEED_DATA
            count_digits = data[position + 1 : line_end]
            count = _SMALL_INTEGERS.get(count_digits)
            if count is None:
                count = parse_canonical_integer(count_digits)
                if count is None:
                    raise ClientProtocolError("Protocol error: invalid multibulk length")
            if count > self._multibulk_count_max:
                raise ClientProtocolError("Protocol error: invalid multibulk length")
            position = line_end + 2
            if count > 0:
                remaining = count
                self._arguments = []
            # count <= 0 is an empty command: Redis skips it.
        arguments = self._arguments
        bulk_length = self._bulk_length
        small_integers = _SMALL_INTEGERS
        inline_length_max = self._inline_length_max
        while remaining:
            if bulk_length < 0:
                line_end = data.find(b"\r", position)
                if line_end < 0 or line_end + 2 > end or line_end - position > inline_length_max:
                    if (line_end if line_end >= 0 else end) - position > inline_length_max:
                        raise ClientProtocolError("Protocol error: too big bulk count string")
                    break
                if data[position] != _DOLLAR:
                    raise ClientProtocolError(
                        "Protocol error: expected '$', got "
                        f"'{_printable_byte(data[position])}'"
                    )
                length_digits = data[position + 1 : line_end]
                bulk_length = small_integers.get(length_digits, -1)
                if bulk_length < 0:
                    parsed = parse_canonical_integer(length_digits)
                    if parsed is None or parsed < 0:
                        raise ClientProtocolError("Protocol error: invalid bulk length")
                    bulk_length = parsed
                if bulk_length > self._bulk_length_max:
                    raise ClientProtocolError("Protocol error: invalid bulk length")
                position = line_end + 2
            body_end = position + bulk_length
            if body_end + 2 > end:
                break
            arguments.append(data[position:body_end])
            position = body_end + 2  # the CRLF after a bulk is skipped unchecked, as in Redis
            bulk_length = -1
            remaining -= 1
        self._position = position
        self._bulk_length = bulk_length
        self._arguments_remaining = remaining
        if remaining:
            return NEED_DATA
        self._arguments = []
        return arguments

    def _parse_inline(self, data: bytes, position: int, end: int) -> Command | NeedData:
        """Parse one inline line at `position`; on success `_position` moves past it."""
        line_feed = data.find(b"\n", position)
        if line_feed < 0:
            pending = end - position
            if data[end - 1] == _CR:
                pending -= 1  # the CR may yet be the line's terminator
            if pending > self._inline_length_max:
                raise ClientProtocolError("Protocol error: too big inline request")
            self._position = position
            return NEED_DATA
        line_end = line_feed - 1 if line_feed > position and data[line_feed - 1] == _CR else line_feed
        if line_end - position > self._inline_length_max:
            raise ClientProtocolError("Protocol error: too big inline request")
        arguments = split_inline_arguments(data[position:line_end])
        if arguments is None:
            raise ClientProtocolError("Protocol error: unbalanced quotes in request")
        self._position = line_feed + 1
        return arguments
