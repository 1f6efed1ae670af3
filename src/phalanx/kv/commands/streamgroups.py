"""The consumer-group stream commands: XGROUP (CREATE, SETID, CREATECONSUMER, DELCONSUMER,
DESTROY, HELP), XREADGROUP, XACK, XPENDING, XCLAIM, XAUTOCLAIM, and the internal
PHALANX.XPEEKGROUP (would XREADGROUP `>` deliver something? the front end asks the local
replica before proposing a blocked consumer's read). XINFO lives in `streaminfo.py`.

Semantics and error texts are Redis 7.0's (t_stream.c; https://redis.io/commands/xgroup-create/,
/xreadgroup/, /xack/, /xpending/, /xclaim/, /xautoclaim/), checked against redis-server
7.0.15 by tests/kv/test_streams_differential.py.

Rules of this module:
- Every delivery time, seen time and idle time is on the REPLICATED clock `now` (the state
  machine's apply-time clock), so XPENDING's idle times, XCLAIM / XAUTOCLAIM's min-idle test
  and delivery counts are the same on every replica and after a failover.
- XREADGROUP is a write (it moves the group's last id and fills the PEL): it goes through the
  log, also when the front end serves a blocked consumer. Here it never blocks.
- Pure and deterministic; only `Keyspace` helpers change the keyspace.
"""

from __future__ import annotations

from itertools import islice

from phalanx.kv.commands.common import parse_long_in
from phalanx.kv.commands.streams import (
    INVALID_ID,
    ReadArgs,
    entry_reply,
    parse_interval,
    parse_read,
    parse_strict,
    stream_for_read,
    stream_for_write,
    stream_keys,
)
from phalanx.kv.keyspace import Keyspace
from phalanx.kv.numbers import parse_int
from phalanx.kv.replies import NOT_INTEGER, OK, Error, Reply, error_text
from phalanx.kv.spec import Args, CommandSpec
from phalanx.kv.stream import (
    INVALID_ENTRIES_READ,
    MAX_ID,
    SEQ_MASK,
    Consumer,
    Group,
    Nack,
    Stream,
    format_id,
    parse_id,
)

_XGROUP_HELP = (
    "XGROUP <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CREATE <key> <groupname> <id|$> [option]",
    "    Create a new consumer group. Options are:",
    "    * MKSTREAM",
    "      Create the empty stream if it does not exist.",
    "    * ENTRIESREAD entries_read",
    "      Set the group's entries_read counter (internal use).",
    "CREATECONSUMER <key> <groupname> <consumer>",
    "    Create a new consumer in the specified group.",
    "DELCONSUMER <key> <groupname> <consumer>",
    "    Remove the specified consumer.",
    "DESTROY <key> <groupname>",
    "    Remove the specified group.",
    "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
    "    Set the current group ID and entries_read counter.",
    "HELP",
    "    Prints this help.",
)

_XGROUP_ARITY = {b"CREATE": -5, b"SETID": -5, b"CREATECONSUMER": 5, b"DELCONSUMER": 5,
                 b"DESTROY": 4, b"HELP": 2}


def _text(data: bytes) -> str:
    return error_text(data)


def subcommand_syntax_error(sub: bytes, command: str) -> Error:
    """Redis's addReplySubcommandSyntaxError."""
    return Error(f"ERR unknown subcommand or wrong number of arguments for "
                 f"'{_text(sub[:128])}'. Try {command} HELP.")


def subcommand_check(args: Args, arities: dict[bytes, int], command: str) -> Error | None:
    """Redis 7.0's container-command checks: an unknown subcommand, a wrong arity."""
    sub = args[0].upper()
    arity = arities.get(sub)
    if arity is None:
        return Error(f"ERR unknown subcommand '{_text(args[0][:128])}'. Try {command} HELP.")
    words = len(args) + 1
    if (arity > 0 and words != arity) or words < -arity:
        return Error(f"ERR wrong number of arguments for '{command.lower()}|"
                     f"{sub.decode().lower()}' command")
    return None


def _no_group(key: bytes, group: bytes) -> Error:
    return Error(f"NOGROUP No such key '{_text(key)}' or consumer group '{_text(group)}'")


def _parse_entries_read(raw: bytes) -> int | Error:
    value = parse_int(raw)
    if value is None:
        return NOT_INTEGER
    if value < 0 and value != INVALID_ENTRIES_READ:
        return Error("ERR value for ENTRIESREAD must be positive or -1")
    return value


