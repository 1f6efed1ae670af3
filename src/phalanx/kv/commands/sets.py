"""The set commands: SADD, SREM, SMEMBERS, SISMEMBER, SCARD.

Rules of this module:
- A set is a `set[bytes]`; whatever reaches a reply or the snapshot is sorted first (SMEMBERS
  answers in sorted member order), so every replica answers alike. An empty set is never
  stored (the last SREM deletes the key).
- Each command is a `Handler` (keyspace, args, now) -> Reply, registered in `COMMANDS`, this
  family's rows of the command table. See docs/architecture.md.
"""

from __future__ import annotations

from phalanx.kv.keyspace import Keyspace
from phalanx.kv.replies import WRONGTYPE, Error, Reply
from phalanx.kv.spec import Args, CommandSpec


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


_READ = ("@read", "@set", "@fast")
_WRITE = ("@write", "@set", "@fast")

COMMANDS: tuple[CommandSpec, ...] = (
    # name, arity, flags, first/last/step key, ACL categories (Redis 7.0's COMMAND INFO), handler
    CommandSpec("sadd", -3, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE, _sadd),
    CommandSpec("srem", -3, ("write", "fast"), 1, 1, 1, _WRITE, _srem),
    CommandSpec("smembers", 2, ("readonly",), 1, 1, 1, ("@read", "@set", "@slow"), _smembers),
    CommandSpec("sismember", 3, ("readonly", "fast"), 1, 1, 1, _READ, _sismember),
    CommandSpec("scard", 2, ("readonly", "fast"), 1, 1, 1, _READ, _scard),
)
"""This family's rows of the command table."""
