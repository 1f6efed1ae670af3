"""The generic key commands: DEL, UNLINK, EXISTS, TOUCH, TYPE, RENAME, RENAMENX, COPY, OBJECT,
the expiry commands (EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, TTL, PTTL, EXPIRETIME, PEXPIRETIME,
PERSIST), KEYS, SCAN, RANDOMKEY, DBSIZE, FLUSHDB, FLUSHALL, and phalanx's own PHALANX.EXPIRE
(the leader-proposed deletion of an expired key). DUMP / RESTORE live in `dump.py`, SORT in
`sort.py`; their rows are part of this family's `COMMANDS`.

Rules of this module:
- Each command is a `Handler` (keyspace, args, now) -> Reply, registered in `COMMANDS` (or, for
  PHALANX.EXPIRE, `INTERNAL_COMMANDS`), this family's rows of the command table.
- Expired keys are removed by the leader proposing `PHALANX.EXPIRE key expire_at` for what
  `KVStateMachine.expired_keys()` reports (`expire_command_args` builds it); it deletes only if
  the key still has exactly that expiry, so a racing SET (which clears or changes the TTL)
  survives. See docs/architecture.md.
- phalanx has one logical database (Redis Cluster's rule): COPY ... DB n refuses any n but 0
  with Redis Cluster's error.
- OBJECT ENCODING reports what Redis 7.0 would choose for a freshly written value of this size
  and content (int / embstr / raw; listpack / hashtable; intset / hashtable; quicklist), not
  the history of the key (Redis never converts back after a value shrinks). OBJECT IDLETIME
  is 0 and OBJECT FREQ gives Redis's "no LFU policy" error: phalanx tracks no access times
  (reads are served on any replica and must not change the replicated state). REFCOUNT is 1,
  or INT_MAX for the small integers Redis shares.
- RANDOMKEY is deterministic: a point on the SCAN hash ring drawn from `EntryRandom` (seeded by
  the clock), then the first live key at or after it.
"""

from __future__ import annotations

from collections import deque

from phalanx.kv.commands import dump, sort
from phalanx.kv.commands.common import EntryRandom, parse_cursor
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
from phalanx.kv.stream import Stream
from phalanx.kv.zset import ZSet

EXPIRE_COMMAND = b"PHALANX.EXPIRE"
"""Internal command `PHALANX.EXPIRE key expire_at_ms`: delete key if its expiry is exactly that."""

_SCAN_DEFAULT_COUNT = 10

_TYPE_NAMES: dict[type, str] = {bytes: "string", dict: "hash", set: "set", deque: "list",
                               ZSet: "zset", Stream: "stream"}


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


def _rename_generic(db: Keyspace, args: Args, now: int, nx: bool) -> Reply:
    # https://redis.io/commands/rename: the value moves with its TTL; the same name is a no-op
    source_key, target_key = args
    value = db.live_for_write(source_key, now)
    if value is None:
        return Error("ERR no such key")
    if source_key == target_key:
        return 0 if nx else OK
    if db.live_for_write(target_key, now) is not None:
        if nx:
            return 0
        db.delete(target_key)
    when = db.expires.get(source_key)
    db.delete(source_key)
    db.store(target_key, value)
    if when is not None:
        db.set_expire(target_key, when)
    return 1 if nx else OK


def _rename(db: Keyspace, args: Args, now: int) -> Reply:
    return _rename_generic(db, args, now, False)


def _renamenx(db: Keyspace, args: Args, now: int) -> Reply:
    return _rename_generic(db, args, now, True)


_DATABASES = 16
"""What COPY's DB option accepts as an index before refusing it (Redis's default)."""


