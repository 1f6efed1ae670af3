"""The multi-key and sampling sorted-set commands: ZUNION, ZINTER, ZDIFF and their STORE forms
(WEIGHTS, AGGREGATE SUM|MIN|MAX, WITHSCORES), ZINTERCARD, ZMPOP, ZRANDMEMBER, ZSCAN.

Rules of this module:
- Semantics and error texts are Redis 7.0's (https://redis.io/commands/zunionstore/,
  https://redis.io/commands/zmpop/, ...), checked against redis-server 7.0.15 by
  tests/kv/test_zsets.py. As in Redis, a plain set is accepted as an input of
  ZUNION / ZINTER / ZDIFF / ZINTERCARD with every score 1; any other type is WRONGTYPE.
- Floating point follows Redis exactly: inputs are combined smallest first (Redis sorts them
  by cardinality; our sort is stable), a weighted score or a sum that is NaN becomes 0.
- The numkeys-style commands (ZUNION, ZINTER, ZDIFF, ZINTERCARD, ZMPOP, the STORE forms)
  declare movable keys ("movablekeys", as Redis): `phalanx.placement.slots.command_keys`
  finds their keys from the numkeys argument.
- ZRANDMEMBER is deterministic: its draws come from BLAKE2b over (key, arguments, the
  command's replicated time `now`), never from a global random generator, so every replica
  answering the same read at the same time answers alike.
- ZSCAN: a sorted set of at most 128 members (Redis's zset-max-listpack-entries) of at most
  64 bytes comes back whole in order, cursor 0, as Redis's compact encoding does; a larger one
  is walked in the order of a 64-bit hash of its members, the cursor being a hash value
  (members present for the whole walk are returned at least once).
"""

from __future__ import annotations

from collections.abc import Callable
from hashlib import blake2b

from phalanx.kv.commands.common import parse_scan_options
from phalanx.kv.commands.zsets import (
    pop_pairs,
    read_zset,
    store_zset,
    with_scores,
    write_zset,
)
from phalanx.kv.glob import glob_match
from phalanx.kv.keyspace import Keyspace, scan_hash
from phalanx.kv.numbers import INT64_MAX, parse_int
from phalanx.kv.replies import NOT_INTEGER, SYNTAX_ERROR, WRONGTYPE, Error, Reply
from phalanx.kv.spec import Args, CommandSpec
from phalanx.kv.zset import ZSet, format_scan_score, format_score, parse_score

_UNION, _INTER, _DIFF = 0, 1, 2
_LISTPACK_ENTRIES = 128
_LISTPACK_VALUE = 64

Source = dict[bytes, float]


def _aggregate_sum(target: float, value: float) -> float:
    total = target + value
    return 0.0 if total != total else total


_AGGREGATES: dict[bytes, Callable[[float, float], float]] = {
    b"SUM": _aggregate_sum,
    b"MIN": min,
    b"MAX": max,
}


def _source(db: Keyspace, key: bytes, now: int) -> Source | Error | None:
    """A ZUNION-family input: the member -> score of a sorted set or (scores 1) a set."""
    value = db.live(key, now)
    if value is None:
        return None
    if type(value) is ZSet:
        return value.scores
    if type(value) is set:
        return dict.fromkeys(value, 1.0)
    return WRONGTYPE


def _numkeys(data: bytes, available: int, name: str) -> int | Error:
    count = parse_int(data)
    if count is None:
        return NOT_INTEGER
    if count < 1:
        return Error(f"ERR at least 1 input key is needed for '{name}' command")
    if count > available:
        return SYNTAX_ERROR
    return count


def _combine(op: int, sources: list[Source], weights: list[float],
             aggregate: Callable[[float, float], float]) -> Source:
    """Redis's zunionInterDiffGenericCommand over the inputs (missing keys are empty)."""
    if op == _DIFF:
        first, others = sources[0], sources[1:]
        return {member: score for member, score in first.items()
                if not any(member in other for other in others)}
    order = sorted(range(len(sources)), key=lambda index: len(sources[index]))
    result: Source = {}
    if op == _UNION:
        for index in order:
            weight = weights[index]
            for member, value in sources[index].items():
                score = weight * value
                if score != score:
                    score = 0.0
                current = result.get(member)
                result[member] = score if current is None else aggregate(current, score)
        return result
    smallest = order[0]
    for member, value in sources[smallest].items():
        score = weights[smallest] * value
        if score != score:
            score = 0.0
        for index in order[1:]:
            other = sources[index].get(member)
            if other is None:
                break
            score = aggregate(score, weights[index] * other)  # NaN not zeroed here (as Redis)
        else:
            result[member] = score
    return result


