"""The snapshot format of the key-value state machine.

Rules of this file:
- Layout: `b"PXKV" | u8 format version | u8 marshal version | u32 crc32(payload) | payload`,
  where payload is `marshal.dumps(state, 2)` of plain built-in values only:
  `(applied_index, clock_ms, data, expires, sessions)` with
  `data` = [key, value, key, value, ...] in the keyspace's (insertion) order, value being
  bytes (string), dict of bytes -> bytes (hash, field order kept), list (list type, head
  first), tuple (set, members sorted) or, since format 2, dict of bytes -> float (sorted set,
  in (score, member) order; never empty, no NaN); `expires` = [key, expire_at_ms, ...]; `sessions` =
  [client_id, sequence, reply, ...] with an `Error` reply written as the 1-tuple (message,).
- The WATCH versions (see kv/keyspace.py) follow as the sixth element,
  `(version, floor, [key, version, ...])` in version order (None when the state has none). A
  5-tuple (a snapshot written before they existed) still loads: it gets no versions (`watch` None) and the state machine
  then counts every key as changed at the snapshot's version, so a WATCH taken before can
  only abort. Replicas that write the same state write the same section, byte for byte.
- marshal's format is an implementation detail of CPython. We pin marshal version 2 (stable
  since Python 2.5 for these plain types, readable by every later CPython) and record it in the
  header. Version 2 matters: versions >= 3 emit back-references that depend on object reference
  counts, which would make two replicas with the same state write different bytes.
- Snapshots are deterministic: the same state gives byte-identical snapshots on every replica
  (dicts keep insertion order, set members are sorted).
- Format 2 added sorted sets; format 1 snapshots (no sorted sets) still load.
- Format 4 adds streams: a stream value is the 2-tuple `(None, Stream.to_plain())` (a set is
  a tuple of bytes, so the leading None tells them apart; see kv/stream.py for the plain
  form: the entries as two parallel lists, ids and field tuples, which marshal writes and
  reads at C speed). Format 1-3 snapshots (no streams) still load.
- Format 5 changes the sessions section (Raft dissertation §6.3, client sessions with many
  requests in flight): `[client_id, first_unacked, last_active_ms, [sequence, reply, ...],
  ...]`, four items per session in least-recently-used-first order, each session's replies
  in the order they were applied. Format 1-4 sessions (`client_id, sequence, reply`: one
  cached reply) load as a session whose first unacknowledged sequence is that sequence, last
  active at the snapshot's clock.
- Format 3 appends a seventh element, the script cache `[sha1_hex, body, ...]` (bytes, in the
  cache's insertion order), after the WATCH versions; format 1 and 2 snapshots (5 or 6
  elements) load with an empty cache.
- Restoring validates everything and raises `phalanx.errors.Corrupt` on any mismatch; it never
  returns a half-valid state.
- Standard library only.
"""

from __future__ import annotations

import marshal
import struct
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from phalanx.errors import Corrupt
from phalanx.kv.replies import Error, Reply
from phalanx.kv.stream import Stream
from phalanx.kv.zset import ZSet

MAGIC = b"PXKV"
FORMAT_VERSION = 5
_READABLE_VERSIONS = (1, 2, 3, 4, 5)
MARSHAL_VERSION = 2
_HEADER = struct.Struct("<4sBBI")

Value = bytes | dict[bytes, bytes] | set[bytes] | deque[bytes] | ZSet | Stream
"""A stored value: string, hash, set, list, sorted set or stream. Empty containers are never
stored, except streams (Redis keeps an empty stream)."""


@dataclass(slots=True)
class ClientSession:
    """One client's session in the state machine (Raft dissertation §6.3): the replies of
    every request at or after `first_unacked` (the lowest sequence the client has not yet
    acknowledged), and when it was last used, on the replicated clock (sessions expire by it,
    the same way on every replica)."""

    first_unacked: int
    last_active_ms: int
    replies: dict[int, Reply]