def _copy(db: Keyspace, args: Args, now: int) -> Reply:
    # COPY source destination [DB destination-db] [REPLACE] (https://redis.io/commands/copy)
    replace = False
    position = 2
    target_db = 0
    while position < len(args):
        option = args[position].upper()
        if option == b"REPLACE":
            replace = True
        elif option == b"DB" and position + 1 < len(args):
            parsed = parse_int(args[position + 1])
            if parsed is None or parsed > 2**31 - 1 or parsed < -(2**31):
                return NOT_INTEGER
            if parsed < 0 or parsed >= _DATABASES:
                return Error("ERR DB index is out of range")
            target_db = parsed
            position += 1
        else:
            return SYNTAX_ERROR
        position += 1
    if target_db != 0:
        return Error("ERR Copying to another database is not allowed in cluster mode")
    source_key, target_key = args[0], args[1]
    if source_key == target_key:
        return Error("ERR source and destination objects are the same")
    value = db.live(source_key, now)
    if value is None:
        return 0
    if db.live_for_write(target_key, now) is not None:
        if not replace:
            return 0
        db.delete(target_key)
    # every container type (dict, set, deque, and the sorted set) has an independent .copy()
    db.store(target_key, value if isinstance(value, bytes) else value.copy())
    when = db.expires.get(source_key)
    if when is not None:
        db.set_expire(target_key, when)
    return 1


def _touch(db: Keyspace, args: Args, now: int) -> Reply:
    return sum(1 for key in args if db.live(key, now) is not None)


# ---------------------------------------------------------------------------- OBJECT

_OBJECT_HELP: list[Reply] = [
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Prints this help.",
]
_SHARED_REFCOUNT = 2**31 - 1
_NO_LFU = ("ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please "
           "note that when switching between policies at runtime LRU and LFU data will take "
           "some time to adjust.")


def _encoding(value: object) -> str:
    """The encoding Redis 7.0 gives a freshly written value like this one (default config)."""
    if type(value) is bytes:
        if len(value) <= 20 and parse_int(value) is not None:
            return "int"
        return "embstr" if len(value) <= 44 else "raw"
    if type(value) is dict:
        small = len(value) <= 512 and all(  # hash-max-listpack-entries, -value
            len(field) <= 64 and len(item) <= 64 for field, item in value.items())
        return "listpack" if small else "hashtable"
    if type(value) is set:
        small = len(value) <= 512 and all(parse_int(member) is not None for member in value)
        return "intset" if small else "hashtable"
    if type(value) is deque:
        return "quicklist"
    if type(value) is Stream:
        return "stream"
    scores = getattr(value, "scores", None)  # the sorted set (kv.zset.ZSet): member -> score
    if isinstance(scores, dict):
        small = len(scores) <= 128 and all(len(member) <= 64 for member in scores)
        return "listpack" if small else "skiplist"
    return "unknown"


def _object(db: Keyspace, args: Args, now: int) -> Reply:
    sub = args[0].upper()
    if sub == b"HELP":
        return list(_OBJECT_HELP) if len(args) == 1 else Error(
            "ERR wrong number of arguments for 'object|help' command")
    if sub not in (b"ENCODING", b"FREQ", b"IDLETIME", b"REFCOUNT"):
        return Error(f"ERR unknown subcommand '{error_text(args[0][:128])}'. "
                     "Try OBJECT HELP.")
    if len(args) != 2:
        return Error(f"ERR wrong number of arguments for 'object|{sub.decode().lower()}' "
                     "command")
    value = db.live(args[1], now)
    if value is None:
        return None
    if sub == b"ENCODING":
        return _encoding(value)
    if sub == b"FREQ":
        return Error(_NO_LFU)
    if sub == b"IDLETIME":
        return 0
    if type(value) is bytes and parse_int(value) is not None and 0 <= int(value) < 10000:
        return _SHARED_REFCOUNT
    return 1


def _value_bytes(value: object) -> int:
    """An estimate of the bytes a value takes in Redis 7.0 (object.c objectComputeSize's
    shapes: listpack / intset for small values, a dict entry per element otherwise), summed
    over every element (Redis samples 5 by default; phalanx counts them all)."""
    if type(value) is bytes:
        if len(value) <= 20 and parse_int(value) is not None:
            return 0  # an integer lives in the object itself
        return len(value) + (3 if len(value) <= 44 else 9)
    encoding = _encoding(value)
    if type(value) is dict:
        per = 2 if encoding == "listpack" else 56
        return 24 + sum(len(field) + len(item) + per for field, item in value.items())
    if type(value) is set:
        if encoding == "intset":
            return 8 + 8 * len(value)
        return 40 + sum(len(member) + 40 for member in value)
    if type(value) is deque:
        return 40 + sum(len(element) + 11 for element in value)
    scores = getattr(value, "scores", None)
    if isinstance(scores, dict):
        per = 11 if encoding == "listpack" else 72
        return 24 + sum(len(member) + per for member in scores)
    return 16


