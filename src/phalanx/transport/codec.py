"""The versioned peer wire codec: Raft messages as frames on a TCP stream (msgpack inside).

This module owns the bytes that travel between phalanx nodes. It is sans-IO: it never touches a
socket; the transport feeds it bytes and sends what it returns.

The stream (protocol version 2; version 1 is still understood)
--------------------------------------------------------------
1. Each side first sends one **handshake frame**::

       b"PHLX" | version: uint16 BE | length: uint32 BE |
           msgpack [node_id, cluster_id, nonce, mac, incarnation, refusal]     (version 2)
           msgpack [node_id, cluster_id, nonce, mac]                           (version 1)

   The magic and the version sit *outside* msgpack so that a stranger (an HTTP probe, a Redis
   client on the wrong port) and a peer of another version are both recognised from the first
   ten bytes, before anything else is parsed; a future version may change everything after
   them. `mac` is HMAC-SHA256 under the cluster secret over the handshake fields (see
   `handshake_mac`), or empty when no secret is configured. A MAC over fixed fields alone
   could be replayed by an eavesdropper, so the transport runs a challenge-response with three
   handshake frames: the dialer's (its fresh nonce), the acceptor's (its own fresh nonce, the
   tag bound to the dialer's), and the dialer's proof (the tag bound to the acceptor's nonce).
   A recorded handshake cannot answer a new nonce.
   Version 2 adds the sender's **incarnation** (the random id its data directory was created
   with: a node whose disk was wiped comes back as a new incarnation and is refused, see
   `phalanx.server.identity`) and a **refusal**: a side that refuses the other's identity says
   why in its next handshake frame (the answer, or the proof) before closing, so both sides
   log the reason. Both fields are covered by the MAC. A peer of version 1 sends neither; it
   is answered in version 1.
2. Then any number of **batch frames**::

       length: uint32 BE | msgpack [[type_code, group_id, field, ...], ...]

   One batch frame carries many (group id, message) pairs, so the transport can batch per peer
   and coalesce the heartbeats of many groups into one frame. Fields follow `WIRE_FIELDS`; the
   nested `Snapshot` / `SnapshotMeta` / `ConfState` of InstallSnapshot are flattened into the
   message array; the entries of AppendEntries are one flat array
   ``[term, index, type, data, term, index, type, data, ...]`` (4 items per entry), which costs
   no list object per entry and lets the decoder validate every entry with C-level slices.

Rules of this file:
- Type codes and field orders are wire format: never renumber or reorder them. A new field or a
  new message type means a new protocol version (and a test fails until `WIRE_FIELDS` and the
  codec agree with the dataclasses of `phalanx.raft.messages`).
- Every malformed input raises `PeerProtocolError` with a message that says what was wrong and
  where -- never another exception type (msgpack errors, ValueError, TypeError, ... are wrapped).
- A decoded message is always well formed: ints are ints (not bools), terms, indexes, group ids
  and rounds are >= 0, bytes are bytes, NodeIds are str, enums are in range. Semantic checks
  (is the entry run contiguous? is the term current?) belong to the Raft core, not here.
- Limits are checked as early as possible: an oversize frame is refused as soon as its length
  prefix arrives, before its body is buffered.
- The hot path (encode and decode of AppendEntries and Heartbeat) avoids per-field Python work:
  msgspec packs every batch and decodes a batch of hot messages into checked Structs
  (`phalanx.transport.wire`, same bytes as msgpack-python, so no new protocol version); any
  other batch takes the checked path here (types compared as one tuple, entries by slices).
- After a `PeerProtocolError` a `FrameDecoder` is broken for good: the connection must be dropped.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Any, Final, TypeAlias

import msgpack  # type: ignore[import-untyped]
import msgspec

from phalanx.errors import ConfigError, InvariantViolation, PeerProtocolError
from phalanx.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from phalanx.raft.types import (
    ConfState,
    GroupId,
    NodeId,
    Snapshot,
    SnapshotMeta,
)
from phalanx.transport.wire import (
    ENCODER,
    HOT_WIRE_STRUCTS,
    decode_entries,
    decode_hot_batch,
    slot_setters,
)

__all__ = [
    "DEFAULT_MAX_ENTRIES_PER_MESSAGE",
    "DEFAULT_MAX_FRAME_BYTES",
    "MAGIC",
    "MAX_HANDSHAKE_BYTES",
    "MAX_INCARNATION_CHARS",
    "MAX_REFUSAL_CHARS",
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "TYPE_CODES",
    "WIRE_FIELDS",
    "Batch",
    "FrameDecoder",
    "Handshake",
    "NeedData",
    "decode_handshake",
    "encode_batch",
    "encode_handshake",
    "handshake_mac",
    "verify_handshake",
]

MAGIC: Final = b"PHLX"
PROTOCOL_VERSION: Final = 2
SUPPORTED_VERSIONS: Final = frozenset({1, 2})
#: Longest incarnation id a handshake may carry (ours are 32 hex digits).
MAX_INCARNATION_CHARS: Final = 64
#: Longest refusal reason a handshake may carry.
MAX_REFUSAL_CHARS: Final = 1024

DEFAULT_MAX_FRAME_BYTES: Final = 64 * 1024 * 1024
"""Largest batch frame body accepted or produced. A snapshot must fit in one frame for now;
large snapshots should later be sent in chunks instead of raising this limit."""

DEFAULT_MAX_ENTRIES_PER_MESSAGE: Final = 65_536
MAX_HANDSHAKE_BYTES: Final = 4096
"""Largest handshake body (node id, cluster id, nonce and MAC are all short)."""

_LENGTH: Final = struct.Struct(">I")
_HANDSHAKE_HEADER: Final = struct.Struct(">4sHI")
_MAX_LENGTH: Final = 0xFFFF_FFFF
_MAC_BYTES: Final = 32  # HMAC-SHA256

Batch: TypeAlias = list[tuple[GroupId, Message]]


class NeedData(enum.Enum):
    """The type of `NEED_DATA`: the decoder holds no complete frame yet; feed it more bytes."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True, kw_only=True)
