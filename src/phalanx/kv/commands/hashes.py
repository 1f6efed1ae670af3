"""The hash commands: HSET, HGET, HDEL, HGETALL, HEXISTS, HLEN, HINCRBY.

Rules of this module:
- A hash is a `dict[bytes, bytes]` (field order kept: HGETALL and the snapshot follow
  insertion order); an empty hash is never stored (the last HDEL deletes the key).
- Each command is a `Handler` (keyspace, args, now) -> Reply, registered in `COMMANDS`, this
  family's rows of the command table. See docs/architecture.md.
"""

from __future__ import annotations

from phalanx.kv.keyspace import Keyspace
from phalanx.kv.numbers import INT64_MAX, INT64_MIN, parse_int
from phalanx.kv.replies import NOT_INTEGER, OVERFLOW, WRONGTYPE, Error, Reply, arity_error
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


_READ = ("@read", "@hash", "@fast")
_WRITE = ("@write", "@hash", "@fast")

COMMANDS: tuple[CommandSpec, ...] = (
    # name, arity, flags, first/last/step key, ACL categories (Redis 7.0's COMMAND INFO), handler
    CommandSpec("hset", -4, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _hset),
    CommandSpec("hget", 3, ("readonly", "fast"), 1, 1, 1, _READ, _hget),
    CommandSpec("hdel", -3, ("write", "fast"), 1, 1, 1, _WRITE, _hdel),
    CommandSpec("hgetall", 2, ("readonly",), 1, 1, 1, ("@read", "@hash", "@slow"), _hgetall),
    CommandSpec("hexists", 3, ("readonly", "fast"), 1, 1, 1, _READ, _hexists),
    CommandSpec("hlen", 2, ("readonly", "fast"), 1, 1, 1, _READ, _hlen),
    CommandSpec("hincrby", 4, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _hincrby),
)
"""This family's rows of the command table."""
