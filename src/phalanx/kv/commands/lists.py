"""The list commands: LPUSH, RPUSH, LPUSHX, RPUSHX, LPOP, RPOP (with COUNT), LMPOP, LRANGE,
LLEN, LINDEX, LSET, LINSERT, LTRIM, LREM, LPOS, LMOVE, RPOPLPUSH.

Rules of this module:
- A list is a `deque[bytes]`, head first; an empty list is never stored (the last pop deletes
  the key).
- Each command is a `Handler` (keyspace, args, now) -> Reply, registered in `COMMANDS`, this
  family's rows of the command table. See docs/architecture.md.
"""

from __future__ import annotations

from collections import deque
from itertools import islice

from phalanx.kv.commands.common import parse_long_in, parse_positive
from phalanx.kv.keyspace import Keyspace
from phalanx.kv.numbers import parse_int
from phalanx.kv.replies import (
    NOT_INTEGER,
    OK,
    SYNTAX_ERROR,
    WRONGTYPE,
    Error,
    Reply,
    arity_error,
)
from phalanx.kv.spec import Args, CommandSpec, numkeys_keys

_LONG_MAX = 2**63 - 1


def _items(db: Keyspace, key: bytes, now: int) -> deque[bytes] | Error | None:
    value = db.live(key, now)
    if value is None or type(value) is deque:
        return value
    return WRONGTYPE


def _push(db: Keyspace, args: Args, now: int, left: bool) -> Reply:
    key = args[0]
    value = db.live_for_write(key, now)
    if value is None:
        items: deque[bytes] = deque()
        db.store(key, items)
    elif type(value) is deque:
        items = value
    else:
        return WRONGTYPE
    if left:
        items.extendleft(args[1:])
    else:
        items.extend(args[1:])
    return len(items)


def _lpush(db: Keyspace, args: Args, now: int) -> Reply:
    return _push(db, args, now, True)


def _rpush(db: Keyspace, args: Args, now: int) -> Reply:
    return _push(db, args, now, False)


def _pop(db: Keyspace, args: Args, now: int, left: bool, name: str) -> Reply:
    if len(args) > 2:
        return arity_error(name)
    count: int | None = None
    if len(args) == 2:
        parsed = parse_positive(args[1])
        if isinstance(parsed, Error):
            return parsed
        count = parsed
    key = args[0]
    value = db.live_for_write(key, now)
    if value is None:
        return None
    if type(value) is not deque:
        return WRONGTYPE
    pop = value.popleft if left else value.pop
    if count is None:
        reply: Reply = pop()
    else:
        popped: list[Reply] = [pop() for _ in range(min(count, len(value)))]
        reply = popped
    if not value:
        db.delete(key)
    return reply


def _lpop(db: Keyspace, args: Args, now: int) -> Reply:
    return _pop(db, args, now, True, "lpop")


def _rpop(db: Keyspace, args: Args, now: int) -> Reply:
    return _pop(db, args, now, False, "rpop")


def _lrange(db: Keyspace, args: Args, now: int) -> Reply:
    start = parse_int(args[1])
    stop = parse_int(args[2])
    if start is None or stop is None:
        return NOT_INTEGER
    items = _items(db, args[0], now)
    if items is None:
        return []
    if isinstance(items, Error):
        return items
    length = len(items)
    if start < 0:
        start += length
    if stop < 0:
        stop += length
    start = max(start, 0)
    if start > stop or start >= length:
        return []
    stop = min(stop, length - 1)
    window: list[Reply] = [*islice(items, start, stop + 1)]
    return window


def _llen(db: Keyspace, args: Args, now: int) -> Reply:
    items = _items(db, args[0], now)
    if isinstance(items, Error):
        return items
    return 0 if items is None else len(items)


def _pushx(db: Keyspace, args: Args, now: int, left: bool) -> Reply:
    value = db.live_for_write(args[0], now)
    if value is None:
        return 0
    if type(value) is not deque:
        return WRONGTYPE
    if left:
        value.extendleft(args[1:])
    else:
        value.extend(args[1:])
    return len(value)


def _lpushx(db: Keyspace, args: Args, now: int) -> Reply:
    return _pushx(db, args, now, True)


def _rpushx(db: Keyspace, args: Args, now: int) -> Reply:
    return _pushx(db, args, now, False)


def _lindex(db: Keyspace, args: Args, now: int) -> Reply:
    items = _items(db, args[0], now)
    if items is None or isinstance(items, Error):
        return items
    index = parse_int(args[1])
    if index is None:
        return NOT_INTEGER
    if index < 0:
        index += len(items)
    if index < 0 or index >= len(items):
        return None
    return items[index]


