"""HyperLogLog: PFADD, PFCOUNT (one key or the union of several), PFMERGE
(https://redis.io/docs/data-types/probabilistic/hyperloglogs/), counting exactly as
redis-server 7.0 counts.

How phalanx matches Redis's numbers:
- The same sketch: 16384 registers of 6 bits (precision 14); an element's register and run
  length come from MurmurHash64A (seed 0xadc83b19) of its bytes: the low 14 bits pick the
  register, the position of the lowest set bit of the remaining 50 (plus a sentinel bit) + 1 is
  the run length.
- The same estimator: Ertl's improved raw estimator ("New cardinality estimation algorithms for
  HyperLogLog sketches", 2017) over the register histogram, rounded half away from zero, which
  is what Redis 4+ uses, so PFCOUNT answers the same integer.

Encoding (a decision): values are strings in Redis's "HYLL" layout (a 16-byte header: magic,
encoding byte, 3 unused bytes, an 8-byte little-endian cached cardinality whose top bit marks it
stale; then the registers), so GET / DUMP of a phalanx HLL is a valid HLL for redis-server and
the reverse. phalanx WRITES only the dense encoding (12,304 bytes per key, where Redis starts
small keys in its sparse encoding) because reproducing Redis's sparse byte layout update by
update buys nothing but byte equality; it READS both encodings (a sparse HLL SET or RESTOREd from
Redis counts and merges). A string that is not such a value answers
"WRONGTYPE Key is not a valid HyperLogLog string value."; a malformed sparse body
"INVALIDOBJ Corrupted HLL object detected".

Rules of this module:
- PFCOUNT is a read (as Redis flags it): it never refreshes the cached cardinality (Redis
  does, which changes the string's bytes; phalanx's GET after PFCOUNT differs there). A valid
  cached cardinality (a value written by Redis) is honoured, as Redis honours it.
- Writes (PFADD that changes a register, PFMERGE) mark the cache stale. Pure and deterministic.
"""

from __future__ import annotations

import math

from phalanx.kv.keyspace import Keyspace
from phalanx.kv.replies import OK, WRONGTYPE, Error, Reply
from phalanx.kv.spec import Args, CommandSpec

_P = 14
_REGISTERS = 1 << _P
_Q = 64 - _P
_HEADER = 16
_DENSE_BYTES = _REGISTERS * 6 // 8
_DENSE_SIZE = _HEADER + _DENSE_BYTES
_DENSE, _SPARSE = 0, 1
_ALPHA_INF = 0.721347520444481703680
_MASK64 = (1 << 64) - 1
_M = 0xC6A4A7935BD1E995

NOT_HLL = Error("WRONGTYPE Key is not a valid HyperLogLog string value.")
CORRUPT = Error("INVALIDOBJ Corrupted HLL object detected")


def murmur64a(data: bytes, seed: int = 0xADC83B19) -> int:
    """MurmurHash64A (Austin Appleby's 64-bit MurmurHash2), little-endian blocks."""
    h = (seed ^ (len(data) * _M)) & _MASK64
    blocks = len(data) // 8
    for position in range(0, blocks * 8, 8):
        k = (int.from_bytes(data[position:position + 8], "little") * _M) & _MASK64
        k ^= k >> 47
        h ^= (k * _M) & _MASK64
        h = (h * _M) & _MASK64
    tail = data[blocks * 8:]
    if tail:
        h = ((h ^ int.from_bytes(tail, "little")) * _M) & _MASK64
    h ^= h >> 47
    h = (h * _M) & _MASK64
    return h ^ (h >> 47)


def element_register(element: bytes) -> tuple[int, int]:
    """(register index, run length) of one element."""
    hashed = murmur64a(element)
    rest = (hashed >> _P) | (1 << _Q)
    return hashed & (_REGISTERS - 1), (rest & -rest).bit_length()


def _registers(value: bytes) -> list[int] | None:
    """The 16384 registers of a valid HLL string, or None for a corrupt sparse body."""
    if value[4] == _DENSE:
        body = value[_HEADER:]
        registers: list[int] = []
        extend = registers.extend
        for position in range(0, _DENSE_BYTES, 3):
            word = body[position] | body[position + 1] << 8 | body[position + 2] << 16
            extend((word & 63, word >> 6 & 63, word >> 12 & 63, word >> 18))
        return registers
    registers = []
    position, body = 0, value[_HEADER:]
    while position < len(body):
        opcode = body[position]
        if opcode & 0x80:  # VAL: 1vvvvvxx, value v + 1 repeated x + 1 times
            registers.extend([(opcode >> 2 & 31) + 1] * ((opcode & 3) + 1))
            position += 1
        elif opcode & 0x40:  # XZERO: 01xxxxxx yyyyyyyy, (x << 8 | y) + 1 zeros
            if position + 1 >= len(body):
                return None
            registers.extend([0] * (((opcode & 63) << 8 | body[position + 1]) + 1))
            position += 2
        else:  # ZERO: 00xxxxxx, x + 1 zeros
            registers.extend([0] * ((opcode & 63) + 1))
            position += 1
        if len(registers) > _REGISTERS:
            return None
    return registers if len(registers) == _REGISTERS else None


