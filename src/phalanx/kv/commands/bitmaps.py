"""The bitmap commands on string values: SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD and
BITFIELD_RO (https://redis.io/commands/?group=bitmap).

Rules of this module:
- A bitmap is a string value: bit 0 is the most significant bit of byte 0, as in Redis. A write
  beyond the end zero-pads the string; a read beyond it sees zeros.
- Bit offsets are limited as Redis limits them by proto-max-bulk-len (512 MB): offset >> 3 must
  be below 512 MB ("ERR bit offset is not an integer or out of range").
- Argument checks come in Redis 7.0's order, which differs per command: BITCOUNT looks the key
  up before parsing its range (a missing key answers 0 whatever the range), BITPOS checks its
  bit argument first. BITFIELD parses every operation before running any; a BITFIELD with a
  write grows the string to its highest written bit before the operations run (even when
  OVERFLOW FAIL then refuses them), as Redis does.
- Pure and deterministic; Redis 7.0's replies and error texts. See docs/architecture.md.
"""

from __future__ import annotations

from phalanx.kv.keyspace import Keyspace
from phalanx.kv.numbers import parse_int
from phalanx.kv.replies import NOT_INTEGER, SYNTAX_ERROR, WRONGTYPE, Error, Reply
from phalanx.kv.spec import Args, CommandSpec

_MAX_BYTES = 512 * 1024 * 1024
"""proto-max-bulk-len: the bitmap's size limit (the highest offset is 2**32 - 1)."""

OFFSET_ERROR = Error("ERR bit offset is not an integer or out of range")
_BIT_ERROR = Error("ERR bit is not an integer or out of range")
_TYPE_ERROR = Error("ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is "
                    "not supported but i64 is.")


def _string(db: Keyspace, key: bytes, now: int, write: bool = False) -> bytes | Error | None:
    value = db.live_for_write(key, now) if write else db.live(key, now)
    if value is None or type(value) is bytes:
        return value
    return WRONGTYPE


def parse_offset(data: bytes, bits: int = 0) -> int | Error:
    """A bit offset (BITFIELD's `#n` form multiplies by the type's width when `bits`)."""
    hashed = bits > 0 and len(data) > 1 and data[:1] == b"#"
    value = parse_int(data[1:] if hashed else data)
    if value is None:
        return OFFSET_ERROR
    if hashed:
        value *= bits
    if value < 0 or value >> 3 >= _MAX_BYTES:
        return OFFSET_ERROR
    return value


def _grow(db: Keyspace, key: bytes, current: bytes | None, highest_bit: int) -> bytearray:
    """The string of `key` as a bytearray long enough to hold `highest_bit` (zero-padded)."""
    needed = (highest_bit >> 3) + 1
    data = bytearray(b"" if current is None else current)
    if len(data) < needed:
        data.extend(bytes(needed - len(data)))
    return data


def _setbit(db: Keyspace, args: Args, now: int) -> Reply:
    offset = parse_offset(args[1])
    if isinstance(offset, Error):
        return offset
    if args[2] not in (b"0", b"1"):
        return _BIT_ERROR
    current = _string(db, args[0], now, write=True)
    if isinstance(current, Error):
        return current
    data = _grow(db, args[0], current, offset)
    byte, mask = offset >> 3, 0x80 >> (offset & 7)
    old = 1 if data[byte] & mask else 0
    if args[2] == b"1":
        data[byte] |= mask
    else:
        data[byte] &= ~mask & 0xFF
    db.store(args[0], bytes(data))
    return old


def _getbit(db: Keyspace, args: Args, now: int) -> Reply:
    offset = parse_offset(args[1])
    if isinstance(offset, Error):
        return offset
    value = _string(db, args[0], now)
    if isinstance(value, Error):
        return value
    if value is None or offset >> 3 >= len(value):
        return 0
    return 1 if value[offset >> 3] & (0x80 >> (offset & 7)) else 0


