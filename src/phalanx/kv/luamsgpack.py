"""MessagePack for Lua scripts: `cmsgpack.pack`, `unpack`, `unpack_one`, `unpack_limit`, as
Redis 7.0's bundled lua_cmsgpack (deps/lua/src/lua_cmsgpack.c) encodes and decodes.

Rules of this module (the scripting engine, kv/scripting.py, calls it through its bridge):
- Pure and deterministic: standard library only; Lua values come in as the bridge sees them
  (bytes, int, float, bool, None, and Lua tables read through `items()`), and decoded tables go
  out through the engine's `table_from`.
- Encoding as lua_cmsgpack: a number equal to an int64 is an integer (the smallest of positive
  / negative fixint, uint8..64, int8..64), another is a float32 when exact, else a float64; a
  string is a str (fixstr, str8, str16, str32); a table whose keys are exactly 1..n is an array
  (fixarray, array16, array32; empty = array), any other a map (fixmap, map16, map32, in the
  table's iteration order); tables nested deeper than 16 levels and other types are nil.
- Decoding: every MessagePack type but ext; bin is a string; integers and floats are Lua
  numbers; nil inside an array leaves a hole. Errors are lua_cmsgpack's texts.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

MAX_NESTING = 16
MISSING = "Missing bytes in input."
BAD_FORMAT = "Bad data format in input."


class MsgpackError(Exception):
    """A decoding error (its text is lua_cmsgpack's)."""


def _integer(value: int) -> bytes:
    if value >= 0:
        if value <= 127:
            return bytes([value])
        if value <= 0xFF:
            return b"\xcc" + struct.pack(">B", value)
        if value <= 0xFFFF:
            return b"\xcd" + struct.pack(">H", value)
        if value <= 0xFFFFFFFF:
            return b"\xce" + struct.pack(">I", value)
        return b"\xcf" + struct.pack(">Q", value)
    if value >= -32:
        return struct.pack(">b", value)
    if value >= -128:
        return b"\xd0" + struct.pack(">b", value)
    if value >= -32768:
        return b"\xd1" + struct.pack(">h", value)
    if value >= -2147483648:
        return b"\xd2" + struct.pack(">i", value)
    return b"\xd3" + struct.pack(">q", value)


def _number(value: float) -> bytes:
    """mp_encode_lua_number: an int64-equivalent number is an integer; else a float32 when
    the C cast keeps the value (infinities too), else a float64 (NaN too)."""
    if math.isfinite(value) and -2**63 <= value < 2**63 and int(value) == value:
        return _integer(int(value))
    try:
        single = struct.unpack(">f", struct.pack(">f", value))[0]
    except OverflowError:
        single = None
    if single is not None and single == value:
        return b"\xca" + struct.pack(">f", value)
    return b"\xcb" + struct.pack(">d", value)


def _string(data: bytes) -> bytes:
    size = len(data)
    if size < 32:
        return bytes([0xA0 | size]) + data
    if size <= 0xFF:
        return b"\xd9" + struct.pack(">B", size) + data
    if size <= 0xFFFF:
        return b"\xda" + struct.pack(">H", size) + data
    return b"\xdb" + struct.pack(">I", size) + data


def _header(size: int, fix: int, short: int, long: int) -> bytes:
    if size <= 15:
        return bytes([fix | size])
    if size <= 0xFFFF:
        return bytes([short]) + struct.pack(">H", size)
    return bytes([long]) + struct.pack(">I", size)


def pack_value(value: Any, is_table: Callable[[Any], bool], level: int = 0) -> bytes:
    """One Lua value as lua_cmsgpack's mp_encode_lua_type writes it."""
    if isinstance(value, bool):
        return b"\xc3" if value else b"\xc2"
    if isinstance(value, (int, float)):
        return _number(float(value)) if isinstance(value, float) else _integer(value) \
            if -2**63 <= value < 2**64 else _number(float(value))
    if isinstance(value, bytes):
        return _string(value)
    if isinstance(value, str):
        return _string(value.encode())
    if not is_table(value) or level >= MAX_NESTING:
        return b"\xc0"
    items = list(value.items())
    keys = [key for key, _ in items]
    numeric = all(isinstance(key, (int, float)) and not isinstance(key, bool) and key > 0
                  and int(key) == key for key in keys)
    if numeric and (not keys or max(keys) == len(keys)):
        out = [_header(len(items), 0x90, 0xDC, 0xDD)]
        by_index = dict(items)
        out += [pack_value(by_index.get(index), is_table, level + 1)
                for index in range(1, len(items) + 1)]
        return b"".join(out)
    out = [_header(len(items), 0x80, 0xDE, 0xDF)]
    for key, item in items:
        out.append(pack_value(key, is_table, level + 1))
        out.append(pack_value(item, is_table, level + 1))
    return b"".join(out)


class _Reader:
    __slots__ = ("data", "position", "table_from")

    def __init__(self, data: bytes, position: int, table_from: Callable[[Any], Any]) -> None:
        self.data = data
        self.position = position
        self.table_from = table_from

    def take(self, size: int) -> bytes:
        end = self.position + size
        if end > len(self.data):
            raise MsgpackError(MISSING)
        chunk = self.data[self.position:end]
        self.position = end
        return chunk

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def value(self) -> Any:
        kind = self.take(1)[0]
        if kind <= 0x7F:
            return kind
        if kind >= 0xE0:
            return kind - 256
        if 0xA0 <= kind <= 0xBF:
            return self.take(kind & 0x1F)
        if 0x90 <= kind <= 0x9F:
            return self.array(kind & 0x0F)
        if 0x80 <= kind <= 0x8F:
            return self.map(kind & 0x0F)
        simple = {0xC0: None, 0xC2: False, 0xC3: True}
        if kind in simple:
            return simple[kind]
        formats = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: ">b", 0xD1: ">h",
                   0xD2: ">i", 0xD3: ">q", 0xCA: ">f", 0xCB: ">d"}
        if kind in formats:
            return self.unpack(formats[kind])
        sizes = {0xD9: ">B", 0xDA: ">H", 0xDB: ">I", 0xC4: ">B", 0xC5: ">H", 0xC6: ">I"}
        if kind in sizes:
            return self.take(self.unpack(sizes[kind]))
        if kind in (0xDC, 0xDD):
            return self.array(self.unpack(">H" if kind == 0xDC else ">I"))
        if kind in (0xDE, 0xDF):
            return self.map(self.unpack(">H" if kind == 0xDE else ">I"))
        raise MsgpackError(BAD_FORMAT)

    def array(self, size: int) -> Any:
        if size > len(self.data) - self.position:
            raise MsgpackError(MISSING)  # each element takes a byte at least
        items = {index: self.value() for index in range(1, size + 1)}
        return self.table_from({k: v for k, v in items.items() if v is not None})

    def map(self, size: int) -> Any:
        if 2 * size > len(self.data) - self.position:
            raise MsgpackError(MISSING)
        items: dict[Any, Any] = {}
        for _ in range(size):
            key = self.value()
            item = self.value()
            if key is not None and item is not None:
                items[key] = item
        return self.table_from(items)


def unpack(data: bytes, limit: int, offset: int, table_from: Callable[[Any], Any]
           ) -> tuple[list[Any], int]:
    """Decode up to `limit` values (0: all) from `offset`: (values, next offset or -1 at the
    end), as mp_unpack_full. Raises MsgpackError with lua_cmsgpack's text."""
    if offset < 0 or limit < 0:
        raise MsgpackError(f"Invalid request to unpack with offset of {offset} and limit of "
                           f"{len(data)}.")
    if offset > len(data):
        raise MsgpackError(f"Start offset {offset} greater than input length {len(data)}.")
    reader = _Reader(data, offset, table_from)
    values: list[Any] = []
    while reader.position < len(data) and (limit == 0 or len(values) < limit):
        values.append(reader.value())
    return values, -1 if reader.position >= len(data) else reader.position