class Handshake:
    """The first frame each side sends: who it is, which cluster, and its authentication tag;
    from version 2 also which incarnation of the node it is, and why it refuses the other side
    ("" = it does not)."""

    version: int
    node_id: NodeId
    cluster_id: str
    nonce: bytes = b""
    mac: bytes = b""
    incarnation: str = ""
    refusal: str = ""


# --------------------------------------------------------------------------------------------
# Wire schema
# --------------------------------------------------------------------------------------------

TYPE_CODES: Final[dict[type, int]] = {
    RequestVote: 1,
    RequestVoteResponse: 2,
    AppendEntries: 3,
    AppendEntriesResponse: 4,
    Heartbeat: 5,
    HeartbeatResponse: 6,
    InstallSnapshot: 7,
    TimeoutNow: 8,
    ReadIndexRequest: 9,
    ReadIndexResponse: 10,
}
"""Stable type code of every message class (wire format: never renumber)."""

WIRE_FIELDS: Final[dict[type, tuple[str, ...]]] = {
    RequestVote: ("source", "target", "term", "last_log_index", "last_log_term", "pre_vote",
                  "leadership_transfer"),
    RequestVoteResponse: ("source", "target", "term", "granted", "pre_vote"),
    AppendEntries: ("source", "target", "term", "prev_log_index", "prev_log_term", "commit",
                    "entries"),
    AppendEntriesResponse: ("source", "target", "term", "success", "index", "reject_hint"),
    Heartbeat: ("source", "target", "term", "commit", "round"),
    HeartbeatResponse: ("source", "target", "term", "round"),
    InstallSnapshot: ("source", "target", "term", "snapshot.meta.index", "snapshot.meta.term",
                      "snapshot.meta.conf_state.voters", "snapshot.meta.conf_state.learners",
                      "snapshot.meta.conf_state.voters_outgoing",
                      "snapshot.meta.conf_state.learners_next",
                      "snapshot.meta.conf_state.auto_leave", "snapshot.data"),
    TimeoutNow: ("source", "target", "term"),
    ReadIndexRequest: ("source", "target", "term", "context"),
    ReadIndexResponse: ("source", "target", "term", "context", "index"),
}
"""The fields of each message on the wire, in order, after [type_code, group_id]."""