def _xgroup(db: Keyspace, args: Args, now: int) -> Reply:
    refused = subcommand_check(args, _XGROUP_ARITY, "XGROUP")
    if refused is not None:
        return refused
    sub = args[0].upper()
    if sub == b"HELP":
        return list(_XGROUP_HELP)
    mkstream = False
    entries_read = INVALID_ENTRIES_READ
    if sub in (b"CREATE", b"SETID"):
        position = 4
        while position < len(args):
            option = args[position].upper()
            if sub == b"CREATE" and option == b"MKSTREAM":
                mkstream = True
                position += 1
            elif option == b"ENTRIESREAD" and position + 1 < len(args):
                parsed = _parse_entries_read(args[position + 1])
                if isinstance(parsed, Error):
                    return parsed
                entries_read = parsed
                position += 2
            else:
                return subcommand_syntax_error(args[0], "XGROUP")
    key, name = args[1], args[2]
    stream = stream_for_write(db, key, now)
    if isinstance(stream, Error):
        return stream
    if stream is None and not mkstream:
        return Error("ERR The XGROUP subcommand requires the key to exist. Note that for "
                     "CREATE you may want to use the MKSTREAM option to create an empty "
                     "stream automatically.")
    group = stream.groups.get(name) if stream is not None else None
    if group is None and sub in (b"SETID", b"CREATECONSUMER", b"DELCONSUMER"):
        return Error(f"NOGROUP No such consumer group '{_text(name)}' for key name "
                     f"'{_text(key)}'")
    if sub == b"CREATE":
        if len(args) > 7:
            return subcommand_syntax_error(args[0], "XGROUP")
        if args[3] == b"$":
            start = stream.last_id if stream is not None else 0
        else:
            parsed_id = parse_strict(args[3])
            if parsed_id is None:
                return INVALID_ID
            start = parsed_id
        if stream is None:
            stream = Stream()
            db.store(key, stream)
        if name in stream.groups:
            return Error("BUSYGROUP Consumer Group name already exists")
        stream.groups[name] = Group(start, entries_read)
        return OK
    if sub == b"SETID":
        if len(args) not in (4, 6):
            return subcommand_syntax_error(args[0], "XGROUP")
        assert stream is not None and group is not None
        if args[3] == b"$":
            start = stream.last_id
        else:
            given = parse_id(args[3], 0)  # streamParseIDOrReply: `-` and `+` allowed
            if given is None:
                return INVALID_ID
            start = given[0]
        group.last_id = start
        group.entries_read = entries_read
        return OK
    if sub == b"CREATECONSUMER":
        assert group is not None
        if args[3] in group.consumers:
            return 0
        group.consumer(args[3], now)
        return 1
    if sub == b"DELCONSUMER":
        assert group is not None
        consumer = group.consumers.pop(args[3], None)
        if consumer is None:
            return 0
        for stream_id in consumer.pel:
            group.pel.pop(stream_id, None)
        return len(consumer.pel)
    # DESTROY
    if stream is None or stream.groups.pop(name, None) is None:
        return 0
    return 1


# ---------------------------------------------------------------------------- XREADGROUP


def _resolve_group_read(db: Keyspace, args: Args, now: int
                        ) -> tuple[ReadArgs, list[tuple[bytes, Stream, Group, int | None]]] | Error:
    parsed = parse_read(args, True, now)
    if isinstance(parsed, Error):
        return parsed
    group_name = parsed.group
    assert group_name is not None
    resolved: list[tuple[bytes, Stream, Group, int | None]] = []
    for key, raw in zip(parsed.keys, parsed.ids, strict=True):
        stream = stream_for_read(db, key, now)
        if isinstance(stream, Error):
            return stream
        group = stream.groups.get(group_name) if stream is not None else None
        if stream is None or group is None:
            return Error(f"NOGROUP No such key '{_text(key)}' or consumer group "
                         f"'{_text(group_name)}' in XREADGROUP with GROUP option")
        if raw == b"$":
            return Error("ERR The $ ID is meaningless in the context of XREADGROUP: you want "
                         "to read the history of this consumer by specifying a proper ID, or "
                         "use the > ID to get new messages. The $ ID would just return an "
                         "empty result set.")
        if raw == b">":
            after: int | None = None
        else:
            given = parse_strict(raw)
            if given is None:
                return INVALID_ID
            after = given
        resolved.append((key, stream, group, after))
    return parsed, resolved


