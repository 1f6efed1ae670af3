"""The string commands: GET, SET (all its options), SETNX, GETSET, GETDEL, MGET, MSET, APPEND,
STRLEN and the counters INCR, DECR, INCRBY, DECRBY, INCRBYFLOAT.

Rules of this module:
- Each command is a `Handler` (keyspace, args, now) -> Reply, registered in `COMMANDS`, this
  family's rows of the command table (`phalanx.kv.table` merges them).
- Replies and error texts are Redis 7's, byte for byte; integers are 64-bit signed and floats
  long doubles as Redis computes them (`phalanx.kv.numbers`). See docs/architecture.md.
"""

from __future__ import annotations

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
    invalid_expire,
)
from phalanx.kv.spec import Args, CommandSpec

_EXPIRE_OPTIONS: dict[bytes, tuple[int, bool]] = {
    # SET option: (milliseconds per unit, relative to now)
    b"EX": (1000, True),
    b"PX": (1, True),
    b"EXAT": (1000, False),
    b"PXAT": (1, False),
}


def _string(db: Keyspace, key: bytes, now: int) -> bytes | Error | None:
    value = db.live(key, now)
    if value is None or type(value) is bytes:
        return value
    return WRONGTYPE


def _get(db: Keyspace, args: Args, now: int) -> Reply:
    return _string(db, args[0], now)


def _set(db: Keyspace, args: Args, now: int) -> Reply:
    key = args[0]
    if len(args) == 2:  # the hot path
        db.store(key, args[1])
        if db.expires:
            db.expires.pop(key, None)
        return OK
    return _set_with_options(db, key, args[1], args[2:], now)


