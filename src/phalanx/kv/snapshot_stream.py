"""Snapshot format 6: a snapshot written and read in bounded frames, so that neither taking
one nor installing one holds the event loop for long (issue 15 lever 4, issue 16 §3).

Rules of this file:
- Layout: the 10-byte header of `kv/snapshot.py` (`b"PXKV" | u8 6 | u8 marshal 2 | u32 0`),
  then frames `u32 length | u32 crc32(body) | body`, each body a `marshal.dumps(_, 2)` of:
  first the meta tuple `(applied_index, clock_ms, key_count, expire_count, flat_sessions,
  watch_section, flat_scripts)` (the sections as in format 5), then `(1, [key, plain, ...])`
  data frames in the keyspace's insertion order, then `(2, [key, expire_at, ...])` expiry
  frames. Plain values are `kv/snapshot.py`'s (`plain_value`). A frame holds at most
  `frame_keys` keys and stops growing past about `frame_bytes`: both are fixed by the writer's
  arguments, so replicas with the same state write the same bytes.
- A snapshot is taken at one applied index while the state machine keeps applying entries
  (copy on write, at the key level): `SnapshotWriter` records the key order at its start and
  installs a hook (`Keyspace.before_change`) that the keyspace calls before it changes a key
  (`store`, `delete`, and `touch`, which every in-place write takes through `live_for_write`);
  the hook saves the key's value as it was at the start (its plain form) the first time the key
  changes. Frames then write the saved value, else the live one, which has not changed. This
  relies on the keyspace's rule that commands change a value only through those helpers (the
  same rule the WATCH versions rely on). The capture itself is `KeyCapture`: the consistency
  checker's sliced digest (`kv/digest.py`, `DigestBuilder`) uses it too. Several captures may
  follow one keyspace at once (one hook, `_Followers`, calls each); at most one per `purpose`
  (one snapshot being written, one digest being computed).
- Reading checks each frame's CRC and every value as format 4 does, and the counts at the end;
  the state is handed out only when everything checked (never a half-valid state).
- Pure: standard library only; no clock (the caller decides how many frames a step takes).
"""

from __future__ import annotations

import marshal
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from phalanx.errors import Corrupt
from phalanx.kv.keyspace import Keyspace
from phalanx.kv.snapshot import (
    _HEADER,
    MAGIC,
    MARSHAL_VERSION,
    ClientSession,
    SnapshotState,
    Value,
    decode_data_into,
    decode_sections,
    decode_snapshot,
    flat_sessions_of,
    plain_value,
)

STREAM_FORMAT_VERSION = 6
_FRAME = struct.Struct("<II")
_DATA, _EXPIRES = 1, 2
#: A key that did not exist when a capture started (`KeyCapture.saved`).
ABSENT = object()
DEFAULT_FRAME_KEYS = 4096
DEFAULT_FRAME_BYTES = 1 << 20


def _frame(body: Any) -> bytes:
    payload = marshal.dumps(body, MARSHAL_VERSION)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _size_of(plain: object) -> int:
    """About how many bytes a plain value takes in a frame (cheap: no walk)."""
    if type(plain) is bytes:
        return len(plain) + 5
    try:
        return 48 * len(plain)  # type: ignore[arg-type]
    except TypeError:
        return 64


class _Followers:
    """The keyspace's `before_change` hook while captures follow it: calls each in turn."""

    __slots__ = ("captures",)

    def __init__(self) -> None:
        self.captures: list[KeyCapture] = []

    def __call__(self, key: bytes) -> None:
        for capture in self.captures:
            capture.save(key)