# Wire type of each field: `int` fields are also checked to be >= 0.
_WIRE_TYPES: Final[dict[type, tuple[type, ...]]] = {
    RequestVote: (str, str, int, int, int, bool, bool),
    RequestVoteResponse: (str, str, int, bool, bool),
    AppendEntries: (str, str, int, int, int, int, list),
    AppendEntriesResponse: (str, str, int, bool, int, int),
    Heartbeat: (str, str, int, int, int),
    HeartbeatResponse: (str, str, int, int),
    InstallSnapshot: (str, str, int, int, int, list, list, list, list, bool, bytes),
    TimeoutNow: (str, str, int),
    ReadIndexRequest: (str, str, int, bytes),
    ReadIndexResponse: (str, str, int, bytes, int),
}

_ENTRY_FIELDS: Final = attrgetter("term", "index", "type", "data")
_ONLY_STR: Final = frozenset({str})


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------

# One shared packer: `pack` runs no Python code (no `default` hook), so it is atomic under the
# GIL, and msgpack resets its buffer when packing fails.
_PACKER: Final = msgpack.Packer(use_bin_type=True, autoreset=True)


def _encode_request_vote(code: int, group_id: int, m: RequestVote) -> list[object]:
    return [code, group_id, m.source, m.target, m.term, m.last_log_index, m.last_log_term,
            m.pre_vote, m.leadership_transfer]


def _encode_request_vote_response(
    code: int, group_id: int, m: RequestVoteResponse
) -> list[object]:
    return [code, group_id, m.source, m.target, m.term, m.granted, m.pre_vote]


def _encode_append_entries(code: int, group_id: int, m: AppendEntries) -> list[object]:
    return [code, group_id, m.source, m.target, m.term, m.prev_log_index, m.prev_log_term,
            m.commit, list(chain.from_iterable(map(_ENTRY_FIELDS, m.entries)))]


def _encode_append_entries_response(
    code: int, group_id: int, m: AppendEntriesResponse
) -> list[object]:
    return [code, group_id, m.source, m.target, m.term, m.success, m.index, m.reject_hint]


def _encode_heartbeat(code: int, group_id: int, m: Heartbeat) -> list[object]:
    return [code, group_id, m.source, m.target, m.term, m.commit, m.round]


def _encode_heartbeat_response(code: int, group_id: int, m: HeartbeatResponse) -> list[object]:
    return [code, group_id, m.source, m.target, m.term, m.round]


def _encode_install_snapshot(code: int, group_id: int, m: InstallSnapshot) -> list[object]:
    meta = m.snapshot.meta
    conf = meta.conf_state
    return [code, group_id, m.source, m.target, m.term, meta.index, meta.term,
            list(conf.voters), list(conf.learners), list(conf.voters_outgoing),
            list(conf.learners_next), conf.auto_leave, m.snapshot.data]


def _encode_timeout_now(code: int, group_id: int, m: TimeoutNow) -> list[object]:
    return [code, group_id, m.source, m.target, m.term]


def _encode_read_index_request(code: int, group_id: int, m: ReadIndexRequest) -> list[object]:
    return [code, group_id, m.source, m.target, m.term, m.context]


def _encode_read_index_response(code: int, group_id: int, m: ReadIndexResponse) -> list[object]:
    return [code, group_id, m.source, m.target, m.term, m.context, m.index]


# Each encoder takes exactly the class of its key, hence the `...` in the value type.
_ENCODERS: Final[dict[type, tuple[int, Callable[..., list[object]]]]] = {
    RequestVote: (TYPE_CODES[RequestVote], _encode_request_vote),
    RequestVoteResponse: (TYPE_CODES[RequestVoteResponse], _encode_request_vote_response),
    AppendEntries: (TYPE_CODES[AppendEntries], _encode_append_entries),
    AppendEntriesResponse: (TYPE_CODES[AppendEntriesResponse], _encode_append_entries_response),
    Heartbeat: (TYPE_CODES[Heartbeat], _encode_heartbeat),
    HeartbeatResponse: (TYPE_CODES[HeartbeatResponse], _encode_heartbeat_response),
    InstallSnapshot: (TYPE_CODES[InstallSnapshot], _encode_install_snapshot),
    TimeoutNow: (TYPE_CODES[TimeoutNow], _encode_timeout_now),
    ReadIndexRequest: (TYPE_CODES[ReadIndexRequest], _encode_read_index_request),
    ReadIndexResponse: (TYPE_CODES[ReadIndexResponse], _encode_read_index_response),
}


