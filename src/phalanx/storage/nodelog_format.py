"""The on-disk format of the node log (`phalanx.storage.nodelog`): frames, scanning, replay.

Rules of this file:
- Pure functions and small classes over bytes already read: no file is opened here (the node
  log reads and writes; this file says what the bytes mean).
- A frame is `header | key table | payload`. Header (20 bytes, little-endian): marker u16
  (0xC33C), frame type u8, reserved u8 (0), key count u32, payload length u32, payload CRC32
  u32, header CRC32 u32. The header CRC covers the first 16 header bytes and the key table
  (`count` u64 keys: the groups the payload concerns), so a frame whose payload is bad still
  says, trustworthily, which groups it damaged and where the next frame starts.
- Frame types: CHECKPOINT (first frame of every segment: every live group's state), WRITE (one
  group-commit turn: a list of ops of several groups), CONFIRM (no payload: "every frame before
  me was durable", see `phalanx.storage.nodelog` on torn writes versus corruption).
- Ops (msgpack lists inside a WRITE payload), each `[key, kind, ...]`:
  CREATE `[key, 0, snap index, snap term, conf]` (a new group, bootstrapped);
  BATCH `[key, 1, hard|nil, installed snapshot [index, term, conf]|nil, first, [[term, type,
  data], ...]]` (one `persist()`, as `storage/wal.py`'s BATCH);
  SNAPSHOT `[key, 2, index, term, conf]`; COMPACT `[key, 3, index, term]`;
  REWRITE `[key, 4, first, [[term, type, data], ...]]` (live entries copied out of an old segment:
  they replace nothing, they must equal what the log holds or fill what it lost with a deleted
  segment); DROP `[key, 5]` (the group is gone).
"""

from __future__ import annotations

import bisect
import itertools
import struct
import zlib
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from phalanx.errors import Corrupt
from phalanx.raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Index,
    NodeId,
    SnapshotMeta,
    Term,
)
from phalanx.storage.sqlite import decode_conf_state, encode_conf_state

FORMAT_VERSION: Final = 1
SEGMENT_MAGIC: Final = b"PHXNLOG1"
FILE_HEADER: Final = struct.Struct("<8sQ")  # magic, segment sequence number
FRAME_HEADER: Final = struct.Struct("<HBBIIII")
_HEAD: Final = struct.Struct("<HBBIII")  # the header CRC covers these 16 bytes + the key table
_HEADER_CRC: Final = struct.Struct("<I")
MARKER: Final = 0xC33C
_MARKER_BYTES: Final = struct.pack("<H", MARKER)
KEY: Final = struct.Struct("<Q")

CHECKPOINT: Final = 1
WRITE: Final = 2
CONFIRM: Final = 3
_FRAME_TYPES: Final = frozenset({CHECKPOINT, WRITE, CONFIRM})

CREATE: Final = 0
BATCH: Final = 1
SNAPSHOT: Final = 2
COMPACT: Final = 3
REWRITE: Final = 4
DROP: Final = 5

_ENTRY_TYPES: Final = {int(kind): kind for kind in EntryType}


def frame(frame_type: int, keys: Iterable[int], payload: bytes) -> bytes:
    """One frame: header, key table, payload (see the rules)."""
    table = b"".join(KEY.pack(key) for key in keys)
    head = _HEAD.pack(MARKER, frame_type, 0, len(table) // KEY.size, len(payload),
                      zlib.crc32(payload))
    return head + _HEADER_CRC.pack(zlib.crc32(table, zlib.crc32(head))) + table + payload


@dataclass(slots=True)
class Frame:
    """A frame found in a segment; `problem` is '' for a valid one."""

    position: int
    frame_type: int
    keys: tuple[int, ...]
    payload: bytes
    end: int  # where the next frame starts (trustworthy when the header is valid)
    problem: str = ""
    header_ok: bool = True


