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
    OutcomeUnknown,
    PhalanxError,
    RetrySafe,
)
from phalanx.kv import Error as KVError
from phalanx.placement.shard import SlotMoved
from phalanx.resp import ErrorReply, SimpleString

#: The code of a retry-safe refusal (certainly not applied), ours or a peer's.
TRYAGAIN = "TRYAGAIN"


def _pairs_to_map(items: list[object]) -> object:
    return {items[i]: items[i + 1] for i in range(0, len(items) - 1, 2)}


def _to_set(items: list[object]) -> object:
    return set(items)


#: Replies RESP3 types (a map, a set); under RESP2 the encoder flattens them.
RESP3_SHAPES: dict[bytes, Callable[[list[object]], object]] = {
    b"HGETALL": _pairs_to_map,
    b"SMEMBERS": _to_set,
    b"CONFIG": _pairs_to_map,
}


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
    """The RESP3 shape of a sorted-set or geo reply, from its RESP2 shape (what the state machine and
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
    if name == b"ZMPOP" and isinstance(reply, list) and len(reply) == 2 and isinstance(
            reply[1], list):
        return [reply[0], [[pair[0], _double(pair[1])] for pair in reply[1]
                           if isinstance(pair, list) and len(pair) == 2]]
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


def wire_code(reply: object) -> str:
    """The code (first word) of an error reply received from another node, else ""."""
    if isinstance(reply, ErrorReply):
        return reply.text.split(" ", 1)[0]
    return ""