class KeyCapture:
    """The keys of a keyspace, their expiries and their values as they were when this object
    was made, while the keyspace keeps changing (copy on write at the key level: see the
    module rules). `freeze` turns a value into the immutable form kept for a key changed
    since (`plain_value` for a snapshot, `canonical_value` for a digest). `close()` it when
    done: the hook follows the keyspace until then."""

    def __init__(self, keyspace: Keyspace, purpose: str,
                 freeze: Callable[[Any], object]) -> None:
        hook = keyspace.before_change
        if hook is not None and not isinstance(hook, _Followers):
            raise RuntimeError("the keyspace's before_change hook is taken")
        if hook is not None and any(c.purpose == purpose for c in hook.captures):
            raise RuntimeError(f"a {purpose} of this keyspace is already being written")
        self.keyspace = keyspace
        self.purpose: str = purpose
        self.data = keyspace.data
        #: The keys at the start, in the keyspace's insertion order.
        self.keys = list(keyspace.data)
        self.expires = dict(keyspace.expires)
        #: Key -> its frozen value at the start (or ABSENT), for the keys changed since.
        self.saved: dict[bytes, object] = {}
        self._freeze = freeze
        self.closed = False
        if hook is None:
            hook = _Followers()
            keyspace.before_change = hook
        hook.captures.append(self)

    def save(self, key: bytes) -> None:
        """The keyspace is about to change `key`: keep its value as it was at the start."""
        saved = self.saved
        if key not in saved:
            value = self.data.get(key)
            saved[key] = ABSENT if value is None else self._freeze(value)

    def close(self) -> None:
        """Stop following the keyspace's changes (done, or abandoned)."""
        if self.closed:
            return
        self.closed = True
        self.saved = {}
        hook = self.keyspace.before_change
        if isinstance(hook, _Followers) and self in hook.captures:
            hook.captures.remove(self)
            if not hook.captures:
                self.keyspace.before_change = None


class SnapshotWriter:
    """A format 6 snapshot of a keyspace at the moment this object is made, written frame by
    frame while the keyspace keeps changing (see the module rules). Iterate `frames()` to the
    end (or `close()` it): the hook stays installed until then."""

    def __init__(self, keyspace: Keyspace, applied_index: int, clock_ms: int,
                 sessions: dict[int, ClientSession], scripts: dict[bytes, bytes], *,
                 frame_keys: int = DEFAULT_FRAME_KEYS,
                 frame_bytes: int = DEFAULT_FRAME_BYTES) -> None:
        self._capture = capture = KeyCapture(keyspace, "snapshot", plain_value)
        self._keys = capture.keys
        self._expires = capture.expires
        self._frame_keys = max(1, frame_keys)
        self._frame_bytes = max(1, frame_bytes)
        flat_sessions = flat_sessions_of(sessions)
        flat_touched: list[object] = []
        for key, version in keyspace.touched.items():
            flat_touched.extend((key, version))
        flat_scripts: list[bytes] = []
        for sha, body in scripts.items():
            flat_scripts.extend((sha, body))
        self._meta = (applied_index, clock_ms, len(self._keys), len(self._expires),
                      flat_sessions, (keyspace.version, keyspace.floor, flat_touched),
                      flat_scripts)
        self.keys = len(self._keys)

    @property
    def closed(self) -> bool:
        return self._capture.closed

    def close(self) -> None:
        """Stop following the keyspace's changes (done, or abandoned)."""
        self._capture.close()

    def frames(self) -> Iterator[bytes]:
        """The snapshot's bytes: the header, then one frame per step."""
        try:
            yield _HEADER.pack(MAGIC, STREAM_FORMAT_VERSION, MARSHAL_VERSION, 0)
            yield _frame(self._meta)
            keys, data, saved = self._keys, self._capture.data, self._capture.saved
            frame_keys, frame_bytes = self._frame_keys, self._frame_bytes
            position, count = 0, len(keys)
            while position < count:
                flat: list[object] = []
                size = 0
                end = min(count, position + frame_keys)
                while position < end and size < frame_bytes:
                    key = keys[position]
                    position += 1
                    plain = saved.get(key, ABSENT)
                    if plain is ABSENT:
                        if key in saved:
                            raise RuntimeError(f"snapshot: key {key!r} vanished")
                        value = data[key]
                        plain = value if type(value) is bytes or type(value) is dict \
                            else plain_value(value)
                    flat.append(key)
                    flat.append(plain)
                    size += len(key) + _size_of(plain)
                yield _frame((_DATA, flat))
            expires = list(self._expires.items())
            for start in range(0, len(expires), frame_keys * 4):
                flat_expires: list[object] = []
                for key, when in expires[start:start + frame_keys * 4]:
                    flat_expires.extend((key, when))
                yield _frame((_EXPIRES, flat_expires))
        finally:
            self.close()


