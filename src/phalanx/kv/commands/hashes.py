"""The hash commands: HSET, HMSET, HSETNX, HGET, HMGET, HDEL, HGETALL, HKEYS, HVALS, HEXISTS,
HLEN, HSTRLEN, HINCRBY, HINCRBYFLOAT, HRANDFIELD, HSCAN.

Rules of this module:
- A hash is a `dict[bytes, bytes]` (field order kept: HGETALL and the snapshot follow
  insertion order); an empty hash is never stored (the last HDEL deletes the key).
- HRANDFIELD is deterministic: `EntryRandom` seeded from the clock and the command's words
  (see `commands/common.py`). HSCAN answers a hash of up to 128 fields whole (cursor 0).
- Each command is a `Handler` (keyspace, args, now) -> Reply, registered in `COMMANDS`, this
  family's rows of the command table. See docs/architecture.md.
"""

from __future__ import annotations

from phalanx.kv.commands.common import (
    EntryRandom,
    parse_cursor,
    parse_long_in,
    parse_scan_options,
    scan_collection,
)
from phalanx.kv.keyspace import Keyspace
from phalanx.kv.numbers import (
    INT64_MAX,
    INT64_MIN,
    add_long_double,
    format_long_double,
    parse_int,
    parse_long_double,
)
from phalanx.kv.replies import (
    NOT_FLOAT,
    NOT_INTEGER,
    OK,
    OVERFLOW,
    SYNTAX_ERROR,
    WRONGTYPE,
    Error,
    Reply,
    arity_error,
)
from phalanx.kv.spec import Args, CommandSpec


def _fields(db: Keyspace, key: bytes, now: int) -> dict[bytes, bytes] | Error | None:
    value = db.live(key, now)
    if value is None or type(value) is dict:
        return value
    return WRONGTYPE


def _fields_for_write(db: Keyspace, key: bytes, now: int) -> dict[bytes, bytes] | Error | None:
    value = db.live_for_write(key, now)
    if value is None or type(value) is dict:
        return value
    return WRONGTYPE


def _hset(db: Keyspace, args: Args, now: int) -> Reply:
    if len(args) % 2 == 0:
        return arity_error("hset")
    key = args[0]
    fields = _fields_for_write(db, key, now)
    if isinstance(fields, Error):
        return fields
    if fields is None:
        fields = {}
        db.store(key, fields)
    before = len(fields)
    for position in range(1, len(args), 2):
        fields[args[position]] = args[position + 1]
    return len(fields) - before


def _hget(db: Keyspace, args: Args, now: int) -> Reply:
    fields = _fields(db, args[0], now)
    if fields is None or isinstance(fields, Error):
        return fields
    return fields.get(args[1])


def _hdel(db: Keyspace, args: Args, now: int) -> Reply:
    key = args[0]
    fields = _fields_for_write(db, key, now)
    if fields is None:
        return 0
    if isinstance(fields, Error):
        return fields
    deleted = 0
    for field in args[1:]:
        if fields.pop(field, None) is not None:
            deleted += 1
    if not fields:
        db.delete(key)
    return deleted


def _hgetall(db: Keyspace, args: Args, now: int) -> Reply:
    fields = _fields(db, args[0], now)
    if isinstance(fields, Error):
        return fields
    flat: list[Reply] = []
    if fields is not None:
        for field, value in fields.items():
            flat.append(field)
            flat.append(value)
    return flat


def _hexists(db: Keyspace, args: Args, now: int) -> Reply:
    fields = _fields(db, args[0], now)
    if isinstance(fields, Error):
        return fields
    return 1 if fields is not None and args[1] in fields else 0


def _hlen(db: Keyspace, args: Args, now: int) -> Reply:
    fields = _fields(db, args[0], now)
    if isinstance(fields, Error):
        return fields
    return 0 if fields is None else len(fields)


def _hincrby(db: Keyspace, args: Args, now: int) -> Reply:
    increment = parse_int(args[2])
    if increment is None:
        return NOT_INTEGER
    key = args[0]
    fields = _fields_for_write(db, key, now)
    if isinstance(fields, Error):
        return fields
    old = 0
    if fields is not None and args[1] in fields:
        parsed = parse_int(fields[args[1]])
        if parsed is None:
            return Error("ERR hash value is not an integer")
        old = parsed
    result = old + increment
    if result > INT64_MAX or result < INT64_MIN:
        return OVERFLOW
    if fields is None:
        fields = {}
        db.store(key, fields)
    fields[args[1]] = b"%d" % result
    return result


def _hmset(db: Keyspace, args: Args, now: int) -> Reply:
    if len(args) % 2 == 0:
        return arity_error("hmset")
    reply = _hset(db, args, now)
    return reply if isinstance(reply, Error) else OK


def _hsetnx(db: Keyspace, args: Args, now: int) -> Reply:
    key = args[0]
    fields = _fields_for_write(db, key, now)
    if isinstance(fields, Error):
        return fields
    if fields is None:
        fields = {}
        db.store(key, fields)
    elif args[1] in fields:
        return 0
    fields[args[1]] = args[2]
    return 1


def _hmget(db: Keyspace, args: Args, now: int) -> Reply:
    fields = _fields(db, args[0], now)
    if isinstance(fields, Error):
        return fields
    if fields is None:
        return [None] * (len(args) - 1)
    found: list[Reply] = [fields.get(field) for field in args[1:]]
    return found


def _hkeys(db: Keyspace, args: Args, now: int) -> Reply:
    fields = _fields(db, args[0], now)
    if isinstance(fields, Error):
        return fields
    return [] if fields is None else [*fields]