def check_frame(data: bytes, position: int) -> Frame:
    """What starts at `position`: a valid frame, or what is wrong there."""
    size = len(data)
    if position + FRAME_HEADER.size > size:
        problem = "zeros" if data.count(0, position) == size - position else "partial header"
        return Frame(position, 0, (), b"", size, problem, False)
    marker, frame_type, reserved, count, length, payload_crc, header_crc = \
        FRAME_HEADER.unpack_from(data, position)
    if not (marker or frame_type or count or length or payload_crc or header_crc):
        return Frame(position, 0, (), b"", size, "zeros", False)
    if marker != MARKER or frame_type not in _FRAME_TYPES or reserved:
        return Frame(position, 0, (), b"", size, "bad frame header", False)
    table_start = position + FRAME_HEADER.size
    start = table_start + count * KEY.size
    if start > size:
        return Frame(position, 0, (), b"", size, "key table extends past the end", False)
    view = memoryview(data)
    if zlib.crc32(view[table_start:start], zlib.crc32(view[position:position + _HEAD.size])) \
            != header_crc:
        return Frame(position, 0, (), b"", size, "header CRC mismatch", False)
    keys = tuple(key for (key,) in KEY.iter_unpack(view[table_start:start]))
    end = start + length
    if end > size:
        return Frame(position, frame_type, keys, b"", end, "payload extends past the end")
    payload = data[start:end]
    if zlib.crc32(payload) != payload_crc:
        return Frame(position, frame_type, keys, b"", end, "payload CRC mismatch")
    return Frame(position, frame_type, keys, payload, end)


def next_valid_frame(data: bytes, start: int) -> int:
    """The offset of the first valid frame at or after `start`, or -1."""
    position = data.find(_MARKER_BYTES, start)
    while position >= 0:
        if not check_frame(data, position).problem:
            return position
        position = data.find(_MARKER_BYTES, position + 1)
    return -1


@dataclass(slots=True)
class Scan:
    """A segment split into frames (the torn tail excluded)."""

    frames: list[Frame]  # in file order, the damaged ones too (their `problem` is set)
    end: int  # where the next frame goes
    torn: str | None = None  # why the tail was cut (the last segment only)


def scan_segment(name: str, data: bytes, seq: int, last: bool) -> Scan:
    """Split a segment into frames. A bad frame with nothing valid after it in the LAST segment
    is the torn tail of a crash; any other bad frame is corruption: it is listed among the frames
    with its `problem` set and scanning goes on after it (at its end if its header is valid,
    else at the next valid frame). A bad
    segment header raises `Corrupt` (the segment is unreadable as a whole)."""
    if len(data) < FILE_HEADER.size:
        raise Corrupt(f"segment {name} is truncated ({len(data)} bytes)")
    magic, file_seq = FILE_HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        raise Corrupt(f"segment {name} has a bad magic number {magic!r}")
    if file_seq != seq:
        raise Corrupt(f"segment {name} holds sequence number {file_seq}, expected {seq}")
    scan = Scan([], FILE_HEADER.size)
    size = len(data)
    position = FILE_HEADER.size
    while position < size:
        found = check_frame(data, position)
        if not found.problem:
            scan.frames.append(found)
            position = found.end
            continue
        if found.problem == "zeros" and data.count(0, position) == size - position:
            break  # the preallocated (or never written) tail
        following = next_valid_frame(data, position + 1)
        if last and following < 0:
            scan.torn = f"{found.problem} at offset {position}"
            break
        if found.problem == "zeros":
            found.problem = "zeros followed by data"
        scan.frames.append(found)
        if found.header_ok and found.end <= size:
            position = found.end
        elif following >= 0:
            position = following
        else:
            position = size
            break
    scan.end = position
    return scan


# -- replay ----------------------------------------------------------------------------------
def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"expected a non-negative integer, got {value!r}")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {value!r}")
    return value


def _list(value: object, length: int) -> list[object]:
    if not isinstance(value, list) or len(value) != length:
        raise TypeError(f"expected a list of {length}, got {value!r}")
    return value