def _bit_range(length: int, start_arg: bytes, end_arg: bytes | None,
               unit: bytes | None, count: bool = False) -> tuple[int, int] | Error:
    """[first bit, last bit] of a BITCOUNT / BITPOS range (Redis's negative indexes and
    clamping, in bytes or bits); first > last for an empty range."""
    start = parse_int(start_arg)
    end = parse_int(end_arg) if end_arg is not None else None
    if start is None or (end_arg is not None and end is None):
        return NOT_INTEGER
    if count and end is not None and start < 0 and end < 0 and start > end:
        return 1, 0  # BITCOUNT: two negative indexes out of order are empty (before BIT|BYTE)
    bit_mode = False
    if unit is not None:
        if unit.upper() == b"BIT":
            bit_mode = True
        elif unit.upper() != b"BYTE":
            return SYNTAX_ERROR
    total = length * 8 if bit_mode else length
    if end is None:
        end = total - 1
    if start < 0:
        start += total
    if end < 0:
        end += total
    start, end = max(start, 0), max(end, 0)
    end = min(end, total - 1)
    if start > end:
        return 1, 0
    if bit_mode:
        return start, end
    return start * 8, end * 8 + 7


def _count_bits(value: bytes, first: int, last: int) -> int:
    """Set bits of `value` in bit positions [first, last]."""
    if first > last:
        return 0
    chunk = int.from_bytes(value[first >> 3:(last >> 3) + 1], "big")
    width = ((last >> 3) - (first >> 3) + 1) * 8
    chunk >>= 7 - (last & 7)
    chunk &= (1 << (width - (first & 7) - (7 - (last & 7)))) - 1
    return chunk.bit_count()


def _bitcount(db: Keyspace, args: Args, now: int) -> Reply:
    # BITCOUNT key [start end [BYTE | BIT]] (https://redis.io/commands/bitcount)
    value = _string(db, args[0], now)
    if isinstance(value, Error):
        return value
    if value is None:
        return 0
    if len(args) == 1:
        return int.from_bytes(value, "big").bit_count()
    if len(args) not in (3, 4):
        return SYNTAX_ERROR
    bounds = _bit_range(len(value), args[1], args[2], args[3] if len(args) == 4 else None,
                        count=True)
    if isinstance(bounds, Error):
        return bounds
    return _count_bits(value, *bounds)


def _bitpos(db: Keyspace, args: Args, now: int) -> Reply:
    # BITPOS key bit [start [end [BYTE | BIT]]] (https://redis.io/commands/bitpos)
    if args[1] not in (b"0", b"1"):
        parsed = parse_int(args[1])
        return NOT_INTEGER if parsed is None else Error("ERR The bit argument must be 1 or 0.")
    bit = args[1] == b"1"
    value = _string(db, args[0], now)
    if isinstance(value, Error):
        return value
    if value is None:
        return -1 if bit else 0
    if len(args) > 5:
        return SYNTAX_ERROR
    end_given = len(args) >= 4
    if len(args) == 2:
        first, last = 0, len(value) * 8 - 1
    else:
        bounds = _bit_range(len(value), args[2], args[3] if end_given else None,
                            args[4] if len(args) == 5 else None)
        if isinstance(bounds, Error):
            return bounds
        first, last = bounds
    if first > last:
        return -1
    chunk = int.from_bytes(value[first >> 3:(last >> 3) + 1], "big")
    width = ((last >> 3) - (first >> 3) + 1) * 8
    bits = width - (first & 7) - (7 - (last & 7))
    chunk = (chunk >> (7 - (last & 7))) & ((1 << bits) - 1)
    if not bit:
        chunk ^= (1 << bits) - 1
    if chunk:
        return first + bits - chunk.bit_length()
    if bit or end_given:
        return -1
    return last + 1  # clear bits: past the end, the string is zero-padded