def encode_batch(
    batch: Iterable[tuple[GroupId, Message]], *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> bytes:
    """Encode (group id, message) pairs as one complete batch frame, length prefix included.

    Raises `PeerProtocolError` when the frame would exceed `max_frame_bytes` (the peer would
    refuse it): the transport must split the batch (or, later, chunk the snapshot). Raises
    `InvariantViolation` for a message that cannot be encoded at all (not a message, an integer
    outside [-2**63, 2**64), a field msgpack cannot pack): that is a bug of the sender. Fields
    of the wrong but packable type (a negative term, an int NodeId) are not checked here, to keep
    the hot path lean: the receiving decoder refuses them.
    """
    encoders = _ENCODERS
    try:
        arrays = []
        for group_id, message in batch:
            code, encode = encoders[type(message)]
            arrays.append(encode(code, group_id, message))
        body = ENCODER.encode(arrays)  # the same bytes as msgpack-python's, ~3x faster
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError,
            msgspec.EncodeError) as error:
        raise InvariantViolation(f"cannot encode peer batch: {error!r}") from error
    if len(body) > min(max_frame_bytes, _MAX_LENGTH):
        raise PeerProtocolError(
            f"batch frame of {len(body)} bytes exceeds max_frame_bytes={max_frame_bytes}; "
            "split the batch (large snapshots must be sent in chunks)"
        )
    return _LENGTH.pack(len(body)) + body


def handshake_mac(
    secret: bytes, *, version: int, node_id: str, cluster_id: str, nonce: bytes,
    bind: bytes = b"", incarnation: str = "", refusal: str = "",
) -> bytes:
    """HMAC-SHA256 under the cluster `secret` over the handshake fields (version included;
    from version 2 the incarnation and the refusal too), and over `bind`: the OTHER side's
    fresh nonce in a challenge-response, so the tag proves knowledge of the secret now, not a
    recording (`bind` itself is not sent: each side knows the nonce it chose)."""
    signed: list[object] = [node_id, cluster_id, nonce]
    if version >= 2:
        signed += [incarnation, refusal]
    message = MAGIC + struct.pack(">H", version) + _PACKER.pack(signed)
    if bind:
        message += _PACKER.pack(bind)
    return hmac.new(secret, message, hashlib.sha256).digest()


def encode_handshake(
    node_id: NodeId,
    cluster_id: str,
    *,
    secret: bytes | None = None,
    nonce: bytes = b"",
    version: int = PROTOCOL_VERSION,
    bind: bytes = b"",
    incarnation: str = "",
    refusal: str = "",
) -> bytes:
    """Encode the complete handshake frame; with a `secret`, it carries an HMAC-SHA256 tag
    (bound to the peer's nonce `bind` when answering a challenge). Version 1 has no
    incarnation nor refusal (InvariantViolation if one is given)."""
    if version < 2 and (incarnation or refusal):
        raise InvariantViolation("a version 1 handshake carries no incarnation nor refusal")
    if len(incarnation) > MAX_INCARNATION_CHARS or len(refusal) > MAX_REFUSAL_CHARS:
        raise InvariantViolation(f"handshake incarnation or refusal too long "
                                 f"({len(incarnation)}, {len(refusal)} characters)")
    mac = b"" if secret is None else handshake_mac(
        secret, version=version, node_id=node_id, cluster_id=cluster_id, nonce=nonce, bind=bind,
        incarnation=incarnation, refusal=refusal,
    )
    fields: list[object] = [node_id, cluster_id, nonce, mac]
    if version >= 2:
        fields += [incarnation, refusal]
    try:
        body: bytes = _PACKER.pack(fields)
    except (TypeError, ValueError, OverflowError) as error:
        raise InvariantViolation(f"cannot encode handshake: {error!r}") from error
    if len(body) > MAX_HANDSHAKE_BYTES or not 0 <= version <= 0xFFFF:
        raise InvariantViolation(
            f"handshake out of bounds: {len(body)} bytes (max {MAX_HANDSHAKE_BYTES}), "
            f"version {version}"
        )
    return _HANDSHAKE_HEADER.pack(MAGIC, version, len(body)) + body