def decode_rows(first: int, rows: object) -> list[Entry]:
    """Entries `first, first+1, ...` from their `[term, type, data]` rows."""
    if not isinstance(rows, list):
        raise TypeError("malformed entry list")
    decoded: list[Entry] = []
    for number, row in enumerate(rows, first):
        term, kind, data = _list(row, 3)
        if not isinstance(data, bytes) or kind not in _ENTRY_TYPES:
            raise TypeError(f"malformed entry {number}")
        decoded.append(Entry(term=Term(_int(term)), index=Index(number),
                             type=_ENTRY_TYPES[_int(kind)], data=data))
    return decoded


def decode_meta(index: object, term: object, conf: object) -> SnapshotMeta:
    return SnapshotMeta(index=Index(_int(index)), term=Term(_int(term)),
                        conf_state=decode_conf_state(conf))


def decode_hard(value: object) -> HardState:
    term, vote, commit = _list(value, 3)
    return HardState(term=Term(_int(term)), vote=NodeId(_str(vote)), commit=Index(_int(commit)))


# -- where each entry's latest copy lives: runs of indices per segment -----------------------
Run = list[int]  # [segment seq, first index, last index]


def runs_truncate(runs: list[Run], first: int) -> None:
    """Forget the copies of entries `first` and later."""
    kept: list[Run] = []
    for run in runs:
        if run[1] >= first:
            continue
        if run[2] >= first:
            run[2] = first - 1
        kept.append(run)
    runs[:] = kept


def runs_append(runs: list[Run], seq: int, first: int, last: int) -> None:
    """Entries `first..last` now live in segment `seq` (after `runs_truncate(first)`)."""
    if runs and runs[-1][0] == seq and runs[-1][2] + 1 == first:
        runs[-1][2] = last
    else:
        runs.append([seq, first, last])


def runs_compact(runs: list[Run], offset: int) -> None:
    """Forget the copies of entries `offset` and below."""
    runs[:] = [run for run in runs if run[2] > offset]
    for run in runs:
        run[1] = max(run[1], offset + 1)


def runs_replace(runs: list[Run], seq: int, first: int, last: int) -> None:
    """Entries `first..last` were copied to segment `seq` (a rewrite): their older copies are
    no longer needed."""
    kept: list[Run] = []
    for run in runs:
        if run[2] < first or run[1] > last:
            kept.append(run)
            continue
        if run[1] < first:
            kept.append([run[0], run[1], first - 1])
        if run[2] > last:
            kept.append([run[0], last + 1, run[2]])
    kept.append([seq, first, last])
    kept.sort(key=lambda run: run[1])
    runs[:] = kept


class Locations:
    """Where each entry's latest copy is, to the frame: records `(first, last, seq, position)`
    (entries `first..last` are in the op of this group in the WRITE frame at `position` of
    segment `seq`), one per BATCH or REWRITE op, sorted by `first`, disjoint. What lets a
    group keep entries on disk and read them back (`nodelog_group.GroupStore.release`).
    A flat `array` of 4 int64 per op (32 bytes, against ~180 for a list of four ints): one
    record per `persist()`, and a small-entry workload makes one per entry."""

    __slots__ = ("_flat",)

    def __init__(self) -> None:
        self._flat = array("q")

    def __len__(self) -> int:
        return len(self._flat) // 4

    def records(self) -> list[tuple[int, int, int, int]]:
        flat = self._flat
        return [(flat[i], flat[i + 1], flat[i + 2], flat[i + 3]) for i in range(0, len(flat), 4)]

    def clear(self) -> None:
        del self._flat[:]

    def truncate(self, first: int) -> None:
        """Forget the copies of entries `first` and later."""
        flat = self._flat
        while flat and flat[-4] >= first:
            del flat[-4:]
        if flat and flat[-3] >= first:
            flat[-3] = first - 1

    def append(self, first: int, last: int, seq: int, position: int) -> None:
        """Entries `first..last` were written in the frame at (`seq`, `position`), after
        `truncate(first)`."""
        self._flat.extend((first, last, seq, position))

    def compact(self, offset: int) -> None:
        """Forget the copies of entries `offset` and below."""
        flat = self._flat
        drop = 0
        while drop < len(flat) and flat[drop + 1] <= offset:
            drop += 4
        del flat[:drop]
        if flat and flat[0] <= offset:
            flat[0] = offset + 1

    def replace(self, first: int, last: int, seq: int, position: int) -> None:
        """Entries `first..last` were copied to the frame at (`seq`, `position`) (a rewrite):
        their older copies are no longer needed."""
        kept: list[tuple[int, int, int, int]] = []
        for low, high, old_seq, old_position in self.records():
            if high < first or low > last:
                kept.append((low, high, old_seq, old_position))
                continue
            if low < first:
                kept.append((low, first - 1, old_seq, old_position))
            if high > last:
                kept.append((last + 1, high, old_seq, old_position))
        kept.append((first, last, seq, position))
        kept.sort()
        self._flat = array("q", itertools.chain.from_iterable(kept))

    def find(self, low: int, high: int) -> list[tuple[int, int, int, int]]:
        """The records that hold entries `low..high` (inclusive), clipped to that range, in
        index order; `Corrupt` if some entry of the range has no record."""
        flat = self._flat
        count = len(flat) // 4
        start = bisect.bisect_left(range(count), low, key=lambda i: flat[4 * i + 1])
        found: list[tuple[int, int, int, int]] = []
        expected = low
        for number in range(start, count):
            first, last, seq, position = flat[4 * number:4 * number + 4]
            if first > high:
                break
            if first > expected:
                break
            found.append((max(first, low), min(last, high), seq, position))
            expected = min(last, high) + 1
            if expected > high:
                return found
        raise Corrupt(f"no frame holds entry {expected} (entries {low}..{high} asked)")