def _setop(db: Keyspace, args: Args, now: int, op: int, store: bool, name: str) -> Reply:
    """ZUNION / ZINTER / ZDIFF (`args` from numkeys) and their STORE forms (from dst)."""
    base = 1 if store else 0
    count = _numkeys(args[base], len(args) - base - 1, name)
    if isinstance(count, Error):
        return count
    sources: list[Source] = []
    for key in args[base + 1:base + 1 + count]:
        found = _source(db, key, now)
        if isinstance(found, Error):
            return found
        sources.append({} if found is None else found)
    weights = [1.0] * count
    aggregate: Callable[[float, float], float] = _aggregate_sum
    withscores = False
    position = base + 1 + count
    while position < len(args):
        option = args[position].upper()
        remaining = len(args) - position
        if op != _DIFF and remaining >= count + 1 and option == b"WEIGHTS":
            for index in range(count):
                weight = parse_score(args[position + 1 + index])
                if weight is None:
                    return Error("ERR weight value is not a float")
                weights[index] = weight
            position += count + 1
        elif op != _DIFF and remaining >= 2 and option == b"AGGREGATE":
            chosen = _AGGREGATES.get(args[position + 1].upper())
            if chosen is None:
                return SYNTAX_ERROR
            aggregate = chosen
            position += 2
        elif not store and option == b"WITHSCORES":
            withscores = True
            position += 1
        else:
            return SYNTAX_ERROR
    combined = _combine(op, sources, weights, aggregate)
    if store:
        result = ZSet()
        for member, score in combined.items():
            result.add(member, score)  # stored compactly: -0 becomes 0, as in Redis
        store_zset(db, args[0], result, now)
        return len(result)
    # A reply straight from the computed set keeps a -0 score, as Redis's does.
    return with_scores(sorted((score, member) for member, score in combined.items()),
                       withscores)


def _zunion(db: Keyspace, args: Args, now: int) -> Reply:
    return _setop(db, args, now, _UNION, False, "zunion")


def _zinter(db: Keyspace, args: Args, now: int) -> Reply:
    return _setop(db, args, now, _INTER, False, "zinter")


def _zdiff(db: Keyspace, args: Args, now: int) -> Reply:
    return _setop(db, args, now, _DIFF, False, "zdiff")


def _zunionstore(db: Keyspace, args: Args, now: int) -> Reply:
    return _setop(db, args, now, _UNION, True, "zunionstore")


def _zinterstore(db: Keyspace, args: Args, now: int) -> Reply:
    return _setop(db, args, now, _INTER, True, "zinterstore")


def _zdiffstore(db: Keyspace, args: Args, now: int) -> Reply:
    return _setop(db, args, now, _DIFF, True, "zdiffstore")


def _zintercard(db: Keyspace, args: Args, now: int) -> Reply:
    count = _numkeys(args[0], len(args) - 1, "zintercard")
    if isinstance(count, Error):
        return count
    sources: list[Source] = []
    for key in args[1:1 + count]:
        found = _source(db, key, now)
        if isinstance(found, Error):
            return found
        sources.append({} if found is None else found)
    limit = 0
    position = 1 + count
    while position < len(args):
        if len(args) - position >= 2 and args[position].upper() == b"LIMIT":
            parsed = parse_int(args[position + 1])
            if parsed is None or parsed < 0:
                return Error("ERR LIMIT can't be negative")
            limit = parsed
            position += 2
        else:
            return SYNTAX_ERROR
    sources.sort(key=len)
    found_count = 0
    for member in sources[0]:
        if all(member in other for other in sources[1:]):
            found_count += 1
            if found_count == limit:
                break
    return found_count


# ---------------------------------------------------------------------------- ZMPOP


def _zmpop(db: Keyspace, args: Args, now: int) -> Reply:
    count = parse_int(args[0])
    if count is None or count < 1:
        return Error("ERR numkeys should be greater than 0")
    where_position = 1 + count
    if where_position >= len(args):
        return SYNTAX_ERROR
    where = args[where_position].upper()
    if where not in (b"MIN", b"MAX"):
        return SYNTAX_ERROR
    pops = 1
    seen_count = False
    position = where_position + 1
    while position < len(args):
        if (not seen_count and len(args) - position >= 2
                and args[position].upper() == b"COUNT"):
            parsed = parse_int(args[position + 1])
            if parsed is None or parsed < 1:
                return Error("ERR count should be greater than 0")
            pops = parsed
            seen_count = True
            position += 2
        else:
            return SYNTAX_ERROR
    for key in args[1:1 + count]:
        zset = write_zset(db, key, now)
        if isinstance(zset, Error):
            return zset
        if zset is None:
            continue
        pairs = pop_pairs(db, key, zset, pops, where == b"MAX")
        return [key, [[member, format_score(score)] for score, member in pairs]]
    return None


# ---------------------------------------------------------------------------- ZRANDMEMBER


class _Draws:
    """A deterministic stream of uniform draws from a seed (BLAKE2b in counter mode)."""

    __slots__ = ("_counter", "_seed")

    def __init__(self, seed: bytes) -> None:
        self._seed = blake2b(seed, digest_size=32).digest()
        self._counter = 0

    def below(self, bound: int) -> int:
        """A uniform integer in [0, bound) (bias below 2**-64)."""
        self._counter += 1
        digest = blake2b(self._counter.to_bytes(8, "big"), key=self._seed,
                         digest_size=16).digest()
        return int.from_bytes(digest, "big") % bound


