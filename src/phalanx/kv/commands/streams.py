"""The stream commands without consumer groups: XADD, XLEN, XRANGE, XREVRANGE, XDEL, XTRIM,
XREAD, XSETID.

Semantics and error texts are Redis 7.0's (t_stream.c; https://redis.io/commands/xadd/,
/xrange/, /xrevrange/, /xdel/, /xtrim/, /xread/, /xsetid/, /xlen/), checked against
redis-server 7.0.15 by tests/kv/test_streams_differential.py. XREAD's `+` (the last entry) is
Redis 7.4's.

Rules of this module:
- The value is `kv.stream.Stream`; ids are integers (`ms << 64 | seq`, see kv/stream.py).
- XADD's `*` and `ms-*` are resolved HERE, at apply time, from the replicated clock `now` and
  the stream's last id (`Stream.next_auto_id`): the log carries what the client sent, every
  replica computes the same id, and a later leader can never issue an id at or below an
  applied one, whatever its wall clock.
- XREAD here never blocks: BLOCK is validated and ignored (inside MULTI and scripts Redis runs
  it so too); the server front end (server/front/blocking.py) does the waiting.
- Pure and deterministic; only `Keyspace` helpers change the keyspace.
"""

from __future__ import annotations

from dataclasses import dataclass

from phalanx.kv.keyspace import Keyspace
from phalanx.kv.numbers import INT64_MAX, parse_int
from phalanx.kv.replies import NOT_INTEGER, OK, SYNTAX_ERROR, WRONGTYPE, Error, Reply, arity_error
from phalanx.kv.spec import Args, CommandSpec
from phalanx.kv.stream import (
    MAX_ID,
    NODE_ENTRIES,
    SEQ_MASK,
    Stream,
    format_id,
    parse_id,
    unpack_fields,
)

INVALID_ID = Error("ERR Invalid stream ID specified as stream command argument")
NO_SUCH_KEY = Error("ERR no such key")
_TOO_SMALL = Error("ERR The ID specified in XADD is equal or smaller than the target stream "
                   "top item")
_BOTH_STRATEGIES = Error("ERR syntax error, MAXLEN and MINID options at the same time are not "
                         "compatible")


def stream_for_read(db: Keyspace, key: bytes, now: int) -> Stream | Error | None:
    """The stream at `key` (None when absent), or WRONGTYPE."""
    value = db.live(key, now)
    if value is None or type(value) is Stream:
        return value
    return WRONGTYPE


def stream_for_write(db: Keyspace, key: bytes, now: int) -> Stream | Error | None:
    """The stream at `key` for a write (None when absent), or WRONGTYPE."""
    value = db.live_for_write(key, now)
    if value is None or type(value) is Stream:
        return value
    return WRONGTYPE


def entry_reply(stream_id: int, fields: bytes) -> Reply:
    """One entry (its packed fields) as Redis replies it: [id, [field, value, ...]]."""
    return [format_id(stream_id), list(unpack_fields(fields))]


def parse_strict(text: bytes) -> int | None:
    """streamParseStrictIDOrReply with missing seq 0: an id, `-`/`+` refused."""
    parsed = parse_id(text, 0, strict=True)
    return None if parsed is None else parsed[0]


def parse_interval(text: bytes, missing_seq: int, start: bool) -> int | Error:
    """streamParseIntervalIDOrReply plus the exclusive `(` adjustment of XRANGE / XPENDING /
    XAUTOCLAIM: an inclusive bound, or Redis's error."""
    exclusive = len(text) > 1 and text[:1] == b"("
    parsed = parse_id(text[1:], missing_seq, strict=True) if exclusive \
        else parse_id(text, missing_seq)
    if parsed is None:
        return INVALID_ID
    bound = parsed[0]
    if exclusive:
        if start:
            if bound == MAX_ID:
                return Error("ERR invalid start ID for the interval")
            bound += 1
        else:
            if bound == 0:
                return Error("ERR invalid end ID for the interval")
            bound -= 1
    return bound


# ---------------------------------------------------------------------------- trimming


@dataclass(slots=True)
class TrimArgs:
    """XADD / XTRIM options (Redis's streamAddTrimArgs)."""

    maxlen: int | None = None
    minid: int | None = None
    approx: bool = False
    limit: int = 0
    no_mkstream: bool = False
    stream_id: int = 0
    id_given: bool = False
    seq_given: bool = True
    position: int = 0
    """Index in args of the id (XADD): the fields follow it."""

    @property
    def trims(self) -> bool:
        return self.maxlen is not None or self.minid is not None


