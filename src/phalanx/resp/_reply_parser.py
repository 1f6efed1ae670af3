"""The reply parser: server bytes in, replies out (RESP2 and RESP3), for clients and tests.

Rules of this file:
- Sans-IO like the request parser: `feed(data)`, `next_reply() -> Reply | NEED_DATA`.
- Each RESP type becomes the Python value `encode()` takes for it, so `encode` and `next_reply`
  round-trip: `+` SimpleString, `-` and `!` ErrorReply, `:` int, `$` bytes (`$-1` None), `*`
  list (`*-1` NULL_ARRAY), `%` dict, `~` set, `>` Push, `_` None, `,` float, `#` bool, `(`
  BigNumber, `=` VerbatimString. Attributes (`|`) are read and dropped. Streamed types (`$?`)
  are not supported. Keys of maps and members of sets that are aggregates become tuples (or
  frozensets) so that they can be hashed.
- Bounded: a type line (`+`, `-`, `:`, a length, ...) longer than `line_length_bytes_max`
  (1 MiB by default) is a protocol error as soon as that many bytes arrived without its CRLF,
  so a peer sending an endless line costs a bounded buffer, not all memory (the forwarding
  path's `LeaderLink` reads replies from other nodes with this parser). Bulks and aggregates
  have their own limits.
- Strict: CRLF must end every line and every bulk. Bytes that break RESP raise
  `PeerProtocolError` (from the client's point of view the server is the misbehaving peer) and
  leave the parser in that error state.
- Resumable: aggregates are built on an explicit stack that survives `NEED_DATA`, so a large
  reply arriving in many chunks is parsed once, and deep nesting cannot hit the recursion limit.
"""

from __future__ import annotations

from typing import Final

from phalanx.errors import PeerProtocolError
from phalanx.resp._types import (
    NEED_DATA,
    NULL_ARRAY,
    BigNumber,
    ErrorReply,
    NeedData,
    Push,
    Reply,
    SimpleString,
    VerbatimString,
)

__all__ = ["RespReplyParser"]

_AGGREGATE_TYPES: Final = frozenset(b"*%~>|")
_FLOATS: Final = {b"inf": float("inf"), b"-inf": float("-inf"), b"nan": float("nan")}
# Map keys and set members are made hashable by recursion, and hashing a nested tuple recurses
# in C (a million levels crash CPython): their nesting is bounded. Other values nest freely.
_HASHABLE_DEPTH_MAX: Final = 100


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _hashable(value: Reply, depth: int = 0) -> Reply:
    """Turn an unhashable aggregate into its hashable twin (list -> tuple, set -> frozenset)."""
    try:
        hash(value)
    except TypeError:
        if depth >= _HASHABLE_DEPTH_MAX:
            raise PeerProtocolError(
                "Protocol error: map key or set member nested deeper than "
                f"{_HASHABLE_DEPTH_MAX} levels"
            ) from None
        depth += 1
        if isinstance(value, (set, frozenset)):
            return frozenset(_hashable(member, depth) for member in value)
        if isinstance(value, dict):
            return tuple(
                (_hashable(key, depth), _hashable(item, depth)) for key, item in value.items()
            )
        if isinstance(value, Push):
            return tuple(_hashable(item, depth) for item in value.items)
        if isinstance(value, (list, tuple)):
            return tuple(_hashable(item, depth) for item in value)
        raise
    return value


class _Frame:
    """An aggregate being built: its type byte, the elements so far, how many are missing."""

    __slots__ = ("items", "kind", "remaining")

    def __init__(self, kind: int, remaining: int) -> None:
        self.kind = kind
        self.items: list[Reply] = []
        self.remaining = remaining