def _bitop(db: Keyspace, args: Args, now: int) -> Reply:
    # BITOP AND|OR|XOR|NOT destkey key [key ...] (https://redis.io/commands/bitop)
    operation, destination, sources = args[0].upper(), args[1], args[2:]
    if operation not in (b"AND", b"OR", b"XOR", b"NOT"):
        return SYNTAX_ERROR
    if operation == b"NOT" and len(sources) != 1:
        return Error("ERR BITOP NOT must be called with a single source key.")
    values: list[bytes] = []
    for key in sources:
        value = _string(db, key, now)
        if isinstance(value, Error):
            return value
        values.append(value or b"")
    length = max(len(value) for value in values)
    numbers = [int.from_bytes(value.ljust(length, b"\0"), "big") for value in values]
    if operation == b"NOT":
        result = ~numbers[0] & ((1 << (8 * length)) - 1)
    else:
        result = numbers[0]
        for number in numbers[1:]:
            if operation == b"AND":
                result &= number
            elif operation == b"OR":
                result |= number
            else:
                result ^= number
    if length == 0:
        if db.live_for_write(destination, now) is not None:
            db.delete(destination)
        return 0
    db.store(destination, result.to_bytes(length, "big"))
    if db.expires:
        db.expires.pop(destination, None)
    return length


# --------------------------------------------------------------------------------- BITFIELD


def _field_type(data: bytes) -> tuple[bool, int] | Error:
    """(signed, bits) of a BITFIELD type: i1..i64, u1..u63."""
    if len(data) < 2 or data[:1] not in (b"i", b"I", b"u", b"U"):
        return _TYPE_ERROR
    bits = parse_int(data[1:])
    signed = data[:1] in (b"i", b"I")
    if bits is None or bits < 1 or (signed and bits > 64) or (not signed and bits > 63):
        return _TYPE_ERROR
    return signed, bits


def _read_field(data: bytes | bytearray, offset: int, bits: int, signed: bool) -> int:
    end = offset + bits
    first, last = offset >> 3, (end - 1) >> 3
    chunk = bytes(data[first:last + 1]).ljust(last - first + 1, b"\0")
    value = (int.from_bytes(chunk, "big") >> ((last + 1) * 8 - end)) & ((1 << bits) - 1)
    if signed and value >> (bits - 1):
        value -= 1 << bits
    return value


def _write_field(data: bytearray, offset: int, bits: int, value: int) -> None:
    end = offset + bits
    first, last = offset >> 3, (end - 1) >> 3
    shift = (last + 1) * 8 - end
    chunk = int.from_bytes(data[first:last + 1], "big")
    mask = ((1 << bits) - 1) << shift
    chunk = (chunk & ~mask) | ((value & ((1 << bits) - 1)) << shift)
    data[first:last + 1] = chunk.to_bytes(last - first + 1, "big")


def _overflow(value: int, bits: int, signed: bool, mode: bytes) -> int | None:
    """`value` fitted to the field by OVERFLOW WRAP / SAT, or None (FAIL, out of range)."""
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if low <= value <= high:
        return value
    if mode == b"FAIL":
        return None
    if mode == b"SAT":
        return high if value > high else low
    value &= (1 << bits) - 1
    if signed and value >> (bits - 1):
        value -= 1 << bits
    return value


def _bitfield_ops(args: Args, readonly: bool) -> list[tuple[bytes, bool, int, int, int]] | Error:
    """Parse every operation: (op or OVERFLOW mode, signed, bits, offset, argument)."""
    ops: list[tuple[bytes, bool, int, int, int]] = []
    position = 1
    while position < len(args):
        op = args[position].upper()
        remaining = len(args) - position - 1
        if op == b"OVERFLOW" and remaining >= 1:
            mode = args[position + 1].upper()
            if mode not in (b"WRAP", b"SAT", b"FAIL"):
                return Error("ERR Invalid OVERFLOW type specified")
            ops.append((mode, False, 0, 0, 0))
            position += 2
            continue
        if op not in (b"GET", b"SET", b"INCRBY") or remaining < (2 if op == b"GET" else 3):
            return SYNTAX_ERROR
        kind = _field_type(args[position + 1])
        if isinstance(kind, Error):
            return kind
        signed, bits = kind
        offset = parse_offset(args[position + 2], bits)
        if isinstance(offset, Error):
            return offset
        argument = 0
        if op != b"GET":
            parsed = parse_int(args[position + 3])
            if parsed is None:
                return NOT_INTEGER
            argument = parsed
        ops.append((op, signed, bits, offset, argument))
        position += 3 if op == b"GET" else 4
    if readonly and any(op[0] in (b"SET", b"INCRBY") for op in ops):
        return Error("ERR BITFIELD_RO only supports the GET subcommand")
    return ops


