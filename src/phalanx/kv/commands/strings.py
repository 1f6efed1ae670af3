"""The string commands: GET, SET (all its options), SETNX, SETEX, PSETEX, GETSET, GETDEL, GETEX,
MGET, MSET, MSETNX, APPEND, STRLEN, GETRANGE (and its old name SUBSTR), SETRANGE, LCS and the
counters INCR, DECR, INCRBY, DECRBY, INCRBYFLOAT.

Rules of this module:
- Each command is a `Handler` (keyspace, args, now) -> Reply, registered in `COMMANDS`, this
  family's rows of the command table (`phalanx.kv.table` merges them).
- LCS builds Redis's dynamic-programming table in the state machine's thread: it refuses
  strings whose table would exceed `LCS_MAX_CELLS` cells rather than stall the shard.
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


_MAX_STRING = 512 * 1024 * 1024
"""Redis's default proto-max-bulk-len: no string grows beyond it (SETRANGE)."""


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


def _setex_generic(db: Keyspace, args: Args, now: int, unit_ms: int, name: str) -> Reply:
    # SETEX key seconds value / PSETEX key milliseconds value (https://redis.io/commands/setex)
    amount = parse_int(args[1])
    if amount is None:
        return NOT_INTEGER
    if amount <= 0 or (unit_ms == 1000 and amount > INT64_MAX // 1000):
        return invalid_expire(name)
    when = amount * unit_ms + now
    if when > INT64_MAX:
        return invalid_expire(name)
    key = args[0]
    db.live_for_write(key, now)
    db.store(key, args[2])
    db.set_expire(key, when)
    return OK


def _setex(db: Keyspace, args: Args, now: int) -> Reply:
    return _setex_generic(db, args, now, 1000, "setex")


def _psetex(db: Keyspace, args: Args, now: int) -> Reply:
    return _setex_generic(db, args, now, 1, "psetex")


def _getex(db: Keyspace, args: Args, now: int) -> Reply:
    # GETEX key [EX s | PX ms | EXAT s | PXAT ms | PERSIST]: one kind of option (the same one may
    # repeat, the last value wins), parsed before the key is read (https://redis.io/commands/getex)
    persist = False
    unit_ms = 0
    relative = False
    expire_arg: bytes | None = None
    position = 1
    while position < len(args):
        option = args[position].upper()
        has_next = position + 1 < len(args)
        if option == b"PERSIST" and expire_arg is None:
            persist = True
        elif option in _EXPIRE_OPTIONS and has_next and not persist and (
            expire_arg is None or (unit_ms, relative) == _EXPIRE_OPTIONS[option]
        ):
            unit_ms, relative = _EXPIRE_OPTIONS[option]
            position += 1
            expire_arg = args[position]
        else:
            return SYNTAX_ERROR
        position += 1
    key = args[0]
    current = db.live_for_write(key, now)
    if current is None:
        return None
    if type(current) is not bytes:
        return WRONGTYPE
    if expire_arg is not None:
        amount = parse_int(expire_arg)
        if amount is None:
            return NOT_INTEGER
        if amount <= 0 or (unit_ms == 1000 and amount > INT64_MAX // 1000):
            return invalid_expire("getex")
        amount *= unit_ms
        if relative:
            amount += now
            if amount > INT64_MAX:
                return invalid_expire("getex")
        if amount <= now:
            db.delete(key)  # an absolute time already past deletes the key (the value is sent)
        else:
            db.set_expire(key, amount)
    elif persist and db.expires:
        db.expires.pop(key, None)
    return current


def _getrange(db: Keyspace, args: Args, now: int) -> Reply:
    # GETRANGE key start end: inclusive, negative counts from the end, clamped
    # (https://redis.io/commands/getrange)
    start = parse_int(args[1])
    end = parse_int(args[2])
    if start is None or end is None:
        return NOT_INTEGER
    value = _string(db, args[0], now)
    if value is None:
        return b""
    if isinstance(value, Error):
        return value
    length = len(value)
    if start < 0 and end < 0 and start > end:
        return b""
    if start < 0:
        start += length
    if end < 0:
        end += length
    start = max(start, 0)
    end = min(max(end, 0), length - 1)
    if start > end or length == 0:
        return b""
    return value[start:end + 1]


def _setrange(db: Keyspace, args: Args, now: int) -> Reply:
    # SETRANGE key offset value: zero-pads, never beyond proto-max-bulk-len (512 MB)
    # (https://redis.io/commands/setrange)
    offset = parse_int(args[1])
    if offset is None:
        return NOT_INTEGER
    if offset < 0:
        return Error("ERR offset is out of range")
    key, patch = args[0], args[2]
    current = db.live_for_write(key, now)
    if current is not None and type(current) is not bytes:
        return WRONGTYPE
    old = b"" if current is None else current
    if not patch:
        return len(old)
    if offset + len(patch) > _MAX_STRING:
        return Error("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
    if len(old) < offset:
        old += bytes(offset - len(old))
    value = old[:offset] + patch + old[offset + len(patch):]
    db.store(key, value)
    return len(value)


LCS_MAX_CELLS = 4_000_000
"""The largest (len(a) + 1) * (len(b) + 1) table LCS builds (a few seconds of Python at most)."""


def _lcs(db: Keyspace, args: Args, now: int) -> Reply:
    # LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]
    # (https://redis.io/commands/lcs): a missing key is an empty string; IDX answers the
    # matching ranges from the end, as Redis walks its table back (RESP2 shape: a flat map).
    first, second = db.live(args[0], now), db.live(args[1], now)
    if (first is not None and type(first) is not bytes) or (
            second is not None and type(second) is not bytes):
        return Error("ERR The specified keys must contain string values")
    a = first if type(first) is bytes else b""
    b = second if type(second) is bytes else b""
    get_idx = get_len = with_match_len = False
    min_match_len = 0
    position = 2
    while position < len(args):
        option = args[position].upper()
        if option == b"IDX":
            get_idx = True
        elif option == b"LEN":
            get_len = True
        elif option == b"WITHMATCHLEN":
            with_match_len = True
        elif option == b"MINMATCHLEN" and position + 1 < len(args):
            parsed = parse_int(args[position + 1])
            if parsed is None:
                return NOT_INTEGER
            min_match_len = max(parsed, 0)
            position += 1
        else:
            return SYNTAX_ERROR
        position += 1
    if get_idx and get_len:
        return Error("ERR If you want both the length and indexes, please just use IDX.")
    if (len(a) + 1) * (len(b) + 1) > LCS_MAX_CELLS:
        return Error(f"ERR phalanx: LCS refuses strings whose table exceeds {LCS_MAX_CELLS} "
                     "cells")
    columns = len(b) + 1
    table = [[0] * columns]
    for i in range(1, len(a) + 1):
        above, row = table[-1], [0] * columns
        byte = a[i - 1]
        for j in range(1, columns):
            if byte == b[j - 1]:
                row[j] = above[j - 1] + 1
            else:
                row[j] = above[j] if above[j] > row[j - 1] else row[j - 1]
        table.append(row)
    length = table[len(a)][len(b)]
    if get_len:
        return length
    result = bytearray(length)
    matches: list[Reply] = []
    i, j, left = len(a), len(b), length
    unset = len(a)
    a_start = a_end = b_start = b_end = 0
    a_start = unset
    while i > 0 and j > 0:
        emit = False
        if a[i - 1] == b[j - 1]:
            result[left - 1] = a[i - 1]
            if a_start == unset:
                a_start = a_end = i - 1
                b_start = b_end = j - 1
            elif a_start == i and b_start == j:
                a_start -= 1
                b_start -= 1
            else:
                emit = True
            if a_start == 0 or b_start == 0:
                emit = True
            left, i, j = left - 1, i - 1, j - 1
        else:
            if table[i - 1][j] > table[i][j - 1]:
                i -= 1
            else:
                j -= 1
            if a_start != unset:
                emit = True
        if emit:
            match_len = a_end - a_start + 1
            if get_idx and (min_match_len == 0 or match_len >= min_match_len):
                match: list[Reply] = [[a_start, a_end], [b_start, b_end]]
                if with_match_len:
                    match.append(match_len)
                matches.append(match)
            a_start = unset
    if get_idx:
        return [b"matches", matches, b"len", length]
    return bytes(result)


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


def _msetnx(db: Keyspace, args: Args, now: int) -> Reply:
    if len(args) % 2:
        return arity_error("msetnx")
    for position in range(0, len(args), 2):
        if db.live_for_write(args[position], now) is not None:
            return 0
    _mset(db, args, now)
    return 1


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
    CommandSpec("setex", 4, ("write", "denyoom"), 1, 1, 1, ("@write", "@string", "@slow"),
                _setex),
    CommandSpec("psetex", 4, ("write", "denyoom"), 1, 1, 1, ("@write", "@string", "@slow"),
                _psetex),
    CommandSpec("getex", -2, ("write", "fast"), 1, 1, 1, _WRITE, _getex),
    CommandSpec("getrange", 4, ("readonly",), 1, 1, 1, ("@read", "@string", "@slow"),
                _getrange),
    CommandSpec("substr", 4, ("readonly",), 1, 1, 1, ("@read", "@string", "@slow"), _getrange),
    CommandSpec("setrange", 4, ("write", "denyoom"), 1, 1, 1, ("@write", "@string", "@slow"),
                _setrange),
    CommandSpec("lcs", -3, ("readonly",), 1, 2, 1, ("@read", "@string", "@slow"), _lcs),
    CommandSpec("msetnx", -3, ("write", "denyoom"), 1, -1, 2, ("@write", "@string", "@slow"),
                _msetnx),
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
