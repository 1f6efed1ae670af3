"""The set commands: SADD, SREM, SMEMBERS, SISMEMBER, SMISMEMBER, SCARD, SMOVE, SPOP,
SRANDMEMBER, SSCAN and the set algebra SINTER, SUNION, SDIFF (and their STORE forms),
SINTERCARD.

Rules of this module:
- A set is a `set[bytes]`; whatever reaches a reply or the snapshot is sorted first (SMEMBERS
  answers in sorted member order), so every replica answers alike. An empty set is never
  stored (the last SREM deletes the key).
- Randomness (SPOP, SRANDMEMBER) is `EntryRandom`, seeded from the replicated clock and the
  command's words, drawing from the members in sorted order: SPOP removes the same members on
  every replica (see `commands/common.py`).
- A STORE form overwrites its destination whatever its type, drops its TTL, and deletes it
  when the result is empty.
- Each command is a `Handler` (keyspace, args, now) -> Reply, registered in `COMMANDS`, this
  family's rows of the command table. See docs/architecture.md.
"""

from __future__ import annotations

from phalanx.kv.commands.common import (
    EntryRandom,
    parse_cursor,
    parse_long_in,
    parse_positive,
    parse_scan_options,
    scan_collection,
)
from phalanx.kv.keyspace import Keyspace
from phalanx.kv.replies import SYNTAX_ERROR, WRONGTYPE, Error, Reply
from phalanx.kv.spec import Args, CommandSpec, numkeys_keys

_LONG_MAX = 2**63 - 1


def _members(db: Keyspace, key: bytes, now: int) -> set[bytes] | Error | None:
    value = db.live(key, now)
    if value is None or type(value) is set:
        return value
    return WRONGTYPE


def _sadd(db: Keyspace, args: Args, now: int) -> Reply:
    key = args[0]
    value = db.live_for_write(key, now)
    if value is None:
        members: set[bytes] = set()
        db.store(key, members)
    elif type(value) is set:
        members = value
    else:
        return WRONGTYPE
    before = len(members)
    members.update(args[1:])
    return len(members) - before


def _srem(db: Keyspace, args: Args, now: int) -> Reply:
    key = args[0]
    value = db.live_for_write(key, now)
    if value is None:
        return 0
    if type(value) is not set:
        return WRONGTYPE
    before = len(value)
    value.difference_update(args[1:])
    removed = before - len(value)
    if not value:
        db.delete(key)
    return removed


def _smembers(db: Keyspace, args: Args, now: int) -> Reply:
    members = _members(db, args[0], now)
    if isinstance(members, Error):
        return members
    if members is None:
        return []
    ordered: list[Reply] = [*sorted(members)]
    return ordered


def _sismember(db: Keyspace, args: Args, now: int) -> Reply:
    members = _members(db, args[0], now)
    if isinstance(members, Error):
        return members
    return 1 if members is not None and args[1] in members else 0


def _scard(db: Keyspace, args: Args, now: int) -> Reply:
    members = _members(db, args[0], now)
    if isinstance(members, Error):
        return members
    return 0 if members is None else len(members)


def _smismember(db: Keyspace, args: Args, now: int) -> Reply:
    members = _members(db, args[0], now)
    if isinstance(members, Error):
        return members
    found: list[Reply] = [
        1 if members is not None and member in members else 0 for member in args[1:]
    ]
    return found


def _smove(db: Keyspace, args: Args, now: int) -> Reply:
    # https://redis.io/commands/smove: the source is checked first, then both types
    source_key, target_key, member = args
    source = db.live_for_write(source_key, now)
    if source is None:
        return 0
    target = db.live_for_write(target_key, now)
    if type(source) is not set or (target is not None and type(target) is not set):
        return WRONGTYPE
    if source is target:
        return 1 if member in source else 0
    if member not in source:
        return 0
    source.discard(member)
    if not source:
        db.delete(source_key)
    if target is None:
        target = set()
        db.store(target_key, target)
    target.add(member)
    return 1