def _bitfield_run(db: Keyspace, args: Args, now: int, readonly: bool) -> Reply:
    # BITFIELD key [GET type offset] [SET type offset value] [INCRBY type offset increment]
    # [OVERFLOW WRAP|SAT|FAIL] ... (https://redis.io/commands/bitfield)
    ops = _bitfield_ops(args, readonly)
    if isinstance(ops, Error):
        return ops
    writes = [op for op in ops if op[0] in (b"SET", b"INCRBY")]
    current = _string(db, args[0], now, write=bool(writes))
    if isinstance(current, Error):
        return current
    key = args[0]
    data: bytes | bytearray = current or b""
    if writes:
        data = _grow(db, key, current, max(op[3] + op[2] - 1 for op in writes))
    mode = b"WRAP"
    replies: list[Reply] = []
    for op, signed, bits, offset, argument in ops:
        if op in (b"WRAP", b"SAT", b"FAIL"):
            mode = op
            continue
        old = _read_field(data, offset, bits, signed)
        if op == b"GET":
            replies.append(old)
            continue
        if op == b"SET":
            # Redis reads an unsigned field's new value as a uint64 (-1 is 2**64 - 1).
            target = argument if signed else argument & 0xFFFF_FFFF_FFFF_FFFF
        else:
            target = old + argument
        fitted = _overflow(target, bits, signed, mode)
        if fitted is None:
            replies.append(None)
            continue
        assert isinstance(data, bytearray)
        _write_field(data, offset, bits, fitted)
        replies.append(old if op == b"SET" else fitted)
    if writes:
        db.store(key, bytes(data))
    return replies


def _bitfield(db: Keyspace, args: Args, now: int) -> Reply:
    return _bitfield_run(db, args, now, readonly=False)


def _bitfield_ro(db: Keyspace, args: Args, now: int) -> Reply:
    return _bitfield_run(db, args, now, readonly=True)


_WRITE_SLOW = ("@write", "@bitmap", "@slow")
_READ_SLOW = ("@read", "@bitmap", "@slow")
_READ_FAST = ("@read", "@bitmap", "@fast")

COMMANDS: tuple[CommandSpec, ...] = (
    # name, arity, flags, first/last/step key, ACL categories (Redis 7.0's COMMAND INFO), handler
    CommandSpec("setbit", 4, ("write", "denyoom"), 1, 1, 1, _WRITE_SLOW, _setbit),
    CommandSpec("getbit", 3, ("readonly", "fast"), 1, 1, 1, _READ_FAST, _getbit),
    CommandSpec("bitcount", -2, ("readonly",), 1, 1, 1, _READ_SLOW, _bitcount),
    CommandSpec("bitpos", -3, ("readonly",), 1, 1, 1, _READ_SLOW, _bitpos),
    CommandSpec("bitop", -4, ("write", "denyoom"), 2, -1, 1, _WRITE_SLOW, _bitop),
    CommandSpec("bitfield", -2, ("write", "denyoom"), 1, 1, 1, _WRITE_SLOW, _bitfield),
    CommandSpec("bitfield_ro", -2, ("readonly", "fast"), 1, 1, 1, _READ_FAST, _bitfield_ro),
)