def _hvals(db: Keyspace, args: Args, now: int) -> Reply:
    fields = _fields(db, args[0], now)
    if isinstance(fields, Error):
        return fields
    return [] if fields is None else [*fields.values()]


def _hstrlen(db: Keyspace, args: Args, now: int) -> Reply:
    fields = _fields(db, args[0], now)
    if isinstance(fields, Error):
        return fields
    value = None if fields is None else fields.get(args[1])
    return 0 if value is None else len(value)


def _hincrbyfloat(db: Keyspace, args: Args, now: int) -> Reply:
    # https://redis.io/commands/hincrbyfloat: long double arithmetic, as INCRBYFLOAT
    increment = parse_long_double(args[2])
    if increment is None:
        return NOT_FLOAT
    if isinstance(increment, float):
        return Error("ERR value is NaN or Infinity")
    key = args[0]
    fields = _fields_for_write(db, key, now)
    if isinstance(fields, Error):
        return fields
    old = parse_long_double(b"0")
    if fields is not None and args[1] in fields:
        old = parse_long_double(fields[args[1]])
        if old is None:
            return Error("ERR hash value is not a float")
    assert old is not None
    result = add_long_double(old, increment)
    if result is None:
        return Error("ERR increment would produce NaN or Infinity")
    if fields is None:
        fields = {}
        db.store(key, fields)
    text = format_long_double(result)
    fields[args[1]] = text
    return text


def _hrandfield(db: Keyspace, args: Args, now: int) -> Reply:
    # HRANDFIELD key [count [WITHVALUES]] (https://redis.io/commands/hrandfield): a positive
    # count gives distinct fields, a negative one |count| fields that may repeat. RESP2 shape.
    count: int | None = None
    if len(args) >= 2:
        parsed = parse_long_in(args[1], -INT64_MAX, INT64_MAX, None)
        if isinstance(parsed, Error):
            return parsed
        count = parsed
    if len(args) > 3 or (len(args) == 3 and args[2].upper() != b"WITHVALUES"):
        return SYNTAX_ERROR
    with_values = len(args) == 3
    if with_values and count is not None and abs(count) > INT64_MAX // 2:
        return Error("ERR value is out of range")
    fields = _fields(db, args[0], now)
    if isinstance(fields, Error):
        return fields
    if fields is None:
        return None if count is None else []
    rng = EntryRandom(now, b"hrandfield", *args)
    names = list(fields)
    if count is None:
        return names[rng.below(len(names))]
    if count >= 0:
        picked = rng.sample(names, min(count, len(names)))
        if count >= len(names):
            picked = names  # the whole hash: Redis answers it in its own order
    else:
        picked = [names[rng.below(len(names))] for _ in range(-count)]
    if not with_values:
        return [*picked]
    flat: list[Reply] = []
    for field in picked:
        flat.append(field)
        flat.append(fields[field])
    return flat


def _hscan(db: Keyspace, args: Args, now: int) -> Reply:
    cursor = parse_cursor(args[1])
    if cursor is None:
        return Error("ERR invalid cursor")
    fields = _fields(db, args[0], now)
    if isinstance(fields, Error):
        return fields
    if fields is None:
        return [b"0", []]
    options = parse_scan_options(args[2:])
    if isinstance(options, Error):
        return options
    count, pattern = options
    next_cursor, names = scan_collection(fields, len(fields), cursor, count, pattern)
    flat: list[Reply] = []
    for field in names:
        flat.append(field)
        flat.append(fields[field])
    return [b"%d" % next_cursor, flat]


_READ = ("@read", "@hash", "@fast")
_WRITE = ("@write", "@hash", "@fast")
_SLOW_READ = ("@read", "@hash", "@slow")

COMMANDS: tuple[CommandSpec, ...] = (
    # name, arity, flags, first/last/step key, ACL categories (Redis 7.0's COMMAND INFO), handler
    CommandSpec("hset", -4, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _hset),
    CommandSpec("hget", 3, ("readonly", "fast"), 1, 1, 1, _READ, _hget),
    CommandSpec("hdel", -3, ("write", "fast"), 1, 1, 1, _WRITE, _hdel),
    CommandSpec("hgetall", 2, ("readonly",), 1, 1, 1, ("@read", "@hash", "@slow"), _hgetall),
    CommandSpec("hexists", 3, ("readonly", "fast"), 1, 1, 1, _READ, _hexists),
    CommandSpec("hlen", 2, ("readonly", "fast"), 1, 1, 1, _READ, _hlen),
    CommandSpec("hincrby", 4, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _hincrby),
    CommandSpec("hmset", -4, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _hmset),
    CommandSpec("hsetnx", 4, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _hsetnx),
    CommandSpec("hmget", -3, ("readonly", "fast"), 1, 1, 1, _READ, _hmget),
    CommandSpec("hkeys", 2, ("readonly",), 1, 1, 1, _SLOW_READ, _hkeys),
    CommandSpec("hvals", 2, ("readonly",), 1, 1, 1, _SLOW_READ, _hvals),
    CommandSpec("hstrlen", 3, ("readonly", "fast"), 1, 1, 1, _READ, _hstrlen),
    CommandSpec("hincrbyfloat", 4, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE,
                _hincrbyfloat),
    CommandSpec("hrandfield", -2, ("readonly",), 1, 1, 1, _SLOW_READ, _hrandfield),
    CommandSpec("hscan", -3, ("readonly",), 1, 1, 1, _SLOW_READ, _hscan),
)
"""This family's rows of the command table."""