def _memory(db: Keyspace, args: Args, now: int) -> Reply:
    """MEMORY USAGE key [SAMPLES count] (https://redis.io/commands/memory-usage/): the bytes
    the key and its value take, estimated as Redis 7.0 lays them out; nil for a missing key.
    The other MEMORY subcommands are the node's (server/front/introspection.py)."""
    if args[0].upper() != b"USAGE":
        return Error(f"ERR unknown subcommand '{error_text(args[0][:128])}'. "
                     "Try MEMORY HELP.")
    if len(args) < 2:
        return Error("ERR wrong number of arguments for 'memory|usage' command")
    if len(args) != 2:
        if len(args) != 4 or args[2].upper() != b"SAMPLES":
            return SYNTAX_ERROR
        samples = parse_int(args[3])
        if samples is None:
            return NOT_INTEGER
        if samples < 0:
            return SYNTAX_ERROR
    value = db.live(args[1], now)
    if value is None:
        return None
    # The dict entry (24), the value's object (16), the key's sds (header + bytes + NUL).
    return 24 + 16 + len(args[1]) + 4 + _value_bytes(value)


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


def _expiretime_generic(db: Keyspace, key: bytes, now: int, milliseconds: bool) -> Reply:
    if db.live(key, now) is None:
        return -2
    when = db.expires.get(key)
    if when is None:
        return -1
    return when if milliseconds else (when + 500) // 1000


def _expiretime(db: Keyspace, args: Args, now: int) -> Reply:
    return _expiretime_generic(db, args[0], now, False)


def _pexpiretime(db: Keyspace, args: Args, now: int) -> Reply:
    return _expiretime_generic(db, args[0], now, True)


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


def _scan(db: Keyspace, args: Args, now: int) -> Reply:
    cursor = parse_cursor(args[0])
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


def _randomkey(db: Keyspace, args: Args, now: int) -> Reply:
    if not db.data:
        return None
    rng = EntryRandom(now, b"randomkey")
    start = rng.word()
    for cursor in (start, 0):
        _, keys = db.scan_from(cursor, 1, now)
        if keys:
            return keys[0]
    return None


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
    CommandSpec("expiretime", 2, ("readonly", "fast"), 1, 1, 1, _READ, _expiretime),
    CommandSpec("pexpiretime", 2, ("readonly", "fast"), 1, 1, 1, _READ, _pexpiretime),
    CommandSpec("persist", 2, ("write", "fast"), 1, 1, 1, _WRITE, _persist),
    CommandSpec("keys", 2, ("readonly",), 0, 0, 0,
                ("@keyspace", "@read", "@slow", "@dangerous"), _keys),
    CommandSpec("scan", -2, ("readonly",), 0, 0, 0, ("@keyspace", "@read", "@slow"), _scan),
    CommandSpec("randomkey", 1, ("readonly",), 0, 0, 0, ("@keyspace", "@read", "@slow"),
                _randomkey),
    CommandSpec("rename", 3, ("write",), 1, 2, 1, ("@keyspace", "@write", "@slow"), _rename),
    CommandSpec("renamenx", 3, ("write", "fast"), 1, 2, 1, _WRITE, _renamenx),
    CommandSpec("copy", -3, ("write", "denyoom"), 1, 2, 1, ("@keyspace", "@write", "@slow"),
                _copy),
    CommandSpec("touch", -2, ("readonly", "fast"), 1, -1, 1, _READ, _touch),
    # Redis describes OBJECT as a container of subcommands (no flags, no key); phalanx routes it
    # by the key of OBJECT ENCODING|FREQ|IDLETIME|REFCOUNT <key> (position 2), a local read.
    CommandSpec("object", -2, ("readonly",), 2, 2, 1, ("@keyspace", "@read", "@slow"),
                _object),
    # MEMORY USAGE key: the only keyed MEMORY subcommand (the front end runs the others).
    CommandSpec("memory", -2, ("readonly",), 2, 2, 1, ("@read", "@slow"), _memory),
    *dump.COMMANDS,
    *sort.COMMANDS,
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
