"""DUMP and RESTORE: one key's value as opaque bytes, and back.

The payload is phalanx's own serialisation, not Redis's RDB format (clients treat it as
opaque; a payload from redis-server is refused with Redis's own checksum error):

    body | b"PX" | u16 format version (little endian) | u32 CRC-32 of everything before it

where body is a type tag (0 string, 1 list, 2 set, 3 hash, 4 sorted set, 5 stream) then, for a
stream, its entries (a varint count; each: id as two varints, packed fields as one item), ids,
counters, groups, PELs and consumers in the same items and varints (zigzag for signed numbers;
see `_stream_items`; no marshal: a client's payload is parsed by this code only, and
validated by `Stream.from_plain`), for a string,
one item, and for a container a varint count and that many items (a hash: field, value, ...;
a sorted set: member, score as `float.hex` ASCII, ...), each item a varint length and its
bytes. Set members are written sorted, so DUMP of equal values
gives equal bytes on every replica. A payload whose trailer does not match gets "ERR DUMP
payload version or checksum are wrong"; a well-sealed body that does not decode (truncated,
trailing bytes, an empty container, a repeated member or field) gets "ERR Bad data format".

Rules of this module: pure and deterministic; only `db` helpers change the keyspace. RESTORE
accepts IDLETIME and FREQ (validated, then ignored: phalanx tracks no access times).
"""

from __future__ import annotations

import importlib
import struct
import zlib
from collections import deque
from typing import cast

from phalanx.kv.keyspace import Keyspace
from phalanx.kv.numbers import INT64_MAX, parse_int
from phalanx.kv.replies import NOT_INTEGER, OK, SYNTAX_ERROR, Error, Reply
from phalanx.kv.snapshot import Value
from phalanx.kv.spec import Args, CommandSpec
from phalanx.kv.stream import Stream

DUMP_VERSION = 1
_TRAILER = struct.Struct("<2sHI")
_MARK = b"PX"
_STRING, _LIST, _SET, _HASH, _ZSET, _STREAM = 0, 1, 2, 3, 4, 5
_SEQ_MASK = (1 << 64) - 1

_BAD_TRAILER = Error("ERR DUMP payload version or checksum are wrong")
_BAD_FORMAT = Error("ERR Bad data format")