def _lset(db: Keyspace, args: Args, now: int) -> Reply:
    # https://redis.io/commands/lset: the key is looked up before the index is parsed
    value = db.live_for_write(args[0], now)
    if value is None:
        return Error("ERR no such key")
    if type(value) is not deque:
        return WRONGTYPE
    index = parse_int(args[1])
    if index is None:
        return NOT_INTEGER
    if index < 0:
        index += len(value)
    if index < 0 or index >= len(value):
        return Error("ERR index out of range")
    value[index] = args[2]
    return OK


def _linsert(db: Keyspace, args: Args, now: int) -> Reply:
    where = args[1].upper()
    if where not in (b"BEFORE", b"AFTER"):
        return SYNTAX_ERROR
    value = db.live_for_write(args[0], now)
    if value is None:
        return 0
    if type(value) is not deque:
        return WRONGTYPE
    try:
        index = value.index(args[2])
    except ValueError:
        return -1
    value.insert(index if where == b"BEFORE" else index + 1, args[3])
    return len(value)


def _ltrim(db: Keyspace, args: Args, now: int) -> Reply:
    start = parse_int(args[1])
    stop = parse_int(args[2])
    if start is None or stop is None:
        return NOT_INTEGER
    key = args[0]
    value = db.live_for_write(key, now)
    if value is None:
        return OK
    if type(value) is not deque:
        return WRONGTYPE
    length = len(value)
    if start < 0:
        start += length
    if stop < 0:
        stop += length
    start = max(start, 0)
    if start > stop or start >= length:
        db.delete(key)
        return OK
    stop = min(stop, length - 1)
    for _ in range(length - 1 - stop):
        value.pop()
    for _ in range(start):
        value.popleft()
    return OK


def _lrem(db: Keyspace, args: Args, now: int) -> Reply:
    # LREM key count element: count > 0 from the head, < 0 from the tail, 0 every match
    count = parse_int(args[1])
    if count is None:
        return NOT_INTEGER
    key, element = args[0], args[2]
    value = db.live_for_write(key, now)
    if value is None:
        return 0
    if type(value) is not deque:
        return WRONGTYPE
    limit = abs(count) if count else len(value)
    items = list(value) if count >= 0 else list(reversed(value))
    kept: list[bytes] = []
    removed = 0
    for item in items:
        if removed < limit and item == element:
            removed += 1
        else:
            kept.append(item)
    if removed:
        if count < 0:
            kept.reverse()
        value.clear()
        value.extend(kept)
        if not value:
            db.delete(key)
    return removed


def _lpos(db: Keyspace, args: Args, now: int) -> Reply:
    # LPOS key element [RANK rank] [COUNT num] [MAXLEN len] (https://redis.io/commands/lpos)
    rank = 1
    count: int | None = None
    maxlen = 0
    position = 2
    while position < len(args):
        option = args[position].upper()
        if position + 1 >= len(args) or option not in (b"RANK", b"COUNT", b"MAXLEN"):
            return SYNTAX_ERROR
        argument = args[position + 1]
        position += 2
        if option == b"RANK":
            parsed = parse_long_in(argument, -_LONG_MAX - 1, _LONG_MAX, None)
            if isinstance(parsed, Error):
                return parsed
            if parsed == -_LONG_MAX - 1:
                parsed = -1  # Redis 7.0 negates it in C: it stays negative, every match counts
            if parsed == 0:
                return Error("ERR RANK can't be zero: use 1 to start from the first match, 2 "
                             "from the second ... or use negative to start from the end of "
                             "the list")
            rank = parsed
        elif option == b"COUNT":
            parsed = parse_positive(argument, "COUNT can't be negative")
            if isinstance(parsed, Error):
                return parsed
            count = parsed
        else:
            parsed = parse_positive(argument, "MAXLEN can't be negative")
            if isinstance(parsed, Error):
                return parsed
            maxlen = parsed
    items = _items(db, args[0], now)
    if items is None:
        return None if count is None else []
    if isinstance(items, Error):
        return items
    length = len(items)
    element = args[1]
    wanted = 1 if count is None else (count or length)
    skip = abs(rank) - 1
    limit = maxlen or length
    found: list[Reply] = []
    indexes = range(length) if rank > 0 else range(length - 1, -1, -1)
    iterator = iter(items) if rank > 0 else reversed(items)
    for index, item in zip(indexes[:limit], iterator, strict=False):
        if item == element:
            if skip:
                skip -= 1
                continue
            found.append(index)
            if len(found) >= wanted:
                break
    if count is None:
        return found[0] if found else None
    return found


