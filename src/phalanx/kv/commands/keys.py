"""The generic key commands: DEL, UNLINK, EXISTS, TYPE, the expiry commands (EXPIRE, PEXPIRE,
EXPIREAT, PEXPIREAT, TTL, PTTL, PERSIST), KEYS, SCAN, DBSIZE, FLUSHDB, FLUSHALL, and phalanx's
own PHALANX.EXPIRE (the leader-proposed deletion of an expired key).

Rules of this module:
- Each command is a `Handler` (keyspace, args, now) -> Reply, registered in `COMMANDS` (or, for
  PHALANX.EXPIRE, `INTERNAL_COMMANDS`), this family's rows of the command table.
- Expired keys are removed by the leader proposing `PHALANX.EXPIRE key expire_at` for what
  `KVStateMachine.expired_keys()` reports (`expire_command_args` builds it); it deletes only if
  the key still has exactly that expiry, so a racing SET (which clears or changes the TTL)
  survives. See docs/architecture.md.
"""

from __future__ import annotations

from collections import deque

from phalanx.kv.glob import glob_match
from phalanx.kv.keyspace import Keyspace
from phalanx.kv.numbers import INT64_MAX, INT64_MIN, parse_int
from phalanx.kv.replies import (
    NOT_INTEGER,
    OK,
    SYNTAX_ERROR,
    Error,
    Reply,
    error_text,
    invalid_expire,
)
from phalanx.kv.spec import Args, CommandSpec

EXPIRE_COMMAND = b"PHALANX.EXPIRE"
"""Internal command `PHALANX.EXPIRE key expire_at_ms`: delete key if its expiry is exactly that."""

_UINT64_MAX = 2**64 - 1
_SCAN_DEFAULT_COUNT = 10

_TYPE_NAMES: dict[type, str] = {bytes: "string", dict: "hash", set: "set", deque: "list"}


def expire_command_args(key: bytes, expire_at_ms: int) -> tuple[bytes, tuple[bytes, ...]]:
    """The name and args of the internal command deleting `key` if it expires at exactly that."""
    return EXPIRE_COMMAND, (key, b"%d" % expire_at_ms)


def _del(db: Keyspace, args: Args, now: int) -> Reply:
    deleted = 0
    for key in args:
        if db.live_for_write(key, now) is not None:
            db.delete(key)
            deleted += 1
    return deleted


def _exists(db: Keyspace, args: Args, now: int) -> Reply:
    return sum(1 for key in args if db.live(key, now) is not None)


def _type(db: Keyspace, args: Args, now: int) -> Reply:
    value = db.live(args[0], now)
    return "none" if value is None else _TYPE_NAMES[type(value)]


# ---------------------------------------------------------------------------- expiry


def _expire_generic(db: Keyspace, args: Args, now: int, base: int, unit_ms: int,
                    name: str) -> Reply:
    nx = xx = gt = lt = False
    for raw in args[2:]:
        option = raw.upper()
        if option == b"NX":
            nx = True
        elif option == b"XX":
            xx = True
        elif option == b"GT":
            gt = True
        elif option == b"LT":
            lt = True
        else:
            return Error(f"ERR Unsupported option {error_text(raw)}")
    if nx and (xx or gt or lt):
        return Error("ERR NX and XX, GT or LT options at the same time are not compatible")
    if gt and lt:
        return Error("ERR GT and LT options at the same time are not compatible")
    when = parse_int(args[1])
    if when is None:
        return NOT_INTEGER
    if unit_ms == 1000:
        # C's LLONG_MIN / 1000 truncates toward zero.
        if when > INT64_MAX // 1000 or when < -(-INT64_MIN // 1000):
            return invalid_expire(name)
        when *= 1000
    if when > INT64_MAX - base:
        return invalid_expire(name)
    when += base
    key = args[0]
    if db.live_for_write(key, now) is None:
        return 0
    current = db.expires.get(key)
    if nx and current is not None:
        return 0
    if xx and current is None:
        return 0
    if gt and (current is None or when <= current):
        return 0
    if lt and current is not None and when >= current:
        return 0
    if when <= now:
        db.delete(key)
    else:
        db.set_expire(key, when)
    return 1


def _expire(db: Keyspace, args: Args, now: int) -> Reply:
    return _expire_generic(db, args, now, now, 1000, "expire")


def _pexpire(db: Keyspace, args: Args, now: int) -> Reply:
    return _expire_generic(db, args, now, now, 1, "pexpire")


def _expireat(db: Keyspace, args: Args, now: int) -> Reply:
    return _expire_generic(db, args, now, 0, 1000, "expireat")


def _pexpireat(db: Keyspace, args: Args, now: int) -> Reply:
    return _expire_generic(db, args, now, 0, 1, "pexpireat")


def _ttl_generic(db: Keyspace, key: bytes, now: int, milliseconds: bool) -> Reply:
    if db.live(key, now) is None:
        return -2
    when = db.expires.get(key)
    if when is None:
        return -1
    remaining = max(when - now, 0)
    return remaining if milliseconds else (remaining + 500) // 1000


def _ttl(db: Keyspace, args: Args, now: int) -> Reply:
    return _ttl_generic(db, args[0], now, False)


def _pttl(db: Keyspace, args: Args, now: int) -> Reply:
    return _ttl_generic(db, args[0], now, True)