def _spop(db: Keyspace, args: Args, now: int) -> Reply:
    # SPOP key [count] (https://redis.io/commands/spop), a replicated write: the members come
    # from `EntryRandom` over the sorted members, the same on every replica.
    if len(args) > 2:
        return SYNTAX_ERROR
    count: int | None = None
    if len(args) == 2:
        parsed = parse_positive(args[1])
        if isinstance(parsed, Error):
            return parsed
        count = parsed
    key = args[0]
    value = db.live_for_write(key, now)
    if value is None:
        return None if count is None else []
    if type(value) is not set:
        return WRONGTYPE
    if count == 0:
        return []
    ordered = sorted(value)
    rng = EntryRandom(now, b"spop", *args)
    if count is None:
        member = ordered[rng.below(len(ordered))]
        popped = [member]
    elif count >= len(ordered):
        popped = ordered
    else:
        popped = rng.sample(ordered, count)
    value.difference_update(popped)
    if not value:
        db.delete(key)
    if count is None:
        return popped[0]
    reply: list[Reply] = [*popped]
    return reply


def _srandmember(db: Keyspace, args: Args, now: int) -> Reply:
    if len(args) > 2:
        return SYNTAX_ERROR
    count: int | None = None
    if len(args) == 2:
        parsed = parse_long_in(args[1], -_LONG_MAX, _LONG_MAX, None)
        if isinstance(parsed, Error):
            return parsed
        count = parsed
    members = _members(db, args[0], now)
    if isinstance(members, Error):
        return members
    if members is None:
        return None if count is None else []
    ordered = sorted(members)
    rng = EntryRandom(now, b"srandmember", *args)
    if count is None:
        return ordered[rng.below(len(ordered))]
    if count >= len(ordered):
        picked = ordered
    elif count >= 0:
        picked = rng.sample(ordered, count)
    else:
        picked = [ordered[rng.below(len(ordered))] for _ in range(-count)]
    reply: list[Reply] = [*picked]
    return reply


def _sscan(db: Keyspace, args: Args, now: int) -> Reply:
    cursor = parse_cursor(args[1])
    if cursor is None:
        return Error("ERR invalid cursor")
    members = _members(db, args[0], now)
    if isinstance(members, Error):
        return members
    if members is None:
        return [b"0", []]
    options = parse_scan_options(args[2:])
    if isinstance(options, Error):
        return options
    count, pattern = options
    small = len(members) <= 128
    next_cursor, found = scan_collection(sorted(members) if small else members, len(members),
                                         cursor, count, pattern)
    reply: list[Reply] = [*found]
    return [b"%d" % next_cursor, reply]


# ---------------------------------------------------------------------------- set algebra


def _load_sets(db: Keyspace, keys: Args, now: int, write: bool
               ) -> list[set[bytes] | None] | Error:
    """The sets at `keys` (None where absent); WRONGTYPE if any key holds another type."""
    found: list[set[bytes] | None] = []
    for key in keys:
        value = db.live_for_write(key, now) if write else db.live(key, now)
        if value is not None and type(value) is not set:
            return WRONGTYPE
        found.append(value)
    return found


def _intersect(sets: list[set[bytes] | None]) -> set[bytes]:
    if any(members is None for members in sets):
        return set()
    present = sorted((members for members in sets if members is not None), key=len)
    result = set(present[0])
    for members in present[1:]:
        result &= members
    return result


def _union(sets: list[set[bytes] | None]) -> set[bytes]:
    result: set[bytes] = set()
    for members in sets:
        if members is not None:
            result |= members
    return result


def _difference(sets: list[set[bytes] | None]) -> set[bytes]:
    if sets[0] is None:
        return set()
    result = set(sets[0])
    for members in sets[1:]:
        if members is not None:
            result -= members
    return result


def _algebra(db: Keyspace, keys: Args, now: int, operation: str) -> Reply:
    sets = _load_sets(db, keys, now, False)
    if isinstance(sets, Error):
        return sets
    result = _OPERATIONS[operation](sets)
    reply: list[Reply] = [*sorted(result)]
    return reply


def _algebra_store(db: Keyspace, args: Args, now: int, operation: str) -> Reply:
    target = args[0]
    sets = _load_sets(db, args[1:], now, True)
    if isinstance(sets, Error):
        return sets
    result = _OPERATIONS[operation](sets)
    if db.live_for_write(target, now) is not None:
        db.delete(target)
    if result:
        db.store(target, result)
    return len(result)


_OPERATIONS = {"inter": _intersect, "union": _union, "diff": _difference}