def _dense(registers: list[int], card: bytes = b"\0" * 7 + b"\x80") -> bytes:
    """A dense HLL string of `registers` (the cached cardinality stale unless given)."""
    packed = bytearray(_DENSE_BYTES)
    for group, position in enumerate(range(0, _DENSE_BYTES, 3)):
        base = group * 4
        word = (registers[base] | registers[base + 1] << 6 | registers[base + 2] << 12
                | registers[base + 3] << 18)
        packed[position:position + 3] = word.to_bytes(3, "little")
    return b"HYLL" + bytes((_DENSE, 0, 0, 0)) + card + bytes(packed)


def _hll(db: Keyspace, key: bytes, now: int, write: bool = False) -> bytes | Error | None:
    """The HLL string at `key`, None if absent, or the error (wrong type, not an HLL)."""
    value = db.live_for_write(key, now) if write else db.live(key, now)
    if value is None:
        return None
    if type(value) is not bytes:
        return WRONGTYPE
    if (len(value) < _HEADER or value[:4] != b"HYLL" or value[4] > _SPARSE
            or (value[4] == _DENSE and len(value) != _DENSE_SIZE)):
        return NOT_HLL
    return value


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        previous = z
        z += x * y
        y += y
        if previous == z:
            return z


def _tau(x: float) -> float:
    if x in (0.0, 1.0):
        return 0.0
    y, z = 1.0, 1 - x
    while True:
        x = math.sqrt(x)
        previous = z
        y *= 0.5
        z -= (1 - x) ** 2 * y
        if previous == z:
            return z / 3


def estimate(registers: list[int]) -> int:
    """Ertl's improved raw estimate of the registers' cardinality (as Redis computes it)."""
    histogram = [0] * (_Q + 2)
    for register in registers:
        histogram[register] += 1
    m = float(_REGISTERS)
    z = m * _tau((m - histogram[_Q + 1]) / m)
    for run in range(_Q, 0, -1):
        z += histogram[run]
        z *= 0.5
    z += m * _sigma(histogram[0] / m)
    value = _ALPHA_INF * m * m / z
    whole = math.floor(value)
    return int(whole) + (1 if value - whole >= 0.5 else 0)


def _pfadd(db: Keyspace, args: Args, now: int) -> Reply:
    # PFADD key [element ...] (https://redis.io/commands/pfadd): 1 if a register changed or
    # the key was created.
    key = args[0]
    value = _hll(db, key, now, write=True)
    if isinstance(value, Error):
        return value
    if value is None:
        created, data = True, bytearray(_dense([0] * _REGISTERS, bytes(8)))
    elif value[4] == _DENSE:
        created, data = False, bytearray(value)
    else:
        registers = _registers(value)
        if registers is None:
            return CORRUPT
        created, data = False, bytearray(_dense(registers, value[8:16]))
    changed = False
    for element in args[1:]:
        index, run = element_register(element)
        # Register i is bits 6i..6i+5 of the little-endian register area.
        bit = index * 6
        byte, shift = _HEADER + (bit >> 3), bit & 7
        width = 2 if byte + 1 < _DENSE_SIZE else 1
        word = int.from_bytes(data[byte:byte + width], "little")
        if run > (word >> shift) & 63:
            word = (word & ~(63 << shift)) | (run << shift)
            data[byte:byte + width] = word.to_bytes(width, "little")
            changed = True
    if changed:
        data[15] |= 0x80  # the cached cardinality is stale
    if changed or created:
        db.store(key, bytes(data))
    return 1 if changed or created else 0


def _union(db: Keyspace, keys: Args, now: int) -> list[int] | Error:
    merged = [0] * _REGISTERS
    for key in keys:
        value = _hll(db, key, now)
        if isinstance(value, Error):
            return value
        if value is None:
            continue
        registers = _registers(value)
        if registers is None:
            return CORRUPT
        merged = [a if a >= b else b for a, b in zip(merged, registers, strict=True)]
    return merged


def _pfcount(db: Keyspace, args: Args, now: int) -> Reply:
    # PFCOUNT key [key ...] (https://redis.io/commands/pfcount)
    if len(args) == 1:
        value = _hll(db, args[0], now)
        if isinstance(value, Error):
            return value
        if value is None:
            return 0
        if not value[15] & 0x80:  # a valid cached cardinality (written by Redis)
            return int.from_bytes(value[8:16], "little")
        registers = _registers(value)
        return CORRUPT if registers is None else estimate(registers)
    merged = _union(db, args, now)
    return merged if isinstance(merged, Error) else estimate(merged)


def _pfmerge(db: Keyspace, args: Args, now: int) -> Reply:
    # PFMERGE destkey [sourcekey ...] (https://redis.io/commands/pfmerge): the union of the
    # sources AND the destination; the destination keeps its TTL.
    destination = args[0]
    existing = _hll(db, destination, now, write=True)
    if isinstance(existing, Error):
        return existing
    merged = _union(db, args, now)
    if isinstance(merged, Error):
        return merged
    db.store(destination, _dense(merged))
    return OK


_HLL_WRITE = ("@write", "@hyperloglog")

COMMANDS: tuple[CommandSpec, ...] = (
    # name, arity, flags, first/last/step key, ACL categories (Redis 7.0's COMMAND INFO), handler
    CommandSpec("pfadd", -2, ("write", "denyoom", "fast"), 1, 1, 1, (*_HLL_WRITE, "@fast"),
                _pfadd),
    CommandSpec("pfcount", -2, ("readonly",), 1, -1, 1, ("@read", "@hyperloglog", "@slow"),
                _pfcount),
    CommandSpec("pfmerge", -2, ("write", "denyoom"), 1, -1, 1, (*_HLL_WRITE, "@slow"),
                _pfmerge),
)