def _persist(db: Keyspace, args: Args, now: int) -> Reply:
    key = args[0]
    if db.live_for_write(key, now) is None or key not in db.expires:
        return 0
    del db.expires[key]
    return 1


def _phalanx_expire(db: Keyspace, args: Args, now: int) -> Reply:
    key = args[0]
    when = parse_int(args[1])
    if when is None:
        return NOT_INTEGER
    if db.expires.get(key) != when or now < when:
        return 0
    db.delete(key)
    return 1


# ---------------------------------------------------------------------------- the keyspace


def _keys(db: Keyspace, args: Args, now: int) -> Reply:
    pattern = args[0]
    match_all = pattern == b"*"
    expires = db.expires
    found: list[Reply] = []
    for key in db.data:
        if expires:
            when = expires.get(key)
            if when is not None and now >= when:
                continue
        if match_all or glob_match(pattern, key):
            found.append(key)
    return found


def _parse_cursor(data: bytes) -> int | None:
    """A SCAN cursor as C's strtoul reads it (decimal, optional sign, wrapping "-n")."""
    if not data or data[0] in b" \t\n\v\f\r":
        return None
    sign = data[:1]
    digits = data[1:] if sign in (b"+", b"-") else data
    if not digits.isdigit():
        return None
    value = int(digits)
    if value > _UINT64_MAX:
        return None
    return (-value) % (2**64) if sign == b"-" else value


def _scan(db: Keyspace, args: Args, now: int) -> Reply:
    cursor = _parse_cursor(args[0])
    if cursor is None:
        return Error("ERR invalid cursor")
    count = _SCAN_DEFAULT_COUNT
    pattern: bytes | None = None
    type_name: bytes | None = None
    position = 1
    while position < len(args):
        option = args[position].upper()
        if position + 1 >= len(args):
            return SYNTAX_ERROR
        argument = args[position + 1]
        if option == b"COUNT":
            parsed = parse_int(argument)
            if parsed is None:
                return NOT_INTEGER
            if parsed < 1:
                return SYNTAX_ERROR
            count = parsed
        elif option == b"MATCH":
            pattern = None if argument == b"*" else argument
        elif option == b"TYPE":
            type_name = argument.lower()
        else:
            return SYNTAX_ERROR
        position += 2
    next_cursor, keys = db.scan_from(cursor, count, now)
    found: list[Reply] = []
    for key in keys:
        if pattern is not None and not glob_match(pattern, key):
            continue
        if type_name is not None and _TYPE_NAMES[type(db.data[key])].encode() != type_name:
            continue
        found.append(key)
    return [b"%d" % next_cursor, found]


def _dbsize(db: Keyspace, args: Args, now: int) -> Reply:
    return len(db.data)


def _flushdb(db: Keyspace, args: Args, now: int) -> Reply:
    if len(args) > 1 or (args and args[0].upper() not in (b"SYNC", b"ASYNC")):
        return SYNTAX_ERROR
    db.clear()
    return OK


_READ = ("@keyspace", "@read", "@fast")
_WRITE = ("@keyspace", "@write", "@fast")
_FLUSH = ("@keyspace", "@write", "@slow", "@dangerous")

COMMANDS: tuple[CommandSpec, ...] = (
    # name, arity, flags, first/last/step key, ACL categories (Redis 7.0's COMMAND INFO), handler
    CommandSpec("del", -2, ("write",), 1, -1, 1, ("@keyspace", "@write", "@slow"), _del),
    CommandSpec("unlink", -2, ("write", "fast"), 1, -1, 1, _WRITE, _del),
    CommandSpec("exists", -2, ("readonly", "fast"), 1, -1, 1, _READ, _exists),
    CommandSpec("type", 2, ("readonly", "fast"), 1, 1, 1, _READ, _type),
    CommandSpec("expire", -3, ("write", "fast"), 1, 1, 1, _WRITE, _expire),
    CommandSpec("pexpire", -3, ("write", "fast"), 1, 1, 1, _WRITE, _pexpire),
    CommandSpec("expireat", -3, ("write", "fast"), 1, 1, 1, _WRITE, _expireat),
    CommandSpec("pexpireat", -3, ("write", "fast"), 1, 1, 1, _WRITE, _pexpireat),
    CommandSpec("ttl", 2, ("readonly", "fast"), 1, 1, 1, _READ, _ttl),
    CommandSpec("pttl", 2, ("readonly", "fast"), 1, 1, 1, _READ, _pttl),
    CommandSpec("persist", 2, ("write", "fast"), 1, 1, 1, _WRITE, _persist),
    CommandSpec("keys", 2, ("readonly",), 0, 0, 0,
                ("@keyspace", "@read", "@slow", "@dangerous"), _keys),
    CommandSpec("scan", -2, ("readonly",), 0, 0, 0, ("@keyspace", "@read", "@slow"), _scan),
    CommandSpec("dbsize", 1, ("readonly", "fast"), 0, 0, 0, _READ, _dbsize),
    CommandSpec("flushdb", -1, ("write",), 0, 0, 0, _FLUSH, _flushdb),
    CommandSpec("flushall", -1, ("write",), 0, 0, 0, _FLUSH, _flushdb),
)
"""This family's rows of the command table."""

INTERNAL_COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("phalanx.expire", 3, ("write",), 1, 1, 1, ("@keyspace", "@write", "@slow"),
                _phalanx_expire),
)
"""phalanx's own commands, proposed by the leader rather than sent by clients."""