def _sinter(db: Keyspace, args: Args, now: int) -> Reply:
    return _algebra(db, args, now, "inter")


def _sunion(db: Keyspace, args: Args, now: int) -> Reply:
    return _algebra(db, args, now, "union")


def _sdiff(db: Keyspace, args: Args, now: int) -> Reply:
    return _algebra(db, args, now, "diff")


def _sinterstore(db: Keyspace, args: Args, now: int) -> Reply:
    return _algebra_store(db, args, now, "inter")


def _sunionstore(db: Keyspace, args: Args, now: int) -> Reply:
    return _algebra_store(db, args, now, "union")


def _sdiffstore(db: Keyspace, args: Args, now: int) -> Reply:
    return _algebra_store(db, args, now, "diff")


def _sintercard(db: Keyspace, args: Args, now: int) -> Reply:
    # SINTERCARD numkeys key [key ...] [LIMIT limit] (https://redis.io/commands/sintercard)
    numkeys = parse_long_in(args[0], 1, _LONG_MAX, "numkeys should be greater than 0")
    if isinstance(numkeys, Error):
        return numkeys
    if numkeys > len(args) - 1:
        return Error("ERR Number of keys can't be greater than number of args")
    limit = 0
    position = 1 + numkeys
    while position < len(args):
        if args[position].upper() == b"LIMIT" and position + 1 < len(args):
            parsed = parse_positive(args[position + 1], "LIMIT can't be negative")
            if isinstance(parsed, Error):
                return parsed
            limit = parsed
            position += 2
        else:
            return SYNTAX_ERROR
    sets = _load_sets(db, args[1:1 + numkeys], now, False)
    if isinstance(sets, Error):
        return sets
    size = len(_intersect(sets))
    return min(size, limit) if limit else size


_READ = ("@read", "@set", "@fast")
_WRITE = ("@write", "@set", "@fast")
_SLOW_READ = ("@read", "@set", "@slow")
_SLOW_WRITE = ("@write", "@set", "@slow")

COMMANDS: tuple[CommandSpec, ...] = (
    # name, arity, flags, first/last/step key, ACL categories (Redis 7.0's COMMAND INFO), handler
    CommandSpec("sadd", -3, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _sadd),
    CommandSpec("srem", -3, ("write", "fast"), 1, 1, 1, _WRITE, _srem),
    CommandSpec("smembers", 2, ("readonly",), 1, 1, 1, ("@read", "@set", "@slow"), _smembers),
    CommandSpec("sismember", 3, ("readonly", "fast"), 1, 1, 1, _READ, _sismember),
    CommandSpec("scard", 2, ("readonly", "fast"), 1, 1, 1, _READ, _scard),
    CommandSpec("smismember", -3, ("readonly", "fast"), 1, 1, 1, _READ, _smismember),
    CommandSpec("smove", 4, ("write", "fast"), 1, 2, 1, _WRITE, _smove),
    CommandSpec("spop", -2, ("write", "fast"), 1, 1, 1, _WRITE, _spop),
    CommandSpec("srandmember", -2, ("readonly",), 1, 1, 1, _SLOW_READ, _srandmember),
    CommandSpec("sscan", -3, ("readonly",), 1, 1, 1, _SLOW_READ, _sscan),
    CommandSpec("sinter", -2, ("readonly",), 1, -1, 1, _SLOW_READ, _sinter),
    CommandSpec("sunion", -2, ("readonly",), 1, -1, 1, _SLOW_READ, _sunion),
    CommandSpec("sdiff", -2, ("readonly",), 1, -1, 1, _SLOW_READ, _sdiff),
    CommandSpec("sinterstore", -3, ("write", "denyoom"), 1, -1, 1, _SLOW_WRITE, _sinterstore),
    CommandSpec("sunionstore", -3, ("write", "denyoom"), 1, -1, 1, _SLOW_WRITE, _sunionstore),
    CommandSpec("sdiffstore", -3, ("write", "denyoom"), 1, -1, 1, _SLOW_WRITE, _sdiffstore),
    CommandSpec("sintercard", -3, ("readonly", "movablekeys"), 0, 0, 0, _SLOW_READ,
                _sintercard, numkeys_keys(1)),
)
"""This family's rows of the command table."""