def _xreadgroup(db: Keyspace, args: Args, now: int) -> Reply:
    # XREADGROUP GROUP g c [COUNT n] [BLOCK ms] [NOACK] STREAMS key... id...
    resolved = _resolve_group_read(db, args, now)
    if isinstance(resolved, Error):
        return resolved
    parsed, streams = resolved
    count, consumer_name, noack = parsed.count, parsed.consumer, parsed.noack
    served: list[Reply] = []
    for key, stream, group, after in streams:
        if after is None and not (len(stream) and stream.last_entry_id() > group.last_id):
            continue
        db.live_for_write(key, now)  # the key changes (WATCH)
        consumer = group.consumer(consumer_name, now)
        if after is not None:
            # History: this consumer's own pending entries after `after`.
            entries: list[Reply] = []
            if after < MAX_ID:
                ids = consumer.pel.irange(after + 1)
                for stream_id in list(islice(ids, count) if count else ids):
                    fields = stream.entries.get(stream_id)
                    if fields is None:
                        entries.append([format_id(stream_id), None])
                        continue
                    nack = group.pel[stream_id]
                    nack.delivery_time = now
                    nack.delivery_count += 1
                    entries.append(entry_reply(stream_id, fields))
            served.append([key, entries])
            continue
        entries = []
        for stream_id, fields in list(stream.range(group.last_id + 1, MAX_ID, False, count)):
            if group.entries_read != INVALID_ENTRIES_READ and not stream.has_tombstones(
                    stream_id):
                group.entries_read += 1
            elif stream.entries_added:
                group.entries_read = stream.estimate_distance(stream_id)
            group.last_id = stream_id
            if not noack:
                group.add_pending(stream_id, consumer_name, consumer, now)
            entries.append(entry_reply(stream_id, fields))
        served.append([key, entries])
    return served or None


def _peek_group(db: Keyspace, args: Args, now: int) -> Reply:
    """PHALANX.XPEEKGROUP <XREADGROUP's arguments>: 1 when XREADGROUP would deliver or fail
    now (the blocked consumer should propose it), 0 when it would find nothing new."""
    resolved = _resolve_group_read(db, args, now)
    if isinstance(resolved, Error):
        return 1
    for _key, stream, group, after in resolved[1]:
        if after is not None or (len(stream) and stream.last_entry_id() > group.last_id):
            return 1
    return 0


# ---------------------------------------------------------------------------- XACK, XPENDING


def _group_of(db: Keyspace, key: bytes, name: bytes, now: int, write: bool
              ) -> tuple[Stream, Group] | Error | None:
    stream = (stream_for_write if write else stream_for_read)(db, key, now)
    if isinstance(stream, Error):
        return stream
    if stream is None:
        return None
    group = stream.groups.get(name)
    return None if group is None else (stream, group)


def _xack(db: Keyspace, args: Args, now: int) -> Reply:
    found = _group_of(db, args[0], args[1], now, True)
    if isinstance(found, Error):
        return found
    if found is None:
        return 0
    ids: list[int] = []
    for raw in args[2:]:
        parsed = parse_strict(raw)
        if parsed is None:
            return INVALID_ID
        ids.append(parsed)
    group = found[1]
    return sum(1 for stream_id in ids if group.remove_pending(stream_id))