def rows(entries: Iterable[Entry]) -> list[tuple[int, int, bytes]]:
    return [(entry.term, entry.type, entry.data) for entry in entries]


def checkpoint_row(key: int, hard: HardState, meta: SnapshotMeta, offset: Entry,
                   last: int) -> tuple[object, ...]:
    """One group's state in a CHECKPOINT payload."""
    return (key, hard.term, hard.vote, hard.commit, meta.index, meta.term,
            encode_conf_state(meta.conf_state), offset.index, offset.term, last)


@dataclass(slots=True)
class ReplayedGroup:
    """One group's state as rebuilt from the log; `entries[0]` is the dummy at the offset,
    None marks an entry whose copy lived in a deleted segment (a later op must remove or
    refill it, else the group is damaged)."""

    entries: list[Entry | None]
    hard_state: HardState
    snapshot_meta: SnapshotMeta
    runs: list[Run] = field(default_factory=list)
    locations: Locations = field(default_factory=Locations)

    @classmethod
    def from_checkpoint(cls, row: list[object]) -> tuple[int, ReplayedGroup]:
        (key, term, vote, commit, snap_index, snap_term, conf, offset_index, offset_term,
         last) = _list(row, 10)
        offset = Entry(term=Term(_int(offset_term)), index=Index(_int(offset_index)))
        if _int(last) < offset.index:
            raise TypeError(f"last index {last} below the offset {offset.index}")
        group = cls([offset, *itertools.repeat(None, _int(last) - offset.index)],
                    HardState(term=Term(_int(term)), vote=NodeId(_str(vote)),
                              commit=Index(_int(commit))),
                    decode_meta(snap_index, snap_term, conf))
        return _int(key), group

    def summary(self) -> tuple[object, ...]:
        """What a later CHECKPOINT must agree with."""
        offset = self.entries[0]
        return (self.hard_state, self.snapshot_meta, offset.index if offset else -1,
                offset.term if offset else -1, len(self.entries))

    def apply(self, seq: int, kind: int, fields: list[object], frame_at: int = 0) -> None:
        """Apply one op (not CREATE/DROP) of the WRITE frame at `frame_at` of segment `seq`
        as the writer applied it; TypeError/ValueError/Corrupt for an op that cannot be
        applied."""
        dummy = self.entries[0]
        if dummy is None:
            raise Corrupt("the log has lost its dummy entry")
        offset = dummy.index
        if kind == BATCH:
            hard, installed, first, batch_rows = _list(fields, 4)
            if installed is not None:
                meta = decode_meta(*_list(installed, 3))
                self.snapshot_meta = meta
                self.entries = [Entry(term=meta.term, index=meta.index)]
                self.runs.clear()
                self.locations.clear()
                offset = meta.index
            new = decode_rows(_int(first), batch_rows)
            if new:
                start = new[0].index
                if not offset < start <= offset + len(self.entries):
                    raise Corrupt(f"entries from {start} do not fit the log "
                                  f"{offset}..{offset + len(self.entries) - 1}")
                del self.entries[start - offset:]
                self.entries.extend(new)
                runs_truncate(self.runs, start)
                runs_append(self.runs, seq, start, new[-1].index)
                self.locations.truncate(start)
                self.locations.append(start, new[-1].index, seq, frame_at)
            if hard is not None:
                self.hard_state = decode_hard(hard)
        elif kind == SNAPSHOT:
            self.snapshot_meta = decode_meta(*_list(fields, 3))
        elif kind == COMPACT:
            index, term = (_int(value) for value in _list(fields, 2))
            if not offset < index <= offset + len(self.entries) - 1:
                raise Corrupt(f"compaction to {index} outside the log")
            kept = self.entries[index - offset:]
            if kept[0] is None:
                kept[0] = Entry(term=Term(term), index=Index(index))
            self.entries = kept
            runs_compact(self.runs, index)
            self.locations.compact(index)
        elif kind == REWRITE:
            first, rewrite_rows = _list(fields, 2)
            copied = decode_rows(_int(first), rewrite_rows)
            for entry in copied:
                position = entry.index - offset
                if not 0 < position < len(self.entries):
                    raise Corrupt(f"rewritten entry {entry.index} outside the log")
                held = self.entries[position]
                if held is not None and held.term != entry.term:
                    raise Corrupt(f"rewritten entry {entry.index} has term {entry.term}, the "
                                  f"log holds term {held.term}")
                self.entries[position] = entry
            if copied:
                runs_replace(self.runs, seq, copied[0].index, copied[-1].index)
                self.locations.replace(copied[0].index, copied[-1].index, seq, frame_at)
        else:
            raise TypeError(f"unknown op kind {kind}")

    def finish(self) -> list[Entry]:
        """The log once replay is done; `Corrupt` if it has holes or breaks an invariant."""
        if any(entry is None for entry in self.entries):
            missing = [i for i, entry in enumerate(self.entries) if entry is None]
            first = self.entries[0]
            offset = first.index if first is not None else 0
            raise Corrupt(f"entries {offset + missing[0]}..{offset + missing[-1]} are in "
                          f"deleted segments")
        log = [entry for entry in self.entries if entry is not None]
        for previous, entry in itertools.pairwise(log):
            if entry.term < previous.term:
                raise Corrupt(f"term goes down from {previous.term} to {entry.term} at index "
                              f"{entry.index}")
        meta = self.snapshot_meta
        offset = log[0].index
        if not offset <= meta.index <= log[-1].index:
            raise Corrupt(f"snapshot index {meta.index} outside the log {offset}..{log[-1].index}")
        if log[meta.index - offset].term != meta.term:
            raise Corrupt(f"snapshot term {meta.term} disagrees with the log at index "
                          f"{meta.index}")
        return log


def created_group(fields: list[object]) -> ReplayedGroup:
    """The state a CREATE op starts."""
    snap_index, snap_term, conf = _list(fields, 3)
    meta = decode_meta(snap_index, snap_term, conf)
    return ReplayedGroup([Entry(term=meta.term, index=meta.index)], HardState(), meta)


def create_fields(conf_state: ConfState) -> tuple[int, int, str]:
    return (0, 0, encode_conf_state(conf_state))


__all__ = ["BATCH", "CHECKPOINT", "COMPACT", "CONFIRM", "CREATE", "DROP", "FILE_HEADER",
           "FORMAT_VERSION", "REWRITE", "SEGMENT_MAGIC", "SNAPSHOT", "WRITE", "Frame",
           "Locations", "ReplayedGroup", "Scan", "check_frame", "checkpoint_row", "create_fields",
           "created_group", "decode_rows", "frame", "next_valid_frame", "rows", "runs_append",
           "runs_compact", "runs_replace", "runs_truncate", "scan_segment"]