def _set_with_options(db: Keyspace, key: bytes, value: bytes, options: Args, now: int) -> Reply:
    nx = xx = get = keepttl = False
    unit_ms = 0  # 1000 for EX/EXAT, 1 for PX/PXAT
    relative = False
    expire_arg: bytes | None = None
    compare: bytes | None = None
    position = 0
    count = len(options)
    while position < count:
        option = options[position].upper()
        has_next = position + 1 < count
        if option == b"NX" and not xx and compare is None:
            nx = True
        elif option == b"XX" and not nx and compare is None:
            xx = True
        elif option == b"GET":
            get = True
        elif option == b"KEEPTTL" and expire_arg is None:
            keepttl = True
        elif option in (b"EX", b"PX", b"EXAT", b"PXAT") and has_next and not keepttl and (
            expire_arg is None or (unit_ms, relative) == _EXPIRE_OPTIONS[option]
        ):
            unit_ms, relative = _EXPIRE_OPTIONS[option]
            position += 1
            expire_arg = options[position]
        elif option == b"IFEQ" and has_next and not nx and not xx:
            position += 1
            compare = options[position]
        else:
            return SYNTAX_ERROR
        position += 1
    expire_at: int | None = None
    if expire_arg is not None:
        amount = parse_int(expire_arg)
        if amount is None:
            return NOT_INTEGER
        if amount <= 0 or (unit_ms == 1000 and amount > INT64_MAX // 1000):
            return invalid_expire("set")
        amount *= unit_ms
        if relative:
            amount += now
            if amount > INT64_MAX:
                return invalid_expire("set")
        expire_at = amount
    current = db.live_for_write(key, now)
    old: Reply = None
    if get:
        if current is not None and type(current) is not bytes:
            return WRONGTYPE
        old = current
    if compare is not None:
        if current is None:
            return old
        if type(current) is not bytes:
            return WRONGTYPE
        if current != compare:
            return old
    elif (nx and current is not None) or (xx and current is None):
        return old
    db.store(key, value)
    if expire_at is not None:
        # An absolute time in the past stores a logically absent key, as Redis 7 does
        # (DBSIZE counts it until a write touches it or the leader's sweep deletes it).
        db.set_expire(key, expire_at)
    elif not keepttl and db.expires:
        db.expires.pop(key, None)
    return old if get else OK


def _setnx(db: Keyspace, args: Args, now: int) -> Reply:
    key = args[0]
    if db.live_for_write(key, now) is not None:
        return 0
    db.store(key, args[1])
    return 1


def _getset(db: Keyspace, args: Args, now: int) -> Reply:
    key = args[0]
    current = db.live_for_write(key, now)
    if current is not None and type(current) is not bytes:
        return WRONGTYPE
    db.store(key, args[1])
    if db.expires:
        db.expires.pop(key, None)
    return current


def _getdel(db: Keyspace, args: Args, now: int) -> Reply:
    key = args[0]
    current = db.live_for_write(key, now)
    if current is None:
        return None
    if type(current) is not bytes:
        return WRONGTYPE
    db.delete(key)
    return current


def _mget(db: Keyspace, args: Args, now: int) -> Reply:
    replies: list[Reply] = []
    for key in args:
        value = db.live(key, now)
        replies.append(value if type(value) is bytes else None)
    return replies


def _mset(db: Keyspace, args: Args, now: int) -> Reply:
    if len(args) % 2:
        return arity_error("mset")
    expires = db.expires
    for position in range(0, len(args), 2):
        key = args[position]
        db.store(key, args[position + 1])
        if expires:
            expires.pop(key, None)
    return OK


def _append(db: Keyspace, args: Args, now: int) -> Reply:
    key = args[0]
    current = db.live_for_write(key, now)
    if current is None:
        db.store(key, args[1])
        return len(args[1])
    if type(current) is not bytes:
        return WRONGTYPE
    value = current + args[1]
    db.data[key] = value
    return len(value)


def _strlen(db: Keyspace, args: Args, now: int) -> Reply:
    value = _string(db, args[0], now)
    if isinstance(value, Error):
        return value
    return 0 if value is None else len(value)


# ---------------------------------------------------------------------------- counters


def _incr_by(db: Keyspace, key: bytes, increment: int, now: int) -> Reply:
    current = db.live_for_write(key, now)
    if current is None:
        old = 0
    elif type(current) is not bytes:
        return WRONGTYPE
    else:
        parsed = parse_int(current)
        if parsed is None:
            return NOT_INTEGER
        old = parsed
    result = old + increment
    if result > INT64_MAX or result < INT64_MIN:
        return OVERFLOW
    db.store(key, b"%d" % result)
    return result


def _incr(db: Keyspace, args: Args, now: int) -> Reply:
    return _incr_by(db, args[0], 1, now)


def _decr(db: Keyspace, args: Args, now: int) -> Reply:
    return _incr_by(db, args[0], -1, now)


def _incrby(db: Keyspace, args: Args, now: int) -> Reply:
    increment = parse_int(args[1])
    if increment is None:
        return NOT_INTEGER
    return _incr_by(db, args[0], increment, now)


def _decrby(db: Keyspace, args: Args, now: int) -> Reply:
    decrement = parse_int(args[1])
    if decrement is None:
        return NOT_INTEGER
    if decrement == INT64_MIN:
        return Error("ERR decrement would overflow")
    return _incr_by(db, args[0], -decrement, now)


def _incrbyfloat(db: Keyspace, args: Args, now: int) -> Reply:
    key = args[0]
    current = db.live_for_write(key, now)
    if current is not None and type(current) is not bytes:
        return WRONGTYPE
    old = parse_long_double(current) if current is not None else parse_long_double(b"0")
    increment = parse_long_double(args[1])
    if old is None or increment is None:
        return NOT_FLOAT
    result = add_long_double(old, increment)
    if result is None:
        return Error("ERR increment would produce NaN or Infinity")
    text = format_long_double(result)
    db.store(key, text)
    return text


_READ = ("@read", "@string", "@fast")
_WRITE = ("@write", "@string", "@fast")

COMMANDS: tuple[CommandSpec, ...] = (
    # name, arity, flags, first/last/step key, ACL categories (Redis 7.0's COMMAND INFO), handler
    CommandSpec("get", 2, ("readonly", "fast"), 1, 1, 1, _READ, _get),
    CommandSpec("set", -3, ("write", "denyoom"), 1, 1, 1, ("@write", "@string", "@slow"), _set),
    CommandSpec("setnx", 3, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _setnx),
    CommandSpec("getset", 3, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _getset),
    CommandSpec("getdel", 2, ("write", "fast"), 1, 1, 1, _WRITE, _getdel),
    CommandSpec("mget", -2, ("readonly", "fast"), 1, -1, 1, _READ, _mget),
    CommandSpec("mset", -3, ("write", "denyoom"), 1, -1, 2, ("@write", "@string", "@slow"),
                _mset),
    CommandSpec("append", 3, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _append),
    CommandSpec("strlen", 2, ("readonly", "fast"), 1, 1, 1, _READ, _strlen),
    CommandSpec("incr", 2, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _incr),
    CommandSpec("decr", 2, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _decr),
    CommandSpec("incrby", 3, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _incrby),
    CommandSpec("decrby", 3, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _decrby),
    CommandSpec("incrbyfloat", 3, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _incrbyfloat),
)
"""This family's rows of the command table."""
