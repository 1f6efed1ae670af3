"""XINFO STREAM [FULL [COUNT n]] | GROUPS | CONSUMERS | HELP: what a stream holds.

Semantics and reply shapes are Redis 7.0's (t_stream.c xinfoCommand,
https://redis.io/commands/xinfo-stream/, /xinfo-groups/, /xinfo-consumers/): flat
field, value, ... arrays in RESP2; groups and consumers in byte order of their names.

Rules of this module:
- `radix-tree-keys` and `radix-tree-nodes` describe Redis's memory layout, which phalanx does
  not have: phalanx reports the number of `NODE_ENTRIES`-entry nodes its entries would fill
  (the same figure for both), a documented estimate, not Redis's exact count.
- Idle times are the replicated clock `now` minus the replicated seen time.
- Pure and deterministic.
"""

from __future__ import annotations

from phalanx.kv.commands.streamgroups import subcommand_check, subcommand_syntax_error
from phalanx.kv.commands.streams import NO_SUCH_KEY, entry_reply, stream_for_read
from phalanx.kv.keyspace import Keyspace
from phalanx.kv.numbers import parse_int
from phalanx.kv.replies import NOT_INTEGER, Error, Reply, error_text
from phalanx.kv.spec import Args, CommandSpec
from phalanx.kv.stream import INVALID_ENTRIES_READ, MAX_ID, NODE_ENTRIES, Stream, format_id

_XINFO_HELP = (
    "XINFO <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CONSUMERS <key> <groupname>",
    "    Show consumers of <groupname>.",
    "GROUPS <key>",
    "    Show the stream consumer groups.",
    "STREAM <key> [FULL [COUNT <count>]",
    "    Show information about the stream.",
    "HELP",
    "    Prints this help.",
)

_XINFO_ARITY = {b"CONSUMERS": 4, b"GROUPS": 3, b"STREAM": -3, b"HELP": 2}


def _nodes(stream: Stream) -> int:
    return -(-len(stream) // NODE_ENTRIES)


def _stream_info(stream: Stream, options: Args, sub: bytes) -> Reply:
    full = False
    count = 10
    if options:
        if len(options) not in (1, 3) or options[0].upper() != b"FULL":
            return subcommand_syntax_error(sub, "XINFO")
        full = True
        if len(options) == 3:
            if options[1].upper() != b"COUNT":
                return subcommand_syntax_error(sub, "XINFO")
            parsed = parse_int(options[2])
            if parsed is None:
                return NOT_INTEGER
            count = parsed if parsed >= 0 else 10
    nodes = _nodes(stream)
    reply: list[Reply] = [
        b"length", len(stream),
        b"radix-tree-keys", nodes,
        b"radix-tree-nodes", nodes,
        b"last-generated-id", format_id(stream.last_id),
        b"max-deleted-entry-id", format_id(stream.max_deleted_id),
        b"entries-added", stream.entries_added,
        b"recorded-first-entry-id", format_id(stream.first_id),
    ]
    if not full:
        first = next(iter(stream.range(0, MAX_ID, False, 1)), None)
        last = next(iter(stream.range(0, MAX_ID, True, 1)), None)
        reply += [
            b"groups", len(stream.groups),
            b"first-entry", None if first is None else entry_reply(*first),
            b"last-entry", None if last is None else entry_reply(*last),
        ]
        return reply
    reply += [b"entries", [entry_reply(stream_id, fields)
                           for stream_id, fields in stream.range(0, MAX_ID, False, count)]]
    groups: list[Reply] = []
    for name in sorted(stream.groups):
        group = stream.groups[name]
        pending: list[Reply] = []
        for stream_id, nack in group.pel.items():
            if count and len(pending) >= count:
                break
            pending.append([format_id(stream_id), nack.consumer, nack.delivery_time,
                            nack.delivery_count])
        consumers: list[Reply] = []
        for consumer_name in sorted(group.consumers):
            consumer = group.consumers[consumer_name]
            own: list[Reply] = []
            for stream_id in consumer.pel:
                if count and len(own) >= count:
                    break
                nack = group.pel[stream_id]
                own.append([format_id(stream_id), nack.delivery_time, nack.delivery_count])
            consumers.append([b"name", consumer_name, b"seen-time", consumer.seen_time,
                              b"pel-count", len(consumer.pel), b"pending", own])
        groups.append([
            b"name", name,
            b"last-delivered-id", format_id(group.last_id),
            b"entries-read", None if group.entries_read == INVALID_ENTRIES_READ
            else group.entries_read,
            b"lag", stream.lag(group),
            b"pel-count", len(group.pel),
            b"pending", pending,
            b"consumers", consumers,
        ])
    reply += [b"groups", groups]
    return reply


def _xinfo(db: Keyspace, args: Args, now: int) -> Reply:
    refused = subcommand_check(args, _XINFO_ARITY, "XINFO")
    if refused is not None:
        return refused
    sub = args[0].upper()
    if sub == b"HELP":
        return list(_XINFO_HELP)
    key = args[1]
    stream = stream_for_read(db, key, now)
    if isinstance(stream, Error):
        return stream
    if stream is None:
        return NO_SUCH_KEY
    if sub == b"CONSUMERS":
        group = stream.groups.get(args[2])
        if group is None:
            return Error(f"NOGROUP No such consumer group '{error_text(args[2])}' for key name "
                         f"'{error_text(key)}'")
        return [[b"name", name, b"pending", len(consumer.pel), b"idle",
                 max(now - consumer.seen_time, 0)]
                for name, consumer in sorted(group.consumers.items())]
    if sub == b"GROUPS":
        return [[b"name", name, b"consumers", len(group.consumers), b"pending", len(group.pel),
                 b"last-delivered-id", format_id(group.last_id),
                 b"entries-read", None if group.entries_read == INVALID_ENTRIES_READ
                 else group.entries_read,
                 b"lag", stream.lag(group)]
                for name, group in sorted(stream.groups.items())]
    return _stream_info(stream, args[2:], args[0])


COMMANDS: tuple[CommandSpec, ...] = (
    # XINFO is a container command in Redis 7 (empty flags, keys in its subcommands); here one
    # row, read-only, its key at position 2 (XINFO STREAM key) so routing finds it.
    CommandSpec("xinfo", -2, ("readonly",), 2, 2, 1, ("@slow",), _xinfo),
)
"""This family's rows of the command table."""