def _move_one(db: Keyspace, source_key: bytes, target_key: bytes, from_left: bool,
              to_left: bool, now: int) -> Reply:
    # https://redis.io/commands/lmove: the source is checked first; the target only when the
    # source has an element
    source = db.live_for_write(source_key, now)
    if source is None:
        return None
    if type(source) is not deque:
        return WRONGTYPE
    target = db.live_for_write(target_key, now)
    if target is not None and type(target) is not deque:
        return WRONGTYPE
    element = source.popleft() if from_left else source.pop()
    if target is None:
        target = deque()
        db.store(target_key, target)
    if to_left:
        target.appendleft(element)
    else:
        target.append(element)
    if not source:
        db.delete(source_key)
    return element


def _side(word: bytes) -> bool | None:
    """True for LEFT, False for RIGHT, None otherwise."""
    upper = word.upper()
    return True if upper == b"LEFT" else False if upper == b"RIGHT" else None


def _lmove(db: Keyspace, args: Args, now: int) -> Reply:
    from_left = _side(args[2])
    to_left = _side(args[3])
    if from_left is None or to_left is None:
        return SYNTAX_ERROR
    return _move_one(db, args[0], args[1], from_left, to_left, now)


def _rpoplpush(db: Keyspace, args: Args, now: int) -> Reply:
    return _move_one(db, args[0], args[1], False, True, now)


def _lmpop(db: Keyspace, args: Args, now: int) -> Reply:
    # LMPOP numkeys key [key ...] LEFT|RIGHT [COUNT count] (https://redis.io/commands/lmpop):
    # pops from the first non-empty list; a null reply when every list is empty
    numkeys = parse_long_in(args[0], 1, _LONG_MAX, "numkeys should be greater than 0")
    if isinstance(numkeys, Error):
        return numkeys
    where = 1 + numkeys
    if where >= len(args):
        return SYNTAX_ERROR
    left = _side(args[where])
    if left is None:
        return SYNTAX_ERROR
    count: int | None = None
    position = where + 1
    while position < len(args):
        if (count is None and args[position].upper() == b"COUNT"
                and position + 1 < len(args)):
            parsed = parse_long_in(args[position + 1], 1, _LONG_MAX,
                                   "count should be greater than 0")
            if isinstance(parsed, Error):
                return parsed
            count = parsed
            position += 2
        else:
            return SYNTAX_ERROR
    for key in args[1:where]:
        value = db.live_for_write(key, now)
        if value is None:
            continue
        if type(value) is not deque:
            return WRONGTYPE
        pop = value.popleft if left else value.pop
        popped: list[Reply] = [pop() for _ in range(min(count or 1, len(value)))]
        if not value:
            db.delete(key)
        return [key, popped]
    return None


_WRITE = ("@write", "@list", "@fast")
_SLOW_WRITE = ("@write", "@list", "@slow")
_SLOW_READ = ("@read", "@list", "@slow")

COMMANDS: tuple[CommandSpec, ...] = (
    # name, arity, flags, first/last/step key, ACL categories (Redis 7.0's COMMAND INFO), handler
    CommandSpec("lpush", -3, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _lpush),
    CommandSpec("rpush", -3, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _rpush),
    CommandSpec("lpop", -2, ("write", "fast"), 1, 1, 1, _WRITE, _lpop),
    CommandSpec("rpop", -2, ("write", "fast"), 1, 1, 1, _WRITE, _rpop),
    CommandSpec("lrange", 4, ("readonly",), 1, 1, 1, ("@read", "@list", "@slow"), _lrange),
    CommandSpec("llen", 2, ("readonly", "fast"), 1, 1, 1, ("@read", "@list", "@fast"), _llen),
    CommandSpec("lpushx", -3, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _lpushx),
    CommandSpec("rpushx", -3, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _rpushx),
    CommandSpec("lindex", 3, ("readonly",), 1, 1, 1, _SLOW_READ, _lindex),
    CommandSpec("lset", 4, ("write", "denyoom"), 1, 1, 1, _SLOW_WRITE, _lset),
    CommandSpec("linsert", 5, ("write", "denyoom"), 1, 1, 1, _SLOW_WRITE, _linsert),
    CommandSpec("ltrim", 4, ("write",), 1, 1, 1, _SLOW_WRITE, _ltrim),
    CommandSpec("lrem", 4, ("write",), 1, 1, 1, _SLOW_WRITE, _lrem),
    CommandSpec("lpos", -3, ("readonly",), 1, 1, 1, _SLOW_READ, _lpos),
    CommandSpec("lmove", 5, ("write", "denyoom"), 1, 2, 1, _SLOW_WRITE, _lmove),
    CommandSpec("rpoplpush", 3, ("write", "denyoom"), 1, 2, 1, _SLOW_WRITE, _rpoplpush),
    CommandSpec("lmpop", -4, ("write", "movablekeys"), 0, 0, 0, _SLOW_WRITE, _lmpop,
                numkeys_keys(1)),
)
"""This family's rows of the command table."""