class _Malformed(Exception):
    """A sealed body that does not decode (internal to this module)."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _items(parts: list[bytes], items: list[bytes]) -> None:
    for item in items:
        parts.append(_varint(len(item)))
        parts.append(item)


def encode_value(value: Value) -> bytes | None:
    """The DUMP payload of a value, or None for a type this format does not know."""
    parts: list[bytes] = []
    if type(value) is Stream:
        parts.append(bytes([_STREAM]))
        _stream_items(parts, value)
    elif type(value) is bytes:
        parts.append(bytes([_STRING]))
        _items(parts, [value])
    elif type(value) is deque:
        parts += [bytes([_LIST]), _varint(len(value))]
        _items(parts, list(value))
    elif type(value) is set:
        parts += [bytes([_SET]), _varint(len(value))]
        _items(parts, sorted(value))
    elif type(value) is dict:
        parts += [bytes([_HASH]), _varint(len(value))]
        for field, item in value.items():
            _items(parts, [field, item])
    elif isinstance(scores := getattr(value, "scores", None), dict):
        # the sorted set (kv.zset.ZSet, recognised by its member -> score dict)
        parts += [bytes([_ZSET]), _varint(len(scores))]
        for member, score in sorted(scores.items()):
            _items(parts, [member, float(score).hex().encode()])
    else:
        return None
    body = b"".join(parts) + _MARK + struct.pack("<H", DUMP_VERSION)
    return body + struct.pack("<I", zlib.crc32(body))


def _signed(value: int) -> bytes:
    """A signed integer as a zigzag varint."""
    return _varint(value * 2 if value >= 0 else -value * 2 - 1)


def _stream_id(value: int) -> bytes:
    return _varint(value >> 64) + _varint(value & _SEQ_MASK)


def _stream_items(parts: list[bytes], stream: Stream) -> None:
    """A stream's body: entries (count, then id and packed fields each), last id, max
    deleted id, entries added, groups (count; name, last id, entries read, PEL count and
    entries (id, consumer, delivery time, count), consumer count and consumers (name, seen
    time)). Groups and consumers in name order: equal streams give equal bytes."""
    ids, fields, last_id, max_deleted, added, groups = stream.to_plain()
    assert isinstance(ids, list) and isinstance(fields, list) and isinstance(groups, list)
    parts.append(_varint(len(ids)))
    for stream_id, packed in zip(ids, fields, strict=True):
        parts.append(_stream_id(stream_id))
        _items(parts, [packed])
    parts += [_stream_id(cast(int, last_id)), _stream_id(cast(int, max_deleted)),
              _varint(cast(int, added)), _varint(len(groups))]
    for name, group_last, entries_read, pel, consumers in groups:
        _items(parts, [name])
        parts += [_stream_id(group_last), _signed(entries_read), _varint(len(pel) // 4)]
        for position in range(0, len(pel), 4):
            pending_id, consumer, delivered_at, deliveries = pel[position:position + 4]
            parts.append(_stream_id(pending_id))
            _items(parts, [consumer])
            parts += [_signed(delivered_at), _signed(deliveries)]
        parts.append(_varint(len(consumers) // 2))
        for position in range(0, len(consumers), 2):
            _items(parts, [consumers[position]])
            parts.append(_signed(consumers[position + 1]))


class _Reader:
    __slots__ = ("data", "position")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def varint(self) -> int:
        value = shift = 0
        while True:
            if self.position >= len(self.data) or shift > 63:
                raise _Malformed
            byte = self.data[self.position]
            self.position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    def item(self) -> bytes:
        length = self.varint()
        end = self.position + length
        if end > len(self.data):
            raise _Malformed
        item = self.data[self.position:end]
        self.position = end
        return item


def _read_stream(reader: _Reader) -> Value:
    """The inverse of `_stream_items`, validated by `Stream.from_plain`."""

    def stream_id() -> int:
        ms, seq = reader.varint(), reader.varint()
        if ms > _SEQ_MASK or seq > _SEQ_MASK:
            raise _Malformed
        return ms << 64 | seq

    def signed() -> int:
        raw = reader.varint()
        return raw >> 1 if not raw & 1 else -(raw >> 1) - 1

    def bounded(count: int) -> int:
        if count > len(reader.data):
            raise _Malformed
        return count

    ids: list[int] = []
    fields: list[bytes] = []
    for _ in range(bounded(reader.varint())):
        ids.append(stream_id())
        fields.append(reader.item())
    last_id, max_deleted, added = stream_id(), stream_id(), reader.varint()
    groups: list[tuple[object, ...]] = []
    for _ in range(bounded(reader.varint())):
        name, group_last, entries_read = reader.item(), stream_id(), signed()
        pel: list[object] = []
        for _ in range(bounded(reader.varint())):
            pel += [stream_id(), reader.item(), signed(), signed()]
        consumers: list[object] = []
        for _ in range(bounded(reader.varint())):
            consumers += [reader.item(), signed()]
        groups.append((name, group_last, entries_read, pel, consumers))
    try:
        return Stream.from_plain((ids, fields, last_id, max_deleted, added, groups))
    except ValueError as exc:
        raise _Malformed from exc


def _sorted_set(reader: _Reader, count: int) -> Value:
    """A sorted set's members and scores (finite or infinite, never NaN), as a ZSet."""
    pairs: dict[bytes, float] = {}
    for _ in range(count):
        member = reader.item()
        try:
            score = float.fromhex(reader.item().decode("ascii"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Malformed from exc
        if score != score:
            raise _Malformed
        pairs[member] = score
    if len(pairs) != count:
        raise _Malformed
    try:  # the sorted-set type lives in kv.zset (another module family's)
        zset_type = importlib.import_module("phalanx.kv.zset").ZSet
    except (ImportError, AttributeError) as exc:
        raise _Malformed from exc
    return cast(Value, zset_type.from_items(pairs.items()))


def decode_value(payload: bytes) -> Value | Error:
    """The value a DUMP payload holds, or Redis's error for a bad one."""
    if len(payload) < _TRAILER.size + 1:
        return _BAD_TRAILER
    mark, version, checksum = _TRAILER.unpack_from(payload, len(payload) - _TRAILER.size)
    if (mark != _MARK or version != DUMP_VERSION
            or zlib.crc32(payload[:-4]) != checksum):
        return _BAD_TRAILER
    reader = _Reader(payload[:-_TRAILER.size])
    try:
        tag = reader.data[0]
        reader.position = 1
        value: Value
        if tag == _STREAM:
            value = _read_stream(reader)
        elif tag == _STRING:
            value = reader.item()
        else:
            count = reader.varint()
            if count == 0 or count > len(reader.data):
                raise _Malformed
            if tag == _LIST:
                value = deque(reader.item() for _ in range(count))
            elif tag == _SET:
                members = {reader.item() for _ in range(count)}
                if len(members) != count:
                    raise _Malformed
                value = members
            elif tag == _HASH:
                fields: dict[bytes, bytes] = {}
                for _ in range(count):
                    field = reader.item()
                    fields[field] = reader.item()
                if len(fields) != count:
                    raise _Malformed
                value = fields
            elif tag == _ZSET:
                value = _sorted_set(reader, count)
            else:
                raise _Malformed
        if reader.position != len(reader.data):
            raise _Malformed
    except _Malformed:
        return _BAD_FORMAT
    return value


def _dump(db: Keyspace, args: Args, now: int) -> Reply:
    value = db.live(args[0], now)
    if value is None:
        return None
    payload = encode_value(value)
    if payload is None:
        return Error("ERR phalanx: DUMP does not support this value type yet")
    return payload


def _restore(db: Keyspace, args: Args, now: int) -> Reply:
    # RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f]
    # (https://redis.io/commands/restore): options, then BUSYKEY, then the TTL, then the payload
    replace = absttl = False
    idle = freq = False
    position = 3
    while position < len(args):
        option = args[position].upper()
        more = position + 1 < len(args)
        if option == b"REPLACE":
            replace = True
        elif option == b"ABSTTL":
            absttl = True
        elif option == b"IDLETIME" and more and not freq:
            parsed = parse_int(args[position + 1])
            if parsed is None:
                return NOT_INTEGER
            if parsed < 0:
                return Error("ERR Invalid IDLETIME value, must be >= 0")
            idle = True
            position += 1
        elif option == b"FREQ" and more and not idle:
            parsed = parse_int(args[position + 1])
            if parsed is None:
                return NOT_INTEGER
            if parsed < 0 or parsed > 255:
                return Error("ERR Invalid FREQ value, must be >= 0 and <= 255")
            freq = True
            position += 1
        else:
            return SYNTAX_ERROR
        position += 1
    key = args[0]
    exists = db.live_for_write(key, now) is not None
    if exists and not replace:
        return Error("BUSYKEY Target key name already exists.")
    ttl = parse_int(args[1])
    if ttl is None:
        return NOT_INTEGER
    if ttl < 0:
        return Error("ERR Invalid TTL value, must be >= 0")
    value = decode_value(args[2])
    if isinstance(value, Error):
        return value
    if exists:
        db.delete(key)
    if ttl and not absttl:
        ttl = min(ttl + now, INT64_MAX)
    if ttl and ttl <= now:
        return OK  # already expired: nothing is created (an old value was still replaced)
    db.store(key, value)
    if ttl:
        db.set_expire(key, ttl)
    return OK


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("dump", 2, ("readonly",), 1, 1, 1, ("@keyspace", "@read", "@slow"), _dump),
    CommandSpec("restore", -4, ("write", "denyoom"), 1, 1, 1,
                ("@keyspace", "@write", "@slow", "@dangerous"), _restore),
)
"""DUMP and RESTORE, listed among the key commands (`keys.COMMANDS`)."""