def verify_handshake(handshake: Handshake, *, cluster_id: str, secret: bytes | None,
                     bind: bytes = b"") -> None:
    """Check that the peer belongs to our cluster and, with a `secret`, that its tag is right
    (bound to OUR nonce `bind` when the peer answers our challenge).

    Raises `PeerProtocolError` otherwise. Without a secret any tag is ignored.
    """
    if handshake.cluster_id != cluster_id:
        raise PeerProtocolError(
            f"peer {handshake.node_id!r} belongs to cluster {handshake.cluster_id!r}, "
            f"not {cluster_id!r}"
        )
    if secret is None:
        return
    if not handshake.mac:
        raise PeerProtocolError(
            f"peer {handshake.node_id!r} sent no authentication tag but this cluster has a secret"
        )
    expected = handshake_mac(
        secret, version=handshake.version, node_id=handshake.node_id,
        cluster_id=handshake.cluster_id, nonce=handshake.nonce, bind=bind,
        incarnation=handshake.incarnation, refusal=handshake.refusal,
    )
    if not hmac.compare_digest(expected, handshake.mac):
        raise PeerProtocolError(
            f"peer {handshake.node_id!r} failed authentication: wrong HMAC for the cluster secret"
        )


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------
# Values out of msgpack are `Any`; each is checked before it reaches a message constructor.

def _type_name(value: object) -> str:
    return type(value).__name__


def _node_ids(field: str, values: list[Any]) -> tuple[NodeId, ...]:
    if not _ONLY_STR.issuperset(map(type, values)):
        bad = next(value for value in values if type(value) is not str)
        raise PeerProtocolError(
            f"InstallSnapshot.{field} must hold str node ids, got {_type_name(bad)}"
        )
    return tuple(values)


_S_HB = slot_setters(Heartbeat, WIRE_FIELDS[Heartbeat])
_S_HBR = slot_setters(HeartbeatResponse, WIRE_FIELDS[HeartbeatResponse])
_S_AE = slot_setters(AppendEntries, WIRE_FIELDS[AppendEntries])
_S_AER = slot_setters(AppendEntriesResponse, WIRE_FIELDS[AppendEntriesResponse])


# Builders get the whole validated array [type_code, group_id, field, ...].

def _build_request_vote(a: list[Any], max_entries: int) -> Message:
    return RequestVote(source=a[2], target=a[3], term=a[4], last_log_index=a[5],
                       last_log_term=a[6], pre_vote=a[7], leadership_transfer=a[8])


def _build_request_vote_response(a: list[Any], max_entries: int) -> Message:
    return RequestVoteResponse(source=a[2], target=a[3], term=a[4], granted=a[5], pre_vote=a[6])


def _build_append_entries(a: list[Any], max_entries: int) -> Message:
    m = object.__new__(AppendEntries)
    s = _S_AE
    s[0](m, a[2])
    s[1](m, a[3])
    s[2](m, a[4])
    s[3](m, a[5])
    s[4](m, a[6])
    s[5](m, a[7])
    s[6](m, decode_entries(a[8], max_entries))
    return m


def _build_append_entries_response(a: list[Any], max_entries: int) -> Message:
    m = object.__new__(AppendEntriesResponse)
    s = _S_AER
    s[0](m, a[2])
    s[1](m, a[3])
    s[2](m, a[4])
    s[3](m, a[5])
    s[4](m, a[6])
    s[5](m, a[7])
    return m


def _build_heartbeat(a: list[Any], max_entries: int) -> Message:
    m = object.__new__(Heartbeat)
    s = _S_HB
    s[0](m, a[2])
    s[1](m, a[3])
    s[2](m, a[4])
    s[3](m, a[5])
    s[4](m, a[6])
    return m


def _build_heartbeat_response(a: list[Any], max_entries: int) -> Message:
    m = object.__new__(HeartbeatResponse)
    s = _S_HBR
    s[0](m, a[2])
    s[1](m, a[3])
    s[2](m, a[4])
    s[3](m, a[5])
    return m