class RespReplyParser:
    """Parse RESP2/RESP3 replies from a server's byte stream."""

    __slots__ = (
        "_aggregate_length_max",
        "_bulk_length_max",
        "_chunks",
        "_chunks_length",
        "_data",
        "_error",
        "_line_length_max",
        "_needed_bytes",
        "_position",
        "_stack",
    )

    def __init__(
        self,
        *,
        bulk_length_bytes_max: int = 512 * 1024 * 1024,
        aggregate_length_max: int = 2**32,
        line_length_bytes_max: int = 1 << 20,
    ) -> None:
        self._bulk_length_max = bulk_length_bytes_max
        self._line_length_max = line_length_bytes_max
        self._aggregate_length_max = aggregate_length_max
        self._data = b""
        self._position = 0
        self._chunks: list[bytes] = []
        self._chunks_length = 0
        self._needed_bytes = 0  # bytes needed from `_position` before any progress is possible
        self._stack: list[_Frame] = []
        self._error: PeerProtocolError | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the server."""
        if data:
            chunk = data if type(data) is bytes else bytes(data)
            self._chunks.append(chunk)
            self._chunks_length += len(chunk)

    def next_reply(self) -> Reply | NeedData:
        """Return the next complete reply, or `NEED_DATA`; raises `PeerProtocolError`."""
        if self._error is not None:
            raise self._error
        if self._chunks:
            available = len(self._data) - self._position + self._chunks_length
            if available < self._needed_bytes:
                return NEED_DATA
            self._data = b"".join([self._data[self._position :], *self._chunks])
            self._position = 0
            self._chunks.clear()
            self._chunks_length = 0
        try:
            return self._parse()
        except PeerProtocolError as error:
            self._error = error
            raise

    def _parse(self) -> Reply | NeedData:
        data = self._data
        stack = self._stack
        while True:
            position = self._position
            line_end = data.find(b"\r\n", position)
            # A line is judged by its length (type byte included, CRLF not) whether or not its
            # end has arrived (a trailing CR may still be the start of that end).
            if line_end - position > self._line_length_max or (
                    line_end < 0 and len(data) - position > self._line_length_max + 1):
                raise PeerProtocolError(
                    f"Protocol error: reply line longer than {self._line_length_max} bytes")
            if line_end < 0:
                self._needed_bytes = 0
                return NEED_DATA
            if line_end == position:
                raise PeerProtocolError("Protocol error: empty type line")
            kind = data[position]
            line = data[position + 1 : line_end]
            after_line = line_end + 2
            value: Reply
            if kind == 0x24 or kind == 0x3D or kind == 0x21:  # $ = !
                length = self._length(line, kind == 0x24, self._bulk_length_max)
                if length < 0:
                    value = None
                else:
                    body_end = after_line + length
                    if body_end + 2 > len(data):
                        self._needed_bytes = body_end + 2 - position
                        return NEED_DATA
                    if data[body_end : body_end + 2] != b"\r\n":
                        raise PeerProtocolError("Protocol error: bulk string not ended by CRLF")
                    body = data[after_line:body_end]
                    after_line = body_end + 2
                    if kind == 0x24:
                        value = body
                    elif kind == 0x21:
                        value = ErrorReply(_decode(body))
                    else:
                        if len(body) < 4 or body[3] != 0x3A:
                            raise PeerProtocolError("Protocol error: bad verbatim string")
                        try:
                            value = VerbatimString(body[4:], body[:3].decode("ascii"))
                        except UnicodeDecodeError:
                            raise PeerProtocolError(
                                "Protocol error: bad verbatim string format"
                            ) from None
            elif kind in _AGGREGATE_TYPES:
                count = self._length(line, kind == 0x2A, self._aggregate_length_max)
                self._position = after_line
                if count < 0:
                    value = NULL_ARRAY
                elif count > 0:
                    stack.append(_Frame(kind, 2 * count if kind in b"%|" else count))
                    continue
                elif kind == 0x2A:
                    value = []
                elif kind == 0x25:
                    value = {}
                elif kind == 0x7E:
                    value = set()
                elif kind == 0x3E:
                    value = Push([])
                else:
                    continue  # an empty attribute
            elif kind == 0x2B:  # +
                if b"\r" in line or b"\n" in line:
                    raise PeerProtocolError("Protocol error: CR or LF inside a simple string")
                value = SimpleString(_decode(line))
            elif kind == 0x2D:  # -
                value = ErrorReply(_decode(line))
            elif kind == 0x3A:  # :
                value = self._integer(line)
            elif kind == 0x5F:  # _
                if line:
                    raise PeerProtocolError("Protocol error: bad null")
                value = None
            elif kind == 0x23:  # #
                if line == b"t":
                    value = True
                elif line == b"f":
                    value = False
                else:
                    raise PeerProtocolError("Protocol error: bad boolean")
            elif kind == 0x2C:  # ,
                value = self._double(line)
            elif kind == 0x28:  # (
                value = BigNumber(self._integer(line, digits_max=4000))
            else:
                raise PeerProtocolError(f"Protocol error: unknown reply type {chr(kind)!r}")
            self._position = after_line
            self._needed_bytes = 0
            # Hand the value up the stack, closing every aggregate it completes.
            while True:
                if not stack:
                    return value
                frame = stack[-1]
                frame.items.append(value)
                frame.remaining -= 1
                if frame.remaining:
                    break
                stack.pop()
                if frame.kind == 0x7C:  # an attribute: metadata about the next reply, dropped
                    break
                value = self._close(frame)

    @staticmethod
    def _close(frame: _Frame) -> Reply:
        items = frame.items
        if frame.kind == 0x2A:
            return items
        if frame.kind == 0x3E:
            return Push(items)
        if frame.kind == 0x7E:
            return {_hashable(member) for member in items}
        return {_hashable(items[index]): items[index + 1] for index in range(0, len(items), 2)}

    @staticmethod
    def _length(line: bytes, allow_null: bool, length_max: int) -> int:
        if line == b"-1" and allow_null:
            return -1
        if not line.isdigit() or len(line) > 20:
            raise PeerProtocolError(f"Protocol error: bad length {line!r}")
        length = int(line)
        if length > length_max:
            raise PeerProtocolError(f"Protocol error: length {length} over the limit")
        return length

    @staticmethod
    def _integer(line: bytes, digits_max: int = 20) -> int:
        body = line[1:] if line[:1] in (b"-", b"+") else line
        if not body.isdigit() or len(body) > digits_max:
            raise PeerProtocolError(f"Protocol error: bad integer {line!r}")
        return int(line)

    @staticmethod
    def _double(line: bytes) -> float:
        special = _FLOATS.get(line.lower())
        if special is not None:
            return special
        if len(line) > 400 or not line or not all(byte in b"0123456789+-.eE" for byte in line):
            raise PeerProtocolError(f"Protocol error: bad double {line!r}")
        try:
            return float(line)
        except ValueError:
            raise PeerProtocolError(f"Protocol error: bad double {line!r}") from None