def _xpending(db: Keyspace, args: Args, now: int) -> Reply:
    # XPENDING key group [[IDLE min-idle-time] start end count [consumer]]
    words = len(args) + 1
    if words != 3 and not 6 <= words <= 9:
        return Error("ERR syntax error")
    min_idle = 0
    start = end = count = 0
    consumer_name: bytes | None = None
    if words >= 6:
        first = 2
        if args[2].upper() == b"IDLE":
            parsed = parse_int(args[3])
            if parsed is None:
                return NOT_INTEGER
            min_idle = parsed
            if words < 8:
                return Error("ERR syntax error")
            first += 2
        if first + 2 >= len(args):
            return Error("ERR syntax error")
        parsed_count = parse_int(args[first + 2])
        if parsed_count is None:
            return NOT_INTEGER
        count = max(parsed_count, 0)
        parsed_start = parse_interval(args[first], 0, True)
        if isinstance(parsed_start, Error):
            return parsed_start
        parsed_end = parse_interval(args[first + 1], SEQ_MASK, False)
        if isinstance(parsed_end, Error):
            return parsed_end
        start, end = parsed_start, parsed_end
        if first + 3 < len(args):
            consumer_name = args[first + 3]
    found = _group_of(db, args[0], args[1], now, False)
    if isinstance(found, Error):
        return found
    if found is None:
        return _no_group(args[0], args[1])
    group = found[1]
    if words == 3:
        if not group.pel:
            return [0, None, None, None]
        owners: list[Reply] = [[name, b"%d" % len(consumer.pel)]
                  for name, consumer in sorted(group.consumers.items()) if consumer.pel]
        keys = group.pel.keys()
        return [len(group.pel), format_id(keys[0]), format_id(keys[-1]), owners]
    ids = group.pel.irange(start, end)
    if consumer_name is not None:
        consumer = group.consumers.get(consumer_name)
        if consumer is None:
            return []
        ids = consumer.pel.irange(start, end)
    rows: list[Reply] = []
    for stream_id in ids:
        if not count:
            break
        nack = group.pel[stream_id]
        idle = now - nack.delivery_time
        if min_idle and idle < min_idle:
            continue
        count -= 1
        rows.append([format_id(stream_id), nack.consumer, max(idle, 0), nack.delivery_count])
    return rows


# ---------------------------------------------------------------------------- XCLAIM, XAUTOCLAIM


def _claim_one(stream: Stream, group: Group, stream_id: int, consumer_name: bytes,
               now: int, delivery_time: int, retry_count: int, justid: bool,
               consumer_box: list[Consumer]) -> Reply:
    """Move the pending entry `stream_id` to the consumer (created on first use); its reply."""
    nack = group.pel[stream_id]
    if not consumer_box:
        consumer_box.append(group.consumer(consumer_name, now))
    consumer = consumer_box[0]
    if nack.consumer != consumer_name:
        previous = group.consumers.get(nack.consumer)
        if previous is not None:
            previous.pel.discard(stream_id)
        nack.consumer = consumer_name
    if stream_id not in consumer.pel:
        consumer.pel.add(stream_id)
    nack.delivery_time = delivery_time
    if retry_count >= 0:
        nack.delivery_count = retry_count
    elif not justid:
        nack.delivery_count += 1
    if justid:
        return format_id(stream_id)
    return entry_reply(stream_id, stream.entries[stream_id])


def _xclaim(db: Keyspace, args: Args, now: int) -> Reply:
    # XCLAIM key group consumer min-idle-time id... [IDLE ms] [TIME ms] [RETRYCOUNT n] [FORCE]
    #        [JUSTID] [LASTID id]
    found = _group_of(db, args[0], args[1], now, True)
    if isinstance(found, Error):
        return found
    if found is None:
        return _no_group(args[0], args[1])
    stream, group = found
    min_idle = parse_int(args[3])
    if min_idle is None:
        return Error("ERR Invalid min-idle-time argument for XCLAIM")
    min_idle = max(min_idle, 0)
    ids: list[int] = []
    position = 4
    while position < len(args):
        parsed = parse_strict(args[position])
        if parsed is None:
            break
        ids.append(parsed)
        position += 1
    delivery_time = -1
    retry_count = -1
    force = justid = False
    last_id = 0
    while position < len(args):
        more = len(args) - 1 - position
        option = args[position].upper()
        if option == b"FORCE":
            force = True
        elif option == b"JUSTID":
            justid = True
        elif option in (b"IDLE", b"TIME", b"RETRYCOUNT") and more:
            position += 1
            value = parse_int(args[position])
            if value is None:
                return Error(f"ERR Invalid {option.decode()} option argument for XCLAIM")
            if option == b"IDLE":
                delivery_time = now - value
            elif option == b"TIME":
                delivery_time = value
            else:
                retry_count = value
        elif option == b"LASTID" and more:
            position += 1
            parsed = parse_strict(args[position])
            if parsed is None:
                return INVALID_ID
            last_id = parsed
        else:
            return Error(f"ERR Unrecognized XCLAIM option '{_text(args[position])}'")
        position += 1
    if last_id > group.last_id:
        group.last_id = last_id
    if delivery_time == -1 or delivery_time < 0 or delivery_time > now:
        delivery_time = now
    claimed: list[Reply] = []
    consumer_box: list[Consumer] = []
    consumer_name = args[2]
    for stream_id in ids:
        nack = group.pel.get(stream_id)
        if stream_id not in stream.entries:
            # The entry was deleted: its pending entry goes too (Redis 7.0).
            if nack is not None:
                group.remove_pending(stream_id)
            continue
        if nack is None:
            if not force:
                continue
            # FORCE: a pending entry created from scratch (streamCreateNACK: delivered once,
            # now), min-idle ignored
            group.pel[stream_id] = Nack(consumer_name, now, 1)
        elif min_idle and now - nack.delivery_time < min_idle:
            continue
        claimed.append(_claim_one(stream, group, stream_id, consumer_name, now,
                                  delivery_time, retry_count, justid, consumer_box))
    return claimed


