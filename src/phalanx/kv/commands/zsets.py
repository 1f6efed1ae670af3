"""The sorted-set commands on one key: ZADD, ZINCRBY, ZCARD, ZSCORE, ZMSCORE, ZRANK, ZREVRANK,
ZCOUNT, ZLEXCOUNT, ZRANGE (BYSCORE / BYLEX / REV / LIMIT / WITHSCORES), ZRANGEBYSCORE,
ZREVRANGEBYSCORE, ZRANGEBYLEX, ZREVRANGEBYLEX, ZREVRANGE, ZRANGESTORE, ZREM,
ZREMRANGEBYRANK, ZREMRANGEBYSCORE, ZREMRANGEBYLEX, ZPOPMIN, ZPOPMAX. The multi-key and
sampling commands (ZUNION / ZINTER / ZDIFF [STORE], ZINTERCARD, ZMPOP, ZRANDMEMBER, ZSCAN)
are in `zsetops.py`.

Rules of this module:
- A sorted set is a `phalanx.kv.zset.ZSet` (dict member -> score plus a SortedList of
  (score, member)); an empty one is never stored (the last removal deletes the key).
- Semantics and error texts are Redis 7.0's (https://redis.io/commands/zadd/,
  https://redis.io/commands/zrange/, ...), checked against redis-server 7.0.15 by
  tests/kv/test_zsets.py. Arguments are parsed (and bad ones refused) before the key is read,
  as Redis does, so a syntax error wins over WRONGTYPE.
- Scores in replies are bulk strings formatted as Redis 7.0 formats doubles (`%.17g`,
  `format_score`): byte-exact under RESP2.
- Each command is a `Handler` (keyspace, args, now) -> Reply, registered in `COMMANDS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from phalanx.kv.keyspace import Keyspace
from phalanx.kv.numbers import parse_int
from phalanx.kv.replies import NOT_FLOAT, NOT_INTEGER, SYNTAX_ERROR, WRONGTYPE, Error, Reply
from phalanx.kv.spec import Args, CommandSpec
from phalanx.kv.zset import (
    LexBound,
    ZSet,
    format_score,
    parse_bound,
    parse_lex_bound,
    parse_score,
)

NOT_RANGE_FLOAT = Error("ERR min or max is not a float")
NOT_LEX_RANGE = Error("ERR min or max not valid string range item")
NAN_SCORE = Error("ERR resulting score is not a number (NaN)")
_NOT_POSITIVE = Error("ERR value is out of range, must be positive")

RANK, SCORE, LEX = 0, 1, 2


def read_zset(db: Keyspace, key: bytes, now: int) -> ZSet | Error | None:
    """The sorted set at `key` (None when absent), or WRONGTYPE."""
    value = db.live(key, now)
    if value is None or type(value) is ZSet:
        return value
    return WRONGTYPE


def write_zset(db: Keyspace, key: bytes, now: int) -> ZSet | Error | None:
    """Like `read_zset`, for a write (an expired key is deleted first)."""
    value = db.live_for_write(key, now)
    if value is None or type(value) is ZSet:
        return value
    return WRONGTYPE


def store_zset(db: Keyspace, key: bytes, zset: ZSet, now: int) -> None:
    """Replace whatever `key` holds (and its TTL) with `zset`, or delete it when empty."""
    if db.live_for_write(key, now) is not None:
        db.delete(key)
    if len(zset):
        db.store(key, zset)


def drop_if_empty(db: Keyspace, key: bytes, zset: ZSet) -> None:
    """Delete `key` once its sorted set is empty."""
    if not len(zset):
        db.delete(key)


def with_scores(pairs: list[tuple[float, bytes]], scores: bool) -> list[Reply]:
    """Members, or member, score, member, score... (RESP2's flat WITHSCORES reply)."""
    if not scores:
        return [member for _, member in pairs]
    flat: list[Reply] = []
    for score, member in pairs:
        flat.append(member)
        flat.append(format_score(score))
    return flat


# ---------------------------------------------------------------------------- ZADD, ZINCRBY


def _zadd(db: Keyspace, args: Args, now: int) -> Reply:
    nx = xx = gt = lt = ch = incr = False
    position = 1
    while position < len(args):
        option = args[position].upper()
        if option == b"NX":
            nx = True
        elif option == b"XX":
            xx = True
        elif option == b"GT":
            gt = True
        elif option == b"LT":
            lt = True
        elif option == b"CH":
            ch = True
        elif option == b"INCR":
            incr = True
        else:
            break
        position += 1
    elements = len(args) - position
    if elements % 2 or not elements:
        return SYNTAX_ERROR
    if nx and xx:
        return Error("ERR XX and NX options at the same time are not compatible")
    if (gt and nx) or (lt and nx) or (gt and lt):
        return Error("ERR GT, LT, and/or NX options at the same time are not compatible")
    if incr and elements > 2:
        return Error("ERR INCR option supports a single increment-element pair")
    pairs: list[tuple[float, bytes]] = []
    for index in range(position, len(args), 2):
        score = parse_score(args[index])
        if score is None:
            return NOT_FLOAT
        pairs.append((score, args[index + 1]))
    return zadd_pairs(db, args[0], pairs, now, nx, xx, gt, lt, ch, incr)


def zadd_pairs(db: Keyspace, key: bytes, pairs: list[tuple[float, bytes]], now: int,
                nx: bool, xx: bool, gt: bool, lt: bool, ch: bool, incr: bool) -> Reply:
    found = write_zset(db, key, now)
    if isinstance(found, Error):
        return found
    if found is None:
        if xx:
            return None if incr else 0
        zset = ZSet()
    else:
        zset = found
    added = updated = 0
    result: float | None = None
    for score, member in pairs:
        current = zset.scores.get(member)
        if current is None:
            if xx:
                continue
            zset.add(member, score)
            added += 1
            result = score
            continue
        if nx:
            continue
        new = current + score if incr else score
        if math.isnan(new):
            return NAN_SCORE
        if (lt and new >= current) or (gt and new <= current):
            continue
        result = new
        if new != current:
            zset.add(member, new)
            updated += 1
    if found is None and len(zset):
        db.store(key, zset)
    if incr:
        return None if result is None else format_score(result)
    return added + updated if ch else added


def _zincrby(db: Keyspace, args: Args, now: int) -> Reply:
    increment = parse_score(args[1])
    if increment is None:
        return NOT_FLOAT
    return zadd_pairs(db, args[0], [(increment, args[2])], now,
                       False, False, False, False, False, True)


# ---------------------------------------------------------------------------- single members


def _zcard(db: Keyspace, args: Args, now: int) -> Reply:
    zset = read_zset(db, args[0], now)
    if isinstance(zset, Error):
        return zset
    return 0 if zset is None else len(zset)


def _zscore(db: Keyspace, args: Args, now: int) -> Reply:
    zset = read_zset(db, args[0], now)
    if isinstance(zset, Error):
        return zset
    score = None if zset is None else zset.scores.get(args[1])
    return None if score is None else format_score(score)


def _zmscore(db: Keyspace, args: Args, now: int) -> Reply:
    zset = read_zset(db, args[0], now)
    if isinstance(zset, Error):
        return zset
    scores: list[Reply] = []
    for member in args[1:]:
        score = None if zset is None else zset.scores.get(member)
        scores.append(None if score is None else format_score(score))
    return scores


def _rank(db: Keyspace, args: Args, now: int, reverse: bool) -> Reply:
    zset = read_zset(db, args[0], now)
    if isinstance(zset, Error):
        return zset
    rank = None if zset is None else zset.rank(args[1])
    if rank is None or zset is None:
        return None
    return len(zset) - 1 - rank if reverse else rank


def _zrank(db: Keyspace, args: Args, now: int) -> Reply:
    return _rank(db, args, now, False)


def _zrevrank(db: Keyspace, args: Args, now: int) -> Reply:
    return _rank(db, args, now, True)


# ---------------------------------------------------------------------------- ranges


def parse_score_range(low: bytes, high: bytes) -> tuple[float, bool, float, bool] | Error:
    """(min, min open, max, max open) of a score range, or Redis's error."""
    parsed_low = parse_bound(low)
    parsed_high = parse_bound(high)
    if parsed_low is None or parsed_high is None:
        return NOT_RANGE_FLOAT
    return parsed_low[0], parsed_low[1], parsed_high[0], parsed_high[1]


def parse_lex_range(low: bytes, high: bytes) -> tuple[LexBound, LexBound] | Error:
    """(min, max) of a lex range, or Redis's error."""
    parsed_low = parse_lex_bound(low)
    parsed_high = parse_lex_bound(high)
    if parsed_low is None or parsed_high is None:
        return NOT_LEX_RANGE
    return parsed_low, parsed_high


def rank_span(length: int, start: int, stop: int) -> tuple[int, int]:
    """Positions [first, last) of the inclusive rank range start..stop (negative from the
    end), clamped as Redis clamps it."""
    if start < 0:
        start += length
    if stop < 0:
        stop += length
    start = max(start, 0)
    if start > stop or start >= length:
        return 0, 0
    return start, min(stop, length - 1) + 1


def score_span(zset: ZSet, bounds: tuple[float, bool, float, bool]) -> tuple[int, int]:
    """Positions [first, last) of the members whose score is within `bounds`."""
    low, low_open, high, high_open = bounds
    if low > high or (low == high and (low_open or high_open)):
        return 0, 0
    return zset.score_span(low, low_open, high, high_open)


@dataclass(slots=True)
class RangeRequest:
    """One ZRANGE-family request, parsed."""

    kind: int  # RANK, SCORE or LEX
    reverse: bool
    ranks: tuple[int, int] = (0, 0)
    scores: tuple[float, bool, float, bool] = (0.0, False, 0.0, False)
    lex: tuple[LexBound, LexBound] = ((0, b""), (0, b""))
    offset: int = 0
    count: int = -1
    withscores: bool = False


def parse_range(args: Args, kind: int | None, reverse: bool | None, store: bool
                ) -> RangeRequest | Error:
    """Parse `key min max [options]` (or, for ZRANGESTORE, `src min max [options]`) as Redis
    7.0's zrangeGenericCommand does; `kind` / `reverse` preset by the legacy forms."""
    withscores = False
    offset, count = 0, -1
    position = 3
    while position < len(args):
        option = args[position].upper()
        left = len(args) - position - 1
        if not store and option == b"WITHSCORES":
            withscores = True
        elif option == b"LIMIT" and left >= 2:
            parsed_offset = parse_int(args[position + 1])
            parsed_count = parse_int(args[position + 2])
            if parsed_offset is None or parsed_count is None:
                return NOT_INTEGER
            offset, count = parsed_offset, parsed_count
            position += 2
        elif reverse is None and option == b"REV":
            reverse = True
        elif kind is None and option == b"BYLEX":
            kind = LEX
        elif kind is None and option == b"BYSCORE":
            kind = SCORE
        else:
            return SYNTAX_ERROR
        position += 1
    kind = RANK if kind is None else kind
    reverse = bool(reverse)
    if count != -1 and kind == RANK:
        return Error("ERR syntax error, LIMIT is only supported in combination with either "
                     "BYSCORE or BYLEX")
    if withscores and kind == LEX:
        return Error("ERR syntax error, WITHSCORES not supported in combination with BYLEX")
    low, high = (args[2], args[1]) if reverse and kind != RANK else (args[1], args[2])
    request = RangeRequest(kind, reverse, offset=offset, count=count, withscores=withscores)
    if kind == RANK:
        start, stop = parse_int(low), parse_int(high)
        if start is None or stop is None:
            return NOT_INTEGER
        request.ranks = (start, stop)
    elif kind == SCORE:
        scores = parse_score_range(low, high)
        if isinstance(scores, Error):
            return scores
        request.scores = scores
    else:
        lex = parse_lex_range(low, high)
        if isinstance(lex, Error):
            return lex
        request.lex = lex
    return request


def run_range(zset: ZSet, request: RangeRequest) -> list[tuple[float, bytes]]:
    """The (score, member) pairs a parsed range request selects, in reply order."""
    length = len(zset)
    order = zset.order
    if request.kind == RANK:
        start, stop = request.ranks
        first, last = rank_span(length, start, stop)
        if request.reverse:
            return list(order.islice(length - last, length - first, reverse=True))
        return list(order.islice(first, last))
    if request.kind == SCORE:
        first, last = score_span(zset, request.scores)
    else:
        first, last = zset.lex_span(*request.lex, reverse=request.reverse)
    offset, count = request.offset, request.count
    if offset < 0 or count == 0:
        return []
    if request.reverse:
        top = last - offset
        bottom = first if count < 0 else max(first, top - count)
        if top <= bottom:
            return []
        return list(order.islice(bottom, top, reverse=True))
    bottom = first + offset
    top = last if count < 0 else min(last, bottom + count)
    if top <= bottom:
        return []
    return list(order.islice(bottom, top))


def _range_command(db: Keyspace, args: Args, now: int, kind: int | None,
                   reverse: bool | None) -> Reply:
    request = parse_range(args, kind, reverse, False)
    if isinstance(request, Error):
        return request
    zset = read_zset(db, args[0], now)
    if isinstance(zset, Error):
        return zset
    if zset is None:
        return []
    return with_scores(run_range(zset, request), request.withscores)


def _zrange(db: Keyspace, args: Args, now: int) -> Reply:
    return _range_command(db, args, now, None, None)


def _zrevrange(db: Keyspace, args: Args, now: int) -> Reply:
    return _range_command(db, args, now, RANK, True)


def _zrangebyscore(db: Keyspace, args: Args, now: int) -> Reply:
    return _range_command(db, args, now, SCORE, False)


def _zrevrangebyscore(db: Keyspace, args: Args, now: int) -> Reply:
    return _range_command(db, args, now, SCORE, True)


def _zrangebylex(db: Keyspace, args: Args, now: int) -> Reply:
    return _range_command(db, args, now, LEX, False)


def _zrevrangebylex(db: Keyspace, args: Args, now: int) -> Reply:
    return _range_command(db, args, now, LEX, True)


def _zrangestore(db: Keyspace, args: Args, now: int) -> Reply:
    request = parse_range(args[1:], None, None, True)
    if isinstance(request, Error):
        return request
    source = read_zset(db, args[1], now)
    if isinstance(source, Error):
        return source
    pairs = [] if source is None else run_range(source, request)
    store_zset(db, args[0], ZSet.from_items((member, score) for score, member in pairs), now)
    return len(pairs)


def _zcount(db: Keyspace, args: Args, now: int) -> Reply:
    bounds = parse_score_range(args[1], args[2])
    if isinstance(bounds, Error):
        return bounds
    zset = read_zset(db, args[0], now)
    if isinstance(zset, Error):
        return zset
    if zset is None:
        return 0
    first, last = score_span(zset, bounds)
    return last - first


def _zlexcount(db: Keyspace, args: Args, now: int) -> Reply:
    bounds = parse_lex_range(args[1], args[2])
    if isinstance(bounds, Error):
        return bounds
    zset = read_zset(db, args[0], now)
    if isinstance(zset, Error):
        return zset
    if zset is None:
        return 0
    first, last = zset.lex_span(*bounds)
    return last - first


# ---------------------------------------------------------------------------- removal


def _zrem(db: Keyspace, args: Args, now: int) -> Reply:
    zset = write_zset(db, args[0], now)
    if zset is None or isinstance(zset, Error):
        return zset if zset is not None else 0
    removed = sum(1 for member in args[1:] if zset.remove(member))
    drop_if_empty(db, args[0], zset)
    return removed


def remove_span(db: Keyspace, key: bytes, zset: ZSet, first: int, last: int) -> int:
    """Remove the members at positions [first, last); delete the key if emptied."""
    if last <= first:
        return 0
    for _, member in zset.order.islice(first, last):
        del zset.scores[member]
    del zset.order[first:last]
    drop_if_empty(db, key, zset)
    return last - first


def _zremrangebyrank(db: Keyspace, args: Args, now: int) -> Reply:
    start, stop = parse_int(args[1]), parse_int(args[2])
    if start is None or stop is None:
        return NOT_INTEGER
    zset = write_zset(db, args[0], now)
    if zset is None or isinstance(zset, Error):
        return zset if zset is not None else 0
    first, last = rank_span(len(zset), start, stop)
    return remove_span(db, args[0], zset, first, last)


def _zremrangebyscore(db: Keyspace, args: Args, now: int) -> Reply:
    bounds = parse_score_range(args[1], args[2])
    if isinstance(bounds, Error):
        return bounds
    zset = write_zset(db, args[0], now)
    if zset is None or isinstance(zset, Error):
        return zset if zset is not None else 0
    first, last = score_span(zset, bounds)
    return remove_span(db, args[0], zset, first, last)


def _zremrangebylex(db: Keyspace, args: Args, now: int) -> Reply:
    bounds = parse_lex_range(args[1], args[2])
    if isinstance(bounds, Error):
        return bounds
    zset = write_zset(db, args[0], now)
    if zset is None or isinstance(zset, Error):
        return zset if zset is not None else 0
    first, last = zset.lex_span(*bounds)
    return remove_span(db, args[0], zset, first, last)


# ---------------------------------------------------------------------------- pops


def pop_pairs(db: Keyspace, key: bytes, zset: ZSet, count: int, highest: bool
              ) -> list[tuple[float, bytes]]:
    """Remove and return up to `count` members, lowest (or highest) first."""
    length = len(zset)
    count = min(count, length)
    if highest:
        pairs = list(zset.order.islice(length - count, length, reverse=True))
        remove_span(db, key, zset, length - count, length)
    else:
        pairs = list(zset.order.islice(0, count))
        remove_span(db, key, zset, 0, count)
    return pairs


def _pop(db: Keyspace, args: Args, now: int, highest: bool) -> Reply:
    if len(args) > 2:
        return SYNTAX_ERROR
    count = 1
    if len(args) == 2:
        parsed = parse_int(args[1])
        if parsed is None or parsed < 0:
            return _NOT_POSITIVE
        count = parsed
    zset = write_zset(db, args[0], now)
    if isinstance(zset, Error):
        return zset
    if zset is None or count == 0:
        return []
    return with_scores(pop_pairs(db, args[0], zset, count, highest), True)


def _zpopmin(db: Keyspace, args: Args, now: int) -> Reply:
    return _pop(db, args, now, False)


def _zpopmax(db: Keyspace, args: Args, now: int) -> Reply:
    return _pop(db, args, now, True)


_READ_FAST = ("@read", "@sortedset", "@fast")
_READ_SLOW = ("@read", "@sortedset", "@slow")
_WRITE_FAST = ("@write", "@sortedset", "@fast")
_WRITE_SLOW = ("@write", "@sortedset", "@slow")
_RO = ("readonly",)
_RO_FAST = ("readonly", "fast")

COMMANDS: tuple[CommandSpec, ...] = (
    # name, arity, flags, first/last/step key, ACL categories (Redis 7.0's COMMAND INFO), handler
    CommandSpec("zadd", -4, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE_FAST, _zadd),
    CommandSpec("zincrby", 4, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE_FAST, _zincrby),
    CommandSpec("zcard", 2, _RO_FAST, 1, 1, 1, _READ_FAST, _zcard),
    CommandSpec("zscore", 3, _RO_FAST, 1, 1, 1, _READ_FAST, _zscore),
    CommandSpec("zmscore", -3, _RO_FAST, 1, 1, 1, _READ_FAST, _zmscore),
    CommandSpec("zrank", 3, _RO_FAST, 1, 1, 1, _READ_FAST, _zrank),
    CommandSpec("zrevrank", 3, _RO_FAST, 1, 1, 1, _READ_FAST, _zrevrank),
    CommandSpec("zcount", 4, _RO_FAST, 1, 1, 1, _READ_FAST, _zcount),
    CommandSpec("zlexcount", 4, _RO_FAST, 1, 1, 1, _READ_FAST, _zlexcount),
    CommandSpec("zrange", -4, _RO, 1, 1, 1, _READ_SLOW, _zrange),
    CommandSpec("zrangebyscore", -4, _RO, 1, 1, 1, _READ_SLOW, _zrangebyscore),
    CommandSpec("zrevrangebyscore", -4, _RO, 1, 1, 1, _READ_SLOW, _zrevrangebyscore),
    CommandSpec("zrangebylex", -4, _RO, 1, 1, 1, _READ_SLOW, _zrangebylex),
    CommandSpec("zrevrangebylex", -4, _RO, 1, 1, 1, _READ_SLOW, _zrevrangebylex),
    CommandSpec("zrevrange", -4, _RO, 1, 1, 1, _READ_SLOW, _zrevrange),
    CommandSpec("zrangestore", -5, ("write", "denyoom"), 1, 2, 1, _WRITE_SLOW, _zrangestore),
    CommandSpec("zrem", -3, ("write", "fast"), 1, 1, 1, _WRITE_FAST, _zrem),
    CommandSpec("zremrangebyrank", 4, ("write",), 1, 1, 1, _WRITE_SLOW, _zremrangebyrank),
    CommandSpec("zremrangebyscore", 4, ("write",), 1, 1, 1, _WRITE_SLOW, _zremrangebyscore),
    CommandSpec("zremrangebylex", 4, ("write",), 1, 1, 1, _WRITE_SLOW, _zremrangebylex),
    CommandSpec("zpopmin", -2, ("write", "fast"), 1, 1, 1, _WRITE_FAST, _zpopmin),
    CommandSpec("zpopmax", -2, ("write", "fast"), 1, 1, 1, _WRITE_FAST, _zpopmax),
)
"""This family's rows of the command table (the single-key sorted-set commands)."""