def _build_install_snapshot(a: list[Any], max_entries: int) -> Message:
    conf_state = ConfState(
        voters=_node_ids("snapshot.meta.conf_state.voters", a[7]),
        learners=_node_ids("snapshot.meta.conf_state.learners", a[8]),
        voters_outgoing=_node_ids("snapshot.meta.conf_state.voters_outgoing", a[9]),
        learners_next=_node_ids("snapshot.meta.conf_state.learners_next", a[10]),
        auto_leave=a[11],
    )
    meta = SnapshotMeta(index=a[5], term=a[6], conf_state=conf_state)
    return InstallSnapshot(source=a[2], target=a[3], term=a[4],
                           snapshot=Snapshot(meta=meta, data=a[12]))


def _build_timeout_now(a: list[Any], max_entries: int) -> Message:
    return TimeoutNow(source=a[2], target=a[3], term=a[4])


def _build_read_index_request(a: list[Any], max_entries: int) -> Message:
    return ReadIndexRequest(source=a[2], target=a[3], term=a[4], context=a[5])


def _build_read_index_response(a: list[Any], max_entries: int) -> Message:
    return ReadIndexResponse(source=a[2], target=a[3], term=a[4], context=a[5], index=a[6])


@dataclass(frozen=True, slots=True)
class _Spec:
    """How to check and build one message type from its wire array."""

    name: str
    fields: tuple[str, ...]  # with "type_code" and "group_id" first
    types: tuple[type, ...]  # the exact type of each array item
    ints: Callable[[list[Any]], tuple[int, ...]]  # the int items, all of which must be >= 0
    build: Callable[[list[Any], int], Message]


def _spec(cls: type, build: Callable[[list[Any], int], Message]) -> _Spec:
    types = (int, int, *_WIRE_TYPES[cls])
    fields = ("type_code", "group_id", *WIRE_FIELDS[cls])
    int_positions = [position for position, kind in enumerate(types) if kind is int]
    # Every message has at least group_id and term, so itemgetter always returns a tuple.
    return _Spec(cls.__name__, fields, types, itemgetter(*int_positions[1:]), build)


_SPECS: Final[dict[int, _Spec]] = {
    TYPE_CODES[cls]: _spec(cls, build)
    for cls, build in (
        (RequestVote, _build_request_vote),
        (RequestVoteResponse, _build_request_vote_response),
        (AppendEntries, _build_append_entries),
        (AppendEntriesResponse, _build_append_entries_response),
        (Heartbeat, _build_heartbeat),
        (HeartbeatResponse, _build_heartbeat_response),
        (InstallSnapshot, _build_install_snapshot),
        (TimeoutNow, _build_timeout_now),
        (ReadIndexRequest, _build_read_index_request),
        (ReadIndexResponse, _build_read_index_response),
    )
}


def _check_structs() -> None:
    """The msgspec Structs of the hot path are the wire arrays of WIRE_FIELDS (wire.py)."""
    for cls, wire in HOT_WIRE_STRUCTS.items():
        config = wire.__struct_config__
        if (config.tag != TYPE_CODES[cls] or not config.array_like
                or wire.__struct_fields__ != ("group_id", *WIRE_FIELDS[cls])):
            raise InvariantViolation(f"transport/wire.py's Struct for {cls.__name__} is not "
                                     f"its wire array {WIRE_FIELDS[cls]}")


_check_structs()


def _explain_fields(spec: _Spec, array: list[Any]) -> str:
    """Slow path: say precisely which item of a rejected message array is wrong."""
    if len(array) != len(spec.types):
        return (f"{spec.name} has {len(array) - 2} fields, expected {len(spec.types) - 2} "
                f"({', '.join(spec.fields[2:])})")
    for field, want, value in zip(spec.fields, spec.types, array, strict=True):
        if type(value) is not want:
            return f"{spec.name}.{field} must be {want.__name__}, got {_type_name(value)}"
        if isinstance(value, int) and value < 0:
            return f"{spec.name}.{field} must be >= 0, got {value}"
    return f"{spec.name} is malformed"  # pragma: no cover - only called on a mismatch


def _decode_body(body: bytearray, max_entries: int) -> Batch:
    """Decode the body of one batch frame (without its length prefix): the msgspec hot path
    (`wire.decode_hot_batch`) for batches of hot messages, else the checked path below."""
    if not body:
        raise PeerProtocolError("empty batch frame (length 0)")
    hot = decode_hot_batch(body, max_entries)
    if hot is not None:
        return hot
    return _decode_checked(body, max_entries)


