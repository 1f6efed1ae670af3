"""Reply and error mapping: state-machine replies to RESP values, errors to error lines.

Rules of this file:
- Errors are mapped by type, never by text: `CommandError` is its own line, every `RetrySafe`
  error (certainly not applied) is `-TRYAGAIN ...`, `ClusterDown` is `-CLUSTERDOWN ...`,
  `OutcomeUnknown` is `-ERR phalanx: outcome unknown: ...` (do not blindly retry a write),
  anything else of phalanx's is `-ERR phalanx: ...`.
- The one place that reads an error's code from text is `wire_code`: a reply another node sent
  over a peer link arrives as text (that is the protocol), and its first word is its code.
- Pure mapping: no sockets, no node. See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from phalanx.errors import (
    ClusterDown,
    CommandError,
    Loading,
    OutcomeUnknown,
    PhalanxError,
    RetrySafe,
)
from phalanx.kv import Error as KVError
from phalanx.placement.shard import SlotMoved
from phalanx.resp import ErrorReply, OrderedSet, SimpleString, VerbatimString

#: The code of a retry-safe refusal (certainly not applied), ours or a peer's.
TRYAGAIN = "TRYAGAIN"


def _double(score: object) -> object:
    """A score bulk string (Redis's `%.17g` text) as a RESP3 double."""
    return float(score) if isinstance(score, bytes) else score


def _score_pairs(items: object) -> object:
    """A flat member, score, member, score... array as RESP3's [[member, double], ...]."""
    if not isinstance(items, list):
        return items
    return [[items[i], _double(items[i + 1])] for i in range(0, len(items) - 1, 2)]


_PAIRS_WITH_WITHSCORES = frozenset((
    b"ZRANGE", b"ZRANGEBYSCORE", b"ZREVRANGE", b"ZREVRANGEBYSCORE", b"ZUNION", b"ZINTER",
    b"ZDIFF", b"ZRANDMEMBER",
))


def resp3_reply(arguments: Sequence[bytes], reply: object) -> object:
    """The RESP3 shape of a reply (sorted sets, geo, sets, hashes, LCS, CONFIG, COMMAND, INFO), from its RESP2 shape (what the state machine and
    a forwarding peer link produce): scores and coordinates become doubles and WITHSCORES
    arrays become [member, double] pairs, as Redis 7 answers a RESP3 client. `arguments` is the whole
    request (name first); any other reply is returned unchanged.

    Must be applied only for a RESP3 connection (a RESP2 client gets the reply as it is)."""
    if not arguments or isinstance(reply, ErrorReply) or reply is None:
        return reply
    name = arguments[0].upper()
    if name in (b"ZSCORE", b"ZINCRBY") or (
            name == b"ZADD" and any(arg.upper() == b"INCR" for arg in arguments[2:])):
        return _double(reply)
    if name == b"ZMSCORE" and isinstance(reply, list):
        return [_double(score) for score in reply]
    if name in _PAIRS_WITH_WITHSCORES:
        if any(arg.upper() == b"WITHSCORES" for arg in arguments[2:]):
            return _score_pairs(reply)
        return reply
    if name in (b"ZPOPMIN", b"ZPOPMAX") and isinstance(reply, list):
        if len(arguments) > 2:
            return _score_pairs(reply)
        return [reply[0], _double(reply[1])] if len(reply) == 2 else reply
    if name in (b"ZMPOP", b"BZMPOP") and isinstance(reply, list) and len(reply) == 2 and isinstance(
            reply[1], list):
        return [reply[0], [[pair[0], _double(pair[1])] for pair in reply[1]
                           if isinstance(pair, list) and len(pair) == 2]]
    shape = _SHAPES.get(name)
    if shape is not None:
        return shape(arguments, reply)
    if name == b"GEOPOS" and isinstance(reply, list):
        return [_coordinates(position) for position in reply]
    if name in _GEO_SEARCHES and isinstance(reply, list) and any(
            arg.upper() == b"WITHCOORD" for arg in arguments[2:]):
        return [[*item[:-1], _coordinates(item[-1])] if isinstance(item, list) and item
                else item for item in reply]
    return reply


def _coordinates(position: object) -> object:
    """A [longitude, latitude] pair of bulk strings as RESP3 doubles (as Redis 7 sends)."""
    if isinstance(position, list):
        return [_double(value) for value in position]
    return position


_GEO_SEARCHES = frozenset((b"GEOSEARCH", b"GEORADIUS", b"GEORADIUS_RO", b"GEORADIUSBYMEMBER",
                           b"GEORADIUSBYMEMBER_RO"))


def _pairs_to_map(items: object) -> object:
    """A flat key, value, key, value... array as a RESP3 map (HGETALL, CONFIG GET, LCS IDX)."""
    if not isinstance(items, list):
        return items
    return {items[i]: items[i + 1] for i in range(0, len(items) - 1, 2)}


def _to_set(items: object) -> object:
    """An array of distinct members as a RESP3 set (SMEMBERS, SINTER, SPOP with a count)."""
    return set(items) if isinstance(items, list) else items


def _option(arguments: Sequence[bytes], option: bytes, start: int = 2) -> bool:
    return any(arg.upper() == option for arg in arguments[start:])


def _command_entry(entry: object) -> object:
    """One COMMAND / COMMAND INFO entry: Redis 7.0 sends flags, ACL categories, tips, key specs
    and subcommands as RESP3 sets."""
    if not isinstance(entry, list) or len(entry) < 10:
        return entry
    shaped = list(entry)
    for index in (2, 6, 7, 8, 9):
        if isinstance(shaped[index], list) and all(
                isinstance(item, (bytes, SimpleString)) for item in shaped[index]):
            shaped[index] = set(shaped[index])
    return shaped


def _command_reply(arguments: Sequence[bytes], reply: object) -> object:
    sub = arguments[1].upper() if len(arguments) > 1 else b""
    if not isinstance(reply, list):
        return reply
    if sub in (b"", b"INFO"):
        return [_command_entry(entry) for entry in reply]
    if sub == b"GETKEYSANDFLAGS":
        # Redis sends each key's flags as a set in its own order (RW access delete).
        return [[item[0], OrderedSet(tuple(item[1]))] if isinstance(item, list)
                and len(item) == 2 and isinstance(item[1], list) else item for item in reply]
    return reply


def _text(reply: object) -> object:
    """INFO, CLIENT INFO, CLIENT LIST: RESP3 verbatim text (`=...txt:`), as Redis 7 sends."""
    return VerbatimString(reply) if isinstance(reply, bytes) else reply


def _client_reply(arguments: Sequence[bytes], reply: object) -> object:
    if len(arguments) == 2 and arguments[1].upper() in (b"INFO", b"LIST"):
        return _text(reply)
    if len(arguments) > 2 and arguments[1].upper() == b"LIST":
        return _text(reply)
    return reply


def _streams_map(reply: object) -> object:
    """XREAD / XREADGROUP: [[key, entries], ...] as RESP3's {key: entries} (entries stay
    arrays of [id, [field, value, ...]]), as redis-server 7.0 answers under HELLO 3
    (https://redis.io/docs/latest/commands/xread/, "Return": a map in RESP3)."""
    if isinstance(reply, list) and all(isinstance(item, list) and len(item) == 2
                                       for item in reply):
        return {item[0]: item[1] for item in reply}
    return reply


def _field(mapping: dict[object, object], name: bytes) -> object:
    """The key of `mapping` spelled `name` (a bulk or a simple string), or None."""
    return next((key for key in mapping
                 if (key.text.encode() if isinstance(key, SimpleString) else key) == name),
                None)


def _xinfo_reply(arguments: Sequence[bytes], reply: object) -> object:
    """XINFO GROUPS / CONSUMERS: an array of maps; XINFO STREAM: a map, with FULL its `groups`
    a list of maps whose `consumers` are maps too (the PEL arrays stay arrays)."""
    sub = arguments[1].upper() if len(arguments) > 1 else b""
    if not isinstance(reply, list):
        return reply
    if sub in (b"GROUPS", b"CONSUMERS"):
        return [_pairs_to_map(item) for item in reply]
    if sub != b"STREAM":
        return reply
    shaped = _pairs_to_map(reply)
    if isinstance(shaped, dict) and _option(arguments, b"FULL", 3):
        groups_key = _field(shaped, b"groups")
        groups = shaped.get(groups_key) if groups_key is not None else None
        if isinstance(groups, list):
            maps = []
            for group in groups:
                group_map = _pairs_to_map(group)
                if isinstance(group_map, dict):
                    consumers_key = _field(group_map, b"consumers")
                    consumers = group_map.get(consumers_key) if consumers_key is not None \
                        else None
                    if isinstance(consumers, list):
                        group_map[consumers_key] = [_pairs_to_map(c) for c in consumers]
                maps.append(group_map)
            shaped[groups_key] = maps
    return shaped


#: Command name -> its RESP3 shaping (arguments, RESP2 reply) -> RESP3 reply. Checked against
#: redis-server 7.0 under HELLO 3 (tests/server/test_resp3.py).
_SHAPES: dict[bytes, Callable[[Sequence[bytes], object], object]] = {
    b"HGETALL": lambda arguments, reply: _pairs_to_map(reply),
    b"CONFIG": lambda arguments, reply: _pairs_to_map(reply) if len(arguments) > 1 and
    arguments[1].upper() == b"GET" else reply,
    b"SMEMBERS": lambda arguments, reply: _to_set(reply),
    b"SINTER": lambda arguments, reply: _to_set(reply),
    b"SUNION": lambda arguments, reply: _to_set(reply),
    b"SDIFF": lambda arguments, reply: _to_set(reply),
    # SPOP key count answers a set; SRANDMEMBER key count stays an array (may repeat).
    b"SPOP": lambda arguments, reply: _to_set(reply) if len(arguments) > 2 else reply,
    # HRANDFIELD key count WITHVALUES: [[field, value], ...].
    b"HRANDFIELD": lambda arguments, reply: [
        [reply[i], reply[i + 1]] for i in range(0, len(reply) - 1, 2)]
    if isinstance(reply, list) and _option(arguments, b"WITHVALUES", 3) else reply,
    # LCS a b IDX: {matches: [...], len: n}.
    b"LCS": lambda arguments, reply: _pairs_to_map(reply)
    if _option(arguments, b"IDX", 3) else reply,
    b"COMMAND": _command_reply,
    b"INFO": lambda arguments, reply: _text(reply),
    b"CLIENT": _client_reply,
    b"XREAD": lambda arguments, reply: _streams_map(reply),
    b"XREADGROUP": lambda arguments, reply: _streams_map(reply),
    b"XINFO": _xinfo_reply,
    b"BZPOPMIN": lambda arguments, reply: [*reply[:2], _double(reply[2])]
    if isinstance(reply, list) and len(reply) == 3 else reply,
    b"BZPOPMAX": lambda arguments, reply: [*reply[:2], _double(reply[2])]
    if isinstance(reply, list) and len(reply) == 3 else reply,
}


def to_resp(reply: object) -> object:
    """Convert a state-machine reply into a RESP reply value."""
    if isinstance(reply, str):
        return SimpleString(reply)
    if isinstance(reply, KVError):
        return ErrorReply(reply.message)
    if isinstance(reply, list):
        return [to_resp(item) for item in reply]
    return reply


def error_text(error: PhalanxError) -> str:
    """The RESP error line for a product error: says whether a retry is safe."""
    if isinstance(error, CommandError):
        return error.text
    if isinstance(error, OutcomeUnknown):
        return f"ERR phalanx: outcome unknown: {error}"
    if isinstance(error, RetrySafe):
        return f"{TRYAGAIN} {error}"
    if isinstance(error, ClusterDown):
        return f"CLUSTERDOWN {error}"
    if isinstance(error, Loading):
        # Redis's reply while it loads its dataset ("LOADING Redis is loading the dataset in
        # memory", https://redis.io/docs/latest/develop/reference/protocol-spec/): redis-py
        # raises BusyLoadingError, a ConnectionError its Retry retries.
        return f"LOADING phalanx is loading the dataset: {error}"
    return f"ERR phalanx: {error}"


def error_reply(error: TimeoutError | PhalanxError) -> ErrorReply:
    """The error reply of a command that failed with `error` (a fan-out's share of it)."""
    if isinstance(error, PhalanxError):
        return ErrorReply(error_text(error))
    return ErrorReply("ERR phalanx: timed out waiting for the cluster")


def failure_text(error: BaseException) -> str | None:
    """The error line of a command that failed with `error`, or None for an unexpected error
    (a bug: the caller logs it). A timeout leaves a write's outcome unknown."""
    if isinstance(error, PhalanxError):
        return error_text(error)
    if isinstance(error, TimeoutError):
        return ("ERR phalanx: timed out waiting for the cluster; the outcome of a write is "
                "unknown")
    return None


def slot_moved(reply: object) -> bool:
    """True for a shard's apply-time refusal of a slot it no longer owns (`SlotMoved`):
    certainly not applied, safe to route again."""
    return isinstance(reply, SlotMoved)


def outcome_unknown(reply: object) -> bool:
    """True for a reply another node sent that says a write's outcome is unknown (the text
    `failure_text` writes for `OutcomeUnknown`)."""
    return isinstance(reply, ErrorReply) and reply.text.startswith("ERR phalanx: outcome unknown")


def unknown_forward(reply: object) -> bool:
    """True when a node answered PHALANX.FWD as an unknown command (an older version)."""
    return isinstance(reply, ErrorReply) and reply.text.lower().startswith(
        "err unknown command 'phalanx.fwd'")


def wire_code(reply: object) -> str:
    """The code (first word) of an error reply received from another node, else ""."""
    if isinstance(reply, ErrorReply):
        return reply.text.split(" ", 1)[0]
    return ""