@dataclass(slots=True)
class SnapshotState:
    """Everything a snapshot holds, as live structures ready for the state machine."""

    applied_index: int
    clock_ms: int
    data: dict[bytes, Value]
    expires: dict[bytes, int]
    sessions: dict[int, ClientSession]
    watch: WatchVersions | None = None
    """The WATCH versions; None for a snapshot written before they existed."""
    scripts: dict[bytes, bytes] = field(default_factory=dict)
    """The script cache (sha1 hex -> body); empty for a snapshot written before it existed."""


@dataclass(slots=True)
class WatchVersions:
    """The keyspace's WATCH versions (see kv/keyspace.py): version clock, floor, and the
    version of each recently changed key, in version order."""

    version: int
    floor: int
    touched: dict[bytes, int]


def reply_to_plain(reply: Reply) -> object:
    """A reply as marshal-able plain values (`Error` becomes a 1-tuple)."""
    if isinstance(reply, Error):
        return (reply.message,)
    if isinstance(reply, list):
        return [reply_to_plain(item) for item in reply]
    return reply


def plain_to_reply(plain: object) -> Reply:
    """The inverse of `reply_to_plain`; raises Corrupt on anything it cannot produce."""
    if plain is None or type(plain) in (bytes, int, float, str):
        return plain  # type: ignore[return-value]
    if type(plain) is tuple and len(plain) == 1 and type(plain[0]) is str:
        return Error(plain[0])
    if type(plain) is list:
        return [plain_to_reply(item) for item in plain]
    raise Corrupt(f"snapshot: bad cached reply of type {type(plain).__name__}")


def plain_value(value: Value) -> object:
    """A stored value in its snapshot form (see the module rules): a hash as a copy of its
    dict, a set as its sorted members, a sorted set as member -> score in (score, member)
    order, a list as a list, a stream as `(None, plain)`."""
    if type(value) is bytes:
        return value
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, set):
        return tuple(sorted(value))
    if isinstance(value, ZSet):
        return {member: score for score, member in value.order}
    if isinstance(value, Stream):
        return (None, value.to_plain())
    return list(value)


def flat_sessions_of(sessions: dict[int, ClientSession]) -> list[object]:
    """The sessions section (format 5 and later)."""
    flat_sessions: list[object] = []
    for client_id, session in sessions.items():
        flat_replies: list[object] = []
        for sequence, reply in session.replies.items():
            flat_replies.extend((sequence, reply_to_plain(reply)))
        flat_sessions.extend((client_id, session.first_unacked, session.last_active_ms,
                              flat_replies))
    return flat_sessions


def encode_snapshot(
    applied_index: int,
    clock_ms: int,
    data: dict[bytes, Value],
    expires: dict[bytes, int],
    sessions: dict[int, ClientSession],
    watch: WatchVersions | None = None,
    scripts: dict[bytes, bytes] | None = None,
) -> bytes:
    """The snapshot bytes of a state (deterministic: see the module rules)."""
    flat_data: list[object] = []
    append = flat_data.append
    for key, value in data.items():
        append(key)
        append(value if type(value) is bytes or type(value) is dict else plain_value(value))
    flat_expires: list[object] = []
    for key, when in expires.items():
        flat_expires.append(key)
        flat_expires.append(when)
    flat_sessions = flat_sessions_of(sessions)
    flat_touched: list[object] = []
    watch_section: object = None
    if watch is not None:
        for key, version in watch.touched.items():
            flat_touched.append(key)
            flat_touched.append(version)
        watch_section = (watch.version, watch.floor, flat_touched)
    flat_scripts: list[bytes] = []
    for sha, body in (scripts or {}).items():
        flat_scripts.extend((sha, body))
    state: tuple[Any, ...] = (applied_index, clock_ms, flat_data, flat_expires, flat_sessions,
                              watch_section, flat_scripts)
    payload = marshal.dumps(state, MARSHAL_VERSION)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, MARSHAL_VERSION, zlib.crc32(payload))
    return header + payload


def _all_bytes(items: Iterable[object]) -> bool:
    """True when every item is exactly `bytes`."""
    return all(type(item) is bytes for item in items)


