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

from collections.abc import Callable

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