def _decode_checked(body: bytearray | bytes, max_entries: int) -> Batch:
    """Decode a batch body with every check spelled out: any message type, and the precise
    reason for any malformed input (PeerProtocolError)."""
    try:
        arrays = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True)
    except Exception as error:  # msgpack raises ValueError, its own errors, UnicodeDecodeError...
        raise PeerProtocolError(f"batch frame is not valid msgpack: {error!r}") from error
    if type(arrays) is not list:
        raise PeerProtocolError(f"batch frame must be an array of messages, got "
                                f"{_type_name(arrays)}")
    specs = _SPECS
    batch: Batch = []
    for position, array in enumerate(arrays):
        if type(array) is not list or not array:
            raise PeerProtocolError(
                f"batch item {position} must be a non-empty array [type_code, group_id, ...], "
                f"got {_type_name(array) if type(array) is not list else 'an empty array'}"
            )
        code = array[0]
        spec = specs.get(code) if type(code) is int else None
        if spec is None:
            raise PeerProtocolError(
                f"batch item {position}: unknown message type code {code!r} "
                f"(known: {sorted(specs)})"
            )
        if tuple(map(type, array)) != spec.types or min(spec.ints(array)) < 0:
            raise PeerProtocolError(f"batch item {position}: {_explain_fields(spec, array)}")
        batch.append((array[1], spec.build(array, max_entries)))
    return batch


_HANDSHAKE_FIELDS: Final = ("node_id", "cluster_id", "nonce", "mac", "incarnation", "refusal")
_HANDSHAKE_TYPES: Final = (str, str, bytes, bytes, str, str)


def _decode_handshake_body(version: int, body: bytes) -> Handshake:
    try:
        fields = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True)
    except Exception as error:  # msgpack raises ValueError, its own errors, UnicodeDecodeError...
        raise PeerProtocolError(f"handshake is not valid msgpack: {error!r}") from error
    count = 4 if version == 1 else 6
    names = _HANDSHAKE_FIELDS[:count]
    if type(fields) is not list or len(fields) != count:
        raise PeerProtocolError(
            f"handshake body (version {version}) must be an array [{', '.join(names)}], got "
            + (f"{len(fields)} items" if type(fields) is list else _type_name(fields))
        )
    for name, want, value in zip(names, _HANDSHAKE_TYPES, fields, strict=False):
        if type(value) is not want:
            raise PeerProtocolError(
                f"handshake.{name} must be {want.__name__}, got {_type_name(value)}"
            )
    node_id, cluster_id, nonce, mac = fields[:4]
    incarnation, refusal = (fields[4], fields[5]) if count == 6 else ("", "")
    if mac and len(mac) != _MAC_BYTES:
        raise PeerProtocolError(f"handshake.mac must be empty or {_MAC_BYTES} bytes, got "
                                f"{len(mac)}")
    if len(incarnation) > MAX_INCARNATION_CHARS:
        raise PeerProtocolError(f"handshake.incarnation longer than {MAX_INCARNATION_CHARS} "
                                f"characters ({len(incarnation)})")
    if len(refusal) > MAX_REFUSAL_CHARS:
        raise PeerProtocolError(f"handshake.refusal longer than {MAX_REFUSAL_CHARS} "
                                f"characters ({len(refusal)})")
    return Handshake(version=version, node_id=node_id, cluster_id=cluster_id, nonce=nonce,
                     mac=mac, incarnation=incarnation, refusal=refusal)