def decode_snapshot(blob: bytes) -> SnapshotState:
    """The state in `blob`; raises Corrupt unless it is a valid snapshot of this format."""
    if len(blob) < _HEADER.size:
        raise Corrupt("snapshot: truncated header")
    magic, version, marshal_version, checksum = _HEADER.unpack_from(blob, 0)
    if magic != MAGIC:
        raise Corrupt("snapshot: bad magic")
    if version not in _READABLE_VERSIONS or marshal_version != MARSHAL_VERSION:
        raise Corrupt(f"snapshot: unsupported version {version}/{marshal_version}")
    payload = blob[_HEADER.size:]
    if zlib.crc32(payload) != checksum:
        raise Corrupt("snapshot: checksum mismatch")
    try:
        state = marshal.loads(payload)
    except (ValueError, EOFError, TypeError) as exc:
        raise Corrupt(f"snapshot: undecodable payload ({exc})") from exc
    if type(state) is not tuple or len(state) not in (5, 6, 7):
        raise Corrupt("snapshot: bad top-level structure")
    applied_index, clock_ms, flat_data, flat_expires, flat_sessions = state[:5]
    flat_scripts = state[6] if len(state) == 7 else []
    if type(flat_scripts) is not list or len(flat_scripts) % 2 or not _all_bytes(flat_scripts):
        raise Corrupt("snapshot: bad script cache")
    scripts = {flat_scripts[i]: flat_scripts[i + 1] for i in range(0, len(flat_scripts), 2)}
    if type(applied_index) is not int or applied_index < 0 or type(clock_ms) is not int:
        raise Corrupt("snapshot: bad applied index or clock")
    if not (type(flat_data) is type(flat_expires) is type(flat_sessions) is list):
        raise Corrupt("snapshot: bad section types")
    if len(flat_data) % 2 or len(flat_expires) % 2 or len(flat_sessions) % (
            4 if version >= 5 else 3):
        raise Corrupt("snapshot: bad section lengths")
    data: dict[bytes, Value] = {}
    decode_data_into(flat_data, data)
    return decode_sections(applied_index, clock_ms, data, flat_expires, flat_sessions,
                           state[5] if len(state) >= 6 else None, scripts,
                           old_sessions=version < 5)


def decode_sections(applied_index: int, clock_ms: int, data: dict[bytes, Value],
                    flat_expires: list[Any], flat_sessions: list[Any], watch_section: object,
                    scripts: dict[bytes, bytes], *, old_sessions: bool = False
                    ) -> SnapshotState:
    """The state from its decoded data and its flat expiry, session and WATCH sections
    (shared by every format; `old_sessions`: formats 1-4's sessions); raises Corrupt on a
    bad entry."""
    if len(flat_expires) % 2 or len(flat_sessions) % (3 if old_sessions else 4):
        raise Corrupt("snapshot: bad section lengths")
    expires: dict[bytes, int] = {}
    for position in range(0, len(flat_expires), 2):
        key = flat_expires[position]
        when = flat_expires[position + 1]
        if type(key) is not bytes or key not in data or key in expires or type(when) is not int:
            raise Corrupt("snapshot: bad expiry entry")
        expires[key] = when
    sessions = (_decode_old_sessions(flat_sessions, clock_ms) if old_sessions
                else _decode_sessions(flat_sessions))
    watch = _decode_watch(watch_section) if watch_section is not None else None
    return SnapshotState(applied_index, clock_ms, data, expires, sessions, watch, scripts)