class SnapshotReader:
    """A format 6 snapshot read frame by frame (`step`), then `state()`."""

    def __init__(self, blob: bytes | memoryview) -> None:
        view = memoryview(blob)
        if len(view) < _HEADER.size:
            raise Corrupt("snapshot: truncated header")
        magic, version, marshal_version, _ = _HEADER.unpack_from(view, 0)
        if magic != MAGIC or version != STREAM_FORMAT_VERSION \
                or marshal_version != MARSHAL_VERSION:
            raise Corrupt("snapshot: not a format 6 snapshot")
        self._view = view
        self._offset = _HEADER.size
        meta = self._next()
        if type(meta) is not tuple or len(meta) != 7:
            raise Corrupt("snapshot: bad meta frame")
        (self._applied, self._clock, self._key_count, self._expire_count, self._sessions,
         self._watch, flat_scripts) = meta
        if type(self._applied) is not int or self._applied < 0 or type(self._clock) is not int \
                or type(self._key_count) is not int or type(self._expire_count) is not int:
            raise Corrupt("snapshot: bad applied index, clock or counts")
        if type(self._sessions) is not list or type(flat_scripts) is not list \
                or len(flat_scripts) % 2 \
                or not all(type(item) is bytes for item in flat_scripts):
            raise Corrupt("snapshot: bad sessions or script cache")
        self._scripts = {flat_scripts[i]: flat_scripts[i + 1]
                         for i in range(0, len(flat_scripts), 2)}
        self._data: dict[bytes, Value] = {}
        self._flat_expires: list[Any] = []
        self.done = self._offset == len(view)

    def _next(self) -> Any:
        view, offset = self._view, self._offset
        if offset + _FRAME.size > len(view):
            raise Corrupt("snapshot: truncated frame header")
        length, checksum = _FRAME.unpack_from(view, offset)
        start = offset + _FRAME.size
        body = view[start:start + length]
        if len(body) != length:
            raise Corrupt("snapshot: truncated frame")
        if zlib.crc32(body) != checksum:
            raise Corrupt(f"snapshot: frame at byte {offset} fails its checksum")
        try:
            decoded = marshal.loads(body)
        except (ValueError, EOFError, TypeError) as exc:
            raise Corrupt(f"snapshot: undecodable frame ({exc})") from exc
        self._offset = start + length
        return decoded

    def step(self) -> bool:
        """Read one more frame; True once every frame is read."""
        if self.done:
            return True
        frame = self._next()
        if type(frame) is not tuple or len(frame) != 2 or type(frame[1]) is not list:
            raise Corrupt("snapshot: bad frame")
        tag, flat = frame
        if tag == _DATA and not self._flat_expires:
            decode_data_into(flat, self._data)
        elif tag == _EXPIRES:
            self._flat_expires.extend(flat)
        else:
            raise Corrupt("snapshot: bad frame tag")
        self.done = self._offset == len(self._view)
        return self.done

    def state(self) -> SnapshotState:
        """The whole state, once every frame is read and the counts agree."""
        while not self.done:
            self.step()
        if len(self._data) != self._key_count \
                or len(self._flat_expires) != 2 * self._expire_count:
            raise Corrupt("snapshot: the frames do not hold the counted keys")
        return decode_sections(self._applied, self._clock, self._data, self._flat_expires,
                               self._sessions, self._watch, self._scripts)


def snapshot_version(blob: bytes | memoryview) -> int:
    """The format version in a snapshot's header (0 if it has none)."""
    if len(blob) < _HEADER.size:
        return 0
    magic, version, _, _ = _HEADER.unpack_from(blob, 0)
    return int(version) if magic == MAGIC else 0


def decode_any(blob: bytes | memoryview) -> SnapshotState:
    """The state in a snapshot of any readable format (1-6); raises Corrupt if bad."""
    if snapshot_version(blob) == STREAM_FORMAT_VERSION:
        return SnapshotReader(blob).state()
    return decode_snapshot(bytes(blob))


__all__ = ["ABSENT", "STREAM_FORMAT_VERSION", "KeyCapture", "SnapshotReader", "SnapshotWriter", "decode_any",
           "snapshot_version"]