def _xautoclaim(db: Keyspace, args: Args, now: int) -> Reply:
    # XAUTOCLAIM key group consumer min-idle-time start [COUNT count] [JUSTID]
    min_idle = parse_int(args[3])
    if min_idle is None:
        return Error("ERR Invalid min-idle-time argument for XAUTOCLAIM")
    min_idle = max(min_idle, 0)
    start = parse_interval(args[4], 0, True)
    if isinstance(start, Error):
        return start
    count = 100
    justid = False
    position = 5
    while position < len(args):
        more = len(args) - 1 - position
        option = args[position].upper()
        if option == b"COUNT" and more:
            parsed = parse_long_in(args[position + 1], 1, (2**63 - 1) // 16,
                                   "COUNT must be > 0")
            if isinstance(parsed, Error):
                return parsed
            count = parsed
            position += 1
        elif option == b"JUSTID":
            justid = True
        else:
            return Error("ERR syntax error")
        position += 1
    found = _group_of(db, args[0], args[1], now, True)
    if isinstance(found, Error):
        return found
    if found is None:
        return _no_group(args[0], args[1])
    stream, group = found
    attempts = count * 10
    candidates = list(islice(group.pel.irange(start), attempts + 1))
    claimed: list[Reply] = []
    deleted: list[Reply] = []
    consumer_box: list[Consumer] = []
    consumer_name = args[2]
    next_at = 0
    index = 0
    while index < len(candidates):
        stream_id = candidates[index]
        if not attempts or not count:
            next_at = stream_id  # the cursor: the first pending entry not looked at
            break
        index += 1
        attempts -= 1
        if stream_id not in stream.entries:
            group.remove_pending(stream_id)
            deleted.append(format_id(stream_id))
            count -= 1
            continue
        nack = group.pel[stream_id]
        if min_idle and now - nack.delivery_time < min_idle:
            continue
        claimed.append(_claim_one(stream, group, stream_id, consumer_name, now, now, -1,
                                  justid, consumer_box))
        count -= 1
    return [format_id(next_at), claimed, deleted]


_WRITE_FAST = ("@write", "@stream", "@fast")

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("xreadgroup", -7, ("write", "blocking", "movablekeys"), 0, 0, 0,
                ("@write", "@stream", "@slow", "@blocking"), _xreadgroup, stream_keys),
    # XGROUP is a container command in Redis 7 (empty flags, keys in its subcommands); here
    # one row, a write, its key at position 2 (XGROUP CREATE key ...) so routing finds it.
    CommandSpec("xgroup", -2, ("write",), 2, 2, 1, ("@slow",), _xgroup),
    CommandSpec("xack", -4, ("write", "fast"), 1, 1, 1, _WRITE_FAST, _xack),
    CommandSpec("xpending", -3, ("readonly",), 1, 1, 1, ("@read", "@stream", "@slow"),
                _xpending),
    CommandSpec("xclaim", -6, ("write", "fast"), 1, 1, 1, _WRITE_FAST, _xclaim),
    CommandSpec("xautoclaim", -6, ("write", "fast"), 1, 1, 1, _WRITE_FAST, _xautoclaim),
)
"""This family's rows of the command table."""

PEEK_GROUP_COMMAND = b"PHALANX.XPEEKGROUP"

INTERNAL_COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("phalanx.xpeekgroup", -7, ("readonly", "movablekeys"), 0, 0, 0,
                ("@read", "@stream", "@fast"), _peek_group, stream_keys),
)
"""Internal: may a blocked XREADGROUP `>` be served now (read on the local replica)?"""