def _zrandmember(db: Keyspace, args: Args, now: int) -> Reply:
    if len(args) > 3 or (len(args) == 3 and args[2].upper() != b"WITHSCORES"):
        return SYNTAX_ERROR
    draws = _Draws(b"\0".join((b"%d" % now, *args)))
    if len(args) == 1:
        zset = read_zset(db, args[0], now)
        if zset is None or isinstance(zset, Error):
            return zset
        member: bytes = zset.order[draws.below(len(zset))][1]
        return member
    count = parse_int(args[1])
    if count is None:
        return NOT_INTEGER
    if count < -INT64_MAX:
        return Error(f"ERR value is out of range, value must between {-INT64_MAX} and "
                     f"{INT64_MAX}")
    withscores = len(args) == 3
    if withscores and count < -(INT64_MAX // 2):
        return Error("ERR value is out of range")
    zset = read_zset(db, args[0], now)
    if isinstance(zset, Error):
        return zset
    if zset is None or count == 0:
        return []
    length = len(zset)
    order = zset.order
    pairs: list[tuple[float, bytes]]
    if count < 0:
        pairs = [order[draws.below(length)] for _ in range(-count)]
    elif count >= length:
        pairs = list(reversed(order))  # the whole set, from the tail, as Redis answers
    else:
        positions = list(range(length))
        for index in range(count):  # a partial Fisher-Yates shuffle
            other = index + draws.below(length - index)
            positions[index], positions[other] = positions[other], positions[index]
        pairs = [order[position] for position in positions[:count]]
    return with_scores(pairs, withscores)


# ---------------------------------------------------------------------------- ZSCAN


def _parse_cursor(data: bytes) -> int | None:
    """A SCAN cursor as C's strtoul reads it (decimal, optional sign, wrapping "-n")."""
    if not data or data[0] in b" \t\n\v\f\r":
        return None
    sign = data[:1]
    digits = data[1:] if sign in (b"+", b"-") else data
    if not digits.isdigit() or int(digits) >= 2**64:
        return None
    value = int(digits)
    return (-value) % (2**64) if sign == b"-" else value


def _zscan(db: Keyspace, args: Args, now: int) -> Reply:
    cursor = _parse_cursor(args[1])
    if cursor is None:
        return Error("ERR invalid cursor")
    zset = read_zset(db, args[0], now)
    if isinstance(zset, Error):
        return zset
    if zset is None:
        return [b"0", []]
    options = parse_scan_options(args[2:])
    if isinstance(options, Error):
        return options
    count, pattern = options
    if len(zset) <= _LISTPACK_ENTRIES and all(
            len(member) <= _LISTPACK_VALUE for member in zset.scores):
        next_cursor = 0
        chosen = [(member, score) for score, member in zset.order]
    else:
        hashed = sorted((scan_hash(member), member) for member in zset.scores)
        chosen = []
        next_cursor = 0
        for member_hash, member in hashed:
            if member_hash < cursor:
                continue
            if len(chosen) >= count:
                next_cursor = member_hash
                break
            chosen.append((member, zset.scores[member]))
    found: list[Reply] = []
    for member, score in chosen:
        if pattern is None or glob_match(pattern, member):
            found.append(member)
            found.append(format_scan_score(score))
    return [b"%d" % next_cursor, found]


_READ_SLOW = ("@read", "@sortedset", "@slow")
_WRITE_SLOW = ("@write", "@sortedset", "@slow")
_MOVABLE_READ = ("readonly", "movablekeys")
_MOVABLE_STORE = ("write", "denyoom", "movablekeys")

COMMANDS: tuple[CommandSpec, ...] = (
    # name, arity, flags, first/last/step key, ACL categories (Redis 7.0's COMMAND INFO), handler
    CommandSpec("zunion", -3, _MOVABLE_READ, 0, 0, 0, _READ_SLOW, _zunion),
    CommandSpec("zinter", -3, _MOVABLE_READ, 0, 0, 0, _READ_SLOW, _zinter),
    CommandSpec("zdiff", -3, _MOVABLE_READ, 0, 0, 0, _READ_SLOW, _zdiff),
    CommandSpec("zunionstore", -4, _MOVABLE_STORE, 1, 1, 1, _WRITE_SLOW, _zunionstore),
    CommandSpec("zinterstore", -4, _MOVABLE_STORE, 1, 1, 1, _WRITE_SLOW, _zinterstore),
    CommandSpec("zdiffstore", -4, _MOVABLE_STORE, 1, 1, 1, _WRITE_SLOW, _zdiffstore),
    CommandSpec("zintercard", -3, _MOVABLE_READ, 0, 0, 0, _READ_SLOW, _zintercard),
    CommandSpec("zmpop", -4, ("write", "movablekeys"), 0, 0, 0, _WRITE_SLOW, _zmpop),
    CommandSpec("zrandmember", -2, ("readonly",), 1, 1, 1, _READ_SLOW, _zrandmember),
    CommandSpec("zscan", -3, ("readonly",), 1, 1, 1, _READ_SLOW, _zscan),
)
"""This family's rows of the command table (multi-key, sampling and scanning commands)."""