def parse_add_or_trim(args: Args, xadd: bool) -> TrimArgs | Error:
    """Redis's streamParseAddOrTrimArgsOrReply (`args` excludes the name; options from
    args[1])."""
    parsed = TrimArgs()
    limit_given = False
    position = 1
    count = len(args)
    while position < count:
        more = count - 1 - position
        option = args[position]
        upper = option.upper()
        if xadd and option == b"*":
            break
        if upper in (b"MAXLEN", b"MINID") and more:
            if parsed.trims:
                return _BOTH_STRATEGIES
            parsed.approx = False
            following = args[position + 1]
            if more >= 2 and following == b"~":
                parsed.approx = True
                position += 1
            elif more >= 2 and following == b"=":
                position += 1
            if upper == b"MAXLEN":
                maxlen = parse_int(args[position + 1])
                if maxlen is None:
                    return NOT_INTEGER
                if maxlen < 0:
                    return Error("ERR The MAXLEN argument must be >= 0.")
                parsed.maxlen = maxlen
            else:
                minid = parse_strict(args[position + 1])
                if minid is None:
                    return INVALID_ID
                parsed.minid = minid
            position += 1
        elif upper == b"LIMIT" and more:
            limit = parse_int(args[position + 1])
            if limit is None:
                return NOT_INTEGER
            if limit < 0:
                return Error("ERR The LIMIT argument must be >= 0.")
            parsed.limit = limit
            limit_given = True
            position += 1
        elif xadd and upper == b"NOMKSTREAM":
            parsed.no_mkstream = True
        elif xadd:
            given = parse_id(option, 0, strict=True, allow_star_seq=True)
            if given is None:
                return INVALID_ID
            parsed.stream_id, parsed.seq_given = given
            parsed.id_given = True
            break
        else:
            return SYNTAX_ERROR
        position += 1
    parsed.position = position
    if parsed.limit and not parsed.trims:
        return Error("ERR syntax error, LIMIT cannot be used without specifying a trimming "
                     "strategy")
    if not xadd and not parsed.trims:
        return Error("ERR syntax error, XTRIM must be called with a trimming strategy")
    if limit_given:
        if not parsed.approx:
            return Error("ERR syntax error, LIMIT cannot be used without the special ~ option")
    elif parsed.approx:
        parsed.limit = 100 * NODE_ENTRIES
    return parsed


def _trim(stream: Stream, parsed: TrimArgs) -> int:
    return stream.trim(parsed.maxlen, parsed.minid, parsed.approx, parsed.limit)


# ---------------------------------------------------------------------------- commands


def _xadd(db: Keyspace, args: Args, now: int) -> Reply:
    # XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] threshold [LIMIT count]] *|id field value ...
    parsed = parse_add_or_trim(args, True)
    if isinstance(parsed, Error):
        return parsed
    fields = len(args) - parsed.position - 1
    if fields < 2 or fields % 2:
        return arity_error("xadd")
    if parsed.id_given and parsed.seq_given and parsed.stream_id == 0:
        return Error("ERR The ID specified in XADD must be greater than 0-0")
    key = args[0]
    stream = stream_for_write(db, key, now)
    if isinstance(stream, Error):
        return stream
    if stream is None:
        if parsed.no_mkstream:
            return None
        stream = Stream()
        db.store(key, stream)
    last = stream.last_id
    if last == MAX_ID:
        return Error("ERR The stream has exhausted the last possible ID, unable to add more "
                     "items")
    if not parsed.id_given:
        new_id = stream.next_auto_id(now)
    elif parsed.seq_given:
        new_id = parsed.stream_id
    elif parsed.stream_id >> 64 == last >> 64:
        if last & SEQ_MASK == SEQ_MASK:
            return _TOO_SMALL
        new_id = last + 1
    else:
        new_id = parsed.stream_id
    if new_id <= last:
        return _TOO_SMALL
    stream.append(new_id, args[parsed.position + 1:])
    if parsed.trims:
        _trim(stream, parsed)
    return format_id(new_id)


def _xlen(db: Keyspace, args: Args, now: int) -> Reply:
    stream = stream_for_read(db, args[0], now)
    if isinstance(stream, Error):
        return stream
    return 0 if stream is None else len(stream)


