"""The list commands: LPUSH, RPUSH, LPOP, RPOP (with COUNT), LRANGE, LLEN.

Rules of this module:
- A list is a `deque[bytes]`, head first; an empty list is never stored (the last pop deletes
  the key).
- Each command is a `Handler` (keyspace, args, now) -> Reply, registered in `COMMANDS`, this
  family's rows of the command table. See docs/architecture.md.
"""

from __future__ import annotations

from collections import deque
from itertools import islice

from phalanx.kv.keyspace import Keyspace
from phalanx.kv.numbers import parse_int
from phalanx.kv.replies import NOT_INTEGER, WRONGTYPE, Error, Reply, arity_error
from phalanx.kv.spec import Args, CommandSpec


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
        count = parse_int(args[1])
        if count is None:
            return NOT_INTEGER
        if count < 0:
            return Error("ERR value is out of range, must be positive")
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


_WRITE = ("@write", "@list", "@fast")

COMMANDS: tuple[CommandSpec, ...] = (
    # name, arity, flags, first/last/step key, ACL categories (Redis 7.0's COMMAND INFO), handler
    CommandSpec("lpush", -3, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _lpush),
    CommandSpec("rpush", -3, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _rpush),
    CommandSpec("lpop", -2, ("write", "fast"), 1, 1, 1, _WRITE, _lpop),
    CommandSpec("rpop", -2, ("write", "fast"), 1, 1, 1, _WRITE, _rpop),
    CommandSpec("lrange", 4, ("readonly",), 1, 1, 1, ("@read", "@list", "@slow"), _lrange),
    CommandSpec("llen", 2, ("readonly", "fast"), 1, 1, 1, ("@read", "@list", "@fast"), _llen),
)
"""This family's rows of the command table."""