class FrameDecoder:
    """Sans-IO decoder of one peer stream: `feed(bytes)`, then `next_handshake()` once, then
    `next_batch()` until it returns `NEED_DATA`.

    An oversize frame is refused as soon as its length prefix is buffered. After any
    `PeerProtocolError` the decoder stays broken: every later call raises again.
    """

    __slots__ = ("_buffer", "_error", "_max_entries", "_max_frame_bytes", "_position")

    def __init__(
        self,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_entries_per_message: int = DEFAULT_MAX_ENTRIES_PER_MESSAGE,
    ) -> None:
        if not 0 < max_frame_bytes <= _MAX_LENGTH:
            raise ConfigError(
                f"max_frame_bytes must be in [1, {_MAX_LENGTH}], got {max_frame_bytes}"
            )
        if max_entries_per_message < 0:
            raise ConfigError(
                f"max_entries_per_message must be >= 0, got {max_entries_per_message}"
            )
        self._max_frame_bytes = max_frame_bytes
        self._max_entries = max_entries_per_message
        self._buffer = bytearray()
        self._position = 0  # start of the unread bytes in `_buffer`
        self._error: PeerProtocolError | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes fed but not yet consumed by a decoded frame."""
        return len(self._buffer) - self._position

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the peer."""
        if self._position and self._position == len(self._buffer):
            self._buffer.clear()
            self._position = 0
        self._buffer += data

    def next_handshake(self) -> Handshake | NeedData:
        """The peer's handshake frame, or `NEED_DATA`. Call once, before `next_batch`."""
        self._raise_if_broken()
        try:
            return self._next_handshake()
        except PeerProtocolError as error:
            self._error = error
            raise

    def next_batch(self) -> Batch | NeedData:
        """The next batch frame's (group id, message) pairs, or `NEED_DATA`."""
        if self._error is not None:
            raise PeerProtocolError(f"peer stream already failed: {self._error}")
        buffer, start = self._buffer, self._position
        if len(buffer) - start < 4:
            return NEED_DATA
        (length,) = _LENGTH.unpack_from(buffer, start)
        if length > self._max_frame_bytes:
            hint = (" (it looks like a handshake: the peer sent a second one)"
                    if buffer[start:start + 4] == MAGIC else "")
            self._error = PeerProtocolError(
                f"batch frame of {length} bytes exceeds max_frame_bytes={self._max_frame_bytes}"
                f"{hint}"
            )
            raise self._error
        end = start + 4 + length
        if len(buffer) < end:
            return NEED_DATA
        body = buffer[start + 4:end]
        self._consume(end)
        try:
            return _decode_body(body, self._max_entries)
        except PeerProtocolError as error:
            self._error = error
            raise

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise PeerProtocolError(f"peer stream already failed: {self._error}")

    def _next_handshake(self) -> Handshake | NeedData:
        buffer, start = self._buffer, self._position
        available = len(buffer) - start
        # Check the magic on whatever prefix has arrived, so a stranger is refused at once.
        seen = bytes(buffer[start:start + min(available, len(MAGIC))])
        if seen != MAGIC[:len(seen)]:
            raise PeerProtocolError(
                f"not a phalanx peer: stream starts with {bytes(buffer[start:start + 16])!r}, "
                f"expected magic {MAGIC!r}"
            )
        if available < _HANDSHAKE_HEADER.size:
            return NEED_DATA
        _, version, length = _HANDSHAKE_HEADER.unpack_from(buffer, start)
        if version not in SUPPORTED_VERSIONS:
            raise PeerProtocolError(
                f"peer speaks phalanx protocol version {version}; this node speaks version "
                f"{PROTOCOL_VERSION} (supported: {sorted(SUPPORTED_VERSIONS)})"
            )
        if length > MAX_HANDSHAKE_BYTES:
            raise PeerProtocolError(
                f"handshake of {length} bytes exceeds the limit of {MAX_HANDSHAKE_BYTES}"
            )
        end = start + _HANDSHAKE_HEADER.size + length
        if len(buffer) < end:
            return NEED_DATA
        body = bytes(buffer[start + _HANDSHAKE_HEADER.size:end])
        self._consume(end)
        return _decode_handshake_body(version, body)

    def _consume(self, end: int) -> None:
        if end == len(self._buffer):
            self._buffer.clear()
            self._position = 0
        elif end > 65536 and end * 2 > len(self._buffer):
            # Compact once the consumed prefix dominates, so the buffer stays O(unread bytes).
            del self._buffer[:end]
            self._position = 0
        else:
            self._position = end


def decode_handshake(
    frame: bytes | bytearray | memoryview,
) -> Handshake:
    """Decode one complete handshake frame (exactly; no trailing bytes)."""
    decoder = FrameDecoder()
    decoder.feed(frame)
    handshake = decoder.next_handshake()
    if handshake is NEED_DATA:
        raise PeerProtocolError(f"truncated handshake frame: only {len(frame)} bytes")
    if decoder.buffered_bytes:
        raise PeerProtocolError(
            f"{decoder.buffered_bytes} unexpected bytes after the handshake frame"
        )
    return handshake