def _range(db: Keyspace, args: Args, now: int, reverse: bool) -> Reply:
    # XRANGE key start end [COUNT n]; XREVRANGE key end start [COUNT n]
    start_arg, end_arg = (args[2], args[1]) if reverse else (args[1], args[2])
    start = parse_interval(start_arg, 0, True)
    if isinstance(start, Error):
        return start
    end = parse_interval(end_arg, SEQ_MASK, False)
    if isinstance(end, Error):
        return end
    count = -1
    position = 3
    while position < len(args):
        if args[position].upper() == b"COUNT" and position + 1 < len(args):
            parsed = parse_int(args[position + 1])
            if parsed is None:
                return NOT_INTEGER
            count = max(parsed, 0)
            position += 2
        else:
            return SYNTAX_ERROR
    if count == 0:
        return None  # Redis answers COUNT 0 with a null array
    stream = stream_for_read(db, args[0], now)
    if isinstance(stream, Error):
        return stream
    if stream is None:
        return []
    return [entry_reply(stream_id, fields)
            for stream_id, fields in stream.range(start, end, reverse, max(count, 0))]


def _xrange(db: Keyspace, args: Args, now: int) -> Reply:
    return _range(db, args, now, False)


def _xrevrange(db: Keyspace, args: Args, now: int) -> Reply:
    return _range(db, args, now, True)


def _xdel(db: Keyspace, args: Args, now: int) -> Reply:
    stream = stream_for_write(db, args[0], now)
    if isinstance(stream, Error):
        return stream
    if stream is None:
        return 0
    ids: list[int] = []
    for raw in args[1:]:
        parsed = parse_strict(raw)
        if parsed is None:
            return INVALID_ID
        ids.append(parsed)
    return sum(1 for stream_id in ids if stream.delete(stream_id))


def _xtrim(db: Keyspace, args: Args, now: int) -> Reply:
    stream = stream_for_write(db, args[0], now)
    if isinstance(stream, Error):
        return stream
    if stream is None:
        return 0
    parsed = parse_add_or_trim(args, False)
    if isinstance(parsed, Error):
        return parsed
    return _trim(stream, parsed)


def _xsetid(db: Keyspace, args: Args, now: int) -> Reply:
    # XSETID key last-id [ENTRIESADDED entries-added] [MAXDELETEDID max-deleted-id]
    new_last = parse_strict(args[1])
    if new_last is None:
        return INVALID_ID
    entries_added = -1
    max_deleted = 0
    position = 2
    while position < len(args):
        more = len(args) - 1 - position
        option = args[position].upper()
        if option == b"ENTRIESADDED" and more:
            parsed = parse_int(args[position + 1])
            if parsed is None:
                return NOT_INTEGER
            if parsed < 0:
                return Error("ERR entries_added must be positive")
            entries_added = parsed
        elif option == b"MAXDELETEDID" and more:
            deleted = parse_strict(args[position + 1])
            if deleted is None:
                return INVALID_ID
            if new_last < deleted:
                return Error("ERR The ID specified in XSETID is smaller than the provided "
                             "max_deleted_entry_id")
            max_deleted = deleted
        else:
            return SYNTAX_ERROR
        position += 2
    stream = stream_for_write(db, args[0], now)
    if isinstance(stream, Error):
        return stream
    if stream is None:
        return NO_SUCH_KEY
    if len(stream):
        if new_last < stream.last_entry_id():
            return Error("ERR The ID specified in XSETID is smaller than the target stream top "
                         "item")
        if entries_added != -1 and len(stream) > entries_added:
            return Error("ERR The entries_added specified in XSETID is smaller than the target "
                         "stream length")
    stream.last_id = new_last
    if entries_added != -1:
        stream.entries_added = entries_added
    if max_deleted:
        stream.max_deleted_id = max_deleted
    return OK


# ---------------------------------------------------------------------------- XREAD


@dataclass(slots=True)
class ReadArgs:
    """XREAD / XREADGROUP options."""

    count: int = 0
    block_ms: int | None = None
    group: bytes | None = None
    consumer: bytes = b""
    noack: bool = False
    keys: tuple[bytes, ...] = ()
    ids: tuple[bytes, ...] = ()