def value_from_plain(raw: Any) -> Value:
    """The live value of a snapshot's plain form; raises Corrupt for anything
    `plain_value` cannot write."""
    kind = type(raw)
    value: Value
    if kind is bytes:
        value = raw
    elif kind is dict and raw and all(type(score) is float for score in raw.values()):
        if not _all_bytes(raw.keys()) or any(score != score for score in raw.values()):
            raise Corrupt("snapshot: bad sorted set")
        value = ZSet.from_items(raw.items())
    elif kind is dict:
        if not raw or not _all_bytes(raw.keys()) or not _all_bytes(raw.values()):
            raise Corrupt("snapshot: bad hash")
        value = raw
    elif kind is list:
        if not raw or not _all_bytes(raw):
            raise Corrupt("snapshot: bad list")
        value = deque(raw)
    elif kind is tuple and len(raw) == 2 and raw[0] is None:
        try:
            value = Stream.from_plain(raw[1], check_fields=False)
        except ValueError as exc:
            raise Corrupt(f"snapshot: bad stream ({exc})") from exc
    elif kind is tuple:
        if (not raw or not _all_bytes(raw)
                or any(raw[i] >= raw[i + 1] for i in range(len(raw) - 1))):
            raise Corrupt("snapshot: bad set")
        value = set(raw)
    else:
        raise Corrupt(f"snapshot: bad value type {kind.__name__}")
    return value


def decode_data_into(flat_data: list[Any], data: dict[bytes, Value]) -> None:
    """Add the keys of a flat `[key, plain, ...]` data section to `data`; raises Corrupt on
    a bad or repeated key or a bad value."""
    if len(flat_data) % 2:
        raise Corrupt("snapshot: bad section lengths")
    for position in range(0, len(flat_data), 2):
        key = flat_data[position]
        if type(key) is not bytes or key in data:
            raise Corrupt("snapshot: bad or repeated key")
        raw = flat_data[position + 1]
        data[key] = raw if type(raw) is bytes else value_from_plain(raw)


def _decode_sessions(flat: list[object]) -> dict[int, ClientSession]:
    """The sessions section of format 5; raises Corrupt unless `encode_snapshot` wrote it."""
    sessions: dict[int, ClientSession] = {}
    previous_active: int | None = None
    for position in range(0, len(flat), 4):
        client_id, first_unacked, last_active, flat_replies = flat[position : position + 4]
        if type(client_id) is not int or client_id in sessions or type(first_unacked) is not int \
                or type(last_active) is not int or type(flat_replies) is not list \
                or len(flat_replies) % 2 or (previous_active is not None
                                             and last_active < previous_active):
            raise Corrupt("snapshot: bad session entry")
        previous_active = last_active
        replies: dict[int, Reply] = {}
        for at in range(0, len(flat_replies), 2):
            sequence = flat_replies[at]
            if type(sequence) is not int or sequence < first_unacked or sequence in replies:
                raise Corrupt("snapshot: bad session reply")
            replies[sequence] = plain_to_reply(flat_replies[at + 1])
        sessions[client_id] = ClientSession(first_unacked, last_active, replies)
    return sessions


def _decode_old_sessions(flat: list[object], clock_ms: int) -> dict[int, ClientSession]:
    """The sessions section of formats 1-4 (one cached reply per client), as format 5's."""
    sessions: dict[int, ClientSession] = {}
    for position in range(0, len(flat), 3):
        client_id, sequence, plain = flat[position : position + 3]
        if type(client_id) is not int or type(sequence) is not int or client_id in sessions:
            raise Corrupt("snapshot: bad session entry")
        sessions[client_id] = ClientSession(sequence, clock_ms, {sequence: plain_to_reply(plain)})
    return sessions


def _decode_watch(section: object) -> WatchVersions:
    """The WATCH versions section; raises Corrupt unless `encode_snapshot` could write it."""
    if type(section) is not tuple or len(section) != 3:
        raise Corrupt("snapshot: bad watch section")
    version, floor, flat = section
    if type(version) is not int or type(floor) is not int or not 0 <= floor <= version \
            or type(flat) is not list or len(flat) % 2:
        raise Corrupt("snapshot: bad watch versions")
    touched: dict[bytes, int] = {}
    previous = floor
    for position in range(0, len(flat), 2):
        key = flat[position]
        when = flat[position + 1]
        if type(key) is not bytes or key in touched or type(when) is not int \
                or not previous <= when <= version:
            raise Corrupt("snapshot: bad watch entry")
        touched[key] = previous = when
    return WatchVersions(version, floor, touched)