def parse_read(args: Args, group_mode: bool, now: int) -> ReadArgs | Error:
    """Redis's xreadCommand option parsing (`args` excludes the name)."""
    parsed = ReadArgs()
    streams_at = -1
    position = 0
    count = len(args)
    while position < count:
        more = count - position - 1
        option = args[position].upper()
        if option == b"BLOCK" and more:
            position += 1
            timeout = parse_int(args[position])
            if timeout is None:
                return Error("ERR timeout is not an integer or out of range")
            if timeout < 0:
                return Error("ERR timeout is negative")
            if timeout > 0 and timeout > INT64_MAX - now:
                return Error("ERR timeout is out of range")
            parsed.block_ms = timeout
        elif option == b"COUNT" and more:
            position += 1
            value = parse_int(args[position])
            if value is None:
                return NOT_INTEGER
            parsed.count = max(value, 0)
        elif option == b"STREAMS" and more:
            streams_at = position + 1
            if (count - streams_at) % 2:
                # redis-server 7.0.15's text, for XREADGROUP too
                return Error("ERR Unbalanced XREAD list of streams: for each stream key an ID "
                             "or '$' must be specified.")
            break
        elif option == b"GROUP" and more >= 2:
            if not group_mode:
                return Error("ERR The GROUP option is only supported by XREADGROUP. You "
                             "called XREAD instead.")
            parsed.group = args[position + 1]
            parsed.consumer = args[position + 2]
            position += 2
        elif option == b"NOACK":
            if not group_mode:
                return Error("ERR The NOACK option is only supported by XREADGROUP. You "
                             "called XREAD instead.")
            parsed.noack = True
        else:
            return SYNTAX_ERROR
        position += 1
    if streams_at < 0:
        return SYNTAX_ERROR
    if group_mode and parsed.group is None:
        return Error("ERR Missing GROUP option for XREADGROUP")
    half = (count - streams_at) // 2
    parsed.keys = tuple(args[streams_at:streams_at + half])
    parsed.ids = tuple(args[streams_at + half:])
    return parsed


def stream_keys(args: Args) -> list[bytes]:
    """The keys of XREAD / XREADGROUP (`args` excludes the name): the first half of what
    follows STREAMS (Redis's key spec: keyword STREAMS, then keys up to the middle)."""
    for position, arg in enumerate(args):
        if arg.upper() == b"STREAMS":
            rest = args[position + 1:]
            return list(rest[:len(rest) // 2])
    return []


def _xread(db: Keyspace, args: Args, now: int) -> Reply:
    parsed = parse_read(args, False, now)
    if isinstance(parsed, Error):
        return parsed
    # Resolve every id first (Redis checks every key's type and id before serving any).
    starts: list[tuple[bytes, Stream, int, int]] = []
    for key, raw in zip(parsed.keys, parsed.ids, strict=True):
        stream = stream_for_read(db, key, now)
        if isinstance(stream, Error):
            return stream
        limit = parsed.count
        if raw == b"$":
            after = stream.last_id if stream is not None else 0
        elif raw == b">":
            return Error("ERR The > ID can be specified only when calling XREADGROUP using "
                         "the GROUP <group> <consumer> option.")
        elif raw == b"+":
            # Redis 7.4: the last entry of the stream
            if stream is not None and len(stream):
                after, limit = stream.last_entry_id() - 1, 1
            else:
                after = stream.last_id if stream is not None else 0
        else:
            given = parse_strict(raw)
            if given is None:
                return INVALID_ID
            after = given
        if stream is not None:
            starts.append((key, stream, after, limit))
    served: list[Reply] = []
    for key, stream, after, limit in starts:
        if len(stream) and stream.last_entry_id() > after:
            entries = [entry_reply(stream_id, fields)
                       for stream_id, fields in stream.range(after + 1, MAX_ID, False, limit)]
            served.append([key, entries])
    return served or None


_WRITE_FAST = ("@write", "@stream", "@fast")

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("xadd", -5, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE_FAST, _xadd),
    CommandSpec("xlen", 2, ("readonly", "fast"), 1, 1, 1, ("@read", "@stream", "@fast"),
                _xlen),
    CommandSpec("xrange", -4, ("readonly",), 1, 1, 1, ("@read", "@stream", "@slow"), _xrange),
    CommandSpec("xrevrange", -4, ("readonly",), 1, 1, 1, ("@read", "@stream", "@slow"),
                _xrevrange),
    CommandSpec("xdel", -3, ("write", "fast"), 1, 1, 1, _WRITE_FAST, _xdel),
    CommandSpec("xtrim", -4, ("write",), 1, 1, 1, ("@write", "@stream", "@slow"), _xtrim),
    CommandSpec("xread", -4, ("readonly", "blocking", "movablekeys"), 0, 0, 0,
                ("@read", "@stream", "@slow", "@blocking"), _xread, stream_keys),
    CommandSpec("xsetid", -3, ("write", "denyoom", "fast"), 1, 1, 1, _WRITE_FAST, _xsetid),
)
"""This family's rows of the command table."""
